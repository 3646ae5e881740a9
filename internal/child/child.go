// Package child runs the server processes that grbd's harnesses start: the
// members of `grbd local`, the systems a benchmark compares, the cluster a
// chaos run attacks and the processes of the end-to-end tests. It is the one
// home for starting a child, reading its stdout line by line, knowing when
// its start is over, and ending it (SIGTERM with a deadline, SIGKILL as a
// crash, SIGSTOP/SIGCONT as a pause).
//
// Every child dies with its parent (Pdeathsig), so a harness killed with -9
// leaves nothing behind.
package child

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// Conditions callers branch on.
var (
	// ErrExited: the process ended (before its start was over, or before
	// a signal could be sent).
	ErrExited = errors.New("child: process exited")
	// ErrTimeout: the context ended before the process did what was asked.
	ErrTimeout = errors.New("child: timed out")
)

// Spec says what to run and where its output goes.
type Spec struct {
	// Name names the process in errors.
	Name string
	// Path and Args are the program and its arguments (without argv[0]).
	Path string
	Args []string
	// Env, when not nil, is added to this process's environment.
	Env []string
	// Dir is the working directory ("" is this process's).
	Dir string
	// Log is a file that gets stderr, each stdout line prefixed with
	// "stdout: ", and a line when the process starts and exits. Without it
	// stderr goes to Stderr (nil discards it).
	Log    string
	Stderr io.Writer
	// Started lists the stdout line prefixes that end the start: nil
	// means any line, an empty list none (the caller judges the start
	// otherwise, by dialling its port say). Started() is closed at the
	// first such line.
	Started []string
	// OnLine, when set, is called with every stdout line, in order, before
	// the line can close Started() (a caller woken by Started sees what
	// OnLine recorded) and before Done() is closed.
	OnLine func(line string)
}

// Process is one running child.
type Process struct {
	Name string
	Log  string

	cmd     *exec.Cmd
	done    chan struct{}
	err     error // exit status, valid once done is closed
	started chan struct{}

	mu        sync.Mutex
	startLine string
	stopped   bool // SIGSTOPped and not yet continued
}

// Start runs spec's program. It returns once the process runs; wait for
// Started() or Done() to learn how its start went.
func Start(spec Spec) (*Process, error) {
	p := &Process{Name: spec.Name, Log: spec.Log, done: make(chan struct{}), started: make(chan struct{})}
	var logf *os.File
	stderr := spec.Stderr
	if spec.Log != "" {
		f, err := os.OpenFile(spec.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("child: %s log: %w", spec.Name, err)
		}
		logf, stderr = f, f
	}
	closeLog := func() {
		if logf != nil {
			logf.Close()
		}
	}
	p.cmd = exec.Command(spec.Path, spec.Args...)
	p.cmd.Dir = spec.Dir
	if spec.Env != nil {
		p.cmd.Env = append(os.Environ(), spec.Env...)
	}
	p.cmd.Stderr = stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		closeLog()
		return nil, fmt.Errorf("child: %s: %w", spec.Name, err)
	}
	if logf != nil {
		fmt.Fprintf(logf, "=== start %s %s\n", spec.Path, strings.Join(spec.Args, " "))
	}
	if err := p.cmd.Start(); err != nil {
		closeLog()
		return nil, fmt.Errorf("child: start %s: %w", spec.Name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		p.scan(out, logf, spec)
	}()
	go func() {
		<-scanned // Wait closes the pipe: only once every line was read
		p.err = p.cmd.Wait()
		if logf != nil {
			fmt.Fprintf(logf, "=== %s exited: %v\n", spec.Name, p.err)
		}
		closeLog()
		close(p.done)
	}()
	return p, nil
}

// scan reads stdout: each line to the log and OnLine, the first line that
// matches spec.Started closes p.started.
func (p *Process) scan(out io.Reader, logf *os.File, spec Spec) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var once sync.Once
	for sc.Scan() {
		line := sc.Text()
		if logf != nil {
			fmt.Fprintln(logf, "stdout:", line)
		}
		if spec.OnLine != nil {
			spec.OnLine(line)
		}
		if startsWithAny(line, spec.Started) {
			once.Do(func() {
				p.mu.Lock()
				p.startLine = line
				p.mu.Unlock()
				close(p.started)
			})
		}
	}
	_, _ = io.Copy(io.Discard, out) // a line over 1 MiB: keep the child unblocked
}

func startsWithAny(line string, prefixes []string) bool {
	if prefixes == nil {
		return true
	}
	for _, pre := range prefixes {
		if strings.HasPrefix(line, pre) {
			return true
		}
	}
	return false
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Started is closed at the first stdout line that ends the start.
func (p *Process) Started() <-chan struct{} { return p.started }

// StartLine is the line that closed Started ("" before).
func (p *Process) StartLine() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLine
}

// Done is closed when the process has exited and its output is read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended, and its exit error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// WaitStarted waits for the start to end; an exit first is ErrExited (with
// the log's tail), the end of ctx is ErrTimeout.
func (p *Process) WaitStarted(ctx context.Context) error {
	select {
	case <-p.started:
		return nil
	case <-p.done:
		return fmt.Errorf("%w: %s before its start was over (%s)\n%s", ErrExited, p.Name, ExitText(p.err), p.LogTail(4096))
	case <-ctx.Done():
		return fmt.Errorf("%w: %s not started: %w\n%s", ErrTimeout, p.Name, context.Cause(ctx), p.LogTail(4096))
	}
}

// Signal sends sig; SIGSTOP and SIGCONT are remembered so that Terminate can
// wake a paused process first.
func (p *Process) Signal(sig syscall.Signal) error {
	if done, _ := p.Exited(); done {
		return fmt.Errorf("%w: %s", ErrExited, p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("child: signal %v to %s: %w", sig, p.Name, err)
	}
	p.mu.Lock()
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	p.mu.Unlock()
	return nil
}

// Kill sends SIGKILL (no cleanup: a crash) and waits for the process to be
// gone.
func (p *Process) Kill() {
	if done, _ := p.Exited(); done {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Terminate asks for a clean shutdown (SIGCONT first if paused, then
// SIGTERM) and returns the exit error; if ctx ends first the process is
// killed and ErrTimeout returned.
func (p *Process) Terminate(ctx context.Context) error {
	if done, err := p.Exited(); done {
		return err
	}
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	if stopped {
		_ = p.Signal(syscall.SIGCONT)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		p.Kill()
		return fmt.Errorf("%w: %s did not stop after SIGTERM", ErrTimeout, p.Name)
	}
}

// TerminateAll terminates every process at once (as a Ctrl-C reaches a
// whole process group) and returns each one's Terminate error, in order.
func TerminateAll(ctx context.Context, procs ...*Process) []error {
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Terminate(ctx)
		}()
	}
	wg.Wait()
	return errs
}

// Wait waits for the process to exit and returns its exit error; the end of
// ctx first is ErrTimeout.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("%w: %s still running: %w", ErrTimeout, p.Name, context.Cause(ctx))
	}
}

// LogTail returns the last n bytes of the log ("" without a log).
func (p *Process) LogTail(n int) string {
	if p.Log == "" {
		return ""
	}
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	return Tail(string(b), n)
}

// Tail is the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ExitText says how a process ended, for messages.
func ExitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// ExitedWithError reports whether err is a non-zero exit (not a signal).
func ExitedWithError(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() > 0
}

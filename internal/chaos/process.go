package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Process is one running grbd member process. Its stderr and stdout go to a
// log file. The process counts as started at its first "listening ..." or
// "ready ..." line on stdout (a data node prints "listening nbd://..." once
// its export accepts connections and "ready nbd://..." whenever it starts
// serving as primary; a witness prints "ready witness NAME"); the "ready"
// lines are collected.
type Process struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid once done is closed

	// expected is set when the harness ends the process (Kill, Terminate)
	// or expects it to fail (ExpectExit): any other exit is a crash.
	expected atomic.Bool

	mu      sync.Mutex
	started bool
	ready   []string
	readyCh chan struct{}
	stopped bool // SIGSTOPped
}

// startProcess runs bin with args; the child dies with the test process
// (Pdeathsig) so a crashed test leaves nothing behind.
func startProcess(name, bin string, args, env []string, logPath string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chaos: %s log: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, done: make(chan struct{}), readyCh: make(chan struct{}, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("chaos: %s: %w", name, err)
	}
	fmt.Fprintf(logf, "=== chaos: start %s %s\n", bin, strings.Join(args, " "))
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("chaos: start %s: %w", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, "stdout:", line)
			uri, ready := strings.CutPrefix(line, "ready ")
			if ready || strings.HasPrefix(line, "listening ") {
				p.mu.Lock()
				p.started = true
				if ready {
					p.ready = append(p.ready, uri)
				}
				p.mu.Unlock()
				select {
				case p.readyCh <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() {
		<-scanned // Wait must not close the pipe before the scanner is done
		p.err = p.cmd.Wait()
		fmt.Fprintf(logf, "=== chaos: %s exited: %v\n", name, p.err)
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and its exit error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Ready returns the URIs of the ready lines so far.
func (p *Process) Ready() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ready...)
}

// WaitReady waits for the first "listening" or "ready" line or, when
// healthURL is set, for it to answer 200. An exit first is ErrExited.
func (p *Process) WaitReady(ctx context.Context, healthURL string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		started := p.started
		p.mu.Unlock()
		if started {
			return nil
		}
		if healthURL != "" && healthy(ctx, healthURL) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%w: %s: %v\n%s", ErrExited, p.Name, p.err, p.LogTail(4096))
		case <-ctx.Done():
			return fmt.Errorf("%w: %s not ready: %w\n%s", ErrTimeout, p.Name, ctx.Err(), p.LogTail(4096))
		case <-p.readyCh:
		case <-tick.C:
		}
	}
}

func healthy(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := adminHTTP.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Signal sends sig; SIGSTOP and SIGCONT are remembered so that Terminate can
// wake a stopped process first.
func (p *Process) Signal(sig syscall.Signal) error {
	if done, _ := p.Exited(); done {
		return fmt.Errorf("%w: %s already exited", ErrExited, p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("chaos: signal %v to %s: %w", sig, p.Name, err)
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

// ExpectExit marks an exit of the process as intended (a node that must
// refuse to start).
func (p *Process) ExpectExit() { p.expected.Store(true) }

// Crashed reports whether the process exited without the harness asking,
// and the last lines of its log (a panic, say).
func (p *Process) Crashed() (bool, string) {
	done, _ := p.Exited()
	if !done || p.expected.Load() {
		return false, ""
	}
	tail := p.LogTail(1500)
	if i := strings.Index(tail, "panic:"); i >= 0 {
		tail = tail[i:]
	}
	return true, tail
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill() {
	p.expected.Store(true)
	if done, _ := p.Exited(); done {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Terminate asks for a clean shutdown (SIGTERM) and returns the exit error;
// if ctx ends first the process is killed and ErrTimeout returned.
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
	p.expected.Store(true)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		p.Kill()
		return fmt.Errorf("%w: %s did not stop after SIGTERM", ErrTimeout, p.Name)
	}
}

// Wait waits for the process to exit and returns its exit error.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("%w: %s still running: %w", ErrTimeout, p.Name, ctx.Err())
	}
}

// LogTail returns the last n bytes of the process log.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// exitedWithError reports whether err is a non-zero exit (not a signal).
func exitedWithError(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() > 0
}

package chaos

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/child"
)

// Process is one running grbd member process (a child.Process). Its stderr
// and stdout go to a log file. The process counts as started at its first
// "listening ..." or "ready ..." line on stdout (a data node prints
// "listening nbd://..." once its export accepts connections and
// "ready nbd://..." whenever it starts serving as primary; a witness prints
// "ready witness NAME"); the "ready" lines are collected.
type Process struct {
	*child.Process

	// expected is set when the harness ends the process (Kill, Terminate)
	// or expects it to fail (ExpectExit): any other exit is a crash.
	expected atomic.Bool
	// acceptExit, when set, judges an exit the harness did not ask for
	// from the process's log: true is an exit the fault explains.
	acceptExit atomic.Pointer[func(logTail string) bool]

	mu    sync.Mutex
	ready []string
}

// startProcess runs bin with args; the child dies with the test process
// (Pdeathsig) so a crashed test leaves nothing behind.
func startProcess(name, bin string, args, env []string, logPath string) (*Process, error) {
	p := &Process{}
	cp, err := child.Start(child.Spec{
		Name: name, Path: bin, Args: args, Env: env, Log: logPath,
		Started: []string{"listening ", "ready "},
		OnLine: func(line string) {
			if uri, ok := strings.CutPrefix(line, "ready "); ok {
				p.mu.Lock()
				p.ready = append(p.ready, uri)
				p.mu.Unlock()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	p.Process = cp
	return p, nil
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
		if healthURL != "" && healthy(ctx, healthURL) {
			return nil
		}
		select {
		case <-p.Started():
			return nil
		case <-p.Done():
			return p.WaitStarted(ctx) // ErrExited with the log's tail
		case <-ctx.Done():
			return p.WaitStarted(ctx) // ErrTimeout
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

// ExpectExit marks an exit of the process as intended (a node that must
// refuse to start).
func (p *Process) ExpectExit() { p.expected.Store(true) }

// AcceptExitIf marks an exit of the process as intended when accept, given
// its log, says the injected fault explains it (a node that stops because
// its disk filled); any other exit is still a crash.
func (p *Process) AcceptExitIf(accept func(logTail string) bool) { p.acceptExit.Store(&accept) }

// Crashed reports whether the process exited without the harness asking,
// and the last lines of its log (a panic, say).
func (p *Process) Crashed() (bool, string) {
	done, _ := p.Exited()
	if !done || p.expected.Load() {
		return false, ""
	}
	if accept := p.acceptExit.Load(); accept != nil && (*accept)(p.LogTail(1<<20)) {
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
	p.Process.Kill()
}

// Terminate asks for a clean shutdown (SIGTERM) and returns the exit error;
// if ctx ends first the process is killed and ErrTimeout returned.
func (p *Process) Terminate(ctx context.Context) error {
	p.expected.Store(true)
	return p.Process.Terminate(ctx)
}

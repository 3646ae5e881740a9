package child

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func startSh(t *testing.T, script string, started []string, onLine func(string)) *Process {
	t.Helper()
	p, err := Start(Spec{
		Name: "sh", Path: "/bin/sh", Args: []string{"-c", script},
		Log: filepath.Join(t.TempDir(), "sh.log"), Started: started, OnLine: onLine,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestStartedAtMatchingLineAfterOnLine(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	p := startSh(t, "echo hello; echo ready nbd://x; exec sleep 60", []string{"listening ", "ready "}, func(l string) {
		mu.Lock()
		lines = append(lines, l)
		mu.Unlock()
	})
	if err := p.WaitStarted(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := p.StartLine(); got != "ready nbd://x" {
		t.Fatalf("StartLine = %q", got)
	}
	mu.Lock()
	seen := append([]string(nil), lines...)
	mu.Unlock()
	if len(seen) < 2 || seen[0] != "hello" || seen[1] != "ready nbd://x" {
		t.Fatalf("OnLine saw %q before the start line closed Started", seen)
	}
	if err := p.Terminate(ctxFor(t, 10*time.Second)); err == nil || ExitedWithError(err) {
		t.Fatalf("Terminate of sleep = %v, want a signal exit", err)
	}
	if !strings.Contains(p.LogTail(4096), "stdout: hello") {
		t.Fatalf("log lacks stdout lines:\n%s", p.LogTail(4096))
	}
}

func TestExitBeforeStartIsErrExited(t *testing.T) {
	p := startSh(t, "echo oops >&2; exit 3", []string{"ready "}, nil)
	err := p.WaitStarted(ctxFor(t, 10*time.Second))
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("WaitStarted = %v, want ErrExited with the log tail", err)
	}
	_, exitErr := p.Exited()
	if !ExitedWithError(exitErr) {
		t.Fatalf("exit 3 not seen as an error exit: %v", exitErr)
	}
}

func TestNotStartedIsErrTimeout(t *testing.T) {
	p := startSh(t, "echo nothing; exec sleep 60", []string{"ready "}, nil)
	if err := p.WaitStarted(ctxFor(t, 200*time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitStarted = %v, want ErrTimeout", err)
	}
}

func TestAnyLineStartsWithoutPrefixes(t *testing.T) {
	p := startSh(t, "echo first; exec sleep 60", nil, nil)
	if err := p.WaitStarted(ctxFor(t, 10*time.Second)); err != nil || p.StartLine() != "first" {
		t.Fatalf("WaitStarted = %v, StartLine %q", err, p.StartLine())
	}
}

// A paused process cannot act on SIGTERM: Terminate continues it first.
func TestTerminateWakesAPausedProcess(t *testing.T) {
	p := startSh(t, "trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done", nil, nil)
	if err := p.WaitStarted(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := p.Terminate(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("Terminate of a paused process = %v", err)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, ErrExited) {
		t.Fatalf("Signal after exit = %v, want ErrExited", err)
	}
}

func TestTerminateKillsAfterTheDeadline(t *testing.T) {
	p := startSh(t, "trap '' TERM; echo up; while :; do sleep 0.05; done", nil, nil)
	if err := p.WaitStarted(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := p.Terminate(ctxFor(t, 300*time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Terminate = %v, want ErrTimeout", err)
	}
	if done, _ := p.Exited(); !done {
		t.Fatal("process still running after Terminate's kill")
	}
}

func TestWaitTimesOut(t *testing.T) {
	p := startSh(t, "exec sleep 60", nil, nil)
	if err := p.Wait(ctxFor(t, 100*time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Wait = %v, want ErrTimeout", err)
	}
	p.Kill()
	if done, _ := p.Exited(); !done {
		t.Fatal("Kill returned before the exit")
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(Spec{Name: "x", Path: "/nonexistent/prog"}); err == nil {
		t.Fatal("Start of a missing program succeeded")
	}
	if _, err := Start(Spec{Name: "x", Path: "/bin/true", Log: "/nonexistent/dir/x.log"}); err == nil {
		t.Fatal("Start with an unwritable log succeeded")
	}
}

func TestTerminateAllEndsEveryProcess(t *testing.T) {
	a := startSh(t, "echo up; exec sleep 60", nil, nil)
	b := startSh(t, "trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done", nil, nil)
	for _, p := range []*Process{a, b} {
		if err := p.WaitStarted(ctxFor(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	errs := TerminateAll(ctxFor(t, 10*time.Second), a, b)
	if errs[0] == nil || errs[1] != nil {
		t.Fatalf("TerminateAll = %v, want [signal exit, clean exit]", errs)
	}
}

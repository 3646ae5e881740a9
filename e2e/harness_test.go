// Package e2e holds grbd's end-to-end tests: the real grbd binary as separate
// processes, driven by real clients (fio with ioengine=nbd, libnbd tools, the
// Linux FUSE + loop + ext4 stack). Tests skip with a clear message when a
// required program or privilege is missing; `make test` installs the programs.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/child"
	"github.com/grbd/grbd/internal/freeport"
	"github.com/stretchr/testify/require"
)

// Parallel tests: a test whose members take every port from freeport
// (unique per process) and keep all state in t.TempDir calls t.Parallel,
// so that two such tests share the two cores (each is mostly waiting:
// about a third of a core). Tests stay serial when they change host state
// (nft rules, FUSE mounts, loop devices), take ports from a range
// (`grbd local --base-port`), measure speed (the benchmark smoke run) or
// run the fault suite; Go runs every serial test before the parallel ones.

// grbdBin is the binary under test, built once by TestMain.
var grbdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "grbd-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	grbdBin = filepath.Join(dir, "grbd")
	build := exec.Command("go", "build", "-o", grbdBin, "../cmd/grbd")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building grbd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireTools skips the test when a program it drives is not installed.
func requireTools(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			if _, err2 := exec.LookPath("/usr/sbin/" + p); err2 == nil {
				continue
			}
			t.Skipf("needs %s, which is not installed (run `make deps` as root)", p)
		}
	}
}

// localPorts picks ports for `grbd local` below the ephemeral range, where
// no outgoing connection can take one between the pick and the bind: the
// members' base port, and the NBD and proxy ports (a local cluster binds
// the ports after each of these too).
func localPorts(t *testing.T) (nbd, base, proxy int) {
	t.Helper()
	base = 20000 + freeport.LoopbackPort(t)%10000 // 20000-29999; the cluster uses a few dozen
	return base + 500, base, base + 600
}

// clusterConfig writes a config for n data nodes (n0, n1, ...) under dir and
// returns its path; with two data nodes it adds a witness w, so that any one
// member may fail (three data nodes need none).
func clusterConfig(t *testing.T, dir string, nodes int, size string, extra string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: e2e\ndevice:\n  size: %s\njournal:\n  max-size: 64MiB\n  segment-size: 4MiB\n%s", size, extra)
	if !strings.Contains(extra, "quorum:") {
		// Tolerant timings: the tests run next to fio and other tests on two
		// cores, where a 250 ms lease lapses now and then.
		b.WriteString("quorum:\n  lease: 600ms\n  failover-timeout: 600ms\n")
	}
	b.WriteString("nodes:\n")
	for i := 0; i < nodes; i++ {
		fmt.Fprintf(&b, "  - name: n%d\n    address: 127.0.0.1:%d\n    nbd: 127.0.0.1:%d\n    admin: 127.0.0.1:%d\n    data-dir: n%d\n",
			i, freeport.LoopbackPort(t), freeport.LoopbackPort(t), freeport.LoopbackPort(t), i)
	}
	if nodes == 2 {
		fmt.Fprintf(&b, "witness:\n  name: w\n  address: 127.0.0.1:%d\n  admin: 127.0.0.1:%d\n  data-dir: w\n", freeport.LoopbackPort(t), freeport.LoopbackPort(t))
	}
	p := filepath.Join(dir, "grbd.yaml")
	require.NoError(t, os.WriteFile(p, []byte(b.String()), 0o644))
	return p
}

// proc is a grbd process under test.
type proc struct {
	*child.Process // Log is the path of its log file
	t              *testing.T
	name           string

	mu    sync.Mutex
	ready []string // URIs printed on "ready nbd://" lines, in order
	lines []string // every stdout line
}

// stdout returns the lines printed so far.
func (p *proc) stdout() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// startGrbd runs `grbd args...` and waits for its first "ready nbd://" line
// (a serving primary).
func startGrbd(t *testing.T, logDir, name string, args ...string) *proc {
	t.Helper()
	return startMember(t, logDir, name, "ready ", args...)
}

// startMember runs `grbd args...` and waits for its first stdout line that
// starts with wait ("ready ", "listening ", "ready witness", "member ").
func startMember(t *testing.T, logDir, name, wait string, args ...string) *proc {
	t.Helper()
	return startBin(t, grbdBin, logDir, name, wait, args...)
}

// oldBinary: the members run a build from before --new-cluster (the lease
// soak's comparison with an older release).
var oldBinary bool

// startBin is startMember with another grbd binary (e.g. one built with a
// planted bug).
func startBin(t *testing.T, bin, logDir, name, wait string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name}
	if len(args) > 0 && (args[0] == "node" || args[0] == "witness") && !slices.Contains(args, "--new-cluster") && !oldBinary {
		// Tests start members one after the other, waiting for the first
		// to serve: the cluster is created without waiting for every
		// member (a missing member comes later and is counted in). Without
		// effect on a member that has state, or when others have state.
		args = append(args, "--new-cluster")
	}
	cp, err := child.Start(child.Spec{
		Name: name, Path: bin, Args: append(args, "--log-level", "debug"), Log: filepath.Join(logDir, name+".log"),
		Started: []string{wait},
		// Recorded before the line can end the start: a caller woken by
		// it reads the ready URI at once (uri).
		OnLine: p.record,
	})
	require.NoError(t, err)
	p.Process = cp
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- log of %s (last 8 KiB) ---\n%s", name, p.LogTail(8192))
			keepLog(t, p.Log, name)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.WaitStarted(ctx); err != nil {
		t.Fatalf("%s printed no %q line: %v", name, wait, err)
	}
	return p
}

// keepLog copies a failed test's member log into $GRBD_E2E_KEEP_LOGS, when
// set: the 8 KiB tail rarely reaches back to what started a failure.
func keepLog(t *testing.T, path, name string) {
	dir := os.Getenv("GRBD_E2E_KEEP_LOGS")
	if dir == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		dst := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+time.Now().Format("150405.000")+"-"+name+".log")
		err = os.WriteFile(dst, b, 0o644)
	}
	if err != nil {
		t.Logf("keeping the log of %s: %v", name, err)
	}
}

func (p *proc) record(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, line)
	if uri, ok := strings.CutPrefix(line, "ready "); ok && strings.HasPrefix(uri, "nbd://") {
		p.ready = append(p.ready, uri)
	}
}

// uri is the newest ready URI.
func (p *proc) uri() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready[len(p.ready)-1]
}

// kill9 kills the process without letting it clean up, and waits for it.
func (p *proc) kill9() { p.Kill() }

// stop asks for a clean shutdown and requires exit status 0.
func (p *proc) stop() { stopAll(p.t, p) }

// stopAll sends SIGTERM to every process at once and requires each to exit
// cleanly within 30 s.
func stopAll(t *testing.T, procs ...*proc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cps := make([]*child.Process, len(procs))
	for i, p := range procs {
		cps[i] = p.Process
	}
	for i, err := range child.TerminateAll(ctx, cps...) {
		require.NoError(t, err, "%s: clean exit within 30s of SIGTERM", procs[i].name)
	}
}

// run executes a command with a deadline and returns its combined output,
// failing the test on a non-zero exit.
func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := runErr(timeout, name, args...)
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), tail(out, 8192))
	return out
}

// runErr runs a command in a scratch directory of its own, removed after
// it (fio leaves verify state files in its working directory).
func runErr(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "grbd-e2e-run-")
	if err != nil {
		return "", fmt.Errorf("scratch directory for %s: %w", name, err)
	}
	defer os.RemoveAll(dir)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func tail(s string, n int) string { return child.Tail(s, n) }

package blockdev

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// halfOpenChildEnv makes the test binary a server for
// TestHalfOpenConnectionsMemory: its value selects the limits.
const halfOpenChildEnv = "GRBD_HALFOPEN_CHILD"

// halfOpenConns is the number of half-open connections the test holds.
const halfOpenConns = 10000

// TestHalfOpenConnectionsMemory measures a server's resident memory while
// 10k clients hold connections open in the handshake: half send nothing,
// half a partial handshake (client flags and part of an option). The server
// runs in a child process so that its VmRSS is its own. Two runs:
//
//   - default limits: at most 32 connections negotiate; the others are
//     closed at accept, so memory hardly moves;
//   - limits raised to hold all 10k: memory grows by the per-connection cost
//     of a negotiating connection, which must stay small (buffers are 4 KiB
//     until transmission).
func TestHalfOpenConnectionsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10k connections")
	}
	raiseNoFile(t, halfOpenConns+512)
	for _, mode := range []string{"default", "raised"} {
		t.Run(mode, func(t *testing.T) {
			base, loaded, held := halfOpen(t, mode)
			growth := loaded - base
			t.Logf("%s limits: server VmRSS %d KiB idle, %d KiB with %d half-open connections (%d held open by the server): +%d KiB, %.1f KiB per held connection",
				mode, base, loaded, halfOpenConns, held, growth, float64(growth)/float64(max(held, 1)))
			// The race detector's shadow memory and larger stacks cost
			// about four times as much.
			factor := int64(1)
			if raceEnabled {
				factor = 4
			}
			switch mode {
			case "default":
				require.LessOrEqual(t, held, DefaultMaxHandshakes)
				require.Less(t, growth, factor*16<<10, "KiB: memory grew although connections were refused")
			case "raised":
				require.Equal(t, halfOpenConns, held)
				require.Less(t, growth/halfOpenConns, factor*16, "KiB per half-open connection")
			}
		})
	}
}

// halfOpen starts the child server, opens the connections and returns its
// VmRSS before and with them, in KiB, and how many it holds open.
func halfOpen(t *testing.T, mode string) (base, loaded int64, held int) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHalfOpenServerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), halfOpenChildEnv+"="+mode)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	lines := bufio.NewScanner(stdout)
	var addr string
	for lines.Scan() {
		if a, ok := strings.CutPrefix(lines.Text(), "addr "); ok {
			addr = a
			break
		}
	}
	require.NotEmpty(t, addr, "child printed no address")
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	time.Sleep(200 * time.Millisecond)
	base = vmRSS(t, cmd.Process.Pid)
	partial := []byte{0, 0, 0, 3}                                // client flags: FIXED_NEWSTYLE | NO_ZEROES
	partial = append(partial, "IHAVEOPT\x00\x00\x00\x07\x00"...) // NBD_OPT_GO, length cut
	conns := make([]net.Conn, 0, halfOpenConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range halfOpenConns {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err, "connection %d", i)
		conns = append(conns, c)
		if i%2 == 1 {
			_, _ = c.Write(partial) // may fail on a connection already refused
		}
	}
	// Let the server accept and settle, then count the connections it
	// still holds: those it refused read EOF at once.
	time.Sleep(time.Second)
	loaded = vmRSS(t, cmd.Process.Pid)
	var n atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, err := io.Copy(io.Discard, c) // the greeting, if any, then EOF or timeout
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				n.Add(1)
			}
		})
	}
	wg.Wait()
	held = int(n.Load())
	return base, loaded, held
}

// TestHalfOpenServerProcess is the child of TestHalfOpenConnectionsMemory.
func TestHalfOpenServerProcess(t *testing.T) {
	mode := os.Getenv(halfOpenChildEnv)
	if mode == "" {
		t.Skip("helper process of TestHalfOpenConnectionsMemory")
	}
	raiseNoFile(t, halfOpenConns+512)
	opts := Options{HandshakeTimeout: time.Minute}
	if mode == "raised" {
		opts.MaxConnections, opts.MaxHandshakes = 2*halfOpenConns, 2*halfOpenConns
	}
	s, err := NewServer(newMemDev(1<<20), opts)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = s.Serve(ln) }()
	fmt.Printf("addr %s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent is done
	ln.Close()
}

// vmRSS reads a process's resident set size in KiB.
func vmRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(t, err)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(v)), " kB"), 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// raiseNoFile raises the soft RLIMIT_NOFILE to n (at most the hard limit);
// the test skips if the hard limit is too low.
func raiseNoFile(t *testing.T, n uint64) {
	var rl syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	if rl.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d < %d", rl.Max, n)
	}
	if rl.Cur < n {
		rl.Cur = n
		require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl))
	}
}

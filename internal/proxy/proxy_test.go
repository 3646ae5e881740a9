package proxy

import (
	"bytes"
	"context"
	"errors"
	"github.com/grbd/grbd/internal/nbdproto"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/grbd/grbd/internal/nbdclient"
	"github.com/stretchr/testify/require"
)

const testSize = 1 << 20

// startProxy runs a proxy until the test ends over a fake cluster of
// names, the first one promoted.
func startProxy(t *testing.T, hold time.Duration, names ...string) (*fakeCluster, *Proxy) {
	t.Helper()
	return startProxyWith(t, Options{HoldTimeout: hold}, names...)
}

// startProxyWith is startProxy with opts (the test's Poll and Retry).
func startProxyWith(t *testing.T, opts Options, names ...string) (*fakeCluster, *Proxy) {
	t.Helper()
	c := newFakeCluster(testSize, names...)
	c.promote(names[0])
	opts.Poll, opts.Retry = 10*time.Millisecond, 2*time.Millisecond
	p := New(c, c, opts)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, p.Connect(ctx))
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, p
}

// serve exports p with blockdev as grbd proxy does and returns a client.
func serve(t *testing.T, p *Proxy) *nbdclient.Client {
	t.Helper()
	srv, err := blockdev.NewServer(p, blockdev.Options{OrderOverlapping: true})
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(l) }()
	cli, err := nbdclient.Dial(context.Background(), l.Addr().String(), nbdclient.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close(); _ = srv.Close(); _ = l.Close() })
	return cli
}

func pattern(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// async runs f in a goroutine and returns its error channel.
func async(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func wait(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("request not answered within 10s")
		return nil
	}
}

func entered(t *testing.T, n *fakeNode) string {
	t.Helper()
	select {
	case what := <-n.entered:
		return what
	case <-time.After(5 * time.Second):
		t.Fatalf("no request reached %s", n.name)
		return ""
	}
}

// TestUnansweredWriteIsResent: a write the primary never answered (executed
// or not) is sent again to the next primary and answered with its success.
func TestUnansweredWriteIsResent(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode fakeMode
	}{
		{"executed, answer lost", modeApplyLose},
		{"never executed", modeBlackhole},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p := startProxy(t, 10*time.Second, "n0", "n1")
			c.set("n0", tc.mode, 0)
			res := async(func() error { return p.WriteAt(pattern(7, 4096), 8192, false) })
			entered(t, c.nodes["n0"])
			c.kill("n0")
			time.Sleep(20 * time.Millisecond) // held while nobody serves
			c.promote("n1")
			require.NoError(t, wait(t, res))
			require.Contains(t, c.logged(), "n1 write 8192+4096")
			got := make([]byte, 4096)
			require.NoError(t, p.ReadAt(got, 8192))
			require.Equal(t, pattern(7, 4096), got)
			st := p.Status()
			require.Equal(t, "n1", st.Primary)
			require.EqualValues(t, 1, st.Held)
			require.EqualValues(t, 1, st.Resent)
			require.EqualValues(t, 1, st.Failovers)
			require.Greater(t, st.LongestGap, 0.0)
		})
	}
}

// TestHoldTimeout: with no primary a request waits the hold timeout, then
// fails with EIO; one that arrives while none serves is held and answered
// once a primary serves.
func TestHoldTimeout(t *testing.T) {
	c, p := startProxy(t, 150*time.Millisecond, "n0", "n1")
	c.kill("n0")
	start := time.Now()
	err := p.WriteAt(pattern(1, 512), 0, false)
	require.ErrorIs(t, err, syscall.EIO)
	require.ErrorIs(t, err, ErrNoPrimary)
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	require.EqualValues(t, 1, p.Status().Expired)
	require.Empty(t, p.Status().Primary)

	res := async(func() error { return p.ReadAt(make([]byte, 512), 0) })
	time.Sleep(50 * time.Millisecond)
	c.promote("n1")
	require.NoError(t, wait(t, res))
}

// TestNodeErrors: errors about the request go to the client at once; EIO,
// EPERM and ESHUTDOWN from a node that stopped serving are retried on the
// next primary; the same serving primary saying it twice is believed.
func TestNodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		errno    nbdclient.Errno
		failover bool // n1 takes over while n0 answers errno
		want     error
		tries    int // requests n0 answered... n0 executes none
	}{
		{"EINVAL passed on", nbdclient.EINVAL, true, syscall.EINVAL, 0},
		{"ENOSPC passed on", nbdclient.ENOSPC, true, syscall.ENOSPC, 0},
		{"EIO from a fenced primary retried", nbdclient.EIO, true, nil, 1},
		{"EPERM from a demoted primary retried", nbdclient.EPERM, true, nil, 1},
		{"ESHUTDOWN retried", nbdclient.ESHUTDOWN, true, nil, 1},
		{"EIO twice from the serving primary passed on", nbdclient.EIO, false, syscall.EIO, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p := startProxy(t, 5*time.Second, "n0", "n1")
			c.set("n0", modeErrno, tc.errno)
			if tc.failover {
				c.mu.Lock()
				c.primary = "" // n0 no longer serves: status says so
				c.mu.Unlock()
				go func() { time.Sleep(30 * time.Millisecond); c.promote("n1") }()
			}
			err := p.WriteAt(pattern(3, 4096), 0, false)
			if tc.want == nil {
				require.NoError(t, err)
				require.Contains(t, c.logged(), "n1 write 0+4096")
			} else {
				require.ErrorIs(t, err, tc.want)
			}
			require.EqualValues(t, tc.tries, p.Status().Held)
		})
	}
}

// TestFlushAfterResentWrites: writes in flight at the loss of the primary
// and a FLUSH sent behind them: the new primary gets the writes again
// before the FLUSH (the e2e test checks the order of the answers).
func TestFlushAfterResentWrites(t *testing.T) {
	c, p := startProxy(t, 10*time.Second, "n0", "n1")
	cli := serve(t, p)
	ctx := context.Background()
	c.set("n0", modeApplyLose, 0)
	var writes []<-chan error
	for i := range 4 {
		writes = append(writes, async(func() error { return cli.WriteAt(ctx, pattern(byte(i+1), 4096), int64(i)*4096, 0) }))
		entered(t, c.nodes["n0"])
	}
	flush := async(func() error { return cli.Flush(ctx) })
	time.Sleep(30 * time.Millisecond) // the FLUSH is queued behind the writes
	c.kill("n0")
	c.promote("n1")
	require.NoError(t, wait(t, flush))
	for _, w := range writes {
		require.NoError(t, wait(t, w))
	}
	var n1 []string
	for _, l := range c.logged() {
		if l[:2] == "n1" {
			n1 = append(n1, l)
		}
	}
	require.Len(t, n1, 5, "4 writes re-sent and the flush: %v", n1)
	require.Equal(t, "n1 flush", n1[4], "the FLUSH went to n1 before the writes it covers: %v", n1)
}

// TestOverlapKeepsClientOrder: a write overlapping an earlier unanswered
// one is not sent before that one is answered, so the re-sent earlier write
// cannot overwrite it on the new primary.
func TestOverlapKeepsClientOrder(t *testing.T) {
	c, p := startProxy(t, 10*time.Second, "n0", "n1")
	cli := serve(t, p)
	ctx := context.Background()
	c.set("n0", modeApplyLose, 0)
	first := async(func() error { return cli.WriteAt(ctx, pattern('A', 8192), 0, 0) })
	entered(t, c.nodes["n0"])
	second := async(func() error { return cli.WriteAt(ctx, pattern('B', 4096), 4096, 0) })
	other := async(func() error { return cli.WriteAt(ctx, pattern('C', 4096), 65536, 0) })
	require.Equal(t, "write 65536+4096", entered(t, c.nodes["n0"]), "a disjoint write goes on")
	select {
	case what := <-c.nodes["n0"].entered:
		t.Fatalf("overlapping write sent while the earlier one is unanswered: %s", what)
	case <-time.After(50 * time.Millisecond):
	}
	c.kill("n0")
	c.promote("n1")
	for _, ch := range []<-chan error{first, second, other} {
		require.NoError(t, wait(t, ch))
	}
	got := make([]byte, 8192)
	require.NoError(t, cli.ReadAt(ctx, got, 0))
	require.Equal(t, append(pattern('A', 4096), pattern('B', 4096)...), got)
	log := c.logged()
	require.Less(t, slices.Index(log, "n1 write 0+8192"), slices.Index(log, "n1 write 4096+4096"), "%v", log)
}

// TestFollowsPrimaryCutOff: the primary stops answering (cut off, not
// closed) and another node serves in a new epoch: Run notices, drops the
// hung connection and the request goes to the new primary.
func TestFollowsPrimaryCutOff(t *testing.T) {
	c, p := startProxy(t, 10*time.Second, "n0", "n1")
	c.set("n0", modeBlackhole, 0)
	res := async(func() error { return p.WriteAt(pattern(9, 512), 512, true) })
	entered(t, c.nodes["n0"])
	c.promote("n1")
	require.NoError(t, wait(t, res))
	require.Contains(t, c.logged(), "n1 write 512+512")
	require.Equal(t, "n1", p.Status().Primary)
}

// TestFollowsPrimaryPastAHungMember: the old primary hangs (its disk) and
// never answers, so finding the new primary takes the whole locate timeout;
// the proxy must still connect to it (it dialled with the locate's expired
// context, and failed, until the hung node died).
func TestFollowsPrimaryPastAHungMember(t *testing.T) {
	c, p := startProxyWith(t, Options{HoldTimeout: 10 * time.Second, LocateTimeout: 50 * time.Millisecond}, "n0", "n1")
	c.set("n0", modeBlackhole, 0)
	res := async(func() error { return p.WriteAt(pattern(7, 512), 1024, true) })
	entered(t, c.nodes["n0"])
	c.mu.Lock()
	c.slowLocate = true
	c.mu.Unlock()
	c.promote("n1")
	require.NoError(t, wait(t, res))
	require.Contains(t, c.logged(), "n1 write 1024+512")
	require.Equal(t, "n1", p.Status().Primary)
}

// TestSizeFollowsResize: a grown device is advertised to new connections.
func TestSizeFollowsResize(t *testing.T) {
	c, p := startProxy(t, time.Second, "n0")
	require.EqualValues(t, testSize, p.Size())
	c.mu.Lock()
	c.data = append(c.data, make([]byte, testSize)...)
	c.mu.Unlock()
	require.Eventually(t, func() bool { return p.Size() == 2*testSize }, 5*time.Second, 5*time.Millisecond)
	cli := serve(t, p)
	require.EqualValues(t, 2*testSize, cli.Size())
}

// TestTrimAndZeroes go through as WRITE_ZEROES.
func TestTrimAndZeroes(t *testing.T) {
	c, p := startProxy(t, time.Second, "n0")
	cli := serve(t, p)
	ctx := context.Background()
	require.NoError(t, cli.WriteAt(ctx, pattern(5, 8192), 0, nbdproto.CmdFlagFUA))
	require.NoError(t, cli.Trim(ctx, 0, 4096, 0))
	require.NoError(t, cli.WriteZeroes(ctx, 4096, 2048, 0))
	got := make([]byte, 8192)
	require.NoError(t, cli.ReadAt(ctx, got, 0))
	require.Equal(t, append(make([]byte, 6144), pattern(5, 2048)...), got)
	require.Contains(t, c.logged(), "n0 zero 0+4096")
	require.False(t, errors.Is(cli.Err(), nbdclient.ErrConnLost))
}

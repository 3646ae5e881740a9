package blockdev

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/metrics"
	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/stretchr/testify/require"
)

// Two READs held in the device are answered in the order the device
// releases them, not the order they were sent.
func TestRepliesOutOfOrder(t *testing.T) {
	dev := newRandDev(1 << 20)
	g := newGate(t)
	dev.beforeRead = func(off int64, _ int) error { g.wait(off); return nil }
	_, addr := startServer(t, dev, Options{})
	c, _ := dialGo(t, addr, true)

	c.request(cmdRead, 0, 100, 0, 4096, nil)
	c.request(cmdRead, 0, 200, 8192, 4096, nil)
	g.awaitEntered(t, 0, 8192) // both in flight at once
	readLen := map[uint64]int{100: 4096, 200: 4096}

	g.open(8192)
	cookie, errno, data := c.reply(readLen)
	require.Equal(t, uint64(200), cookie, "second request released first must be answered first")
	require.Zero(t, errno)
	require.Equal(t, dev.bytesAt(8192, 4096), data)

	g.open(0)
	cookie, errno, data = c.reply(readLen)
	require.Equal(t, uint64(100), cookie)
	require.Zero(t, errno)
	require.Equal(t, dev.bytesAt(0, 4096), data)
}

// gatedWrites serves a recording device whose writes wait at g until the
// test opens their offset, and dials it: the FLUSH tests hold writes in
// flight this way.
func gatedWrites(t *testing.T) (*memDev, *gate, *rawClient) {
	t.Helper()
	dev := newMemDev(1 << 20)
	dev.record = true
	g := newGate(t)
	dev.beforeWrite = func(off int64, _ int, _ bool) error { g.wait(off); return nil }
	_, addr := startServer(t, dev, Options{})
	c, _ := dialGo(t, addr, true)
	return dev, g, c
}

// FLUSH must not reach the device before the writes received ahead of it
// have completed, and its reply must follow theirs.
func TestFlushWaitsForEarlierWrites(t *testing.T) {
	dev, g, c := gatedWrites(t)

	c.request(cmdWrite, 0, 1, 0, 4096, bytes.Repeat([]byte{1}, 4096))
	c.request(cmdWrite, 0, 2, 4096, 4096, bytes.Repeat([]byte{2}, 4096))
	g.awaitEntered(t, 0, 4096)
	c.request(nbdproto.CmdFlush, 0, 3, 0, 0, nil)

	// Give a broken server every chance to flush early.
	time.Sleep(100 * time.Millisecond)
	require.Zero(t, dev.flushes.Load(), "Flush called while earlier writes were in flight")

	g.open(4096)
	c.replyOK(2, nil)
	time.Sleep(50 * time.Millisecond)
	require.Zero(t, dev.flushes.Load(), "Flush called while an earlier write was in flight")

	g.open(0)
	order := c.replyCookies(2)
	require.Equal(t, []uint64{1, 3}, order, "FLUSH answered before the write it covers")
	require.Equal(t, []string{
		"write off=4096 len=4096 fua=false",
		"write off=0 len=4096 fua=false",
		"flush",
	}, dev.eventLog())
}

// A write received after a FLUSH does not delay it (no starvation under a
// steady write stream), and the FLUSH still covers earlier completed writes.
func TestFlushDoesNotWaitForLaterWrites(t *testing.T) {
	dev, g, c := gatedWrites(t)

	c.request(cmdWrite, 0, 9, 0, 4096, bytes.Repeat([]byte{1}, 4096)) // before the FLUSH
	g.awaitEntered(t, 0)
	c.request(nbdproto.CmdFlush, 0, 10, 0, 0, nil)
	c.request(cmdWrite, 0, 11, 8192, 4096, bytes.Repeat([]byte{2}, 4096)) // after it
	g.awaitEntered(t, 8192)

	g.open(0)
	order := c.replyCookies(2)
	// Both complete while write 11 is still held; their relative order is
	// free (the flush is released the moment write 9 completes).
	require.ElementsMatch(t, []uint64{9, 10}, order, "FLUSH waited for a later write")
	g.open(8192)
	c.replyOK(11, nil)
	require.Equal(t, []string{
		"write off=0 len=4096 fua=false",
		"flush",
		"write off=8192 len=4096 fua=false",
	}, dev.eventLog())
}

// FUA reaches WriteAt and WriteZeroes; TRIM and WRITE_ZEROES reach
// WriteZeroes and read back as zeroes.
func TestCommandsReachDevice(t *testing.T) {
	for _, tc := range []struct {
		name    string
		typ     uint16
		flags   nbdproto.CmdFlags
		payload bool
		event   string
		zeroed  bool
	}{
		{"write", cmdWrite, 0, true, "write off=4096 len=8192 fua=false", false},
		{"write fua", cmdWrite, nbdproto.CmdFlagFUA, true, "write off=4096 len=8192 fua=true", false},
		{"trim", nbdproto.CmdTrim, 0, false, "zero off=4096 len=8192 fua=false", true},
		{"trim fua", nbdproto.CmdTrim, nbdproto.CmdFlagFUA, false, "zero off=4096 len=8192 fua=true", true},
		{"write zeroes", nbdproto.CmdWriteZeroes, 0, false, "zero off=4096 len=8192 fua=false", true},
		{"write zeroes no hole", nbdproto.CmdWriteZeroes, nbdproto.CmdFlagNoHole, false, "zero off=4096 len=8192 fua=false", true},
		{"write zeroes fua no hole", nbdproto.CmdWriteZeroes, nbdproto.CmdFlagFUA | nbdproto.CmdFlagNoHole, false, "zero off=4096 len=8192 fua=true", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newRandDev(1 << 20)
			dev.record = true
			_, addr := startServer(t, dev, Options{})
			c, x := dialGo(t, addr, true)
			require.Equal(t, uint16(0x1|nbdproto.FlagSendFlush|nbdproto.FlagSendFUA|nbdproto.FlagSendTrim|nbdproto.FlagSendWriteZeroes|0x100), x.flags)

			var payload []byte
			if tc.payload {
				payload = bytes.Repeat([]byte{0xEE}, 8192)
			}
			errno, _ := c.do(tc.typ, tc.flags, 4096, 8192, payload)
			require.Zero(t, errno)
			require.Equal(t, []string{tc.event}, dev.eventLog())
			want := payload
			if tc.zeroed {
				want = make([]byte, 8192)
			}
			_, data := c.do(cmdRead, 0, 4096, 8192, nil)
			require.Equal(t, want, data)

			errno, _ = c.do(nbdproto.CmdFlush, nbdproto.CmdFlagFUA, 0, 0, nil) // FUA is accepted on any command
			require.Zero(t, errno)
			require.Equal(t, int64(1), dev.flushes.Load())
		})
	}
}

// Device errors are sent as their NBD error and the connection goes on.
func TestDeviceErrorMapping(t *testing.T) {
	var fail atomic.Pointer[error]
	dev := newRandDev(1 << 20)
	dev.beforeWrite = func(int64, int, bool) error {
		if p := fail.Load(); p != nil {
			return *p
		}
		return nil
	}
	dev.beforeRead = func(int64, int) error {
		if p := fail.Load(); p != nil {
			return *p
		}
		return nil
	}
	s, addr := startServer(t, dev, Options{})
	c, _ := dialGo(t, addr, true)
	for _, tc := range []struct {
		name  string
		err   error
		errno uint32
	}{
		{"EIO", syscall.EIO, nbdproto.EIO},
		{"wrapped ENOSPC", fmt.Errorf("journal: append: %w", syscall.ENOSPC), nbdproto.ENOSPC},
		{"EDQUOT is ENOSPC", syscall.EDQUOT, nbdproto.ENOSPC},
		{"EPERM", syscall.EPERM, nbdproto.EPERM},
		{"EROFS is EPERM", syscall.EROFS, nbdproto.EPERM},
		{"EINVAL", syscall.EINVAL, nbdproto.EINVAL},
		{"ESHUTDOWN", syscall.ESHUTDOWN, nbdproto.ESHUTDOWN},
		{"ENOTSUP is EIO", syscall.ENOTSUP, nbdproto.EIO},
		{"plain error is EIO", errors.New("replicator: no quorum"), nbdproto.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fail.Store(&tc.err)
			errno, data := c.do(cmdRead, 0, 0, 4096, nil)
			require.Equal(t, tc.errno, errno)
			require.Nil(t, data, "failed READ must not carry data")
			errno, _ = c.do(cmdWrite, 0, 0, 512, make([]byte, 512))
			require.Equal(t, tc.errno, errno)
			fail.Store(nil)
			errno, data = c.do(cmdRead, 0, 0, 4096, nil)
			require.Zero(t, errno)
			require.Equal(t, dev.bytesAt(0, 4096), data)
		})
	}
	require.Equal(t, uint64(18), s.Stats().DeviceErrors)
}

// NBD_CMD_DISC: requests already sent are still executed and answered, then
// the connection closes.
func TestDiscFinishesInFlightRequests(t *testing.T) {
	dev := newRandDev(1 << 20)
	g := newGate(t)
	dev.beforeWrite = func(off int64, _ int, _ bool) error { g.wait(off); return nil }
	_, addr := startServer(t, dev, Options{})
	c, _ := dialGo(t, addr, true)

	want := bytes.Repeat([]byte{9}, 4096)
	c.request(cmdWrite, 0, 5, 0, 4096, want)
	g.awaitEntered(t, 0)
	c.request(cmdDisc, 0, 6, 0, 0, nil)
	time.Sleep(50 * time.Millisecond)
	g.open(0)
	c.replyOK(5, nil)
	c.expectClosed()
	require.Equal(t, want, dev.bytesAt(0, 4096))
}

// Close stops reading, waits for requests in flight, answers them and
// closes the connection.
func TestCloseWaitsForInFlightRequests(t *testing.T) {
	dev := newRandDev(1 << 20)
	g := newGate(t)
	dev.beforeRead = func(off int64, _ int) error { g.wait(off); return nil }
	s, err := NewServer(dev, Options{})
	require.NoError(t, err)
	l := listen(t)
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	c, _ := dialGo(t, l.Addr().String(), true)

	c.request(cmdRead, 0, 1, 0, 4096, nil)
	g.awaitEntered(t, 0)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a request was in flight")
	case <-time.After(100 * time.Millisecond):
	}
	g.open(0)
	require.Equal(t, dev.bytesAt(0, 4096), c.replyOK(1, map[uint64]int{1: 4096}))
	c.expectClosed()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-timeout():
		t.Fatal("Close did not return")
	}
	require.ErrorIs(t, <-served, ErrServerClosed)
	require.ErrorIs(t, s.Serve(l), ErrServerClosed)
	require.Zero(t, s.Stats().ActiveConnections)
}

// holdReads makes dev's reads wait until free is called, counting the reads
// held at once (cur) and the most ever held (peak).
func holdReads(t *testing.T, dev *memDev) (cur, peak *atomic.Int32, free func()) {
	t.Helper()
	cur, peak = new(atomic.Int32), new(atomic.Int32)
	release := make(chan struct{})
	var once sync.Once
	free = func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // a failing test must not hang in Server.Close
	dev.beforeRead = func(int64, int) error {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		cur.Add(-1)
		return nil
	}
	return cur, peak, free
}

// At most MaxInFlight requests of a connection reach the device at once.
func TestMaxInFlightBoundsConcurrency(t *testing.T) {
	const maxInFlight, sent = 4, 12
	dev := newRandDev(1 << 20)
	cur, peak, free := holdReads(t, dev)
	_, addr := startServer(t, dev, Options{MaxInFlight: maxInFlight})
	c, _ := dialGo(t, addr, true)
	readLen := map[uint64]int{}
	for i := range uint64(sent) {
		c.request(cmdRead, 0, i, i*4096, 4096, nil)
		readLen[i] = 4096
	}
	require.Eventually(t, func() bool { return cur.Load() == maxInFlight }, testTimeout, tick)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, int32(maxInFlight), peak.Load())
	free()
	seen := map[uint64]bool{}
	for range sent {
		cookie, errno, data := c.reply(readLen)
		require.Zero(t, errno)
		require.Equal(t, dev.bytesAt(int64(cookie)*4096, 4096), data)
		seen[cookie] = true
	}
	require.Len(t, seen, sent)
	require.Equal(t, int32(maxInFlight), peak.Load())
}

// MaxInFlightBytes bounds the payload a connection holds: two 64 KiB reads
// do not fit a 96 KiB budget together.
func TestMaxInFlightBytesBoundsPayload(t *testing.T) {
	dev := newRandDev(1 << 20)
	cur, peak, free := holdReads(t, dev)
	_, addr := startServer(t, dev, Options{MaxBlockSize: 64 << 10, MaxInFlightBytes: 96 << 10})
	c, _ := dialGo(t, addr, true)
	c.request(cmdRead, 0, 1, 0, 64<<10, nil)
	c.request(cmdRead, 0, 2, 64<<10, 64<<10, nil)
	require.Eventually(t, func() bool { return cur.Load() == 1 }, testTimeout, tick)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, int32(1), peak.Load(), "second read admitted over the byte budget")
	free()
	for range 2 {
		_, errno, _ := c.reply(map[uint64]int{1: 64 << 10, 2: 64 << 10})
		require.Zero(t, errno)
	}
}

func TestStatsCountCommandsAndErrors(t *testing.T) {
	dev := newMemDev(1 << 20)
	s, addr := startServer(t, dev, Options{})
	c, _ := dialGo(t, addr, true)
	c.do(cmdWrite, 0, 0, 4096, make([]byte, 4096))
	c.do(cmdRead, 0, 0, 8192, nil)
	c.do(nbdproto.CmdFlush, 0, 0, 0, nil)
	c.do(nbdproto.CmdTrim, 0, 0, 4096, nil)
	c.do(nbdproto.CmdWriteZeroes, 0, 0, 4096, nil)
	c.do(cmdRead, 0, 1<<20, 4096, nil)               // EINVAL
	c.do(cmdWrite, 0, 1<<20, 512, make([]byte, 512)) // ENOSPC
	st := s.Stats()
	// One successful READ, WRITE and FLUSH each in the latency histograms.
	require.Equal(t, uint64(1), st.ReadLatency.Count())
	require.Equal(t, uint64(1), st.WriteLatency.Count())
	require.Equal(t, uint64(1), st.FlushLatency.Count())
	require.Positive(t, st.WriteLatency.Sum)
	st.ReadLatency, st.WriteLatency, st.FlushLatency = metrics.HistogramSnapshot{}, metrics.HistogramSnapshot{}, metrics.HistogramSnapshot{}
	require.Equal(t, Stats{
		Connections: 1, ActiveConnections: 1,
		Reads: 1, Writes: 1, Flushes: 1, Trims: 1, WriteZeroes: 1,
		BytesRead: 8192, BytesWritten: 4096,
		Errors: 2, ErrorsByKind: ErrorCounts{Invalid: 1, NoSpace: 1},
	}, st)
}

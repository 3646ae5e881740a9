package node

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grbd/grbd/internal/vfs"
)

// hangingDisk is the OS file system whose writes to journal segments wait,
// while hang is set, until release is closed.
func hangingDisk(hang *atomic.Bool, release <-chan struct{}) vfs.FS {
	return vfs.WithErrors(vfs.Default, func(op vfs.Op, name string) error {
		if op == vfs.OpWrite && hang.Load() && strings.HasSuffix(name, ".seg") {
			<-release
		}
		return nil
	})
}

// A disk that hangs is seen: status answers (a journal write that hangs
// holds the journal's lock; status shows the figures read before it) and
// names the operation, the metric grows; once the disk answers the write
// completes and the stall is gone.
func TestHungDiskIsSeen(t *testing.T) {
	t.Parallel()
	var hang atomic.Bool
	release := make(chan struct{})
	c := newTestCluster(t, 1, false, "", Options{faults: &faultHooks{disk: hangingDisk(&hang, release)}})
	p := c.primary()
	writeBlocks(t, p, 0, 4)
	before := p.Status()
	require.Nil(t, before.DiskStall)
	require.NotZero(t, before.Journal.LastSeq)

	hang.Store(true)
	wrote := make(chan error, 1)
	go func() { wrote <- p.dev.WriteAt(block(9), 9*4096, true) }()

	var unblock sync.Once // the test ends either way
	defer unblock.Do(func() { close(release) })
	status := func() Status { // t.Error, not Fatal: Eventually calls it on a goroutine of its own
		got := make(chan Status, 1)
		go func() { got <- p.Status() }()
		select {
		case st := <-got:
			return st
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<22)
			buf = buf[:runtime.Stack(buf, true)]
			for _, g := range strings.Split(string(buf), "\n\n") {
				if strings.Contains(g, "Status") {
					t.Log(g)
				}
			}
			t.Error("status blocked behind the hung write")
			unblock.Do(func() { close(release) })
			return Status{DiskStall: &DiskStall{}}
		}
	}
	require.Eventually(t, func() bool { return status().DiskStall != nil }, 20*time.Second, 50*time.Millisecond)
	st := status()
	require.Equal(t, "write", st.DiskStall.Op)
	require.Equal(t, ".seg", filepath.Ext(st.DiskStall.File))
	require.GreaterOrEqual(t, st.DiskStall.Seconds, diskStallShown.Seconds())
	require.Equal(t, before.Journal.LastSeq, st.Journal.LastSeq, "the figures read before the hang")
	status() // the hung read is older than journalWait now: status does not wait for it again
	asked := time.Now()
	require.Equal(t, before.Journal.LastSeq, status().Journal.LastSeq)
	require.Less(t, time.Since(asked), time.Second, "status waited again for the journal read that hangs")
	select {
	case err := <-wrote:
		t.Fatalf("the write returned while its disk hangs: %v", err)
	default:
	}
	rec := httptest.NewRecorder()
	p.serveMetrics(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Regexp(t, `(?m)^grbd_disk_stall_seconds [1-9]`, rec.Body.String())

	hang.Store(false)
	unblock.Do(func() { close(release) })
	require.NoError(t, <-wrote)
	require.Eventually(t, func() bool { return status().DiskStall == nil }, 10*time.Second, 20*time.Millisecond)
	require.Greater(t, status().Journal.LastSeq, before.Journal.LastSeq)
}

// watchDisk warns once about an operation that has not returned, and says
// when the disk answered.
func TestWatchDiskLogsOnce(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	disk := vfs.Watch(vfs.WithErrors(vfs.NewMem(), func(op vfs.Op, _ string) error {
		if op == vfs.OpSync {
			<-release
		}
		return nil
	}))
	logged := &logRing{size: 100}
	n := &Node{disk: disk, log: slog.New(slog.NewTextHandler(logged, nil))}
	text := func() string { return strings.Join(logged.tail(), "\n") }
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go n.watchDisk(ctx, 5*time.Millisecond, 50*time.Millisecond, 0)

	f, err := disk.OpenFile("/f", os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	require.Eventually(t, func() bool { return strings.Contains(text(), "has not returned") }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, 1, strings.Count(text(), "has not returned"), "warned once")
	require.Contains(t, text(), "op=sync file=/f")
	close(release)
	require.NoError(t, <-synced)
	require.Eventually(t, func() bool { return strings.Contains(text(), "returned (or another") }, 5*time.Second, 5*time.Millisecond)
}

// A secondary whose disk hangs in its syncs (writes still reach its page
// cache and are acknowledged) holds the primary's flushes only until the
// flush timeout: the primary drops it and Outdates it, and the flush
// completes without it; it is not counted again while its syncs hang. Once
// its disk answers, it catches up. Without the bound, the flush waited for
// as long as the disk hung.
func TestSecondaryWhoseSyncsHangIsDropped(t *testing.T) {
	t.Parallel()
	var hangDir atomic.Pointer[string]
	release := make(chan struct{})
	disk := vfs.WithErrors(vfs.Default, func(op vfs.Op, name string) error {
		if dir := hangDir.Load(); dir != nil && op == vfs.OpSync && strings.HasPrefix(name, *dir) {
			<-release
		}
		return nil
	})
	c := newTestCluster(t, 2, true, "replication:\n  peer-timeout: 3s\n  flush-timeout: 3s\n", Options{faults: &faultHooks{disk: disk}})
	var unblock sync.Once
	defer unblock.Do(func() { close(release) })
	p := c.primary()
	writeBlocks(t, p, 0, 4)
	c.waitUpToDate(p)
	sec := c.nodes[c.other(p)]
	dir := sec.me.DataDir + string(filepath.Separator)
	hangDir.Store(&dir)

	writeBlocks(t, p, 4, 8)
	start := time.Now()
	flushed := make(chan error, 1)
	go func() { flushed <- p.dev.Flush() }()
	select {
	case err := <-flushed:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the flush still waits for a secondary whose syncs hang")
	}
	took := time.Since(start)
	require.GreaterOrEqual(t, took, 3*time.Second, "the flush completed before the flush timeout: the secondary's sync did not hang")
	require.Equal(t, DiskOutdated, p.Status().Peers[0].Disk)

	// While its syncs still hang, it is not counted again (its new session
	// waits behind the hung sync), so flushes do not stall once more.
	time.Sleep(time.Second)
	writeBlocks(t, p, 8, 10)
	start = time.Now()
	require.NoError(t, p.dev.Flush())
	require.Less(t, time.Since(start), time.Second, "a second flush waited for the secondary whose syncs hang")
	require.NotEqual(t, DiskUpToDate, p.Status().Peers[0].Disk)

	unblock.Do(func() { close(release) })
	writeBlocks(t, p, 8, 12)
	c.waitUpToDate(p)
}

func TestHangClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	sec := time.Second
	stall := func(at time.Duration, started time.Duration) (time.Time, vfs.Stall, bool) {
		return t0.Add(at), vfs.Stall{Op: vfs.OpSync, Name: "f", For: at - started}, true
	}
	idle := func(at time.Duration) (time.Time, vfs.Stall, bool) { return t0.Add(at), vfs.Stall{}, false }
	type tick func() (time.Time, vfs.Stall, bool)
	for _, tc := range []struct {
		name  string
		ticks []tick
		want  time.Duration // what the last tick returns
	}{
		{"seen from the first tick, not from its start", []tick{
			func() (time.Time, vfs.Stall, bool) { return stall(10*sec, 0) },
			func() (time.Time, vfs.Stall, bool) { return stall(11*sec, 0) },
			func() (time.Time, vfs.Stall, bool) { return stall(12*sec, 0) },
		}, 2 * sec},
		{"nothing in flight", []tick{
			func() (time.Time, vfs.Stall, bool) { return stall(10*sec, 0) },
			func() (time.Time, vfs.Stall, bool) { return idle(11 * sec) },
		}, 0},
		{"another operation took its place", []tick{
			func() (time.Time, vfs.Stall, bool) { return stall(10*sec, 0) },
			func() (time.Time, vfs.Stall, bool) { return stall(11*sec, 0) },
			func() (time.Time, vfs.Stall, bool) { return stall(12*sec, 11500*time.Millisecond) },
			func() (time.Time, vfs.Stall, bool) { return stall(13*sec, 11500*time.Millisecond) },
		}, sec},
		{"a late tick (the process was stopped) starts over", []tick{
			func() (time.Time, vfs.Stall, bool) { return stall(10*sec, 0) },
			func() (time.Time, vfs.Stall, bool) { return stall(11*sec, 0) },
			func() (time.Time, vfs.Stall, bool) { return stall(90*sec, 0) },
			func() (time.Time, vfs.Stall, bool) { return stall(91*sec, 0) },
		}, sec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hangClock{every: sec}
			var got time.Duration
			for _, tk := range tc.ticks {
				got = c.observe(tk())
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// device.disk-timeout: a primary whose journal writes hang is detached once
// one has been in flight that long: it is Failed, gives the role back, and
// the UpToDate peer serves. Without it, the primary kept its lease and every
// write waited for as long as the disk hung.
func TestPrimaryWhoseDiskHangsIsDetached(t *testing.T) {
	t.Parallel()
	var hangDir atomic.Pointer[string]
	release := make(chan struct{})
	disk := vfs.WithErrors(vfs.Default, func(op vfs.Op, name string) error {
		if dir := hangDir.Load(); dir != nil && (op == vfs.OpWrite || op == vfs.OpSync) && strings.HasPrefix(name, *dir) {
			<-release // every file: the control plane's log too
		}
		return nil
	})
	c := newSizedCluster(t, "4MiB\n  disk-timeout: 2s", 2, true, "", Options{faults: &faultHooks{disk: disk}})
	var unblock sync.Once
	defer unblock.Do(func() { close(release) })
	p := c.primary()
	writeBlocks(t, p, 0, 4)
	c.waitUpToDate(p)
	dir := p.me.DataDir + string(filepath.Separator)
	hangDir.Store(&dir)

	start := time.Now()
	stuck := make(chan error, 1)
	go func() { stuck <- p.dev.WriteAt(block(7), 7*4096, false) }()
	other := c.nodes[c.other(p)]
	require.Eventually(t, func() bool { return other.currentPrimary() != nil && other.ctl.Serving() },
		20*time.Second, 10*time.Millisecond, "the peer never took over from the primary whose disk hangs")
	took := time.Since(start)
	require.GreaterOrEqual(t, took, 2*time.Second, "taken over before the disk timeout")
	t.Logf("taken over after %v", took)
	require.ErrorIs(t, p.diskFailure(), ErrDiskHung)
	asked := time.Now()
	got := make(chan Status, 1)
	go func() { got <- p.Status() }()
	select {
	case st := <-got:
		require.Equal(t, DiskFailed, st.Disk)
		require.Contains(t, st.DiskError, "disk not answering")
		require.Less(t, time.Since(asked), 3*time.Second, "status waited for the hung disk")
	case <-time.After(10 * time.Second):
		t.Fatal("status hangs on a node whose disk hangs and was detached")
	}
	require.ErrorIs(t, p.dev.WriteAt(block(8), 8*4096, false), ErrDiskFailed, "new requests fail at once")
	retryFenced(t, func() error { return other.dev.WriteAt(block(9), 9*4096, true) })

	unblock.Do(func() { close(release) })
	select {
	case err := <-stuck:
		require.Error(t, err, "the write that waited for the hung disk was acknowledged after the detach")
	case <-time.After(10 * time.Second):
		t.Fatal("the write that waited for the hung disk never returned")
	}
}

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
	go n.watchDisk(ctx, 5*time.Millisecond, 50*time.Millisecond)

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

package ctlplane

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/quorum"
	"github.com/stretchr/testify/require"
)

// A control plane that cannot persist its log (ENOSPC on raft.state.tmp)
// reports it through Stopped and Err, so that the member stops instead of
// running on with a frozen applied index (issue 15).
func TestStoppedWhenLogCannotPersist(t *testing.T) {
	var full atomic.Bool
	fs := vfs.WithErrors(vfs.Default, func(op vfs.Op, name string) error {
		if full.Load() && (op == vfs.OpOpen || op == vfs.OpWrite) {
			return syscall.ENOSPC
		}
		return nil
	})
	d, err := Open(Config{Self: "a", Members: []quorum.MemberInfo{{Name: "a", Data: true}}, Dir: t.TempDir(),
		FS: fs, Tick: 10 * time.Millisecond, Timing: quorum.DefaultTiming(), AutoFailover: true, Seed: 1})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	require.NoError(t, d.Err())
	full.Store(true)
	select {
	case <-d.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("the control plane never reported that it stopped")
	}
	require.ErrorIs(t, d.Err(), syscall.ENOSPC)
}

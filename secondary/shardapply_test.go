package secondary

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/journal"
)

// A shard peer applies journaled writes to its image only up to the
// primary's commit; settling at d applies up to d and drops the rest, and
// is refused once the image is past d.
func TestShardApplyWaitsForCommit(t *testing.T) {
	store := openStore(t, journal.Options{Dir: "/d", FS: vfs.NewMem(), DeviceSize: 1 << 20, SegmentSize: 1 << 20, MaxSize: 4 << 20})
	a := NewShardApply(ShardApplyConfig{Store: store})
	t.Cleanup(func() { a.Close() })

	var ws []journal.Write
	for seq := uint64(1); seq <= 4; seq++ {
		ws = append(ws, journal.Write{Seq: seq, Epoch: 1, Offset: int64(seq) * 4096, Data: block(byte(seq))})
	}
	a.BeginLog()
	logged, err := store.Log(ws)
	a.EndLog()
	require.NoError(t, err)
	a.Add(logged)
	time.Sleep(2 * forceAfter)
	require.Zero(t, a.Applied(), "nothing is committed")

	a.SetCommit(2)
	require.Eventually(t, func() bool { return a.Applied() == 2 }, 5*time.Second, time.Millisecond)
	time.Sleep(2 * forceAfter)
	require.Equal(t, uint64(2), a.Applied(), "only what was committed")

	require.NoError(t, a.Settle(3, false))
	require.Equal(t, uint64(3), a.Applied())
	got := make([]byte, 4096)
	require.NoError(t, store.ReadAt(got, 3*4096))
	require.Equal(t, block(3), got, "applied up to the settle position")
	require.NoError(t, store.ReadAt(got, 4*4096), "a dropped write no longer holds reads back")
	require.ErrorIs(t, a.Settle(1, false), ErrAppliedPast)
}

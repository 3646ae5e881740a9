package primary

import (
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/stretchr/testify/require"
)

// A journal catch-up ends with the primary's size (a no-op resize record
// here), after the records and before the peer goes live: a peer larger
// than the primary (a grow of its own that nobody acknowledged, a larger
// device.size) takes it, even when no record it caught up on was a resize.
func TestCatchUpAnnouncesTheSize(t *testing.T) {
	store := memStore(t, 1<<20, 4<<20)
	for i := range 3 {
		_, err := store.Append(journal.Write{Epoch: 1, Offset: int64(i) * 4096, Data: block(byte(i))})
		require.NoError(t, err)
	}
	release := make(chan struct{})
	close(release)
	got := make(chan wire.Message, 64)
	tr := &stallingPeer{release: release, stop: t.Context().Done(), got: got}
	startSideWith(t, tr, store, 4<<20, &control{}, 1, func(c *Config) { c.PeerTimeout = time.Minute }, "q")
	var writes []uint64
	for {
		select {
		case m := <-got:
			switch m := m.(type) {
			case *wire.Write:
				writes = append(writes, m.Seq)
			case *wire.Resize:
				require.Equal(t, []uint64{1, 2, 3}, writes, "the size comes after the records")
				require.EqualValues(t, store.Size(), m.Size)
				require.Zero(t, m.Flags, "not a resync: the peer stays consistent")
				require.Equal(t, uint64(4), m.Seq)
				done := (<-got).(*wire.ResyncDone)
				require.Equal(t, uint64(4), done.AsOf)
				return
			case *wire.ResyncDone:
				t.Fatalf("live after records %v without the size", writes)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no size announced; records %v", writes)
		}
	}
}

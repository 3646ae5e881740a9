package secondary

import (
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// A secondary larger than its primary (it journaled a grow of its own as
// primary that nobody acknowledged, or was created from a larger
// device.size) takes the primary's size from its resize record, dropping
// the bytes past it, instead of refusing the record at every reconnect and
// never catching up. The writes below the new end are kept.
func TestSecondaryTakesThePrimarysSmallerSize(t *testing.T) {
	s, node := newSideOn(t, vfs.NewMem(), 2<<20, 2, false)
	_, err := s.cfg.Store.Append(journal.Write{Epoch: 1, Offset: 1<<20 + 4096, Data: block(9)})
	require.NoError(t, err) // past the primary's end: from a record the primary never had
	r, w, sent := connect(t, s, 1, 3, replicator.History{{Epoch: 1, FirstSeq: 1}})
	read[*wire.Hello](t, r)
	require.NoError(t, <-sent)
	require.Equal(t, uint64(3), read[*wire.Ack](t, r).Seq)

	require.NoError(t, w.WriteMsg(&wire.Resize{Seq: 4, Epoch: 1, Size: 1 << 20}))
	require.NoError(t, w.WriteMsg(&wire.Write{Seq: 5, Epoch: 1, Offset: 1<<20 - 4096, Data: block(5)}))
	require.NoError(t, w.Flush())
	for acked := uint64(0); acked < 5; {
		m, err := r.ReadMsg()
		require.NoError(t, err)
		a, ok := m.(*wire.Ack)
		require.True(t, ok, "the resize was refused: %+v", m)
		acked = a.Seq
	}
	store := s.cfg.Store
	require.EqualValues(t, 1<<20, store.Size())
	require.Equal(t, uint64(5), store.LastSeq())
	got := make([]byte, 4096)
	for i, want := range map[int64][]byte{0: block(0), 4096: block(1), 1<<20 - 4096: block(5)} {
		require.NoError(t, store.ReadAt(got, i))
		require.Equal(t, want, got, "offset %d", i)
	}
	require.ErrorIs(t, store.ReadAt(got, 1<<20+4096), journal.ErrOutOfRange)
	require.Empty(t, node.splitBrain)
	node.mu.Lock()
	defer node.mu.Unlock()
	require.Len(t, node.shrunk, 1, "the node is told")
}

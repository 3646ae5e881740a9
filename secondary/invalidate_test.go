package secondary

import (
	"testing"
	"time"

	"github.com/grbd/grbd/internal/sidecar"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// watchedMeta is the sidecar store, noting whether a session was connected
// when a full resync was saved.
type watchedMeta struct {
	Meta
	side             *Side
	savedAll         bool
	connectedAtSaved bool
}

func (m *watchedMeta) SaveResync(rs *replicator.ResyncState) error {
	if rs != nil && rs.All {
		m.savedAll, m.connectedAtSaved = true, m.side.connected.Load()
	}
	return m.Meta.SaveResync(rs)
}

// grbd invalidate while a primary's session runs: the session ends before
// the full resync is saved, so the ResyncDone of that session's catch-up
// (every session sends one when it goes live) cannot end a resync it never
// did. Saved first and the session dropped after, the node was UpToDate
// again at once in 1 of ~50 runs of cmd/grbd's TestWaitSyncPlainLines.
func TestInvalidateEndsTheSessionFirst(t *testing.T) {
	fs := vfs.NewMem()
	meta := &watchedMeta{Meta: sidecar.New(fs, "/d")}
	s, _ := newSideMeta(t, fs, meta, 1<<20, 0, false)
	meta.side = s
	hist := replicator.History{{Epoch: 1, FirstSeq: 1}}

	r, w, sent := connect(t, s, 1, 0, hist)
	require.Zero(t, read[*wire.Hello](t, r).Flags&wire.HelloInconsistent)
	require.NoError(t, <-sent)
	require.Eventually(t, func() bool { return s.State().Connected }, 5*time.Second, time.Millisecond)

	require.NoError(t, s.Invalidate())
	require.True(t, meta.savedAll)
	require.False(t, meta.connectedAtSaved, "the full resync was saved while the old session ran")
	// The old session is gone: its ResyncDone reaches nobody.
	if w.WriteMsg(&wire.ResyncDone{AsOf: 0}) == nil {
		_ = w.Flush()
	}
	_, err := r.ReadMsg()
	require.Error(t, err, "the old session still runs")
	require.False(t, s.Consistent())
	require.True(t, s.State().Inconsistent)

	// The next primary's session is told: Inconsistent, everything.
	r, _, sent = connect(t, s, 1, 0, hist)
	h := read[*wire.Hello](t, r)
	require.NoError(t, <-sent)
	require.Equal(t, wire.HelloInconsistent, h.Flags&wire.HelloInconsistent)
	require.Equal(t, wire.ExtentsAll, read[*wire.Extents](t, r).Flags&wire.ExtentsAll)
}

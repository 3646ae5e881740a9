package secondary

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/sidecar"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// A node back from a power loss holds regions that may differ from the
// primary (journal.Suspects), even though its journal is a prefix of the
// primary's: it answers Inconsistent and asks for them, persists them as
// its resync state, and only then forgets them as suspects.
func TestSessionResyncsPowerLossSuspects(t *testing.T) {
	mem := vfs.NewMem()
	opts := journal.Options{Dir: "/d", FS: mem, DeviceSize: 16 << 20, SegmentSize: 1 << 20, MaxSize: 4 << 20, BootID: "boot 1"}
	before := openStore(t, opts)
	for _, off := range []int64{0, 4096, 9 << 20} {
		_, err := before.Append(journal.Write{Epoch: 1, Offset: off, Data: block(1)})
		require.NoError(t, err)
	}
	crashed := mem.CrashClone(rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, before.Close())

	opts.FS, opts.BootID = crashed, "boot 2"
	store := openStore(t, opts)
	suspects := store.Suspects()
	require.Empty(t, extent.Subtract([]extent.Extent{{Offset: 0, Length: 4 << 20}, {Offset: 8 << 20, Length: 4 << 20}}, suspects),
		"the extents written before the power loss are suspect")
	node := &fakeNode{hist: replicator.History{{Epoch: 1, FirstSeq: 1}}}
	s, err := New(Config{Cluster: "t", Name: "s", Protocol: replicator.ProtocolC, HandshakeTimeout: 5 * time.Second,
		Store: store, Meta: sidecar.New(crashed, "/d")}, node)
	require.NoError(t, err)
	t.Cleanup(s.Close)

	last := store.LastSeq()
	r, _, _ := connect(t, s, 1, last+5, replicator.History{{Epoch: 1, FirstSeq: 1}})
	h := read[*wire.Hello](t, r)
	require.Equal(t, wire.HelloInconsistent, h.Flags&wire.HelloInconsistent, "Inconsistent until the suspects are resynced")
	require.Equal(t, last, h.LastSeq, "nothing rewound")
	ex := read[*wire.Extents](t, r)
	require.Empty(t, extent.Subtract(suspects, ex.Extents), "every suspect region is asked for")
	rs, err := s.cfg.Meta.Resync()
	require.NoError(t, err)
	require.NotNil(t, rs)
	require.Empty(t, extent.Subtract(suspects, rs.Extents), "and persisted as the resync state")
	require.Empty(t, store.Suspects(), "then forgotten as suspects")
	require.False(t, s.Consistent())
}

package node

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/sidecar"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

const resumeSize = 32 << 20

// resumeCluster: a 32 MiB device, resyncs slowed to 16 MiB/s, so that a
// loaded machine still sees the progress of half a resync about a second
// before the resync ends.
func resumeCluster(t *testing.T, opts ...Options) (*testCluster, *Node) {
	c := newSizedCluster(t, "32MiB", 2, true, "replication:\n  resync-rate: 16MiB\n", opts...)
	p := c.primary()
	writeBlocks(t, p, 0, 100)
	c.waitUpToDate(p)
	return c, p
}

// interruptFullSync starts a full resync of d1 and stops d1 once it
// persisted progress for half of it.
func interruptFullSync(t *testing.T, c *testCluster) {
	require.NoError(t, c.nodes["d1"].Invalidate())
	require.Eventually(t, func() bool {
		rs, err := tryResyncState(c, "d1")
		return err == nil && rs.Progress != nil && extent.Bytes(rs.Progress.Copied) >= resumeSize/2
	}, 20*time.Second, time.Millisecond)
	c.stop("d1")
}

// TestResyncResumes: an interrupted full resync continues where it
// stopped. What was written meanwhile to a region already copied is copied
// again, and the images end equal.
func TestResyncResumes(t *testing.T) {
	t.Parallel()
	c, p := resumeCluster(t)
	interruptFullSync(t, c)
	rs := readResyncState(t, c, "d1")
	require.NotNil(t, rs.Progress, "progress persisted")
	require.True(t, rs.All)
	reported := extent.Bytes(rs.Progress.Copied)
	require.GreaterOrEqual(t, reported, uint64(resumeSize/2))
	writeBlocks(t, p, 1000, 1010) // into the first 4 MiB, copied already
	before := p.events.Recent(0)
	c.start("d1")
	c.waitUpToDate(p)
	written := int64(10 * 4096) // ten 4 KiB regions
	wantTotal, wantKept := int64(resumeSize)-int64(reported)+written, int64(reported)-written
	// A slow machine may drop the resumed session (peer timeout) and
	// resume again from newer progress: the first resumed session is
	// the one that shows what the restart kept.
	first := resyncStarts(p, "d1", before)
	require.NotEmpty(t, first, "the primary started a resync of d1")
	require.Equal(t, wantTotal, first[0].Bytes, "only what was not copied, and the regions written meanwhile")
	if len(first) == 1 {
		ps := p.Status().Peers[0]
		require.Equal(t, wantTotal, ps.ResyncTotal, "only what was not copied, and the regions written meanwhile")
		require.Equal(t, wantKept, ps.ResyncKept, "all it reported but the regions written meanwhile")
	} else {
		t.Logf("the resumed session was dropped and resumed %d times", len(first)-1)
	}
	requireSameDevice(t, p, c.nodes["d1"])
}

// TestResyncProgressNotTrusted: a report the primary cannot check is
// ignored and everything is copied again.
func TestResyncProgressNotTrusted(t *testing.T) {
	t.Parallel()
	faults := &faultHooks{}
	c, p := resumeCluster(t, Options{faults: faults})
	for _, tc := range []struct {
		name string
		edit func(p *replicator.ResyncProgress, primary *Node)
	}{
		{"another primary's disk", func(p *replicator.ResyncProgress, _ *Node) { p.Source ^= 1 }},
		{"position above the primary's journal", func(p *replicator.ResyncProgress, pr *Node) { p.AsOf = pr.store.LastSeq() + 1000 }},
		{"another epoch", func(p *replicator.ResyncProgress, _ *Node) { p.Epoch += 7 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			interruptFullSync(t, c)
			rs := readResyncState(t, c, "d1")
			require.NotNil(t, rs.Progress)
			// The secondary would not offer such a report; make the
			// primary's check the only one by forging what it sees: a
			// secondary that offers everything it has.
			forged := *rs.Progress
			tc.edit(&forged, p)
			faults.forgeOffer.Store(&forged)
			t.Cleanup(func() { faults.forgeOffer.Store(nil) })
			c.start("d1")
			c.waitUpToDate(p)
			ps := p.Status().Peers[0]
			require.Equal(t, int64(resumeSize), ps.ResyncTotal, "everything copied")
			require.Zero(t, ps.ResyncKept)
			requireSameDevice(t, p, c.nodes["d1"])
		})
	}
}

func readResyncState(t *testing.T, c *testCluster, name string) replicator.ResyncState {
	t.Helper()
	rs, err := tryResyncState(c, name)
	require.NoError(t, err)
	return rs
}

func tryResyncState(c *testCluster, name string) (replicator.ResyncState, error) {
	for _, m := range c.cfg.Nodes {
		if m.Name == name {
			b, err := vfs.ReadFile(vfs.Default, filepath.Join(m.DataDir, sidecar.ResyncFile))
			if err != nil {
				return replicator.ResyncState{}, err
			}
			return replicator.DecodeResyncState(b)
		}
	}
	return replicator.ResyncState{}, os.ErrNotExist
}

func requireSameDevice(t *testing.T, a, b *Node) {
	t.Helper()
	require.Equal(t, a.store.Size(), b.store.Size())
	x, y := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < a.store.Size(); off += 1 << 20 {
		require.NoError(t, a.store.ReadAt(x, off))
		require.NoError(t, b.store.ReadAt(y, off))
		require.True(t, bytes.Equal(x, y), "images differ in the MiB at %d", off)
	}
}

// resyncStarts lists the resyncs of peer that n started after the events in
// before, oldest first.
func resyncStarts(n *Node, peer string, before []events.Event) []events.Event {
	var since uint64
	if len(before) > 0 {
		since = before[len(before)-1].Seq
	}
	var starts []events.Event
	for _, e := range n.events.Recent(since) {
		if e.Seq > since && e.Type == events.TypeResync && e.State == events.StateStarted && e.Peer == peer {
			starts = append(starts, e)
		}
	}
	return starts
}

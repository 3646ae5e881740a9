package node

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A node that got writes only as in-place region copies, promoted, must
// not serve a third node journal catch-up from records older than those
// copies: the journal would pass over them (docs/journal.md, "Writes in
// place", the seal). d1 and d2 miss a pass of writes over the whole device
// (the primary's journal compacts past them, so d1 gets a region resync,
// in place); d1 becomes primary; d2, whose position d1's journal held
// before the seal, must end with the same image. Without the seal d2 gets
// only the records after the copies and its image differs.
func TestSealedTargetServesNoCatchupBelowItsCopies(t *testing.T) {
	t.Parallel()
	c, p := newSyncedCluster(t, 4, 16) // 5 voters: d0, d3 and w keep a majority
	compactPast(t, c, p, "d1", "d2")

	d1 := c.start("d1")
	before := d1.store.Stats().InPlaceBytes
	c.waitUpToDate(p)
	require.Greater(t, d1.store.Stats().InPlaceBytes, before, "d1 took a region resync in place")

	// d1's own view can be stale at first (it restarted with a log from
	// before its Outdate): ask until its core takes the request, once the
	// primary has Cleared it.
	var promoteErr error
	require.Eventually(t, func() bool {
		if p.ctl.Status().IsOutdated("d1") || d1.ctl.Status().IsOutdated("d1") {
			return false
		}
		promoteErr = d1.ctl.RequestPromote(false)
		return promoteErr == nil
	}, 15*time.Second, 10*time.Millisecond, "d1 never Cleared and promotable")
	require.NoError(t, promoteErr)
	require.Eventually(t, func() bool {
		for name, n := range c.nodes {
			if (name == "d1") != (n.currentPrimary() != nil && n.ctl.Serving()) {
				return false
			}
		}
		return true
	}, 15*time.Second, 10*time.Millisecond, "d1 not promoted")
	writeBlocks(t, d1, 4*1024, 4*1024+8) // live writes after the copies

	d2 := c.start("d2")
	c.waitUpToDate(d1)
	requireSameDevice(t, d1, d2)
	c.requireImages(func(i int) []byte {
		if i < 8 {
			return block(4*1024 + i)
		}
		return block(3*1024 + i)
	}, 1024)
}

// compactPast stops the nodes names and writes three passes over the
// whole device (blocks pass*1024+i): with an 8 MiB journal and a 4 MiB
// device, p's journal no longer holds their position.
func compactPast(t *testing.T, c *testCluster, p *Node, names ...string) {
	t.Helper()
	for _, name := range names {
		c.stop(name)
	}
	for pass := 1; pass <= 3; pass++ {
		writeBlocks(t, p, pass*1024, pass*1024+1024)
	}
	require.Greater(t, p.store.Stats().FirstRetainedSeq, uint64(20))
}

// A live secondary's journal has a hole wherever the primary logged another
// peer's resync chunk (it never gets those). Promoted, it serves a third
// node journal catch-up up to the first hole, which stops ReadRecords; the
// rest comes as a region resync from there, and the images end equal
// (docs/journal.md, "Replay": the hole rule). d2 misses passes over the
// whole device and gets a region resync while d1 is live; d3 misses the
// writes just before that resync and catches up from d1. These holes are
// harmless to cross (the chunks rewrite bytes d3 gets anyway), so before
// the rule d3 crossed them and this test failed only on its resync
// assertion; what it shows is that the fallback from the middle of a
// catch-up ends with equal images. The harmful hole, under a checkpoint
// over damaged records, is journal.TestCheckpointedRecordsMissing.
func TestCatchUpStopsAtAHole(t *testing.T) {
	t.Parallel()
	c, p := newSyncedCluster(t, 4, 16) // 5 voters: d0, d1 and w keep a majority
	compactPast(t, c, p, "d2")
	c.stop("d3")
	writeBlocks(t, p, 4*1024, 4*1024+64) // d3 gets these from d1's journal
	c.start("d2")
	c.waitUpToDate(p) // d2's region resync: holes in d1's journal
	writeBlocks(t, p, 5*1024, 5*1024+8)
	c.waitUpToDate(p)

	d1 := c.nodes["d1"]
	require.Eventually(t, func() bool { return !d1.ctl.Status().IsOutdated("d1") }, 15*time.Second, 10*time.Millisecond, "d1 Cleared in its own view")
	require.NoError(t, d1.ctl.RequestPromote(false))
	require.Eventually(t, func() bool { return d1.currentPrimary() != nil && d1.ctl.Serving() }, 15*time.Second, 10*time.Millisecond, "d1 not promoted")
	writeBlocks(t, d1, 6*1024, 6*1024+8)

	before := d1.events.Recent(0)
	d3 := c.start("d3")
	c.waitUpToDate(d1)
	requireSameDevice(t, d1, d3)
	require.NotEmpty(t, resyncStarts(d1, "d3", before), "d3 crossed the holes without a region resync")
	var caught uint64
	for _, ps := range d1.Status().Peers {
		if ps.Name == "d3" {
			caught = ps.CatchupBytes
		}
	}
	require.Positive(t, caught, "d3 took the records before the first hole from the journal")
	c.requireImages(func(i int) []byte {
		switch {
		case i < 8:
			return block(6*1024 + i)
		case i < 64:
			return block(4*1024 + i)
		}
		return block(3*1024 + i)
	}, 1024)
}

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
	c := newTestCluster(t, 4, true, "") // 5 voters: d0, d3 and w keep a majority
	p := c.primary()
	writeBlocks(t, p, 0, 16)
	c.waitUpToDate(p)
	c.stop("d1")
	c.stop("d2")
	// 8 MiB journal, 4 MiB device: three passes compact it past d1 and d2.
	for pass := 1; pass <= 3; pass++ {
		writeBlocks(t, p, pass*1024, pass*1024+1024)
	}
	require.Greater(t, p.store.Stats().FirstRetainedSeq, uint64(20))

	d1 := c.start("d1")
	before := d1.store.Stats().InPlaceBytes
	c.waitUpToDate(p)
	require.Greater(t, d1.store.Stats().InPlaceBytes, before, "d1 took a region resync in place")

	require.Eventually(t, func() bool { return !d1.ctl.Status().IsOutdated("d1") }, 15*time.Second, 10*time.Millisecond, "d1 Cleared in its own view")
	require.NoError(t, d1.ctl.RequestPromote(false))
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

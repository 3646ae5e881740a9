package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/chaos"
	"github.com/grbd/grbd/internal/nbdclient"
	"github.com/grbd/grbd/journal"
	"github.com/stretchr/testify/require"
)

const (
	oldSize = 4 << 20 // the test cluster's device.size
	newSize = 8 << 20
)

// image returns the whole device of n and its checksum.
func image(t *testing.T, n *Node) []byte {
	t.Helper()
	b := make([]byte, n.store.Size())
	require.NoError(t, n.store.ReadAt(b, 0))
	return b
}

// requireGrown checks that every running node has the given size and a
// byte-identical image, and returns the primary's image.
func (c *testCluster) requireGrown(p *Node, size int64) []byte {
	c.t.Helper()
	t := c.t.(*testing.T)
	want := image(t, p)
	require.Len(t, want, int(size))
	for name, n := range c.nodes {
		require.EqualValues(t, size, n.Status().DeviceSize, "%s status", name)
		got := image(t, n)
		require.Equal(t, sha256.Sum256(want), sha256.Sum256(got), "%s image differs from the primary's", name)
	}
	return want
}

// writePastOldEnd writes blocks [from, to) starting at the old end.
func writePastOldEnd(t *testing.T, n *Node, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		require.NoError(t, n.dev.WriteAt(block(i), oldSize+int64(i)*4096, false), "write %d", i)
	}
}

func nbdSize(t *testing.T, n *Node) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := nbdclient.Dial(ctx, n.NBDAddr().String(), nbdclient.Options{})
	require.NoError(t, err)
	defer cl.Close()
	return cl.Size()
}

func TestResizeOnline(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, true, "")
	p := c.primary()
	writeBlocks(t, p, 0, 100)
	before := nbdSize(t, p) // a connection of the old size stays open
	require.EqualValues(t, oldSize, before)

	require.ErrorIs(t, p.dev.WriteAt(block(1), oldSize, false), journal.ErrOutOfRange, "past the end before the grow")
	require.NoError(t, p.Resize(newSize))
	require.EqualValues(t, newSize, p.store.Size())
	writePastOldEnd(t, p, 0, 50)
	require.NoError(t, p.dev.WriteAt(block(7), newSize-4096, false), "the last block")
	require.NoError(t, p.dev.Flush())
	c.waitUpToDate(p)
	img := c.requireGrown(p, newSize)
	require.Equal(t, block(3), img[oldSize+3*4096:oldSize+4*4096])
	require.EqualValues(t, newSize, nbdSize(t, p), "a new NBD connection sees the new size")

	// A restart keeps the grown size though device.size still says 4 MiB.
	c.stop("d1")
	d1 := c.start("d1")
	require.EqualValues(t, newSize, d1.store.Size())
	c.waitUpToDate(p)
	c.requireGrown(p, newSize)
}

// growWithPeerDown writes, stops d1 and grows the device without it.
func growWithPeerDown(t *testing.T) (*testCluster, *Node) {
	c, p := newSyncedPair(t, 50)
	c.stop("d1")
	require.NoError(t, p.Resize(newSize), "the peer is Outdated, the grow goes on")
	return c, p
}

func TestResizePeerDownCatchesUpFromJournal(t *testing.T) {
	t.Parallel()
	c, p := growWithPeerDown(t)
	writePastOldEnd(t, p, 0, 30)
	d1 := c.start("d1")
	c.waitUpToDate(p)
	require.EqualValues(t, newSize, d1.store.Size())
	c.requireGrown(p, newSize)
}

func TestResizePeerDownGrowsBeforeRegionResync(t *testing.T) {
	t.Parallel()
	c, p := growWithPeerDown(t)
	// 8 MiB journal: two passes over the grown half compact it past the
	// resize record and d1's position, so d1 needs a region resync that
	// includes regions past its old end.
	for pass := range 2 {
		for i := range 1024 {
			require.NoError(t, p.dev.WriteAt(block(pass*1024+i), oldSize+int64(i)*4096, false))
		}
	}
	require.Greater(t, p.store.Stats().FirstRetainedSeq, uint64(60))
	d1 := c.start("d1")
	c.waitUpToDate(p)
	require.EqualValues(t, newSize, d1.store.Size())
	img := c.requireGrown(p, newSize)
	require.Equal(t, block(1024+5), img[oldSize+5*4096:oldSize+6*4096])
}

func TestResizeRefused(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 10)
	seq := p.store.LastSeq()
	cases := []struct {
		name string
		n    *Node
		size int64
		want error
	}{
		{"smaller", p, oldSize / 2, ErrResizeNotLarger},
		{"same size", p, oldSize, ErrResizeNotLarger},
		{"not a multiple of 4 KiB", p, newSize + 512, ErrResizeSize},
		{"zero", p, 0, ErrResizeSize},
		{"above the limit", p, 1<<62 + 4096, ErrResizeSize},
		{"on a secondary", c.nodes["d1"], newSize, ErrReadOnly},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, tc.n.Resize(tc.size), tc.want)
			for _, n := range c.nodes {
				require.EqualValues(t, oldSize, n.store.Size(), "nothing changed on %s", n.me.Name)
			}
			require.Equal(t, seq, p.store.LastSeq(), "nothing journaled")
		})
	}
	require.True(t, bytes.Equal(image(t, p), image(t, c.nodes["d1"])))
}

// device.size is only the creation size: a node whose config says more than
// its store (its host's config was updated before it caught up) starts at
// its store's size and gets the grow from the primary.
func TestResizeConfigLargerThanStore(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 20)
	c.stop("d1")
	retryFenced(t, func() error { return p.Resize(newSize) })
	writePastOldEnd(t, p, 0, 10)
	c.cfg.Device.Size = newSize // the operator updated the config
	d1 := c.start("d1")
	c.waitUpToDate(p)
	require.EqualValues(t, newSize, d1.store.Size())
	c.requireGrown(p, newSize)
}

// A replaced disk on a host whose device.size says more than the cluster's
// device (raised by hand instead of grbd resize) is created larger than
// the primary's: it takes the primary's size from the full sync instead of
// refusing its resize record at every reconnect (it never caught up).
func TestReplacedDiskFromALargerConfigTakesThePrimarysSize(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 20)
	name := c.other(p)
	dir := c.nodes[name].me.DataDir
	c.stop(name)
	require.NoError(t, chaos.WipeStore(dir))
	c.cfg.Device.Size = newSize
	n := c.start(name)
	require.EqualValues(t, newSize, n.store.Size(), "created from its config")
	// Not waitUpToDate alone: right after the restart the primary may
	// still show the node's old session UpToDate.
	require.Eventually(t, func() bool { return n.store.Size() == oldSize && n.store.LastSeq() >= p.store.LastSeq() },
		20*time.Second, 10*time.Millisecond, "the replaced disk never took the primary's size")
	c.waitUpToDate(p)
	c.requireGrown(p, oldSize)
}

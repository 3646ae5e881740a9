package node

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/primary"
	"github.com/stretchr/testify/require"
)

// damage flips bytes of n's data.img behind its back (a disk's bit rot).
func damage(t *testing.T, n *Node, off int64) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(n.me.DataDir, "data.img"), os.O_RDWR, 0)
	require.NoError(t, err)
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	b[0] ^= 0x04
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func corruptEvents(n *Node, state string) int {
	c := 0
	for _, e := range n.events.Recent(0) {
		if e.Type == events.TypeCorrupt && e.State == state {
			c++
		}
	}
	return c
}

func TestReadRepairsCorruptBlockFromPeer(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 16)
	damage(t, p, 5*4096+77)
	damage(t, p, 9*4096)

	got := make([]byte, 16*4096)
	require.NoError(t, p.dev.ReadAt(got, 0))
	for i := range 16 {
		require.Equal(t, block(i), got[i*4096:(i+1)*4096], "block %d", i)
	}
	require.EqualValues(t, 2, p.repairedBlocks.Load())
	require.Zero(t, p.unrepairedBlocks.Load())
	require.Equal(t, 2, corruptEvents(p, "repaired"))
	// The repair went through the write path: the local copy is good now.
	require.NoError(t, p.store.ReadAt(got, 0))
	c.waitUpToDate(p)
	c.requireImages(block, 16)
}

func TestUnrepairableBlockFailsTheRead(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 8)
	other := c.other(p)
	c.stop(other)
	damage(t, p, 3*4096+4000)

	got := make([]byte, 4096)
	err := p.dev.ReadAt(got, 3*4096)
	require.ErrorIs(t, err, journal.ErrChecksum)
	require.ErrorIs(t, err, ErrUnrepairable)
	require.NotErrorIs(t, err, syscall.EPERM)
	require.Equal(t, 1, corruptEvents(p, events.StateFailed))
	// An unaligned read inside the block fails too; the other blocks read.
	require.ErrorIs(t, p.dev.ReadAt(got[:10], 3*4096+1), journal.ErrChecksum)
	require.NoError(t, p.dev.ReadAt(got, 2*4096))
	require.Equal(t, block(2), got)

	// Once the peer is back and UpToDate, the block is repaired from it.
	c.start(other)
	c.waitUpToDate(p)
	require.Eventually(t, func() bool { return p.dev.ReadAt(got, 3*4096) == nil }, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, block(3), got)
}

// A corrupt block on a secondary is found by verify and rewritten by
// verify --resync, and it never spreads: a repair asks only UpToDate peers
// whose own copy passes its checksum.
func TestCorruptSecondaryBlockRefusedAndResynced(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 8)
	sec := c.nodes[c.other(p)]
	damage(t, sec, 6*4096+1)
	damage(t, p, 6*4096+2)

	got := make([]byte, 4096)
	require.ErrorIs(t, p.dev.ReadAt(got, 6*4096), ErrUnrepairable, "the secondary's copy is corrupt too")

	// Fix the primary's copy by a client write; verify then finds the
	// secondary's corrupt block and --resync rewrites it.
	require.NoError(t, p.dev.WriteAt(block(6), 6*4096, false))
	res, err := p.Verify(t.Context(), true)
	require.NoError(t, err)
	require.Empty(t, res[0].Error)
	require.Empty(t, res[0].OutOfSync, "the client write replaced the block on both")
	damage(t, sec, 2*4096+9)
	res, err = p.Verify(t.Context(), true)
	require.NoError(t, err)
	require.Equal(t, []extent.Extent{{Offset: 0, Length: primary.VerifyChunk}}, res[0].OutOfSync)
	require.True(t, res[0].Resynced)
	c.waitUpToDate(p)
	c.requireImages(block, 8)
}

// Shard peers hold no copy of the device: a corrupt block of an
// erasure-coded primary fails its reads (EIO) and nothing is "repaired"
// from a shard image.
func TestECCorruptPrimaryBlockFailsNotRepairedFromShard(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 5, false, ecConf)
	p := c.primary()
	writeBlocks(t, p, 0, 8)
	c.waitUpToDate(p)
	damage(t, p, 2*4096+5)
	got := make([]byte, 4096)
	require.ErrorIs(t, p.dev.ReadAt(got, 2*4096), ErrUnrepairable)
	require.Zero(t, p.repairedBlocks.Load())
	require.NoError(t, p.dev.ReadAt(got, 1*4096))
	require.Equal(t, block(1), got)

	// A shard peer refuses a block request outright.
	_, _, err := p.currentPrimary().FetchBlock(t.Context(), "d1", 0, 4096)
	require.ErrorIs(t, err, ErrPeerFailed)
	require.ErrorContains(t, err, "shard peer")
}

// TestReadRepairsALostWrite: the primary's disk lost a write (data.img still
// holds the block's older bytes) of blocks that end in the CRC-32C of the
// bytes before them, so old and new share one CRC-32C. The read must find
// the stale block (the checksum table holds block IDs, docs/journal.md) and
// repair it from the peer instead of returning the older bytes.
func TestReadRepairsALostWrite(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 8)
	retryFenced(t, func() error { return p.dev.WriteAt(selfSummed(1), 4*4096, false) })
	retryFenced(t, func() error { return p.dev.WriteAt(selfSummed(2), 4*4096, false) })
	c.waitUpToDate(p)
	img, err := os.OpenFile(filepath.Join(p.me.DataDir, "data.img"), os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = img.WriteAt(selfSummed(1), 4*4096) // the write of selfSummed(2) never reached the disk
	require.NoError(t, err)
	require.NoError(t, img.Close())

	got := make([]byte, 4096)
	require.NoError(t, p.dev.ReadAt(got, 4*4096))
	require.Equal(t, selfSummed(2), got)
	require.EqualValues(t, 1, p.repairedBlocks.Load())
	require.Equal(t, 1, corruptEvents(p, "repaired"))
}

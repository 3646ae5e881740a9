package node

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/primary"
	"github.com/stretchr/testify/require"
)

func TestVerifyFindsAndRepairsDivergence(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 64)
	ctx := t.Context()
	res, err := p.Verify(ctx, false)
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.Empty(t, res[0].OutOfSync, "fresh replica differs")

	// Damage the secondary's image behind its back.
	img, err := os.OpenFile(filepath.Join(c.nodes["d1"].me.DataDir, "data.img"), os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = img.WriteAt(bytes.Repeat([]byte{0xee}, 512), 3*4096+100)
	require.NoError(t, err)
	require.NoError(t, img.Close())

	res, err = p.Verify(ctx, true)
	require.NoError(t, err)
	require.Empty(t, res[0].Error)
	require.Equal(t, []extent.Extent{{Offset: 0, Length: primary.VerifyChunk}}, res[0].OutOfSync)
	require.True(t, res[0].Resynced)
	c.waitUpToDate(p)
	res, err = p.Verify(ctx, false)
	require.NoError(t, err)
	require.Empty(t, res[0].OutOfSync, "resync did not repair")
	c.requireImages(block, 64)

	_, err = c.nodes["d1"].Verify(ctx, false)
	require.ErrorIs(t, err, ErrNotPrimary)
}

// selfSummed is block(i) ending in the CRC32C of the bytes before it (a
// checksummed page layout; the fault suite's workload): all such blocks,
// and runs of them, share one CRC32C.
func selfSummed(i int) []byte {
	b := block(i)
	binary.LittleEndian.PutUint32(b[4092:], crc32.Checksum(b[:4092], crc32c.Table))
	return b
}

// Chunks made of blocks that end in their own CRC32C all have one CRC32C:
// verify compares block IDs, so it still sees that the replicas differ.
func TestVerifySeesBlocksThatEndInTheirOwnCRC32C(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 4)
	retryFenced(t, func() error { return p.dev.WriteAt(selfSummed(1), 0, false) })
	c.waitUpToDate(p)
	img, err := os.OpenFile(filepath.Join(c.nodes["d1"].me.DataDir, "data.img"), os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = img.WriteAt(selfSummed(2), 0) // another such block behind d1's back
	require.NoError(t, err)
	require.NoError(t, img.Close())

	res, err := p.Verify(t.Context(), false)
	require.NoError(t, err)
	require.Empty(t, res[0].Error)
	require.Equal(t, []extent.Extent{{Offset: 0, Length: primary.VerifyChunk}}, res[0].OutOfSync)
}

package chaos

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestImageDiff(t *testing.T) {
	dir := t.TempDir()
	a := make([]byte, 3<<20)
	b := make([]byte, 3<<20)
	for _, blk := range []int{3, 4, 256, 300, 301, 302} { // 256: the first block of the second 1 MiB read
		b[blk*BlockSize+17] = 1
	}
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	require.NoError(t, os.WriteFile(pa, a, 0o600))
	require.NoError(t, os.WriteFile(pb, b[:len(b)-BlockSize], 0o600)) // b lacks a's last block
	runs, total, err := imageDiff(pa, pb)
	require.NoError(t, err)
	require.EqualValues(t, 7, total)
	require.Equal(t, []diffRun{{3, 2}, {256, 1}, {300, 3}, {3<<20/BlockSize - 1, 1}}, runs, "the last: the block only one image has")
	require.Contains(t, describeDiff(runs, total), "blocks 300-302 (offset 1228800, 12 KiB)")

	b[500*BlockSize] = 1 // a fifth run: counted, not listed
	require.NoError(t, os.WriteFile(pb, b, 0o600))
	runs, total, err = imageDiff(pa, pb)
	require.NoError(t, err)
	require.EqualValues(t, 7, total)
	require.Equal(t, []diffRun{{3, 2}, {256, 1}, {300, 3}, {500, 1}}, runs)

	runs, total, err = imageDiff(pa, pa)
	require.NoError(t, err)
	require.Zero(t, total)
	require.Empty(t, runs)
}

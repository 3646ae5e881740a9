package node

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// requirePrivate fails unless every directory under root is 0700 and
// every file 0600 (no group or other bits).
func requirePrivate(t *testing.T, root string) int {
	t.Helper()
	n := 0
	require.NoError(t, filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		info, err := d.Info()
		require.NoError(t, err)
		want := os.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		require.Equal(t, want, info.Mode().Perm(), "%s", path)
		n++
		return nil
	}))
	return n
}

// Data directories are 0700 and every file in them 0600 (data.img, journal
// segments, meta, raft.state, history, sums, the lock), and those left
// world-readable by an older version are fixed at start (issue 15).
func TestDataDirIsPrivate(t *testing.T) {
	c := newTestCluster(t, 2, true, "")
	p := c.primary()
	c.waitUpToDate(p)
	writeBlocks(t, p, 0, 8)
	c.closeAll()
	dirs := []string{c.cfg.Nodes[0].DataDir, c.cfg.Nodes[1].DataDir, c.cfg.Witness.DataDir}
	for _, d := range dirs {
		require.GreaterOrEqual(t, requirePrivate(t, d), 3, "%s", d) // the witness: dir, lock, raft.state
	}
	for _, f := range []string{"data.img", "raft.state", "lock"} {
		require.FileExists(t, filepath.Join(dirs[0], f))
	}

	// As an older version left them.
	for _, d := range dirs {
		require.NoError(t, filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			require.NoError(t, err)
			mode := os.FileMode(0o644)
			if e.IsDir() {
				mode = 0o755
			}
			return os.Chmod(path, mode)
		}))
	}
	c.start("d0")
	c.start("d1")
	c.startWitness()
	c.closeAll()
	for _, d := range dirs {
		requirePrivate(t, d)
	}
}

package node

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/freeport"
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
	t.Parallel()
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

// smallFS mounts a tmpfs of size bytes for the test (root only).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small file system needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "grbd-test", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	return dir
}

// A node whose disk is too small for its device fails to start and leaves
// nothing behind: no partly preallocated data.img, no journal, no
// directory it made; a directory that existed keeps what it held (issue
// 15: a partial 1 GiB data.img filled the file system).
func TestFailedStartLeavesNothing(t *testing.T) {
	t.Parallel()
	fsDir := smallFS(t, "8m")
	for _, tc := range []struct {
		name  string
		exist bool
	}{{"new-dir", false}, {"existing-dir", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(fsDir, tc.name)
			if tc.exist {
				require.NoError(t, os.MkdirAll(dataDir, 0o700))
				require.NoError(t, os.WriteFile(filepath.Join(dataDir, "keep"), []byte("x"), 0o600))
			}
			cfgText := fmt.Sprintf("cluster: t\ndevice:\n  size: 64MiB\njournal:\n  max-size: 8MiB\n  segment-size: 1MiB\nnodes:\n  - {name: d0, address: '%s', nbd: '%s', admin: '%s', data-dir: '%s'}\n",
				freeport.Loopback(t), freeport.Loopback(t), freeport.Loopback(t), dataDir)
			path := filepath.Join(t.TempDir(), "c.yaml")
			require.NoError(t, os.WriteFile(path, []byte(cfgText), 0o600))
			cfg, err := config.Load(path)
			require.NoError(t, err)
			_, err = Start(cfg, "d0", Options{Logger: testLogger()})
			require.Error(t, err)
			require.ErrorIs(t, err, syscall.ENOSPC)
			if !tc.exist {
				require.NoDirExists(t, dataDir)
			} else {
				ents, err := os.ReadDir(dataDir)
				require.NoError(t, err)
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				require.ElementsMatch(t, []string{"keep", "lock"}, names)
			}
			var st syscall.Statfs_t
			require.NoError(t, syscall.Statfs(fsDir, &st))
			require.Less(t, (st.Blocks-st.Bfree)*uint64(st.Bsize), uint64(1<<20), "space is free again")
		})
	}
}

package datadir

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFixModes(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	sub := filepath.Join(dir, "journal")
	require.NoError(t, os.Mkdir(sub, 0o755))
	require.NoError(t, os.Chmod(sub, 0o775))
	for path, mode := range map[string]os.FileMode{
		filepath.Join(dir, "data.img"):         0o644,
		filepath.Join(sub, "00000001.seg"):     0o666,
		filepath.Join(dir, "raft.state"):       0o600,
		filepath.Join(dir, "owner-executable"): 0o755,
	} {
		require.NoError(t, os.WriteFile(path, nil, mode))
		require.NoError(t, os.Chmod(path, mode))
	}
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(dir, "link")))

	fixed, err := FixModes(dir)
	require.NoError(t, err)
	require.Len(t, fixed, 5, "%v", fixed) // dir, journal, data.img, segment, owner-executable
	for path, want := range map[string]os.FileMode{
		dir: 0o700, sub: 0o700,
		filepath.Join(dir, "data.img"):         0o600,
		filepath.Join(sub, "00000001.seg"):     0o600,
		filepath.Join(dir, "raft.state"):       0o600,
		filepath.Join(dir, "owner-executable"): 0o700,
	} {
		info, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, want, info.Mode().Perm(), path)
	}
	info, err := os.Stat("/etc/passwd")
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), info.Mode().Perm(), "a symbolic link's target is not touched")

	fixed, err = FixModes(dir)
	require.NoError(t, err)
	require.Empty(t, fixed, "nothing left to fix")
}

func TestAcquireCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	l, err := Prepare(dir, nil)
	require.NoError(t, err)
	defer l.Release()
	info, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	info, err = os.Stat(filepath.Join(dir, LockFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

package vfs_test

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grbd/grbd/internal/vfs"
)

func TestWithErrors(t *testing.T) {
	cases := []struct {
		name   string
		failOp vfs.Op
		run    func(fs vfs.FS, f vfs.File) error
	}{
		{"open", vfs.OpOpen, func(fs vfs.FS, _ vfs.File) error {
			_, err := fs.OpenFile("/d/f", os.O_RDWR, 0)
			return err
		}},
		{"write", vfs.OpWrite, func(_ vfs.FS, f vfs.File) error { _, err := f.WriteAt([]byte("x"), 0); return err }},
		{"read", vfs.OpRead, func(_ vfs.FS, f vfs.File) error { _, err := f.ReadAt(make([]byte, 1), 0); return err }},
		{"sync", vfs.OpSync, func(_ vfs.FS, f vfs.File) error { return f.Sync() }},
		{"truncate", vfs.OpTruncate, func(_ vfs.FS, f vfs.File) error { return f.Truncate(0) }},
		{"size", vfs.OpSize, func(_ vfs.FS, f vfs.File) error { _, err := f.Size(); return err }},
		{"punch", vfs.OpPunchHole, func(_ vfs.FS, f vfs.File) error { return f.(vfs.Puncher).PunchHole(0, 1) }},
		{"syncdir", vfs.OpSyncDir, func(fs vfs.FS, _ vfs.File) error { return fs.SyncDir("/d") }},
		{"rename", vfs.OpRename, func(fs vfs.FS, _ vfs.File) error { return fs.Rename("/d/f", "/d/g") }},
		{"remove", vfs.OpRemove, func(fs vfs.FS, _ vfs.File) error { return fs.Remove("/d/f") }},
		{"readdir", vfs.OpReadDir, func(fs vfs.FS, _ vfs.File) error { _, err := fs.ReadDir("/d"); return err }},
		{"stat", vfs.OpStat, func(fs vfs.FS, _ vfs.File) error { _, err := fs.Stat("/d/f"); return err }},
		{"mkdirall", vfs.OpMkdirAll, func(fs vfs.FS, _ vfs.File) error { return fs.MkdirAll("/d/e", 0o755) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			require.NoError(t, mem.MkdirAll("/d", 0o755))
			var (
				mu    sync.Mutex
				armed bool
				seen  []string
			)
			fs := vfs.WithErrors(mem, func(op vfs.Op, name string) error {
				mu.Lock()
				defer mu.Unlock()
				if armed && op == tc.failOp {
					seen = append(seen, op.String()+" "+name)
					return syscall.EIO
				}
				return nil
			})
			f, err := fs.OpenFile("/d/f", os.O_RDWR|os.O_CREATE, 0o644)
			require.NoError(t, err)
			_, err = f.WriteAt([]byte("x"), 0)
			require.NoError(t, err)
			require.NoError(t, tc.run(fs, f), "not armed: passes through")

			mu.Lock()
			armed = true
			mu.Unlock()
			err = tc.run(fs, f)
			require.ErrorIs(t, err, syscall.EIO)
			var pe *os.PathError
			require.True(t, errors.As(err, &pe))
			require.Len(t, seen, 1)
			require.Contains(t, seen[0], tc.failOp.String()+" /d")
		})
	}

	t.Run("punch on a file without the capability", func(t *testing.T) {
		inner := vfs.WithErrors(vfs.NewMem(), func(vfs.Op, string) error { return nil })
		fs := vfs.WithErrors(noPunchFS{inner}, func(vfs.Op, string) error { return nil })
		f, err := fs.OpenFile("/f", os.O_RDWR|os.O_CREATE, 0o644)
		require.NoError(t, err)
		require.ErrorIs(t, f.(vfs.Puncher).PunchHole(0, 1), vfs.ErrNotSupported)
	})
}

// noPunchFS hides the Puncher capability of its files.
type noPunchFS struct{ vfs.FS }

type noPunchFile struct{ vfs.File }

func (n noPunchFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := n.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return noPunchFile{f}, nil
}

func TestOpString(t *testing.T) {
	require.Equal(t, "sync", vfs.OpSync.String())
	require.Equal(t, "Op(200)", vfs.Op(200).String())
}

package vfs_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grbd/grbd/internal/vfs"
)

// eachFS runs fn against the OS file system (in a temp dir) and MemFS, so
// both implementations are held to one contract.
func eachFS(t *testing.T, fn func(t *testing.T, fs vfs.FS, dir string)) {
	t.Run("os", func(t *testing.T) { fn(t, vfs.Default, t.TempDir()) })
	t.Run("mem", func(t *testing.T) {
		fs := vfs.NewMem()
		require.NoError(t, fs.MkdirAll("/tmp/test", 0o755))
		fn(t, fs, "/tmp/test")
	})
	t.Run("watched os", func(t *testing.T) { fn(t, vfs.Watch(vfs.Default), t.TempDir()) })
}

func create(t *testing.T, fs vfs.FS, name string, data []byte) vfs.File {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	require.NoError(t, err)
	if len(data) > 0 {
		n, err := f.WriteAt(data, 0)
		require.NoError(t, err)
		require.Equal(t, len(data), n)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func TestFSContract(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, fs vfs.FS, dir string)
	}{
		{"open missing is ErrNotExist", func(t *testing.T, fs vfs.FS, dir string) {
			_, err := fs.OpenFile(filepath.Join(dir, "nope"), os.O_RDWR, 0)
			require.ErrorIs(t, err, os.ErrNotExist)
			_, err = fs.Stat(filepath.Join(dir, "nope"))
			require.ErrorIs(t, err, os.ErrNotExist)
		}},
		{"O_EXCL on existing is ErrExist", func(t *testing.T, fs vfs.FS, dir string) {
			create(t, fs, filepath.Join(dir, "a"), nil)
			_, err := fs.OpenFile(filepath.Join(dir, "a"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
			require.ErrorIs(t, err, os.ErrExist)
		}},
		{"positional read and write", func(t *testing.T, fs vfs.FS, dir string) {
			f := create(t, fs, filepath.Join(dir, "a"), []byte("hello"))
			_, err := f.WriteAt([]byte("XY"), 7) // leaves a zero gap
			require.NoError(t, err)
			buf := make([]byte, 9)
			n, err := f.ReadAt(buf, 0)
			require.NoError(t, err)
			require.Equal(t, 9, n)
			require.Equal(t, []byte("hello\x00\x00XY"), buf)
			n, err = f.ReadAt(buf, 5) // short read at EOF
			require.ErrorIs(t, err, io.EOF)
			require.Equal(t, 4, n)
			_, err = f.ReadAt(buf, 100)
			require.ErrorIs(t, err, io.EOF)
			size, err := f.Size()
			require.NoError(t, err)
			require.EqualValues(t, 9, size)
			fi, err := fs.Stat(filepath.Join(dir, "a"))
			require.NoError(t, err)
			require.EqualValues(t, 9, fi.Size())
			require.False(t, fi.IsDir())
		}},
		{"truncate shrinks and zero-fills", func(t *testing.T, fs vfs.FS, dir string) {
			f := create(t, fs, filepath.Join(dir, "a"), []byte("abcdef"))
			require.NoError(t, f.Truncate(2))
			require.NoError(t, f.Truncate(4))
			buf := make([]byte, 4)
			_, err := f.ReadAt(buf, 0)
			require.NoError(t, err)
			require.Equal(t, []byte("ab\x00\x00"), buf)
			require.NoError(t, f.Sync())
		}},
		{"punch hole zeroes and keeps size", func(t *testing.T, fs vfs.FS, dir string) {
			data := bytes.Repeat([]byte{0xAB}, 3*4096)
			f := create(t, fs, filepath.Join(dir, "a"), data)
			p, ok := f.(vfs.Puncher)
			require.True(t, ok, "file must implement Puncher")
			err := p.PunchHole(4096, 4096)
			if errors.Is(err, vfs.ErrNotSupported) {
				t.Skip("file system cannot punch holes")
			}
			require.NoError(t, err)
			got := make([]byte, len(data))
			_, err = f.ReadAt(got, 0)
			require.NoError(t, err)
			want := bytes.Clone(data)
			clear(want[4096:8192])
			require.Equal(t, want, got)
			size, err := f.Size()
			require.NoError(t, err)
			require.EqualValues(t, len(data), size)
		}},
		{"readdir is sorted", func(t *testing.T, fs vfs.FS, dir string) {
			for _, n := range []string{"b", "c", "a"} {
				create(t, fs, filepath.Join(dir, n), nil)
			}
			require.NoError(t, fs.MkdirAll(filepath.Join(dir, "d", "e"), 0o755))
			names, err := fs.ReadDir(dir)
			require.NoError(t, err)
			require.Equal(t, []string{"a", "b", "c", "d"}, names)
			require.NoError(t, fs.SyncDir(dir))
		}},
		{"rename replaces target", func(t *testing.T, fs vfs.FS, dir string) {
			create(t, fs, filepath.Join(dir, "a"), []byte("new"))
			create(t, fs, filepath.Join(dir, "b"), []byte("old!"))
			require.NoError(t, fs.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")))
			_, err := fs.Stat(filepath.Join(dir, "a"))
			require.ErrorIs(t, err, os.ErrNotExist)
			f, err := fs.OpenFile(filepath.Join(dir, "b"), os.O_RDONLY, 0)
			require.NoError(t, err)
			defer f.Close()
			buf := make([]byte, 3)
			_, err = f.ReadAt(buf, 0)
			require.NoError(t, err)
			require.Equal(t, "new", string(buf))
		}},
		{"remove file and non-empty dir", func(t *testing.T, fs vfs.FS, dir string) {
			require.NoError(t, fs.MkdirAll(filepath.Join(dir, "d"), 0o755))
			require.NoError(t, create(t, fs, filepath.Join(dir, "d", "x"), nil).Close())
			require.Error(t, fs.Remove(filepath.Join(dir, "d")), "non-empty dir")
			require.NoError(t, fs.Remove(filepath.Join(dir, "d", "x")))
			require.NoError(t, fs.Remove(filepath.Join(dir, "d")))
			require.ErrorIs(t, fs.Remove(filepath.Join(dir, "d")), os.ErrNotExist)
		}},
		{"read-only file refuses writes", func(t *testing.T, fs vfs.FS, dir string) {
			create(t, fs, filepath.Join(dir, "a"), []byte("x"))
			f, err := fs.OpenFile(filepath.Join(dir, "a"), os.O_RDONLY, 0)
			require.NoError(t, err)
			defer f.Close()
			_, err = f.WriteAt([]byte("y"), 0)
			require.ErrorIs(t, err, syscall.EBADF)
		}},
		{"closed file refuses I/O", func(t *testing.T, fs vfs.FS, dir string) {
			f, err := fs.OpenFile(filepath.Join(dir, "a"), os.O_RDWR|os.O_CREATE, 0o644)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			_, err = f.WriteAt([]byte("y"), 0)
			require.ErrorIs(t, err, os.ErrClosed)
			require.Error(t, f.Sync())
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { eachFS(t, tc.run) })
	}
}

// The OS file system tells where a sparse file holds data (SEEK_DATA,
// SEEK_HOLE); a file system that cannot tell says so.
func TestNextData(t *testing.T) {
	f := create(t, vfs.Default, filepath.Join(t.TempDir(), "sparse"), nil)
	require.NoError(t, f.Truncate(64<<20))
	_, err := f.WriteAt(bytes.Repeat([]byte{1}, 5000), 8<<20+100)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	df, ok := f.(vfs.DataFinder)
	require.True(t, ok, "the OS file is a DataFinder")

	start, end, err := df.NextData(0)
	if errors.Is(err, vfs.ErrNotSupported) {
		t.Skipf("this file system cannot tell data from holes: %v", err)
	}
	require.NoError(t, err)
	if start == 0 && end == 64<<20 {
		t.Skip("this file system reports a sparse file as all data (allowed: it reads back zeros)")
	}
	// A file system may report more data than was written, never less.
	require.LessOrEqual(t, start, int64(8<<20+100))
	require.GreaterOrEqual(t, end, int64(8<<20+5100))
	require.Less(t, end, int64(64<<20), "the hole at the end is reported as data")
	s2, e2, err := df.NextData(start + 10)
	require.NoError(t, err)
	require.Equal(t, [2]int64{start + 10, end}, [2]int64{s2, e2}, "an offset inside data starts its range")
	_, _, err = df.NextData(end)
	require.ErrorIs(t, err, io.EOF)

	_, ok = create(t, vfs.NewMem(), "/m", nil).(vfs.DataFinder)
	require.False(t, ok, "MemFS reports no holes: it has none")
}

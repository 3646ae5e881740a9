package vfs_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grbd/grbd/internal/vfs"
)

const crashSeeds = 200

func readAll(t *testing.T, fs vfs.FS, name string) ([]byte, bool) {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDONLY, 0)
	if os.IsNotExist(err) {
		return nil, false
	}
	require.NoError(t, err)
	defer f.Close()
	size, err := f.Size()
	require.NoError(t, err)
	buf := make([]byte, size)
	if size > 0 {
		_, err = f.ReadAt(buf, 0)
		require.NoError(t, err)
	}
	return buf, true
}

// durableFile creates name holding data, synced and with its name synced.
func durableFile(t *testing.T, fs *vfs.MemFS, name string, data []byte) vfs.File {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	require.NoError(t, err)
	if len(data) > 0 {
		_, err = f.WriteAt(data, 0)
		require.NoError(t, err)
	}
	require.NoError(t, f.Sync())
	require.NoError(t, fs.SyncDir("/"))
	return f
}

func TestCrashCloneFiles(t *testing.T) {
	old := bytes.Repeat([]byte{'a'}, 4*vfs.SectorSize)
	neu := bytes.Repeat([]byte{'b'}, 4*vfs.SectorSize)

	t.Run("synced data always survives", func(t *testing.T) {
		fs := vfs.NewMem()
		durableFile(t, fs, "/f", old)
		for seed := range uint64(crashSeeds) {
			got, ok := readAll(t, fs.CrashClone(rand.New(rand.NewPCG(seed, 1))), "/f")
			require.True(t, ok)
			require.Equal(t, old, got)
		}
	})

	t.Run("unsynced write survives whole, lost, or torn by sector", func(t *testing.T) {
		fs := vfs.NewMem()
		f := durableFile(t, fs, "/f", old)
		_, err := f.WriteAt(neu[:3*vfs.SectorSize+100], 100) // unaligned: 4 pieces
		require.NoError(t, err)
		seen := map[string]bool{}
		for seed := range uint64(crashSeeds) {
			got, ok := readAll(t, fs.CrashClone(rand.New(rand.NewPCG(seed, 2))), "/f")
			require.True(t, ok)
			require.Len(t, got, len(old))
			end := 100 + 3*vfs.SectorSize + 100
			require.Equal(t, old[:100], got[:100], "bytes outside the write never change")
			require.Equal(t, old[end:], got[end:], "bytes outside the write never change")
			// Each piece, cut at absolute sector boundaries, is all old or all new.
			shape := ""
			for lo := 100; lo < end; {
				hi := min((lo/vfs.SectorSize+1)*vfs.SectorSize, end)
				switch piece := got[lo:hi]; {
				case bytes.Equal(piece, old[lo:hi]):
					shape += "o"
				case bytes.Equal(piece, neu[lo:hi]):
					shape += "n"
				default:
					t.Fatalf("seed %d: piece [%d,%d) is neither old nor new", seed, lo, hi)
				}
				lo = hi
			}
			seen[shape] = true
		}
		require.True(t, seen["oooo"], "write lost entirely")
		require.True(t, seen["nnnn"], "write survived entirely")
		require.Greater(t, len(seen), 8, "torn variants: %v", seen)

		require.NoError(t, f.Sync())
		got, _ := readAll(t, fs.CrashClone(rand.New(rand.NewPCG(0, 0))), "/f")
		want := bytes.Clone(old)
		copy(want[100:], neu[:3*vfs.SectorSize+100])
		require.Equal(t, want, got)
	})

	t.Run("unsynced append may extend with zero gaps", func(t *testing.T) {
		fs := vfs.NewMem()
		f := durableFile(t, fs, "/f", nil)
		_, err := f.WriteAt(old, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(neu, int64(len(old)))
		require.NoError(t, err)
		gap := false
		for seed := range uint64(crashSeeds) {
			got, _ := readAll(t, fs.CrashClone(rand.New(rand.NewPCG(seed, 3))), "/f")
			for s := 0; s+vfs.SectorSize <= len(got); s += vfs.SectorSize {
				sec := got[s : s+vfs.SectorSize]
				want := append(bytes.Clone(old), neu...)[s : s+vfs.SectorSize]
				if !bytes.Equal(sec, want) {
					require.Equal(t, make([]byte, vfs.SectorSize), sec, "a lost sector reads as zeros")
					gap = true
				}
			}
		}
		require.True(t, gap, "some clone must keep a later write and lose an earlier one")
	})

	t.Run("unsynced truncate and punch may be lost", func(t *testing.T) {
		fs := vfs.NewMem()
		f := durableFile(t, fs, "/f", old)
		require.NoError(t, f.(vfs.Puncher).PunchHole(0, vfs.SectorSize))
		require.NoError(t, f.Truncate(2*vfs.SectorSize))
		sizes, punched := map[int]bool{}, map[bool]bool{}
		for seed := range uint64(crashSeeds) {
			got, _ := readAll(t, fs.CrashClone(rand.New(rand.NewPCG(seed, 4))), "/f")
			sizes[len(got)] = true
			punched[got[0] == 0] = true
		}
		require.Equal(t, map[int]bool{len(old): true, 2 * vfs.SectorSize: true}, sizes)
		require.Equal(t, map[bool]bool{true: true, false: true}, punched)
	})

	t.Run("same seed same clone", func(t *testing.T) {
		fs := vfs.NewMem()
		f := durableFile(t, fs, "/f", old)
		for i := range 8 {
			_, err := f.WriteAt(neu[:vfs.SectorSize], int64(i*300))
			require.NoError(t, err)
		}
		a, _ := readAll(t, fs.CrashClone(rand.New(rand.NewPCG(7, 7))), "/f")
		b, _ := readAll(t, fs.CrashClone(rand.New(rand.NewPCG(7, 7))), "/f")
		require.Equal(t, a, b)
	})
}

func TestCrashCloneDirectories(t *testing.T) {
	data := []byte("payload")
	crash := func(fs *vfs.MemFS) *vfs.MemFS { return fs.CrashClone(rand.New(rand.NewPCG(1, 1))) }
	cases := []struct {
		name string
		run  func(t *testing.T, fs *vfs.MemFS)
		want map[string]string // durable names under /d and their contents
	}{
		{"create without SyncDir is lost", func(t *testing.T, fs *vfs.MemFS) {
			f := create(t, fs, "/d/new", data)
			require.NoError(t, f.Sync())
		}, map[string]string{"keep": "payload"}},
		{"create with SyncDir survives", func(t *testing.T, fs *vfs.MemFS) {
			f := create(t, fs, "/d/new", data)
			require.NoError(t, f.Sync())
			require.NoError(t, fs.SyncDir("/d"))
		}, map[string]string{"keep": "payload", "new": "payload"}},
		{"rename without SyncDir is undone", func(t *testing.T, fs *vfs.MemFS) {
			require.NoError(t, fs.Rename("/d/keep", "/d/moved"))
		}, map[string]string{"keep": "payload"}},
		{"rename with SyncDir survives", func(t *testing.T, fs *vfs.MemFS) {
			require.NoError(t, fs.Rename("/d/keep", "/d/moved"))
			require.NoError(t, fs.SyncDir("/d"))
		}, map[string]string{"moved": "payload"}},
		{"remove without SyncDir is undone", func(t *testing.T, fs *vfs.MemFS) {
			require.NoError(t, fs.Remove("/d/keep"))
		}, map[string]string{"keep": "payload"}},
		{"remove with SyncDir survives", func(t *testing.T, fs *vfs.MemFS) {
			require.NoError(t, fs.Remove("/d/keep"))
			require.NoError(t, fs.SyncDir("/d"))
		}, map[string]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			require.NoError(t, fs.MkdirAll("/d", 0o755))
			require.NoError(t, fs.SyncDir("/"))
			require.NoError(t, create(t, fs, "/d/keep", data).Sync())
			require.NoError(t, fs.SyncDir("/d"))
			tc.run(t, fs)
			c := crash(fs)
			names, err := c.ReadDir("/d")
			require.NoError(t, err)
			got := map[string]string{}
			for _, n := range names {
				b, _ := readAll(t, c, "/d/"+n)
				got[n] = string(b)
			}
			require.Equal(t, tc.want, got)
		})
	}

	t.Run("directory without SyncDir of parent is lost", func(t *testing.T) {
		fs := vfs.NewMem()
		require.NoError(t, fs.MkdirAll("/a/b", 0o755))
		require.NoError(t, fs.SyncDir("/a"))
		names, err := crash(fs).ReadDir("/")
		require.NoError(t, err)
		require.Empty(t, names)
	})

	t.Run("clone is independent", func(t *testing.T) {
		fs := vfs.NewMem()
		f := durableFile(t, fs, "/f", data)
		c := crash(fs)
		cf, err := c.OpenFile("/f", os.O_RDWR, 0)
		require.NoError(t, err)
		_, err = cf.WriteAt([]byte("XXXX"), 0)
		require.NoError(t, err)
		got, _ := readAll(t, fs, "/f")
		require.Equal(t, data, got)
		_, err = f.WriteAt([]byte("YY"), 0) // the original stays usable
		require.NoError(t, err)
		got, _ = readAll(t, c, "/f")
		require.Equal(t, "XXXXoad", string(got))
	})
}

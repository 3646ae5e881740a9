package raftlog

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/raft/v3/raftpb"
)

func sampleLog(n int) Log {
	l := Log{
		HardState: pb.HardState{Term: 3, Vote: 2, Commit: uint64(10 + n)},
		Snapshot: pb.Snapshot{Data: []byte("state"), Metadata: pb.SnapshotMetadata{
			Index: 10, Term: 2, ConfState: pb.ConfState{Voters: []uint64{1, 2, 3}}}},
	}
	for i := range n {
		l.Entries = append(l.Entries, pb.Entry{Term: 3, Index: uint64(11 + i), Data: []byte(fmt.Sprint("cmd", i))})
	}
	return l
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 50} {
		t.Run(fmt.Sprint("entries=", n), func(t *testing.T) {
			b, err := Encode(sampleLog(n))
			require.NoError(t, err)
			got, err := Decode(b)
			require.NoError(t, err)
			want := sampleLog(n)
			if n == 0 {
				want.Entries = []pb.Entry{}
			}
			require.Equal(t, want, got)
		})
	}
}

func TestDecodeDetectsDamage(t *testing.T) {
	b, err := Encode(sampleLog(3))
	require.NoError(t, err)
	for i := range b {
		bad := append([]byte(nil), b...)
		bad[i] ^= 0x01
		_, err := Decode(bad)
		require.ErrorIs(t, err, ErrCorrupt, "bit flipped in byte %d", i)
	}
	for n := range len(b) {
		_, err := Decode(b[:n])
		require.ErrorIs(t, err, ErrCorrupt, "truncated to %d bytes", n)
	}
}

func TestLoadSave(t *testing.T) {
	fs := vfs.NewMem()
	require.NoError(t, fs.MkdirAll("/d", 0o755))
	l, err := Load(fs, "/d")
	require.NoError(t, err)
	require.Equal(t, Log{}, l, "a new member")
	require.NoError(t, Save(fs, "/d", sampleLog(2)))
	l, err = Load(fs, "/d")
	require.NoError(t, err)
	require.Equal(t, sampleLog(2), l)

	f, err := fs.OpenFile("/d/"+FileName, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff}, 20)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = Load(fs, "/d")
	require.ErrorIs(t, err, ErrCorrupt)
}

// A crash during Save leaves the old or the new log, never a mix.
func TestSaveIsAtomicUnderCrash(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		fs := vfs.NewMem()
		require.NoError(t, fs.MkdirAll("/d", 0o755))
		require.NoError(t, fs.SyncDir("/"))
		require.NoError(t, Save(fs, "/d", sampleLog(1)))
		crashAfterWrite := i%2 == 0
		if crashAfterWrite {
			require.NoError(t, Save(fs, "/d", sampleLog(5)))
		} else {
			b, _ := Encode(sampleLog(5))
			f, _ := fs.OpenFile(filepath.Join("/d", FileName+".tmp"), os.O_CREATE|os.O_RDWR, 0o644)
			_, _ = f.WriteAt(b, 0)
		}
		l, err := Load(fs.CrashClone(rng), "/d")
		require.NoError(t, err)
		if crashAfterWrite {
			require.Equal(t, sampleLog(5), l)
		} else {
			require.Equal(t, sampleLog(1), l)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, n := range []int{0, 2} {
		b, _ := Encode(sampleLog(n))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := Decode(b)
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			return
		}
		_, err = Encode(l)
		require.NoError(t, err)
	})
}

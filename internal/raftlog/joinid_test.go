package raftlog

import (
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

func TestJoinIDRoundTrip(t *testing.T) {
	fs := vfs.NewMem()
	require.NoError(t, fs.MkdirAll("d", 0o755))
	_, ok, err := LoadJoinID(fs, "d")
	require.NoError(t, err)
	require.False(t, ok)
	for _, j := range []JoinID{{ID: 0xabcdef02}, {ID: 0x1234503, Joined: true}} {
		require.NoError(t, SaveJoinID(fs, "d", j))
		got, ok, err := LoadJoinID(fs, "d")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, j, got)
	}
	require.NoError(t, RemoveJoinID(fs, "d"))
	require.NoError(t, RemoveJoinID(fs, "d"))
	_, ok, err = LoadJoinID(fs, "d")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestJoinIDCorrupt(t *testing.T) {
	good := EncodeJoinID(JoinID{ID: 0x5eed03, Joined: true})
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for name, b := range map[string][]byte{
		"short":        good[:19],
		"long":         append(append([]byte(nil), good...), 0),
		"magic":        mut(func(b []byte) []byte { b[0] ^= 1; return b }),
		"version":      mut(func(b []byte) []byte { b[4] = 2; return b }),
		"unknown flag": mut(func(b []byte) []byte { b[5] |= 2; return b }),
		"reserved":     mut(func(b []byte) []byte { b[7] = 1; return b }),
		"id bit flip":  mut(func(b []byte) []byte { b[9] ^= 4; return b }),
		"crc":          mut(func(b []byte) []byte { b[19] ^= 1; return b }),
		"id zero":      EncodeJoinID(JoinID{}),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeJoinID(b)
			require.ErrorIs(t, err, ErrCorrupt)
		})
	}
}

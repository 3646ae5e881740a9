package ec

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestShardRange(t *testing.T) {
	g := Geometry{K: 2, M: 2, Chunk: 1024, Size: 10 * 1024} // stripes of 2048
	for _, tc := range []struct {
		name     string
		off, end int64
		a, b     int64
	}{
		{"inside first chunk", 100, 200, 100, 200},
		{"inside second chunk", 1024 + 100, 1024 + 300, 100, 300},
		{"second stripe", 2048 + 1030, 2048 + 1040, 1024 + 6, 1024 + 16},
		{"across chunks of one stripe", 1000, 1100, 0, 1024},
		{"whole stripe", 2048, 4096, 1024, 2048},
		{"last chunk of a stripe into the next", 2048 - 10, 2048 + 10, 1014, 1024 + 10},
		{"first chunk into the second of the next stripe", 1000, 2048 + 1500, 0, 2048},
		{"three stripes", 1500, 3*2048 + 5, 476, 3*1024 + 5},
		{"one byte", 7, 8, 7, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := g.ShardRange(tc.off, tc.end)
			require.Equal(t, [2]int64{tc.a, tc.b}, [2]int64{a, b})
		})
	}
}

func TestGeometry(t *testing.T) {
	g := Geometry{K: 2, M: 2, Chunk: 64 << 10, Size: 64 << 20}
	require.NoError(t, g.Check())
	require.Equal(t, int64(32<<20), g.ShardSize())
	odd := Geometry{K: 3, M: 1, Chunk: 4096, Size: 3*4096 + 1}
	require.Equal(t, int64(2), odd.Stripes())
	require.Equal(t, int64(2*4096), odd.ShardSize())
	for _, bad := range []Geometry{{K: 0, M: 1, Chunk: 4096, Size: 1}, {K: 2, M: 0, Chunk: 4096, Size: 1},
		{K: 17, M: 1, Chunk: 4096, Size: 1}, {K: 2, M: 9, Chunk: 4096, Size: 1}, {K: 2, M: 2, Chunk: 1000, Size: 1},
		{K: 2, M: 2, Chunk: 4096, Size: 0}} {
		require.ErrorIs(t, bad.Check(), ErrGeometry, "%+v", bad)
	}
}

// model is a device and its k+m shard images, maintained the way the
// primary maintains its peers: only ShardRange of each write is re-encoded
// and written to every shard.
type model struct {
	cd     *Coder
	dev    []byte
	shards [][]byte
}

func newModel(t testing.TB, g Geometry) *model {
	cd, err := NewCoder(g)
	require.NoError(t, err)
	m := &model{cd: cd, dev: make([]byte, g.Size), shards: make([][]byte, g.Shards())}
	for h := range m.shards {
		m.shards[h] = make([]byte, g.ShardSize())
	}
	return m
}

func (m *model) read(p []byte, off int64) error { copy(p, m.dev[off:]); return nil }

func (m *model) write(t testing.TB, off int64, data []byte) {
	copy(m.dev[off:], data)
	a, b := m.cd.G.ShardRange(off, off+int64(len(data)))
	sh, err := m.cd.Encode(m.read, a, b)
	require.NoError(t, err)
	for h := range sh {
		copy(m.shards[h][a:b], sh[h])
	}
}

// check: the incrementally kept shards equal a fresh encoding of the whole
// device, and the device decodes back from every choice of k shards.
func (m *model) check(t testing.TB) {
	g := m.cd.G
	full, err := m.cd.Encode(m.read, 0, g.ShardSize())
	require.NoError(t, err)
	for h := range full {
		require.True(t, bytes.Equal(full[h], m.shards[h]), "shard %d drifted from a fresh encoding", h)
	}
	n := g.Shards()
	for mask := 0; mask < 1<<n; mask++ {
		present := 0
		sh := make([][]byte, n)
		for h := range n {
			if mask&(1<<h) != 0 {
				sh[h] = append([]byte(nil), m.shards[h]...)
				present++
			}
		}
		got, err := m.cd.Decode(sh, 0, g.ShardSize(), 0, g.Size)
		if present < g.K {
			require.ErrorIs(t, err, ErrTooFewShards)
			continue
		}
		require.NoError(t, err)
		require.True(t, bytes.Equal(m.dev, got), "decode with shard mask %b", mask)
	}
}

func TestIncrementalEncodeMatchesFull(t *testing.T) {
	for _, g := range []Geometry{
		{K: 2, M: 2, Chunk: 512, Size: 7*1024 + 512},
		{K: 3, M: 1, Chunk: 1024, Size: 10 * 3072},
		{K: 4, M: 2, Chunk: 512, Size: 4096 + 512},
	} {
		rng := rand.New(rand.NewPCG(uint64(g.K), uint64(g.M)))
		m := newModel(t, g)
		for range 200 {
			off := rng.Int64N(g.Size)
			n := 1 + rng.Int64N(min(g.Size-off, 3*g.StripeBytes()))
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			m.write(t, off, data)
		}
		m.check(t)
	}
}

func TestDecodePartialRange(t *testing.T) {
	g := Geometry{K: 2, M: 2, Chunk: 512, Size: 8 * 1024}
	m := newModel(t, g)
	data := bytes.Repeat([]byte("grbd"), 1024)
	m.write(t, 300, data)
	a, b := g.ShardRange(1000, 3000)
	a, b = a/g.Chunk*g.Chunk, (b+g.Chunk-1)/g.Chunk*g.Chunk
	sh := [][]byte{nil, append([]byte(nil), m.shards[1][a:b]...), nil, append([]byte(nil), m.shards[3][a:b]...)}
	got, err := m.cd.Decode(sh, a, b, 1000, 3000)
	require.NoError(t, err)
	require.Equal(t, m.dev[1000:3000], got)
	_, err = m.cd.Decode(sh, a, b, 0, g.Size)
	require.ErrorIs(t, err, ErrGeometry)
}

func TestGatherReadError(t *testing.T) {
	g := Geometry{K: 2, M: 1, Chunk: 512, Size: 4096}
	cd, err := NewCoder(g)
	require.NoError(t, err)
	boom := errors.New("boom")
	_, err = cd.Encode(func([]byte, int64) error { return boom }, 0, 512)
	require.ErrorIs(t, err, boom)
	_, err = cd.Encode(func([]byte, int64) error { return nil }, 0, g.ShardSize()+1)
	require.ErrorIs(t, err, ErrGeometry)
}

// FuzzWrite applies writes chosen by the fuzzer to a small 2+2 model and
// checks the shards against a full encoding and every k-subset decode.
func FuzzWrite(f *testing.F) {
	f.Add(uint16(0), uint16(1), byte(1), uint16(2000), uint16(600), byte(7))
	f.Add(uint16(511), uint16(2), byte(0xff), uint16(3000), uint16(1100), byte(0))
	f.Fuzz(func(t *testing.T, off1, n1 uint16, b1 byte, off2, n2 uint16, b2 byte) {
		g := Geometry{K: 2, M: 2, Chunk: 512, Size: 5*1024 + 512}
		m := newModel(t, g)
		for _, w := range []struct {
			off, n uint16
			b      byte
		}{{off1, n1, b1}, {off2, n2, b2}} {
			off := int64(w.off) % g.Size
			n := 1 + int64(w.n)%(g.Size-off)
			m.write(t, off, bytes.Repeat([]byte{w.b}, int(n)))
		}
		m.check(t)
	})
}

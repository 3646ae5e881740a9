// Package ec is the stripe arithmetic of erasure-coded resources
// (docs/erasure.md): which bytes of each shard image a device write
// changes, how those bytes are gathered from the primary's full copy and
// encoded with Reed-Solomon (github.com/klauspost/reedsolomon), and how a
// device range is decoded back from any k shards. It is pure: callers pass
// the device through a read function, so every rule is testable without
// files or sockets.
//
// Layout: stripe s covers device bytes [s*k*C, (s+1)*k*C); data shard i < k
// holds bytes [s*k*C + i*C, +C) of it, parity shards k..k+m-1 are computed.
// Every shard image is compact: shard h keeps its chunk of stripe s at
// s*C, so one device write is one contiguous range of every shard image.
// Bytes past the device size read as zeros.
package ec

import (
	"errors"
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// Limits on k and m (validated by internal/config too).
const (
	MaxK = 16
	MaxM = 8
	// DefaultChunk is the chunk size C.
	DefaultChunk = 64 << 10
)

// Errors callers branch on.
var (
	// ErrGeometry marks an invalid k, m, chunk or size.
	ErrGeometry = errors.New("ec: invalid geometry")
	// ErrTooFewShards is returned when fewer than k shards are present.
	ErrTooFewShards = errors.New("ec: fewer than k shards")
)

// Geometry is one resource's stripe layout.
type Geometry struct {
	K, M  int
	Chunk int64 // C, bytes
	Size  int64 // device size, bytes
}

// Check reports whether g is usable.
func (g Geometry) Check() error {
	switch {
	case g.K < 1 || g.K > MaxK:
		return fmt.Errorf("%w: k=%d not in 1..%d", ErrGeometry, g.K, MaxK)
	case g.M < 1 || g.M > MaxM:
		return fmt.Errorf("%w: m=%d not in 1..%d", ErrGeometry, g.M, MaxM)
	case g.Chunk < 512 || g.Chunk%512 != 0:
		return fmt.Errorf("%w: chunk %d is not a positive multiple of 512", ErrGeometry, g.Chunk)
	case g.Size <= 0:
		return fmt.Errorf("%w: size %d", ErrGeometry, g.Size)
	}
	return nil
}

// Shards is k+m.
func (g Geometry) Shards() int { return g.K + g.M }

// StripeBytes is k*C, the device bytes of one stripe.
func (g Geometry) StripeBytes() int64 { return int64(g.K) * g.Chunk }

// Stripes is the number of stripes covering the device.
func (g Geometry) Stripes() int64 { return (g.Size + g.StripeBytes() - 1) / g.StripeBytes() }

// ShardSize is the size of one compact shard image.
func (g Geometry) ShardSize() int64 { return g.Stripes() * g.Chunk }

// ShardRange returns the range [a, b) of every shard image that a device
// write of [off, end) changes. A write inside one chunk changes the same
// positions of each shard (Reed-Solomon works byte position by byte
// position); a write that spans chunks changes whole chunks of the stripes
// it touches, except the head of the first and the tail of the last.
// end must be above off.
func (g Geometry) ShardRange(off, end int64) (a, b int64) {
	sb, c := g.StripeBytes(), g.Chunk
	s0, s1 := off/sb, (end-1)/sb
	x0, x1 := off-s0*sb, end-1-s1*sb // stripe-relative, x1 inclusive
	if s0 == s1 {
		if x0/c == x1/c {
			return s0*c + x0%c, s0*c + x1%c + 1
		}
		return s0 * c, s0*c + c
	}
	a, b = s0*c, s1*c+c
	if x0/c == int64(g.K-1) {
		a += x0 % c // only the last chunk of the first stripe
	}
	if x1/c == 0 {
		b = s1*c + x1%c + 1 // only the first chunk of the last stripe
	}
	return a, b
}

// DeviceSpan is the device range [off, end) holding every data byte that
// shard range [a, b) is computed from: the whole stripes it touches,
// clipped to the device.
func (g Geometry) DeviceSpan(a, b int64) (off, end int64) {
	sb, c := g.StripeBytes(), g.Chunk
	return a / c * sb, min((b+c-1)/c*sb, g.Size)
}

// ReadFunc reads len(p) device bytes at off; off+len(p) is within the size.
type ReadFunc func(p []byte, off int64) error

// Gather returns data shard i's bytes of shard range [a, b), read from the
// device through read (zeros past the device size).
func (g Geometry) Gather(read ReadFunc, i int, a, b int64) ([]byte, error) {
	out := make([]byte, b-a)
	sb, c := g.StripeBytes(), g.Chunk
	for q := a; q < b; {
		s := q / c
		next := min(b, (s+1)*c)
		dev := s*sb + int64(i)*c + (q - s*c)
		n := next - q
		if dev < g.Size {
			m := min(n, g.Size-dev)
			if err := read(out[q-a:q-a+m], dev); err != nil {
				return nil, fmt.Errorf("ec: read shard %d at %d: %w", i, dev, err)
			}
		}
		q = next
	}
	return out, nil
}

// Coder encodes and reconstructs shards of one geometry. Safe for
// concurrent use.
type Coder struct {
	G  Geometry
	rs reedsolomon.Encoder
}

// NewCoder builds the coder of g.
func NewCoder(g Geometry) (*Coder, error) {
	if err := g.Check(); err != nil {
		return nil, err
	}
	rs, err := reedsolomon.New(g.K, g.M)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGeometry, err)
	}
	return &Coder{G: g, rs: rs}, nil
}

// Encode returns all k+m shards' bytes of shard range [a, b), the data
// shards gathered from the device through read.
func (cd *Coder) Encode(read ReadFunc, a, b int64) ([][]byte, error) {
	if a < 0 || b <= a || b > cd.G.ShardSize() {
		return nil, fmt.Errorf("%w: shard range [%d,%d) of %d", ErrGeometry, a, b, cd.G.ShardSize())
	}
	shards := make([][]byte, cd.G.Shards())
	for i := range cd.G.K {
		d, err := cd.G.Gather(read, i, a, b)
		if err != nil {
			return nil, err
		}
		shards[i] = d
	}
	for i := cd.G.K; i < len(shards); i++ {
		shards[i] = make([]byte, b-a)
	}
	if err := cd.rs.Encode(shards); err != nil {
		return nil, fmt.Errorf("ec: encode: %w", err)
	}
	return shards, nil
}

// Decode rebuilds device bytes [off, end) from shard range
// DeviceSpan-aligned pieces: shards[h] is shard h's bytes of [a, b) (a
// stripe-aligned range covering [off, end)) or nil when missing; at least k
// must be present. It fills the missing data shards in place.
func (cd *Coder) Decode(shards [][]byte, a, b, off, end int64) ([]byte, error) {
	g := cd.G
	if len(shards) != g.Shards() {
		return nil, fmt.Errorf("%w: %d shards, want %d", ErrGeometry, len(shards), g.Shards())
	}
	have := 0
	for _, s := range shards {
		if s != nil {
			if int64(len(s)) != b-a {
				return nil, fmt.Errorf("%w: shard of %d bytes for range of %d", ErrGeometry, len(s), b-a)
			}
			have++
		}
	}
	if have < g.K {
		return nil, fmt.Errorf("%w: %d of %d", ErrTooFewShards, have, g.K)
	}
	if err := cd.rs.ReconstructData(shards); err != nil {
		return nil, fmt.Errorf("ec: reconstruct: %w", err)
	}
	sb, c := g.StripeBytes(), g.Chunk
	out := make([]byte, end-off)
	for pos := off; pos < end; {
		s, x := pos/sb, pos%sb
		i, p := x/c, x%c
		q := s*c + p // shard-image position
		n := min(c-p, end-pos)
		if q < a || q+n > b {
			return nil, fmt.Errorf("%w: device [%d,%d) not inside shard range [%d,%d)", ErrGeometry, off, end, a, b)
		}
		copy(out[pos-off:], shards[i][q-a:q-a+n])
		pos += n
	}
	return out, nil
}

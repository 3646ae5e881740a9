package extent

import (
	"math/rand/v2"
	"testing"
	"testing/quick"

	"github.com/stretchr/testify/require"
)

// TestSubtractQuick checks Subtract, Union and Merge against a naive
// per-unit bitmap.
func TestSubtractQuick(t *testing.T) {
	const units = 64
	gen := func(r *rand.Rand) []Extent {
		var out []Extent
		for range r.IntN(5) {
			off := uint64(r.IntN(units))
			out = append(out, Extent{Offset: off, Length: uint64(r.IntN(units - int(off) + 1))})
		}
		return out
	}
	bits := func(ext []Extent) (b [units]bool) {
		for _, e := range ext {
			for i := e.Offset; i < e.Offset+e.Length; i++ {
				b[i] = true
			}
		}
		return b
	}
	check := func(seed uint64) bool {
		r := rand.New(rand.NewPCG(seed, 1))
		a, b := gen(r), gen(r)
		sub, uni := Subtract(a, b), Union(a, b)
		ba, bb, bs, bu := bits(a), bits(b), bits(sub), bits(uni)
		for i := range units {
			if bs[i] != (ba[i] && !bb[i]) || bu[i] != (ba[i] || bb[i]) {
				return false
			}
		}
		for _, x := range [][]Extent{sub, uni} {
			for i := range x {
				if x[i].Length == 0 || (i > 0 && x[i].Offset <= x[i-1].Offset+x[i-1].Length) {
					return false // not merged
				}
			}
		}
		return true
	}
	require.NoError(t, quick.Check(check, &quick.Config{MaxCount: 2000}))
}

// Package ectest checks erasure-coded images in tests of the packages that
// write them (node, e2e).
package ectest

import (
	"bytes"
	"testing"

	"github.com/grbd/grbd/internal/ec"
	"github.com/stretchr/testify/require"
)

// RequireEveryPairDecodes requires every two of shards (nil: a slot without
// an image) to decode, alone, to want: the device as the full copy holds it.
// It is how a test shows that any two of a 2+2 layout rebuild the data.
func RequireEveryPairDecodes(t testing.TB, cd *ec.Coder, shards [][]byte, want []byte) {
	t.Helper()
	g := cd.G
	for i := range shards {
		for j := i + 1; j < len(shards); j++ {
			if shards[i] == nil || shards[j] == nil {
				continue
			}
			sub := make([][]byte, len(shards))
			sub[i], sub[j] = bytes.Clone(shards[i]), bytes.Clone(shards[j])
			got, err := cd.Decode(sub, 0, g.ShardSize(), 0, g.Size)
			require.NoError(t, err)
			require.True(t, bytes.Equal(want[:g.Size], got), "shards %d and %d do not decode to the full copy", i, j)
		}
	}
}

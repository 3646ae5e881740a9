package primary

import (
	"errors"
	"hash/crc32"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/blockid"
	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/journal"
	"github.com/stretchr/testify/require"
)

// ChunkSums answers with chunk IDs when asked (this release's primaries),
// with CRC-32Cs otherwise (an earlier release's primary); a chunk with a
// corrupt block gets a sum that cannot match.
func TestChunkSumsIDsOrCRC(t *testing.T) {
	img := make([]byte, 3*4096)
	for i := range img {
		img[i] = byte(i * 7)
	}
	read := func(p []byte, off int64) error {
		copy(p, img[off:])
		if off == 8192 {
			return &journal.ChecksumError{Blocks: []int64{2}}
		}
		return nil
	}
	ids, err := ChunkSums(read, 0, 3*4096, 4096, true)
	require.NoError(t, err)
	crcs, err := ChunkSums(read, 0, 3*4096, 4096, false)
	require.NoError(t, err)
	for i := range 2 {
		require.Equal(t, blockid.Of(img[i*4096:(i+1)*4096]), ids[i])
		require.Equal(t, crc32.Checksum(img[i*4096:(i+1)*4096], crc32c.Table), crcs[i])
	}
	require.Equal(t, ^blockid.Of(img[8192:]), ids[2], "corrupt: the complement")
	require.Equal(t, ^crc32.Checksum(img[8192:], crc32c.Table), crcs[2])
}

// A verify that outlives the primary's role reports nothing: after a
// failover this node is resynced from the new primary while the peers
// follow it, and a comparison would call regions out of sync that are not.
func TestVerifyStopsWhenTheRoleEnds(t *testing.T) {
	p, _ := newSide(t, &control{}, "q") // q never answers: the verify waits on it
	type result struct {
		res []VerifyResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := p.Verify(t.Context(), false)
		done <- result{res, err}
	}()
	time.Sleep(50 * time.Millisecond)
	p.Stop(errors.New("deposed"))
	select {
	case r := <-done:
		require.ErrorIs(t, r.err, ErrEnded)
		require.Nil(t, r.res, "no verdict from a primary whose role ended")
	case <-time.After(2 * time.Second): // the open alone waits 5 s
		t.Fatal("the verify went on after the role ended")
	}
}

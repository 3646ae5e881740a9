package wire

import (
	"bytes"
	"testing"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/stretchr/testify/require"
)

func frameOf(t *testing.T, m Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.WriteMsg(m))
	require.NoError(t, w.Flush())
	return buf.Bytes()
}

// TestBlockSumsFrameUnchanged: a Write framed with its block checksums is
// byte for byte the frame without them (the CRC joined from the blocks is
// the CRC over the data), and a Reader hands the same checksums back for
// data of BlockSumsMin or more on whole blocks, and none below.
func TestBlockSumsFrameUnchanged(t *testing.T) {
	for _, n := range []int{BlockSumsMin - crc32c.BlockSize, BlockSumsMin, BlockSumsMin + 1, 1 << 20} {
		data := fill(n)
		plain := &Write{Seq: 7, Epoch: 2, Offset: 1 << 30, FUA: true, Data: data}
		framed := frameOf(t, plain)
		var sums []byte
		if n%crc32c.BlockSize == 0 {
			sums = crc32c.Blocks(nil, data)
			require.Equal(t, framed, frameOf(t, &Write{Seq: 7, Epoch: 2, Offset: 1 << 30, FUA: true, Data: data, BlockSums: sums}), "%d bytes", n)
		}
		for _, decode := range []func() Message{
			func() Message {
				m, err := NewReader(bytes.NewReader(framed)).ReadMsg()
				require.NoError(t, err)
				return m
			},
			func() Message { m, _, err := DecodeFrame(framed); require.NoError(t, err); return m },
		} {
			got := decode().(*Write)
			require.Equal(t, data, got.Data)
			if n >= BlockSumsMin && n%crc32c.BlockSize == 0 {
				require.Equal(t, sums, got.BlockSums, "%d bytes", n)
			} else {
				require.Nil(t, got.BlockSums, "%d bytes", n)
			}
		}
	}
}

// TestBlockSumsChecked: the Reader's per-block path still refuses a flipped
// data bit, and block checksums that are not the data's make a frame the
// Reader refuses (ErrChecksum), so a sender bug there cannot pass unseen.
// Sums of the wrong length are refused when encoding.
func TestBlockSumsChecked(t *testing.T) {
	data := fill(BlockSumsMin * 2)
	framed := frameOf(t, &Write{Seq: 1, Data: data})
	framed[len(framed)-crc32c.BlockSize-3] ^= 0x04
	_, err := NewReader(bytes.NewReader(framed)).ReadMsg()
	require.ErrorIs(t, err, ErrChecksum)

	wrong := crc32c.Blocks(nil, data)
	wrong[9] ^= 1
	_, err = NewReader(bytes.NewReader(frameOf(t, &Write{Seq: 1, Data: data, BlockSums: wrong}))).ReadMsg()
	require.ErrorIs(t, err, ErrChecksum)

	var buf bytes.Buffer
	err = NewWriter(&buf).WriteMsg(&Write{Seq: 1, Data: data, BlockSums: wrong[:8]})
	require.ErrorIs(t, err, ErrMalformed)
	err = NewWriter(&buf).WriteMsg(&Write{Seq: 1, Data: data[:BlockSumsMin+1], BlockSums: wrong[:4*(BlockSumsMin/crc32c.BlockSize)]})
	require.ErrorIs(t, err, ErrMalformed)
}

// TestCloneCopiesBlockSums: a clone keeps no memory of the Reader's.
func TestCloneCopiesBlockSums(t *testing.T) {
	data := fill(BlockSumsMin)
	m := &Write{Seq: 1, Data: data, BlockSums: crc32c.Blocks(nil, data)}
	c := Clone(m).(*Write)
	require.Equal(t, m, c)
	c.BlockSums[0] ^= 1
	require.NotEqual(t, m.BlockSums[0], c.BlockSums[0])
}

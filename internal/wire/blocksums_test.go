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

// summed are the messages a sender may frame with block checksums: a
// constructor and what it carries.
var summed = []struct {
	name  string
	make  func(data, sums []byte) Message
	parts func(Message) (data, sums []byte)
}{{
	name: "Write",
	make: func(d, s []byte) Message {
		return &Write{Seq: 7, Epoch: 2, Offset: 1 << 30, FUA: true, Data: d, BlockSums: s}
	},
	parts: func(m Message) ([]byte, []byte) { w := m.(*Write); return w.Data, w.BlockSums },
}, {
	name:  "ResyncData",
	make:  func(d, s []byte) Message { return &ResyncData{AsOf: 7, Offset: 1 << 30, Data: d, BlockSums: s} },
	parts: func(m Message) ([]byte, []byte) { r := m.(*ResyncData); return r.Data, r.BlockSums },
}}

// TestBlockSumsFrameUnchanged: a Write or ResyncData framed with its block
// checksums is byte for byte the frame without them (the CRC joined from the
// blocks is the CRC over the data), and a Reader hands back the data and no
// checksums (nothing on the receiving side uses them).
func TestBlockSumsFrameUnchanged(t *testing.T) {
	for _, k := range summed {
		for _, n := range []int{BlockSumsMin - crc32c.BlockSize, BlockSumsMin, BlockSumsMin + 1, 1 << 20} {
			data := fill(n)
			framed := frameOf(t, k.make(data, nil))
			var sums []byte
			if n%crc32c.BlockSize == 0 {
				sums = crc32c.Blocks(nil, data)
				require.Equal(t, framed, frameOf(t, k.make(data, sums)), "%s, %d bytes", k.name, n)
			}
			for _, decode := range []func() Message{
				func() Message {
					m, err := NewReader(bytes.NewReader(framed)).ReadMsg()
					require.NoError(t, err)
					return m
				},
				func() Message { m, _, err := DecodeFrame(framed); require.NoError(t, err); return m },
			} {
				gotData, gotSums := k.parts(decode())
				require.Equal(t, data, gotData)
				require.Nil(t, gotSums, "%s, %d bytes", k.name, n)
			}
		}
	}
}

// TestBlockSumsChecked: the Reader refuses a flipped data bit of a large
// frame, and block checksums that are not the data's make a frame the
// Reader refuses (ErrChecksum), so a sender bug there cannot pass unseen.
// Sums of the wrong length are refused when encoding.
func TestBlockSumsChecked(t *testing.T) {
	for _, k := range summed {
		data := fill(BlockSumsMin * 2)
		framed := frameOf(t, k.make(data, nil))
		framed[len(framed)-crc32c.BlockSize-3] ^= 0x04
		_, err := NewReader(bytes.NewReader(framed)).ReadMsg()
		require.ErrorIs(t, err, ErrChecksum, k.name)

		wrong := crc32c.Blocks(nil, data)
		wrong[9] ^= 1
		_, err = NewReader(bytes.NewReader(frameOf(t, k.make(data, wrong)))).ReadMsg()
		require.ErrorIs(t, err, ErrChecksum, k.name)

		var buf bytes.Buffer
		err = NewWriter(&buf).WriteMsg(k.make(data, wrong[:8]))
		require.ErrorIs(t, err, ErrMalformed, k.name)
		err = NewWriter(&buf).WriteMsg(k.make(data[:BlockSumsMin+1], wrong[:4*(BlockSumsMin/crc32c.BlockSize)]))
		require.ErrorIs(t, err, ErrMalformed, k.name)
	}
}

// TestCloneCopiesBlockSums: a clone shares no memory with the sender's
// message.
func TestCloneCopiesBlockSums(t *testing.T) {
	for _, k := range summed {
		data := fill(BlockSumsMin)
		m := k.make(data, crc32c.Blocks(nil, data))
		c := Clone(m)
		require.Equal(t, m, c, k.name)
		_, sums := k.parts(c)
		_, orig := k.parts(m)
		sums[0] ^= 1
		require.NotEqual(t, orig[0], sums[0], k.name)
	}
}

package wire

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMalformedBodies feeds frames with valid checksums whose bodies break
// their type's layout: each must be ErrMalformed, from both decoders.
func TestMalformedBodies(t *testing.T) {
	type bad struct {
		name  string
		typ   Type
		flags uint16
		body  []byte
	}
	s256 := strings.Repeat("x", 256)
	cases := []bad{
		{"ack level 0", TypeAck, 0, cat(u64(1), []byte{0})},
		{"ack level 4", TypeAck, 0, cat(u64(1), []byte{4})},
		{"ack FUA", TypeAck, FlagFUA, cat(u64(1), []byte{1})},
		{"write unknown flag", TypeWrite, 1 << 1, cat(u64(1), u64(2), u64(3))}, // FlagIDs: verify only
		{"verifyrequest FUA", TypeVerifyRequest, FlagFUA, make([]byte, 32)},
		{"write top flag", TypeWrite, 1 << 15, cat(u64(1), u64(2), u64(3))},
		{"write fixed part short", TypeWrite, 0, make([]byte, 23)},
		{"write empty body", TypeWrite, 0, nil},
		{"resyncdata fixed part short", TypeResyncData, 0, make([]byte, 15)},
		{"resyncdata FUA", TypeResyncData, FlagFUA, make([]byte, 16)},
		{"zero unknown flag", TypeZero, 1 << 2, make([]byte, 32)},
		{"resyncrequest full 2", TypeResyncRequest, 0, cat(u64(1), []byte{2})},
		{"resyncrequest full 255", TypeResyncRequest, 0, cat(u64(1), []byte{255})},
		{"hello role 2", TypeHello, 0, cat(make([]byte, 44), []byte{2}, str(""), str(""))},
		{"hello no strings", TypeHello, 0, make([]byte, 45)},
		{"hello one string", TypeHello, 0, cat(make([]byte, 45), str("a"))},
		{"hello from length cut", TypeHello, 0, cat(make([]byte, 45), str("a"), []byte{0})},
		{"hello cluster 256", TypeHello, 0, cat(make([]byte, 45), str(s256), str(""))},
		{"hello cluster past end", TypeHello, 0, cat(make([]byte, 45), u16(10), []byte("abc"))},
		{"hello cluster length 65535", TypeHello, 0, cat(make([]byte, 45), u16(0xFFFF))},
		{"hello trailing byte", TypeHello, 0, cat(make([]byte, 45), str(""), str(""), []byte{0})},
		{"hello FUA", TypeHello, FlagFUA, cat(make([]byte, 45), str(""), str(""))},
		{"nack code 0", TypeNack, 0, cat(u64(1), u32(0), str(""))},
		{"nack code 6", TypeNack, 0, cat(u64(1), u32(6), str(""))},
		{"nack code max", TypeNack, 0, cat(u64(1), u32(0xFFFFFFFF), str(""))},
		{"nack reason 256", TypeNack, 0, cat(u64(1), u32(1), str(s256))},
		{"nack no reason", TypeNack, 0, cat(u64(1), u32(1))},
		{"nack trailing", TypeNack, 0, cat(u64(1), u32(1), str("r"), []byte{0})},
		{"verifyreply count > sums", TypeVerifyReply, 0, cat(u64(1), u64(0), u64(4096), u32(3), sumBytes(sums(2)))},
		{"verifyreply count < sums", TypeVerifyReply, 0, cat(u64(1), u64(0), u64(4096), u32(1), sumBytes(sums(2)))},
		{"verifyreply count huge", TypeVerifyReply, 0, cat(u64(1), u64(0), u64(4096), u32(0xFFFFFFFF))},
		{"verifyreply partial sum", TypeVerifyReply, 0, cat(u64(1), u64(0), u64(4096), u32(1), []byte{1, 2, 3})},
		{"verifyreply no count", TypeVerifyReply, 0, cat(u64(1), u64(0), u64(4096))},
		{"authchallenge method 0", TypeAuthChallenge, 0, cat([]byte{0}, make([]byte, 32))},
		{"authchallenge method 2", TypeAuthChallenge, 0, cat([]byte{2}, make([]byte, 32))},
		{"authchallenge empty", TypeAuthChallenge, 0, nil},
		{"authproof empty", TypeAuthProof, 0, nil},
		{"resize size 0", TypeResize, 0, cat(u64(1), u64(1), u64(0), u32(0))},
		{"resize unknown flag", TypeResize, 0, cat(u64(1), u64(1), u64(4096), u32(2))},
		{"block request length 0", TypeBlockRequest, 0, cat(u64(1), u64(0), u32(0))},
		{"block request too long", TypeBlockRequest, 0, cat(u64(1), u64(0), u32(MaxBlockRequest+1))},
		{"block request short", TypeBlockRequest, 0, cat(u64(1), u64(0))},
		{"block data empty", TypeBlockData, 0, cat(u64(1), u64(0), u64(3))},
		{"block data short", TypeBlockData, 0, cat(u64(1), u64(0))},
		{"shard state reply unknown flag", TypeShardStateReply, 0, cat(u64(1), u64(5), u64(4), u64(2), u32(2))},
		{"shard state reply applied past last", TypeShardStateReply, 0, cat(u64(1), u64(5), u64(6), u64(2), u32(1))},
		{"shard read length 0", TypeShardRead, 0, cat(u64(1), u64(2), u64(3), u64(0), u32(0))},
		{"shard read too long", TypeShardRead, 0, cat(u64(1), u64(2), u64(3), u64(0), u32(MaxShardRead+1))},
		{"shard data empty", TypeShardData, 0, cat(u64(1), u64(0), u64(3))},
		{"shard data short", TypeShardData, 0, cat(u64(1), u64(0))},
		{"control kind 7", TypeControl, 0, cat([]byte{7}, u64(0), u64(0))},
		{"control lease id short", TypeControl, 0, cat([]byte{3}, u64(0), u64(0), u32(3))},
		{"control lease id long", TypeControl, 0, cat([]byte{2}, u64(0), u64(0), u64(3), []byte{0})},
		{"control probe empty", TypeControl, 0, cat([]byte{4}, u64(0), u64(0))},
		{"control probe version 2", TypeControl, 0, cat([]byte{4}, u64(0), u64(0), []byte{2, 0}, u64(0x102))},
		{"control probe unknown flag", TypeControl, 0, cat([]byte{4}, u64(0), u64(0), []byte{1, 2}, u64(0x102))},
		{"control probe short", TypeControl, 0, cat([]byte{4}, u64(0), u64(0), []byte{1, 0}, u32(1))},
		{"control probe long", TypeControl, 0, cat([]byte{4}, u64(0), u64(0), []byte{1, 0}, u64(0x102), []byte{0})},
		{"control probe reply unknown flag", TypeControl, 0, cat([]byte{5}, u64(0), u64(0), []byte{1, 16}, u64(1), u64(2))},
		{"control probe reply short", TypeControl, 0, cat([]byte{5}, u64(0), u64(0), []byte{1, 0}, u64(1))},
		{"control replaced version 0", TypeControl, 0, cat([]byte{6}, u64(0), u64(0), []byte{0}, u64(3), u64(0x103))},
		{"control replaced long", TypeControl, 0, cat([]byte{6}, u64(0), u64(0), []byte{1}, u64(3), u64(0x103), []byte{0})},
	}
	// Every fixed-size body one byte short and one byte long; every type
	// with a reserved flag bit set.
	for _, c := range msgCases(false) {
		typ := c.msg.Type()
		cases = append(cases, bad{c.name + "/reserved flag", typ, c.flags | 1<<3, c.body})
		switch typ {
		case TypeWrite, TypeResyncData, TypeControl, TypeBlockData, TypeShardData:
			continue // any length past the fixed part is valid Data
		}
		cases = append(cases,
			bad{c.name + "/one byte short", typ, c.flags, c.body[:len(c.body)-1]},
			bad{c.name + "/one byte long", typ, c.flags, append(bytes.Clone(c.body), 0)},
		)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			frame := sealFrame(c.typ, c.flags, c.body)
			m, n, err := DecodeFrame(frame)
			require.ErrorIs(t, err, ErrMalformed)
			require.Equal(t, ErrMalformed, sentinelOf(err))
			require.Nil(t, m)
			require.Zero(t, n)

			m, err = NewReader(bytes.NewReader(frame)).ReadMsg()
			require.ErrorIs(t, err, ErrMalformed)
			require.Nil(t, m)
		})
	}
}

// TestEncodeErrors: invalid messages are refused by WriteMsg before any byte
// is buffered, and make AppendFrame panic.
func TestEncodeErrors(t *testing.T) {
	s256 := strings.Repeat("x", 256)
	cases := []struct {
		name string
		msg  Message
		want error
	}{
		{"nil", nil, ErrMalformed},
		{"nil *Write", (*Write)(nil), ErrMalformed},
		{"nil *VerifyReply", (*VerifyReply)(nil), ErrMalformed},
		{"hello cluster 256", &Hello{Cluster: s256}, ErrMalformed},
		{"hello from 256", &Hello{From: s256}, ErrMalformed},
		{"hello role 2", &Hello{Role: 2}, ErrMalformed},
		{"ack level 0", &Ack{Seq: 1}, ErrMalformed},
		{"ack level 4", &Ack{Seq: 1, Level: 4}, ErrMalformed},
		{"nack code 0", &Nack{Seq: 1}, ErrMalformed},
		{"nack code 6", &Nack{Seq: 1, Code: 6}, ErrMalformed},
		{"nack reason 256", &Nack{Code: NackIO, Reason: s256}, ErrMalformed},
		{"write data too large", &Write{Data: make([]byte, MaxBody-23)}, ErrTooLarge},
		{"resyncdata too large", &ResyncData{Data: make([]byte, MaxBody-15)}, ErrTooLarge},
		{"verifyreply too many sums", &VerifyReply{Sums: make([]uint32, maxSums+1)}, ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			err := w.WriteMsg(c.msg)
			require.ErrorIs(t, err, c.want)
			require.Equal(t, c.want, sentinelOf(err))
			require.Zero(t, w.Buffered())

			// The stream is still usable.
			require.NoError(t, w.WriteMsg(&Ping{ID: 1}))
			require.NoError(t, w.Flush())
			m, err := NewReader(&buf).ReadMsg()
			require.NoError(t, err)
			require.Equal(t, &Ping{ID: 1}, m)

			require.Panics(t, func() { AppendFrame(nil, c.msg) })
		})
	}
}

// TestLimits pins the size constants to the layout.
func TestLimits(t *testing.T) {
	require.Equal(t, 32<<20+4<<10, MaxBody)
	require.Equal(t, HeaderSize+maxFixed, len(Writer{}.frame))
	require.GreaterOrEqual(t, MaxBody-writeFixed, MaxData)
	require.GreaterOrEqual(t, MaxBody-resyncDataFixed, MaxData)

	// The largest StreamOpen fills the Writer's fixed buffer exactly; a
	// Hello fits.
	max := strings.Repeat("m", MaxString)
	p, err := planOf(&StreamOpen{Kind: StreamControl, Cluster: max, From: max, To: max}, nil)
	require.NoError(t, err)
	require.Len(t, p.buf, maxFixed)
	p, err = planOf(&Hello{Cluster: max, From: max}, nil)
	require.NoError(t, err)
	require.LessOrEqual(t, len(p.buf), maxFixed)

	// MaxBody itself is accepted: TestRoundTripMax; MaxBody+1 is not:
	// TestHeaderErrors.
}

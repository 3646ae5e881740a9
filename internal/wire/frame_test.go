package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/grbd/grbd/internal/racetest"
	"github.com/stretchr/testify/require"
)

// TestGoldenFrames pins complete frames, checksums included, computed outside
// Go (a bitwise CRC-32C in Python). Part of the format: if this fails, the
// format changed.
func TestGoldenFrames(t *testing.T) {
	cases := []struct {
		name string
		msg  Message
		hex  string
	}{
		{"ping", &Ping{ID: 1, Nanos: 2},
			"47524244010b0000100000006071c79e01000000000000000200000000000000"},
		{"write FUA", &Write{Seq: 1, Epoch: 2, Offset: 3, FUA: true, Data: []byte("abc")},
			"47524244010201001b0000003e353c83010000000000000002000000000000000300000000000000616263"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, err := hex.DecodeString(c.hex)
			require.NoError(t, err)
			require.Equal(t, want, AppendFrame(nil, c.msg))
			got, n, err := DecodeFrame(want)
			require.NoError(t, err)
			require.Equal(t, len(want), n)
			require.Equal(t, c.msg, got)
		})
	}
}

// TestRoundTrip encodes every case, checks the bytes against the hand-built
// layout and decodes them back through DecodeFrame and through a stream.
func TestRoundTrip(t *testing.T) {
	for _, c := range msgCases(false) {
		t.Run(c.name, func(t *testing.T) {
			want := c.frame()
			got := AppendFrame(nil, c.msg)
			require.Equal(t, want, got, "frame differs from the documented layout")

			prefix := []byte("prefix")
			appended := AppendFrame(prefix[:len(prefix):len(prefix)], c.msg)
			require.Equal(t, "prefix", string(appended[:len(prefix)]))
			require.Equal(t, want, appended[len(prefix):])

			m, n, err := DecodeFrame(append(bytes.Clone(want), "next frame"...))
			require.NoError(t, err)
			require.Equal(t, len(want), n)
			require.Equal(t, c.msg.Type(), m.Type())
			require.Equal(t, c.decoded(), m)

			var buf bytes.Buffer
			w := NewWriter(&buf)
			require.NoError(t, w.WriteMsg(c.msg))
			require.NoError(t, w.Flush())
			require.Equal(t, want, buf.Bytes(), "Writer and AppendFrame disagree")

			r := NewReader(&buf)
			m, err = r.ReadMsg()
			require.NoError(t, err)
			require.Equal(t, c.decoded(), m)
			_, err = r.ReadMsg()
			require.Equal(t, io.EOF, err)
		})
	}
}

// TestRoundTripMax runs the maximal payloads (frames of exactly MaxBody)
// through the same checks with as few 32 MiB copies as possible: under -race
// every copy of that size costs seconds.
func TestRoundTripMax(t *testing.T) {
	racetest.FullOnly(t)
	for _, c := range msgCases(true) {
		if !c.big {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			got := AppendFrame(nil, c.msg)
			require.Len(t, got, HeaderSize+MaxBody)
			require.Equal(t, sealHeader(Magic, Version, byte(c.msg.Type()), c.flags, MaxBody, c.body), got[:HeaderSize])
			require.True(t, bytes.Equal(c.body, got[HeaderSize:]), "body differs from the documented layout")
			want := got

			m, n, err := DecodeFrame(want)
			require.NoError(t, err)
			require.Equal(t, len(want), n)
			requireMsgEqual(t, c.decoded(), m)

			var buf bytes.Buffer
			buf.Grow(len(want))
			w := NewWriter(&buf)
			require.NoError(t, w.WriteMsg(c.msg))
			require.NoError(t, w.Flush())
			require.True(t, bytes.Equal(want, buf.Bytes()), "Writer and AppendFrame disagree")

			m, err = NewReader(&buf).ReadMsg()
			require.NoError(t, err)
			requireMsgEqual(t, c.decoded(), m)
		})
	}
}

func TestTypeString(t *testing.T) {
	seen := map[string]bool{}
	for typ := TypeHello; typ <= lastType; typ++ {
		if typ > TypeResyncProgress && typ < TypeCommit {
			require.Nil(t, newMessage(typ), "type %d is unassigned", typ)
			continue
		}
		s := typ.String()
		require.NotContains(t, s, "Type(", "type %d has no name", typ)
		require.False(t, seen[s], "duplicate name %q", s)
		seen[s] = true
		require.Equal(t, typ, newMessage(typ).Type())
	}
	require.Equal(t, "Type(0)", Type(0).String())
	require.Equal(t, "Type(200)", Type(200).String())
	require.Nil(t, newMessage(0))
	require.Nil(t, newMessage(lastType+1))
}

// TestHeaderErrors checks each header fault and the order of the checks.
func TestHeaderErrors(t *testing.T) {
	ping := cat(u64(1), u64(2))
	cases := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"bad magic", sealRaw(0x44425248, 1, byte(TypePing), 0, 16, ping), ErrBadMagic},
		{"zero magic", sealRaw(0, 1, byte(TypePing), 0, 16, ping), ErrBadMagic},
		{"version 0", sealRaw(Magic, 0, byte(TypePing), 0, 16, ping), ErrVersion},
		{"version 2", sealRaw(Magic, 2, byte(TypePing), 0, 16, ping), ErrVersion},
		{"version 255", sealRaw(Magic, 255, byte(TypePing), 0, 16, ping), ErrVersion},
		{"bad magic before version", sealRaw(1, 2, byte(TypePing), 0, 16, ping), ErrBadMagic},
		{"version before length", sealRaw(Magic, 2, byte(TypePing), 0, 0xFFFFFFFF, nil), ErrVersion},
		{"length MaxBody+1", sealRaw(Magic, 1, byte(TypeWrite), 0, MaxBody+1, nil), ErrTooLarge},
		{"length max u32", sealRaw(Magic, 1, byte(TypeWrite), 0, 0xFFFFFFFF, nil), ErrTooLarge},
		{"type 0", sealFrame(0, 0, ping), ErrUnknownType},
		{"type after the last", sealFrame(lastType+1, 0, ping), ErrUnknownType},
		{"unassigned type", sealFrame(TypeResyncProgress+1, 0, ping), ErrUnknownType},
		{"type 255", sealFrame(255, 0, nil), ErrUnknownType},
		{"bad crc", func() []byte {
			f := sealFrame(TypePing, 0, ping)
			f[12] ^= 0xff
			return f
		}(), ErrChecksum},
		{"crc before type", func() []byte {
			f := sealFrame(200, 0, ping)
			f[20] ^= 1
			return f
		}(), ErrChecksum},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, n, err := DecodeFrame(c.frame)
			require.ErrorIs(t, err, c.want)
			require.Equal(t, c.want, sentinelOf(err))
			require.Nil(t, m)
			require.Zero(t, n)

			m, err = NewReader(bytes.NewReader(c.frame)).ReadMsg()
			require.ErrorIs(t, err, c.want)
			require.Equal(t, c.want, sentinelOf(err))
			require.Nil(t, m)
		})
	}
}

// TestTooLargeDoesNotAllocate: a header announcing 4 GiB is refused from the
// header alone, before any body buffer exists.
func TestTooLargeDoesNotAllocate(t *testing.T) {
	hdr := sealRaw(Magic, 1, byte(TypeWrite), 0, 0xFFFFFFFF, nil)

	// Only the error value is allocated: a few hundred bytes, not 4 GiB.
	const runs = 100
	perCall := allocatedBytes(func() {
		for range runs {
			_, _, err := DecodeFrame(hdr)
			if !errors.Is(err, ErrTooLarge) {
				panic(err)
			}
		}
	}) / runs
	require.Less(t, perCall, uint64(1024))

	// The Reader never creates its body buffer, though 1 MiB of "body"
	// follows the header.
	r := NewReader(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(make([]byte, 1<<20))))
	var err error
	n := allocatedBytes(func() { _, err = r.ReadMsg() })
	require.ErrorIs(t, err, ErrTooLarge)
	require.Zero(t, cap(r.body))
	require.Less(t, n, uint64(16<<10))
}

// allocatedBytes is the heap allocated while fn runs.
func allocatedBytes(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestBitFlips flips every bit of a few frames, one at a time: each flip is
// an error, never a different message, and the error names the damaged field.
func TestBitFlips(t *testing.T) {
	msgs := []Message{
		&Hello{Cluster: "prod", From: "alpha", Role: RolePrimary, Epoch: 3, LastSeq: 100, DurableSeq: 90, Generation: gen16},
		&Write{Seq: 7, Epoch: 3, Offset: 4096, FUA: true, Data: fill(64)},
		&Ack{Seq: 7, Level: AckJournaled},
		&Nack{Seq: 7, Code: NackStaleEpoch, Reason: "stale"},
		&VerifyReply{ID: 1, Offset: 0, Chunk: 4096, Sums: sums(3)},
		&Ping{ID: 1, Nanos: 2},
	}
	for _, m := range msgs {
		t.Run(m.Type().String(), func(t *testing.T) {
			frame := AppendFrame(nil, m)
			for bit := 0; bit < 8*len(frame); bit++ {
				b := bytes.Clone(frame)
				b[bit/8] ^= 1 << (bit % 8)

				got, n, err := DecodeFrame(b)
				require.Error(t, err, "bit %d undetected", bit)
				require.Nil(t, got)
				require.Zero(t, n)
				switch at := bit / 8; {
				case at < offVersion:
					require.ErrorIs(t, err, ErrBadMagic, "bit %d", bit)
				case at == offVersion:
					require.ErrorIs(t, err, ErrVersion, "bit %d", bit)
				case at >= offLength && at < offCRC:
					// Longer: short or too large; shorter: checksum.
					require.NotNil(t, sentinelOf(err), "bit %d: %v", bit, err)
				default: // type, flags, crc, body
					require.ErrorIs(t, err, ErrChecksum, "bit %d", bit)
				}

				got, err = NewReader(bytes.NewReader(b)).ReadMsg()
				require.Error(t, err, "bit %d undetected by Reader", bit)
				require.Nil(t, got)
				require.NotNil(t, sentinelOf(err), "bit %d: %v", bit, err)
			}
		})
	}
}

// TestTruncation cuts frames at every byte.
func TestTruncation(t *testing.T) {
	for _, c := range msgCases(false) {
		t.Run(c.name, func(t *testing.T) {
			frame := c.frame()
			for cut := 0; cut < len(frame); cut++ {
				m, n, err := DecodeFrame(frame[:cut])
				require.ErrorIs(t, err, ErrShort, "cut %d", cut)
				require.Nil(t, m)
				require.Zero(t, n)

				m, err = NewReader(bytes.NewReader(frame[:cut])).ReadMsg()
				require.Nil(t, m)
				if cut == 0 {
					require.Equal(t, io.EOF, err, "an empty stream ends cleanly")
					continue
				}
				require.ErrorIs(t, err, ErrTruncated, "cut %d", cut)
				require.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut %d", cut)
			}
		})
	}
}

// lastType is the highest message type defined; types are contiguous but
// for the unassigned 25..39.
const lastType = TypeShardData

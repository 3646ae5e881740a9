package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/grbd/grbd/internal/extent"
	"hash/crc32"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Test helpers that spell out the format independently of the encoder, from
// docs/wire.md: if the encoder drifts from the document, tests using these
// fail.

var testTable = crc32.MakeTable(crc32.Castagnoli)

// sealFrame builds a frame with a correct checksum around any body.
func sealFrame(t Type, flags uint16, body []byte) []byte {
	return sealRaw(0x44425247, 1, byte(t), flags, uint32(len(body)), body)
}

// sealRaw builds a frame from raw header fields with a correct checksum.
func sealRaw(magic uint32, version, typ byte, flags uint16, length uint32, body []byte) []byte {
	return append(sealHeader(magic, version, typ, flags, length, body), body...)
}

// sealHeader builds the header sealRaw puts before body.
func sealHeader(magic uint32, version, typ byte, flags uint16, length uint32, body []byte) []byte {
	h := make([]byte, 16, 16+len(body))
	binary.LittleEndian.PutUint32(h[0:], magic)
	h[4] = version
	h[5] = typ
	binary.LittleEndian.PutUint16(h[6:], flags)
	binary.LittleEndian.PutUint32(h[8:], length)
	c := crc32.Update(0, testTable, h[:12])
	c = crc32.Update(c, testTable, body)
	binary.LittleEndian.PutUint32(h[12:], c)
	return h
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func str(s string) []byte { return append(u16(uint16(len(s))), s...) }
func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// fill returns n bytes of a recognisable pattern (period 251, so that
// shifted copies differ), built by doubling copies: fast under -race.
func fill(n int) []byte {
	b := make([]byte, n)
	for i := range min(n, 251) {
		b[i] = byte(i*7 + 1)
	}
	for k := 251; k < n; k *= 2 {
		copy(b[k:], b[:k])
	}
	return b
}

// requireMsgEqual is require.Equal, with a fast path for the multi-MiB
// VerifyReply whose Sums reflect.DeepEqual compares element by element.
func requireMsgEqual(t *testing.T, want, got Message, msgAndArgs ...any) {
	t.Helper()
	w, ok1 := want.(*VerifyReply)
	g, ok2 := got.(*VerifyReply)
	if ok1 && ok2 && w != nil && g != nil {
		require.True(t, slices.Equal(w.Sums, g.Sums), msgAndArgs...)
		require.Equal(t, (w.Sums == nil), (g.Sums == nil), msgAndArgs...)
		w2, g2 := *w, *g
		w2.Sums, g2.Sums = nil, nil
		require.Equal(t, &w2, &g2, msgAndArgs...)
		return
	}
	require.Equal(t, want, got, msgAndArgs...)
}

func sums(n int) []uint32 {
	s := make([]uint32, n)
	for i := range s {
		s[i] = uint32(i)*0x9e3779b9 + 1
	}
	return s
}

func sumBytes(s []uint32) []byte {
	b := make([]byte, 0, 4*len(s))
	for _, v := range s {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

var gen16 = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

var nonce32 = [32]byte{0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 0xee}

// msgCase is a message with its expected frame flags and body, written by
// hand from the layouts in docs/wire.md.
type msgCase struct {
	name  string
	msg   Message
	want  Message // what decoding gives, when it differs from msg
	flags uint16
	body  []byte
	big   bool // tens of MiB: only in msgCases(true)
}

func (c msgCase) decoded() Message {
	if c.want != nil {
		return c.want
	}
	return c.msg
}

func (c msgCase) frame() []byte { return sealFrame(c.msg.Type(), c.flags, c.body) }

// msgCases covers every message type, with empty and maximal payloads and
// strings; the maximal payloads (tens of MiB) only when big is set.
func msgCases(big bool) []msgCase {
	maxStr := strings.Repeat("s", MaxString)
	d4k := fill(4096)
	// The maximal bodies are built first and the messages alias them:
	// under -race every extra 32 MiB copy costs seconds.
	var bodyW, bodyR, bodyV, dMaxW, dMaxR []byte
	var sMax []uint32
	if big {
		bodyW = fill(MaxBody)
		copy(bodyW, cat(u64(^uint64(0)), u64(1), u64(0)))
		dMaxW = bodyW[24:]
		bodyR = fill(MaxBody)
		copy(bodyR, cat(u64(9), u64(1<<40)))
		dMaxR = bodyR[16:]
		n := (MaxBody - 28) / 4
		bodyV = fill(28 + 4*n)
		copy(bodyV, cat(u64(5), u64(0), u64(4096), u32(uint32(n))))
		sMax = make([]uint32, n)
		for i := range sMax {
			sMax[i] = binary.LittleEndian.Uint32(bodyV[28+4*i:])
		}
	}
	cases := []msgCase{
		{name: "hello/zero", msg: &Hello{},
			body: cat(u64(0), u64(0), u64(0), make([]byte, 16), u32(0), []byte{0}, str(""), str(""))},
		{name: "hello/full", msg: &Hello{Cluster: "prod", From: "alpha", Role: RolePrimary, Epoch: 7, LastSeq: 1 << 40, DurableSeq: 1<<40 - 3, Generation: gen16, Flags: 0xdeadbeef},
			body: cat(u64(7), u64(1<<40), u64(1<<40-3), gen16[:], u32(0xdeadbeef), []byte{1}, str("prod"), str("alpha"))},
		{name: "hello/max strings", msg: &Hello{Cluster: maxStr, From: maxStr + "", Role: RoleSecondary, Epoch: ^uint64(0)},
			body: cat(u64(^uint64(0)), u64(0), u64(0), make([]byte, 16), u32(0), []byte{0}, str(maxStr), str(maxStr))},
		{name: "write/empty", msg: &Write{Seq: 1, Epoch: 2, Offset: 4096},
			body: cat(u64(1), u64(2), u64(4096))},
		{name: "write/empty non-nil", msg: &Write{Seq: 1, Data: []byte{}}, want: &Write{Seq: 1},
			body: cat(u64(1), u64(0), u64(0))},
		{name: "write/4KiB FUA", msg: &Write{Seq: 99, Epoch: 3, Offset: 1 << 30, FUA: true, Data: d4k}, flags: FlagFUA,
			body: cat(u64(99), u64(3), u64(1<<30), d4k)},
		{name: "write/max", msg: &Write{Seq: ^uint64(0), Epoch: 1, Offset: 0, Data: dMaxW}, big: true, body: bodyW},
		{name: "zero", msg: &Zero{Seq: 5, Epoch: 6, Offset: 8192, Length: 1 << 20},
			body: cat(u64(5), u64(6), u64(8192), u64(1<<20))},
		{name: "zero/FUA", msg: &Zero{Seq: 5, Epoch: 6, Offset: 0, Length: 4096, FUA: true}, flags: FlagFUA,
			body: cat(u64(5), u64(6), u64(0), u64(4096))},
		{name: "ack/received", msg: &Ack{Seq: 10, Level: AckReceived}, body: cat(u64(10), []byte{1})},
		{name: "ack/journaled", msg: &Ack{Seq: 11, Level: AckJournaled}, body: cat(u64(11), []byte{2})},
		{name: "ack/durable", msg: &Ack{Seq: 12, Level: AckDurable}, body: cat(u64(12), []byte{3})},
		{name: "flush", msg: &Flush{ID: 1, Seq: 77}, body: cat(u64(1), u64(77))},
		{name: "flushack/ok", msg: &FlushAck{ID: 1, Seq: 77}, body: cat(u64(1), u64(77), u32(0))},
		{name: "flushack/eio", msg: &FlushAck{ID: 2, Seq: 78, Err: 5}, body: cat(u64(2), u64(78), u32(5))},
		{name: "resyncrequest", msg: &ResyncRequest{FromSeq: 42}, body: cat(u64(42), []byte{0})},
		{name: "resyncrequest/full", msg: &ResyncRequest{FromSeq: 0, Full: true}, body: cat(u64(0), []byte{1})},
		{name: "resyncdata/empty", msg: &ResyncData{AsOf: 3, Offset: 4096}, body: cat(u64(3), u64(4096))},
		{name: "resyncdata/4KiB", msg: &ResyncData{AsOf: 3, Offset: 4096, Data: d4k}, body: cat(u64(3), u64(4096), d4k)},
		{name: "resyncdata/max", msg: &ResyncData{AsOf: 9, Offset: 1 << 40, Data: dMaxR}, big: true, body: bodyR},
		{name: "resyncdone", msg: &ResyncDone{AsOf: 1234}, body: u64(1234)},
		{name: "nack/stale epoch", msg: &Nack{Seq: 8, Code: NackStaleEpoch, Reason: "epoch 3 < 4"},
			body: cat(u64(8), u32(1), str("epoch 3 < 4"))},
		{name: "nack/empty reason", msg: &Nack{Code: NackState}, body: cat(u64(0), u32(5), str(""))},
		{name: "nack/max reason", msg: &Nack{Seq: 1, Code: NackIO, Reason: maxStr},
			body: cat(u64(1), u32(4), str(maxStr))},
		{name: "ping", msg: &Ping{ID: 1, Nanos: 1e18}, body: cat(u64(1), u64(1e18))},
		{name: "pong", msg: &Pong{ID: ^uint64(0), Nanos: ^uint64(0)}, body: cat(u64(^uint64(0)), u64(^uint64(0)))},
		{name: "verifyrequest", msg: &VerifyRequest{ID: 3, Offset: 1 << 20, Length: 1 << 30, Chunk: 1 << 16},
			body: cat(u64(3), u64(1<<20), u64(1<<30), u64(1<<16))},
		{name: "verifyreply/empty", msg: &VerifyReply{ID: 3, Offset: 0, Chunk: 4096},
			body: cat(u64(3), u64(0), u64(4096), u32(0))},
		{name: "verifyreply/empty non-nil", msg: &VerifyReply{ID: 3, Sums: []uint32{}}, want: &VerifyReply{ID: 3},
			body: cat(u64(3), u64(0), u64(0), u32(0))},
		{name: "verifyreply/3", msg: &VerifyReply{ID: 4, Offset: 8192, Chunk: 4096, Sums: sums(3)},
			body: cat(u64(4), u64(8192), u64(4096), u32(3), sumBytes(sums(3)))},
		{name: "verifyrequest/ids", msg: &VerifyRequest{ID: 3, Offset: 1 << 20, Length: 1 << 30, Chunk: 1 << 16, IDs: true},
			flags: FlagIDs, body: cat(u64(3), u64(1<<20), u64(1<<30), u64(1<<16))},
		{name: "verifyreply/ids", msg: &VerifyReply{ID: 4, Offset: 8192, Chunk: 4096, Sums: sums(3), IDs: true},
			flags: FlagIDs, body: cat(u64(4), u64(8192), u64(4096), u32(3), sumBytes(sums(3)))},
		{name: "verifyreply/max", msg: &VerifyReply{ID: 5, Chunk: 4096, Sums: sMax}, big: true, body: bodyV},
		{name: "streamopen/control", msg: &StreamOpen{Kind: StreamControl, Cluster: "prod", From: "alpha", To: "beta"},
			body: cat([]byte{1}, str("prod"), str("alpha"), str("beta"))},
		{name: "streamopen/max strings", msg: &StreamOpen{Kind: StreamAdmin, Cluster: maxStr, From: maxStr, To: maxStr},
			body: cat([]byte{4}, str(maxStr), str(maxStr), str(maxStr))},
		{name: "control/raft", msg: &Control{Kind: ControlRaft, Data: []byte("raft message")},
			body: cat([]byte{1}, u64(0), u64(0), []byte("raft message"))},
		{name: "control/lease", msg: &Control{Kind: ControlLeaseAck, Epoch: 9, Sent: 1 << 33},
			body: cat([]byte{3}, u64(9), u64(1<<33))},
		{name: "control/lease with id", msg: &Control{Kind: ControlLeaseRequest, Epoch: 9, Sent: 7, Data: AppendLeaseID(nil, 0xabcd03)},
			body: cat([]byte{2}, u64(9), u64(7), u64(0xabcd03))},
		{name: "control/probe", msg: &Control{Kind: ControlProbe, Data: Probe{JoinID: 0x5eed02, Flags: ProbeFresh}.Append(nil)},
			body: cat([]byte{4}, u64(0), u64(0), []byte{1, 1}, u64(0x5eed02))},
		{name: "control/probe reply", msg: &Control{Kind: ControlProbeReply, Data: ProbeReply{ID: 1, Echo: 0x5eed02, Flags: ProbeHasState | ProbeCounted}.Append(nil)},
			body: cat([]byte{5}, u64(0), u64(0), []byte{1, 6}, u64(1), u64(0x5eed02))},
		{name: "control/probe reply newcomer", msg: &Control{Kind: ControlProbeReply, Data: ProbeReply{ID: 2, Echo: 0x5eed03, Flags: ProbeHasState | ProbeNewcomer}.Append(nil)},
			body: cat([]byte{5}, u64(0), u64(0), []byte{1, 10}, u64(2), u64(0x5eed03))},
		{name: "control/replaced", msg: &Control{Kind: ControlReplaced, Data: Replaced{Stale: 3, Current: 0x5eed03}.Append(nil)},
			body: cat([]byte{6}, u64(0), u64(0), []byte{1}, u64(3), u64(0x5eed03))},
		{name: "history/empty", msg: &History{LastSeq: 5}, body: cat(u64(5), u16(0))},
		{name: "history/2", msg: &History{LastSeq: 99, Entries: []HistoryEntry{{Epoch: 1, FirstSeq: 1}, {Epoch: 4, FirstSeq: 50, Flags: HistoryForced}}},
			body: cat(u64(99), u16(2), u64(1), u64(1), []byte{0}, u64(4), u64(50), []byte{1})},
		{name: "extents/all", msg: &Extents{Flags: ExtentsAll}, body: cat(u32(1), u32(0))},
		{name: "extents/2", msg: &Extents{Extents: []extent.Extent{{Offset: 0, Length: 4096}, {Offset: 1 << 30, Length: 1 << 20}}},
			body: cat(u32(0), u32(2), u64(0), u64(4096), u64(1<<30), u64(1<<20))},
		{name: "resyncprogress/empty", msg: &ResyncProgress{}, body: cat(u64(0), u64(0), u64(0), u32(0))},
		{name: "resyncprogress/2", msg: &ResyncProgress{AsOf: 99, Epoch: 3, Source: 0xd15c, Copied: []extent.Extent{{Offset: 0, Length: 512 << 20}, {Offset: 1 << 30, Length: 1 << 20}}},
			body: cat(u64(99), u64(3), u64(0xd15c), u32(2), u64(0), u64(512<<20), u64(1<<30), u64(1<<20))},
		{name: "authchallenge/zero nonce", msg: &AuthChallenge{Method: AuthHMACSHA256},
			body: cat([]byte{1}, make([]byte, 32))},
		{name: "authchallenge", msg: &AuthChallenge{Method: AuthHMACSHA256, Nonce: nonce32},
			body: cat([]byte{1}, nonce32[:])},
		{name: "authproof", msg: &AuthProof{MAC: nonce32}, body: nonce32[:]},
		{name: "resize", msg: &Resize{Seq: 77, Epoch: 3, Size: 2 << 30}, body: cat(u64(77), u64(3), u64(2<<30), u32(0))},
		{name: "resize/resync", msg: &Resize{Seq: 78, Epoch: 3, Size: 1 << 40, Flags: ResizeResync}, body: cat(u64(78), u64(3), u64(1<<40), u32(1))},
		{name: "block request", msg: &BlockRequest{ID: 5, Offset: 8192, Length: 4096}, body: cat(u64(5), u64(8192), u32(4096))},
		{name: "block data", msg: &BlockData{ID: 5, Offset: 8192, Seq: 99, Data: []byte("abcd")}, body: cat(u64(5), u64(8192), u64(99), []byte("abcd"))},
		{name: "commit", msg: &Commit{Seq: 1234}, body: u64(1234)},
		{name: "shard state", msg: &ShardState{ID: 3, Epoch: 7}, body: cat(u64(3), u64(7))},
		{name: "shard state reply", msg: &ShardStateReply{ID: 3, LastSeq: 90, Applied: 88, Epoch: 7, Flags: ShardStateConsistent},
			body: cat(u64(3), u64(90), u64(88), u64(7), u32(1))},
		{name: "shard settle", msg: &ShardSettle{ID: 4, Epoch: 7, Seq: 89}, body: cat(u64(4), u64(7), u64(89))},
		{name: "shard read", msg: &ShardRead{ID: 5, Epoch: 7, Seq: 89, Offset: 65536, Length: 4096},
			body: cat(u64(5), u64(7), u64(89), u64(65536), u32(4096))},
		{name: "shard data", msg: &ShardData{ID: 5, Offset: 65536, Seq: 89, Data: []byte("shard")}, body: cat(u64(5), u64(65536), u64(89), []byte("shard"))},
	}
	if big {
		return cases
	}
	small := cases[:0]
	for _, c := range cases {
		if !c.big {
			small = append(small, c)
		}
	}
	return small
}

// allSentinels lists the package's errors, for checks that an error is
// classified.
var allSentinels = []error{ErrBadMagic, ErrVersion, ErrTooLarge, ErrChecksum, ErrShort, ErrTruncated, ErrMalformed, ErrUnknownType}

// sentinelOf returns the one package sentinel err wraps, or nil.
func sentinelOf(err error) error {
	var found error
	for _, s := range allSentinels {
		if errors.Is(err, s) {
			if found != nil {
				return nil // two sentinels: not classified
			}
			found = s
		}
	}
	return found
}

package node

import (
	"errors"
	"fmt"
	"hash/crc32"
	"sync/atomic"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/ec"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// Erasure-coded resources (docs/erasure.md). The first data node in config
// order keeps the full copy and is the only node that takes the primary
// role; data node h+1 is shard peer h and keeps a compact shard image: its
// store is an ordinary journaled store of ShardSize bytes, written under
// the primary's sequence numbers. The primary re-encodes, under its write
// lock, the shard range every client write changes (read-modify-write from
// its own full copy) and ships each shard peer its piece as an ordinary
// Write; acknowledgement and Outdate rules are the mirrors' (protocol C).

// ErrECUnsupported is returned for operations an erasure-coded resource
// does not support (yet): resize, secondary reads, a shard peer as primary.
var ErrECUnsupported = errors.New("node: not supported for an erasure-coded resource")

// ecNode is a node's erasure-coding state; nil for a mirrored resource.
type ecNode struct {
	cd *ec.Coder
	// shard is this node's shard, -1 on a full-copy node: the first node,
	// or a shard peer that took over (ec_failover.go).
	shard atomic.Int32
}

// shardNow is this node's shard, -1 on a full copy.
func (e *ecNode) shardNow() int { return int(e.shard.Load()) }

// newECNode builds the EC state of member name, or nil for a mirror.
func newECNode(cfg *config.Config, name string) (*ecNode, error) {
	e, ok := cfg.EC()
	if !ok {
		return nil, nil
	}
	cd, err := ec.NewCoder(ec.Geometry{K: e.K, M: e.M, Chunk: config.ECChunk, Size: int64(cfg.Device.Size)})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	en := &ecNode{cd: cd}
	en.shard.Store(int32(cfg.ShardOf(name)))
	return en, nil
}

// shardPeer reports whether this node keeps a shard, not a full copy.
func (n *Node) shardPeer() bool { return n.ec != nil && n.ec.shardNow() >= 0 }

// setConsistent tells the control plane whether this node may propose
// itself as primary. A shard peer may once it has followed a primary (its
// history is not empty: a new cluster elects the full-copy node) and no
// takeover failed here just now; taking over rebuilds the device first
// (ec_takeover.go).
func (n *Node) setConsistent(ok bool) {
	if n.diskFailure() != nil {
		ok = false // a Failed disk is never promoted (health.go)
	}
	if n.shardPeer() && (n.opts.NoShardFailover || n.ecNoPromote.Load() || len(n.history()) == 0) {
		ok = false
	}
	n.ctl.SetConsistent(ok)
}

// ecShards is the encoded part of one client write: every shard's bytes of
// shard range [a, b), or, for zeroing of whole stripes, zero (all shards
// are zero there).
type ecShards struct {
	a, b   int64
	shards [][]byte
	zero   bool
}

// ecCoding: the primary's side of erasure coding (writeCoding).
type ecCoding struct{ e *ecNode }

// split cuts a zeroing into an unaligned head, whole stripes and an
// unaligned tail (ec.Geometry.SplitZero), so that no shard message carries
// more than a stripe of data for it.
func (c ecCoding) split(w journal.Write) []journal.Write {
	if w.ZeroLength == 0 {
		return nil
	}
	parts := c.e.cd.G.SplitZero(w.Offset, w.Offset+w.ZeroLength)
	if len(parts) < 2 {
		return nil
	}
	ws := make([]journal.Write, len(parts))
	for i, pt := range parts {
		ws[i] = journal.Write{Epoch: w.Epoch, Offset: pt[0], ZeroLength: pt[1] - pt[0]}
	}
	return ws
}

func (ecCoding) encode(p *primary, batch []*writeReq) error { return p.ecEncodeBatch(batch) }

// ecEncodeBatch encodes the shard ranges of a batch before it is logged.
// The bytes of write i are the full copy as of the batch's start (ReadAt
// waits for earlier batches) with writes 0..i laid over it. Caller holds mu.
func (p *primary) ecEncodeBatch(batch []*writeReq) error {
	g := p.n.ec.cd.G
	for i, r := range batch {
		w := r.w
		end := w.Offset + int64(len(w.Data)) + w.ZeroLength
		if w.Resize > 0 || end <= w.Offset {
			continue
		}
		a, b := g.ShardRange(w.Offset, end)
		if w.ZeroLength > 0 && g.StripeAligned(w.Offset, end) {
			r.ec = &ecShards{a: a, b: b, zero: true}
			continue
		}
		read := func(buf []byte, off int64) error {
			if err := p.store.ReadAt(buf, off); err != nil {
				return err
			}
			for _, o := range batch[:i+1] {
				overlay(buf, off, o.w)
			}
			return nil
		}
		sh, err := p.n.ec.cd.Encode(read, a, b)
		if err != nil {
			return err
		}
		r.ec = &ecShards{a: a, b: b, shards: sh}
	}
	return nil
}

// overlay lays write w over buf, which holds device bytes from off.
func overlay(buf []byte, off int64, w journal.Write) {
	wend := w.Offset + int64(len(w.Data)) + w.ZeroLength
	lo, hi := max(off, w.Offset), min(off+int64(len(buf)), wend)
	if lo >= hi {
		return
	}
	if w.ZeroLength > 0 {
		clear(buf[lo-off : hi-off])
		return
	}
	copy(buf[lo-off:hi-off], w.Data[lo-w.Offset:hi-w.Offset])
}

// ecMessage is shard's wire message for a logged write.
func ecMessage(e *ecShards, shard int, seq, epoch uint64, fua bool) wire.Message {
	if e.zero {
		return &wire.Zero{Seq: seq, Epoch: epoch, Offset: uint64(e.a), Length: uint64(e.b - e.a), FUA: fua}
	}
	return &wire.Write{Seq: seq, Epoch: epoch, Offset: uint64(e.a), FUA: fua, Data: e.shards[shard]}
}

// shardLayout: the peer keeps shard `shard` of every stripe
// (docs/erasure.md).
type shardLayout struct {
	l     *link
	shard int
}

func (shardLayout) fullCopy() bool { return false }

func (s shardLayout) message(r *writeReq, lg journal.Logged) (wire.Message, bool) {
	if r.ec == nil {
		return nil, false // no shard pieces (a resize): the device record
	}
	p := s.l.p
	if p.n.opts.faults.dropsPiece(s.l.name, lg.Seq) {
		return nil, true
	}
	return ecMessage(r.ec, s.shard, lg.Seq, p.epoch, r.fua), true
}

func (s shardLayout) storeSize(int64) int64 { return s.l.p.n.ec.cd.G.ShardSize() }

func (shardLayout) journalCatchUp() bool { return false }

func (s shardLayout) toDevice(ext []extent.Extent) []extent.Extent {
	return s.l.p.n.ec.cd.G.ShardToDevice(ext)
}

func (s shardLayout) resyncExtents(changed []extent.Extent) []extent.Extent {
	return s.l.p.n.ec.cd.G.StripeExtents(changed)
}

func (shardLayout) paced() bool { return false }

// clearHead: records appended for another shard peer's resync never reach
// this one: what it must acknowledge is what was queued for it.
func (s shardLayout) clearHead(last uint64) uint64 { return min(last, s.l.sentSeq.Load()) }

func (s shardLayout) sums(_ ec.ReadFunc, off, length uint64) ([]uint32, error) {
	return s.l.p.n.ecChunkSums(s.shard, off, length, verifyChunk)
}

// sendChunkLocked queues the peer's shard of the stripes covering
// [off, off+n), re-encoded from this full copy. The piece carries the
// sequence number of a rewrite of the range's first block (it changes
// nothing here), ordered with live writes as a mirror's region copy.
func (s shardLayout) sendChunkLocked(off, n int64) (bool, error) {
	l, p := s.l, s.l.p
	sent, err := s.encodeChunk(off, n)
	if err != nil {
		p.mu.Unlock()
		return false, err
	}
	l.catchup.Add(uint64(sent))
	l.resyncDone.Add(n)
	l.live.Store(true)
	p.mu.Unlock()
	return true, nil
}

// encodeChunk queues the piece for [off, off+n) and returns its bytes.
func (s shardLayout) encodeChunk(off, n int64) (int64, error) {
	l, p := s.l, s.l.p
	g := p.n.ec.cd.G
	sb := g.StripeBytes()
	a, b := off/sb*g.Chunk, (off+n+sb-1)/sb*g.Chunk
	sh, err := p.n.ec.cd.Encode(p.store.ReadAt, a, b)
	if err != nil {
		return 0, fmt.Errorf("node: resync shard %d at %d: %w", s.shard, off, err)
	}
	head := make([]byte, min(4096, n))
	if err := p.store.ReadAt(head, off); err != nil {
		return 0, fmt.Errorf("node: resync read %d: %w", off, err)
	}
	seq, err := p.store.Append(journal.Write{Epoch: p.epoch, Offset: off, Data: head})
	if err != nil {
		return 0, fmt.Errorf("node: resync shard %d at %d: %w", s.shard, off, err)
	}
	l.enqueue(&wire.ResyncData{AsOf: seq, Offset: uint64(a), Data: sh[s.shard]})
	return b - a, nil
}

// ecChunkSums is the CRC-32C of each chunk of shard range [off, off+length)
// as this full copy encodes it: what shard peer `shard` must hold.
func (n *Node) ecChunkSums(shard int, off, length, chunk uint64) ([]uint32, error) {
	sh, err := n.ec.cd.Encode(n.store.ReadAt, int64(off), int64(off+length))
	if err != nil {
		return nil, err
	}
	b := sh[shard]
	sums := make([]uint32, 0, (length+chunk-1)/chunk)
	for o := uint64(0); o < length; o += chunk {
		sums = append(sums, crc32.Checksum(b[o:min(o+chunk, length)], castagnoli))
	}
	return sums, nil
}

package primary

import (
	"fmt"

	"github.com/grbd/grbd/internal/blockid"
	"github.com/grbd/grbd/internal/ec"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// ecShards is the encoded part of one client write: every shard's bytes of
// shard range [a, b), or, for zeroing of whole stripes, zero (all shards
// are zero there).
type ecShards struct {
	a, b   int64
	shards [][]byte
	zero   bool
}

// ecCoding: the primary's side of erasure coding (writeCoding).
type ecCoding struct{ cd *ec.Coder }

// split cuts a zeroing into an unaligned head, whole stripes and an
// unaligned tail (ec.Geometry.SplitZero), so that no shard message carries
// more than a stripe of data for it.
func (c ecCoding) split(w journal.Write) []journal.Write {
	if w.ZeroLength == 0 {
		return nil
	}
	parts := c.cd.G.SplitZero(w.Offset, w.Offset+w.ZeroLength)
	if len(parts) < 2 {
		return nil
	}
	ws := make([]journal.Write, len(parts))
	for i, pt := range parts {
		ws[i] = journal.Write{Epoch: w.Epoch, Offset: pt[0], ZeroLength: pt[1] - pt[0]}
	}
	return ws
}

func (ecCoding) encode(p *Side, batch []*writeReq) error { return p.ecEncodeBatch(batch) }

// ecEncodeBatch encodes the shard ranges of a batch before it is logged.
// The bytes of write i are the full copy as of the batch's start (ReadAt
// waits for earlier batches) with writes 0..i laid over it. Caller holds mu.
func (p *Side) ecEncodeBatch(batch []*writeReq) error {
	g := p.cfg.Coder.G
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
		sh, err := p.cfg.Coder.Encode(read, a, b)
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
	if p.cfg.DropsPiece != nil && p.cfg.DropsPiece(s.l.name, lg.Seq) {
		return nil, true
	}
	return ecMessage(r.ec, s.shard, lg.Seq, p.epoch, r.fua), true
}

func (s shardLayout) storeSize(int64) int64 { return s.l.p.cfg.Coder.G.ShardSize() }

func (shardLayout) journalCatchUp() bool { return false }

func (s shardLayout) toDevice(ext []extent.Extent) []extent.Extent {
	return s.l.p.cfg.Coder.G.ShardToDevice(ext)
}

func (s shardLayout) resyncExtents(changed []extent.Extent) []extent.Extent {
	return s.l.p.cfg.Coder.G.StripeExtents(changed)
}

func (shardLayout) paced() bool { return false }

// clearHead: records appended for another shard peer's resync never reach
// this one: what it must acknowledge is what was queued for it.
func (s shardLayout) clearHead(last uint64) uint64 { return min(last, s.l.sentSeq.Load()) }

func (s shardLayout) sums(_ ec.ReadFunc, off, length uint64) ([]uint32, error) {
	return s.l.p.ecChunkSums(s.shard, off, length, VerifyChunk)
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
	g := p.cfg.Coder.G
	sb := g.StripeBytes()
	a, b := off/sb*g.Chunk, (off+n+sb-1)/sb*g.Chunk
	sh, err := p.cfg.Coder.Encode(p.store.ReadAt, a, b)
	if err != nil {
		return 0, fmt.Errorf("node: resync shard %d at %d: %w", s.shard, off, err)
	}
	head := make([]byte, min(resyncHead, n))
	if err := p.store.ReadAt(head, off); err != nil {
		return 0, fmt.Errorf("node: resync read %d: %w", off, err)
	}
	seq, err := p.resyncSeq(off, head)
	if err != nil {
		return 0, fmt.Errorf("node: resync shard %d at %d: %w", s.shard, off, err)
	}
	l.enqueue(&wire.ResyncData{AsOf: seq, Offset: uint64(a), Data: sh[s.shard]})
	return b - a, nil
}

// ecChunkSums is the block ID of each chunk of shard range [off, off+length)
// as this full copy encodes it: what shard peer `shard` must hold.
// It encodes ecSumsStep chunks at a time: a verify batch is 64 MiB of
// shard, and encoding it at once held k+m times that in memory (256 MiB
// for 2+2), which stalled a loaded node long enough to lose its lease.
func (p *Side) ecChunkSums(shard int, off, length, chunk uint64) ([]uint32, error) {
	sums := make([]uint32, 0, (length+chunk-1)/chunk)
	end := off + length
	for a := off; a < end; a += ecSumsStep * chunk {
		b := min(a+ecSumsStep*chunk, end)
		piece, err := p.ecShardPiece(shard, int64(a), int64(b))
		if err != nil {
			return nil, err
		}
		for o := uint64(0); o < b-a; o += chunk {
			sums = append(sums, blockid.Of(piece[o:min(o+chunk, b-a)]))
		}
	}
	return sums, nil
}

// ecShardPiece is shard's bytes of shard range [a, b): a data shard is read
// from the image, only a parity shard needs the encoding.
func (p *Side) ecShardPiece(shard int, a, b int64) ([]byte, error) {
	cd := p.cfg.Coder
	if shard < cd.G.K {
		return cd.G.Gather(p.store.ReadAt, shard, a, b)
	}
	sh, err := cd.Encode(p.store.ReadAt, a, b)
	if err != nil {
		return nil, err
	}
	return sh[shard], nil
}

// ecSumsStep is how many verify chunks ecChunkSums encodes at once.
const ecSumsStep = 16

// ecCommitLocked tells the shard peers how far the core committed, when
// that advanced. Caller holds coreMu.
func (p *Side) ecCommitLocked() {
	if p.cfg.Coder == nil {
		return
	}
	c := p.core.Committed()
	if c <= p.commitSent {
		return
	}
	p.commitSent = c
	for _, l := range p.links {
		if l.shard >= 0 && l.live.Load() {
			l.enqueue(&wire.Commit{Seq: c})
		}
	}
}

package primary

import (
	"errors"
	"fmt"

	"github.com/grbd/grbd/internal/ec"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// peerLayout is what a peer keeps of the device and how it gets it: a
// mirror keeps all of it (mirrorLayout, here), an erasure-code shard peer
// one shard of every stripe (shardLayout, ec.go). The primary's write,
// catch-up, resync, resize and verify paths ask the link's layout instead of
// branching on erasure coding.
type peerLayout interface {
	// fullCopy: the peer's store is the device (it can serve repairs).
	fullCopy() bool
	// message is what the peer gets of write r, logged as lg; own false:
	// the device write every mirror shares (made once per write by the
	// caller); own with a nil message: nothing.
	message(r *writeReq, lg journal.Logged) (m wire.Message, own bool)
	// storeSize is the size of the peer's store for a device of size bytes.
	storeSize(device int64) int64
	// journalCatchUp: the peer can be caught up from journal records (a
	// shard peer's records are shard pieces: it is resynced instead).
	journalCatchUp() bool
	// toDevice maps regions of the peer's store to device regions.
	toDevice(ext []extent.Extent) []extent.Extent
	// resyncExtents widens changed device regions to what a resync copies.
	resyncExtents(changed []extent.Extent) []extent.Extent
	// sendChunkLocked queues device range [off, off+n) for the peer's
	// resync; called with p.mu held, it returns with p.mu released. false
	// without an error: the range was repaired first; send it again.
	sendChunkLocked(off, n int64) (bool, error)
	// paced: replication.resync-rate applies.
	paced() bool
	// clearHead is what the peer must hold before its Clear if it catches
	// up now, the primary's journal ending at last.
	clearHead(last uint64) uint64
	// sums is the block ID (ChunkSums) of each VerifyChunk of the peer's
	// store range [off, off+length) as this primary's copy says it must be.
	sums(read ec.ReadFunc, off, length uint64) ([]uint32, error)
}

// writeCoding is what the primary does to a write before it journals and
// ships it, besides what each peer gets of it (peerLayout): nothing for a
// mirror (mirrorCoding); erasure coding (ecCoding, ec.go) cuts zeroings at
// stripe boundaries and encodes each batch's shard pieces.
type writeCoding interface {
	// split cuts w into the writes to make instead, in order; nil: w as
	// it is.
	split(w journal.Write) []journal.Write
	// encode prepares the pieces of batch's writes before it is logged.
	// Caller holds p.mu.
	encode(p *Side, batch []*writeReq) error
}

// mirrorCoding: every peer gets the write as it is.
type mirrorCoding struct{}

func (mirrorCoding) split(journal.Write) []journal.Write { return nil }

func (mirrorCoding) encode(*Side, []*writeReq) error { return nil }

// mirrorLayout: the peer keeps a full copy.
type mirrorLayout struct{ l *link }

func (mirrorLayout) fullCopy() bool { return true }

func (mirrorLayout) message(*writeReq, journal.Logged) (wire.Message, bool) { return nil, false }

func (mirrorLayout) storeSize(device int64) int64 { return device }

func (mirrorLayout) journalCatchUp() bool { return true }

func (mirrorLayout) toDevice(ext []extent.Extent) []extent.Extent { return ext }

func (mirrorLayout) resyncExtents(changed []extent.Extent) []extent.Extent { return changed }

func (mirrorLayout) paced() bool { return true }

func (mirrorLayout) clearHead(last uint64) uint64 { return last }

func (mirrorLayout) sums(read ec.ReadFunc, off, length uint64) ([]uint32, error) {
	return ChunkSums(read, off, length, VerifyChunk, true)
}

// sendChunkLocked sends the bytes with a sequence number ordered with live
// writes (resyncSeq).
func (m mirrorLayout) sendChunkLocked(off, n int64) (bool, error) {
	l, p := m.l, m.l.p
	// A pooled buffer, as a live write's: a fresh one per 1 MiB chunk cost
	// the resync its page faults and garbage collection. The queue holds it
	// until the chunk is sent.
	sb := newSharedBuf(int(n))
	defer sb.release()
	buf := *sb.buf
	var sums []byte
	var err error
	if wire.BlockSummed(int(n)) {
		// The checksums the read checked the data with: the frame's CRC
		// is joined from them instead of read from the data again.
		sums, err = p.store.ReadSummed(buf, off, nil)
	} else {
		err = p.store.ReadAt(buf, off)
	}
	if ce := (*journal.ChecksumError)(nil); errors.As(err, &ce) {
		// Repair from another UpToDate peer (this one is not), then copy
		// the chunk again.
		p.mu.Unlock()
		if err := p.repair(ce.Blocks); err != nil {
			return false, fmt.Errorf("node: resync read %d: %w", off, err)
		}
		return false, nil
	}
	var seq uint64
	if err == nil {
		seq, err = p.resyncSeq(off, buf[:min(resyncHead, n)])
	}
	if err != nil {
		p.mu.Unlock()
		return false, fmt.Errorf("node: resync read %d: %w", off, err)
	}
	l.enqueueShared(&wire.ResyncData{AsOf: seq, Offset: uint64(off), Data: buf, BlockSums: sums}, sb)
	l.catchup.Add(uint64(n))
	l.resyncDone.Add(n)
	// The peer persisted "Inconsistent since from" when it took the first
	// chunk: live writes may now follow it.
	l.live.Store(true)
	p.mu.Unlock()
	return true, nil
}

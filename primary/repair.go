package primary

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// Block repair (docs/replication.md, "Block checksums and repair"). The
// journal checks every block it reads against its checksum (its block ID).
// When a block of the primary fails, the primary asks an UpToDate peer for
// its copy (wire.BlockRequest on an admin stream), checks that the copy
// holds every write the primary logged to that block, and writes it back
// through the normal write path: the repair is journaled and replicated
// like any write, and the client's read is retried. A block no peer can
// supply fails the read with EIO; it is never returned as data.
// Erasure-code shard peers hold no copy of the device's bytes: a corrupt
// block of an EC primary is not repaired (decoding it from K shards is
// future work) and fails its reads.

// ErrUnrepairable reports a corrupt block that no UpToDate peer could
// supply: the read fails.
var ErrUnrepairable = errors.New("node: corrupt block and no UpToDate peer could repair it")

const (
	repairTimeout  = 5 * time.Second
	repairAttempts = 20 // per peer: a peer behind on the block is asked again
)

// ReadChecked is the primary's read of the device: a block that fails its
// checksum is repaired from a peer, then the read is retried.
func (p *Side) ReadChecked(buf []byte, off int64) error {
	for try := 0; ; try++ {
		err := p.store.ReadAt(buf, off)
		var ce *journal.ChecksumError
		if !errors.As(err, &ce) || try == 3 {
			return err
		}
		if rerr := p.repair(ce.Blocks); rerr != nil {
			return fmt.Errorf("%w; %w", err, rerr)
		}
	}
}

// repair repairs the given corrupt blocks, one at a time.
func (p *Side) repair(blocks []int64) error {
	p.repairMu.Lock()
	defer p.repairMu.Unlock()
	for _, off := range blocks {
		p.cfg.Repairs.Corrupt.Add(1)
		peer, err := p.repairBlock(off)
		if err != nil {
			p.cfg.Repairs.Unrepaired.Add(1)
			p.node.Event(events.Event{Type: events.TypeCorrupt, State: events.StateFailed, Bytes: journal.SumBlockSize,
				Cause: err.Error(), Detail: fmt.Sprintf("block at offset %d: reads of it fail with EIO", off)})
			return err
		}
		if peer != "" {
			p.cfg.Repairs.Repaired.Add(1)
			p.node.Event(events.Event{Type: events.TypeCorrupt, State: "repaired", Peer: peer, Bytes: journal.SumBlockSize,
				Cause: "checksum mismatch on read", Detail: fmt.Sprintf("block at offset %d rewritten from %s", off, peer)})
		}
	}
	return nil
}

// repairBlock rewrites the block at off from an UpToDate peer and returns
// the peer's name ("" when a write repaired the block meanwhile).
func (p *Side) repairBlock(off int64) (string, error) {
	length := min(journal.SumBlockSize, p.store.Size()-off)
	check := make([]byte, length)
	var errs []error
	for _, l := range p.links {
		st := l.status()
		if !l.layout.fullCopy() || st.Connection != ConnConnected || st.Disk != DiskUpToDate {
			continue // a shard peer holds no copy of the device's bytes
		}
		for attempt := 0; attempt < repairAttempts; attempt++ {
			// The caller has just seen the block fail; look again only
			// before a retry (a write may have replaced it meanwhile).
			if attempt > 0 {
				if err := p.store.ReadAt(check, off); !errors.Is(err, journal.ErrChecksum) {
					return "", err
				}
			}
			need := p.store.LastWriteSeq(off, length)
			data, seq, err := p.FetchBlock(p.ctx, l.name, off, int(length))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", l.name, err))
				break
			}
			if seq < need {
				// The peer has not journaled the newest write to the
				// block yet: its copy is older than ours should be.
				time.Sleep(5 * time.Millisecond)
				continue
			}
			// Under the write lock no write can come between the check
			// and the rewrite: the peer's copy holds every write to the
			// block.
			p.mu.Lock()
			if p.store.LastWriteSeq(off, length) != need {
				p.mu.Unlock()
				continue
			}
			r := &writeReq{w: journal.Write{Epoch: p.epoch, Offset: off, Data: data}}
			p.logBatch([]*writeReq{r})
			p.mu.Unlock()
			if err := p.complete(r); err != nil {
				return "", fmt.Errorf("node: rewrite repaired block at %d: %w", off, err)
			}
			return l.name, nil
		}
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no UpToDate peer is connected"))
	}
	return "", fmt.Errorf("%w: block at %d: %w", ErrUnrepairable, off, errors.Join(errs...))
}

// FetchBlock asks peer for its bytes of [off, off+length) and the sequence
// number its copy is as of.
func (p *Side) FetchBlock(ctx context.Context, peer string, off int64, length int) ([]byte, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	s, err := p.tr.Open(ctx, peer, wire.StreamAdmin)
	if err != nil {
		return nil, 0, fmt.Errorf("open admin stream: %w", err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	r, w := wire.NewReader(s), wire.NewWriter(s)
	if err := w.WriteMsg(&wire.BlockRequest{ID: 1, Offset: uint64(off), Length: uint32(length)}); err != nil {
		return nil, 0, err
	}
	if err := w.Flush(); err != nil {
		return nil, 0, err
	}
	m, err := r.ReadMsg()
	if err != nil {
		return nil, 0, err
	}
	switch v := m.(type) {
	case *wire.BlockData:
		if v.ID != 1 || v.Offset != uint64(off) || len(v.Data) != length {
			return nil, 0, fmt.Errorf("%w: block reply for [%d,+%d), asked [%d,+%d)", ErrPeerFailed, v.Offset, len(v.Data), off, length)
		}
		return append([]byte(nil), v.Data...), v.Seq, nil
	case *wire.Nack:
		return nil, 0, fmt.Errorf("%w: %s", ErrPeerFailed, v.Reason)
	}
	return nil, 0, fmt.Errorf("%w: unexpected %v", ErrPeerFailed, m.Type())
}

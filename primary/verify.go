package primary

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/blockid"
	"github.com/grbd/grbd/internal/ec"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// Online verify (grbd verify): the primary asks each connected peer for the
// block ID (internal/blockid) of every chunk of the device over an admin
// stream, compares them
// with its own, rechecks the mismatches (a chunk written meanwhile differs
// for a moment without being out of sync), and reports what still differs.
// With resync, it rewrites those regions through the normal write path, so
// that every counted peer receives them in order.

const (
	VerifyChunk   = 64 << 10
	VerifyBatch   = 1024 // chunks per request: 64 MiB
	verifyRetries = 3
)

// VerifyResult reports one peer's verify.
type VerifyResult struct {
	Peer       string          `json:"peer"`
	Bytes      int64           `json:"bytes_compared"`
	OutOfSync  []extent.Extent `json:"out_of_sync"`
	Resynced   bool            `json:"resynced"`
	Error      string          `json:"error,omitempty"`
	DurationMs int64           `json:"duration_ms"`
}

// VerifyProgress is the verify running on this primary, as GET /status
// shows it (for progress bars). Field names are part of the admin API.
type VerifyProgress struct {
	Peer  string `json:"peer"`
	Total int64  `json:"bytes_total"`
	Done  int64  `json:"bytes_done"` // first pass; rechecks follow
}

// VerifyProgress reports the running verify, or nil.
func (p *Side) VerifyProgress() *VerifyProgress {
	v := p.verifying.Load()
	if v == nil {
		return nil
	}
	return &VerifyProgress{Peer: v.peer, Total: v.total, Done: v.done.Load()}
}

// verifyState is the progress of the running verify.
type verifyState struct {
	peer  string
	total int64
	done  atomic.Int64
}

// ErrEnded: this primary's epoch ended (deposed, demoted or shut down)
// while an operation ran; what it had found is no longer this node's to say.
var ErrEnded = errors.New("primary: this primary's role ended")

// Verify compares every connected peer with this primary. It stops with
// ErrEnded when the role ends: after a failover the peers follow another
// primary, and a comparison with this node's copy (resynced from the new
// primary, or with the layout of the old epoch) would report differences
// that are not there.
func (p *Side) Verify(ctx context.Context, resync bool) ([]VerifyResult, error) {
	defer p.verifying.Store(nil)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(p.ctx, cancel)()
	var out []VerifyResult
	for _, l := range p.links {
		size := l.layout.storeSize(p.store.Size())
		p.verifying.Store(&verifyState{peer: l.name, total: size})
		start := time.Now()
		r := VerifyResult{Peer: l.name, OutOfSync: []extent.Extent{}}
		bad, err := p.verifyPeer(ctx, l)
		if p.ctx.Err() != nil {
			return nil, fmt.Errorf("verify %s: %w", l.name, ErrEnded)
		}
		if err == nil {
			bad = l.layout.toDevice(bad) // repairs go through the write path, in device ranges
		}
		r.Bytes = size
		if err != nil {
			r.Error = err.Error()
			p.node.Event(events.Event{Type: events.TypeVerify, Peer: l.name, State: events.StateFailed, Cause: err.Error()})
		} else {
			r.OutOfSync = bad
			p.node.Event(events.Event{Type: events.TypeVerify, Peer: l.name, State: events.StateDone, Bytes: r.Bytes,
				Detail: fmt.Sprintf("%d out-of-sync regions", len(bad))})
			if resync && len(bad) > 0 {
				if err := p.rewrite(bad); err != nil {
					r.Error = "resync: " + err.Error()
				} else {
					r.Resynced = true
				}
			}
		}
		r.DurationMs = time.Since(start).Milliseconds()
		out = append(out, r)
	}
	return out, nil
}

// verifyPeer returns the regions of l's peer whose checksums differ: of
// its store, as its layout says what that store must hold (a shard peer's
// is its shard image, this node's side its full copy re-encoded).
func (p *Side) verifyPeer(ctx context.Context, l *link) ([]extent.Extent, error) {
	peer := l.name
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	s, err := p.tr.Open(octx, peer, wire.StreamAdmin)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", peer, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	r, w := wire.NewReader(s), wire.NewWriter(s)
	size := uint64(l.layout.storeSize(p.store.Size()))
	var read ec.ReadFunc = p.ReadChecked // a corrupt block here is repaired from a peer first
	mineOf := func(off, length uint64) ([]uint32, error) { return l.layout.sums(read, off, length) }
	compare := (&verifyExchange{r: r, w: w, mineOf: mineOf}).compare
	var suspects []extent.Extent
	for off := uint64(0); off < size; off += VerifyBatch * VerifyChunk {
		bad, err := compare(off, min(VerifyBatch*VerifyChunk, size-off))
		if err != nil {
			return nil, fmt.Errorf("verify %s: %w", peer, err)
		}
		suspects = append(suspects, bad...)
		if v := p.verifying.Load(); v != nil {
			v.done.Store(int64(off + min(VerifyBatch*VerifyChunk, size-off)))
		}
	}
	// A chunk written during the pass differs until the peer applied the
	// write: recheck before calling it out of sync.
	for try := 0; try < verifyRetries && len(suspects) > 0; try++ {
		time.Sleep(50 * time.Millisecond)
		var still []extent.Extent
		for _, e := range suspects {
			bad, err := compare(e.Offset, e.Length)
			if err != nil {
				return nil, fmt.Errorf("verify %s: %w", peer, err)
			}
			still = append(still, bad...)
		}
		suspects = still
	}
	return extent.Merge(suspects), nil
}

// verifyExchange asks a peer for its chunk sums, one range at a time.
type verifyExchange struct {
	r      *wire.Reader
	w      *wire.Writer
	id     uint64
	mineOf func(off, length uint64) ([]uint32, error) // this node's sums
}

// compare returns the chunks of [off, off+length) whose sums differ.
func (v *verifyExchange) compare(off, length uint64) ([]extent.Extent, error) {
	v.id++
	if err := v.w.WriteMsg(&wire.VerifyRequest{ID: v.id, Offset: off, Length: length, Chunk: VerifyChunk, IDs: true}); err != nil {
		return nil, err
	}
	if err := v.w.Flush(); err != nil {
		return nil, err
	}
	m, err := v.r.ReadMsg()
	if errors.Is(err, io.EOF) && v.id == 1 {
		// A release before chunk IDs refuses the request's flag (FlagIDs)
		// and ends the stream.
		return nil, fmt.Errorf("%w: the peer ended the verify stream at its first request (it stopped, or "+
			"it runs a grbd release that predates block-ID verify and refuses it: upgrade every data node): %w",
			ErrPeerFailed, err)
	}
	if err != nil {
		return nil, err
	}
	rep, ok := m.(*wire.VerifyReply)
	if !ok || rep.ID != v.id || rep.Offset != off || !rep.IDs {
		return nil, fmt.Errorf("%w: bad verify reply %v", ErrPeerFailed, m.Type())
	}
	mine, err := v.mineOf(off, length)
	if err != nil {
		return nil, err
	}
	if len(mine) != len(rep.Sums) {
		return nil, fmt.Errorf("%w: %d sums for %d chunks", ErrPeerFailed, len(rep.Sums), len(mine))
	}
	var bad []extent.Extent
	for i := range mine {
		if mine[i] != rep.Sums[i] {
			o := off + uint64(i)*VerifyChunk
			bad = append(bad, extent.Extent{Offset: o, Length: min(VerifyChunk, off+length-o)})
		}
	}
	return bad, nil
}

// ChunkSums is the block ID (internal/blockid) with ids, else the CRC-32C
// (what a primary of an earlier release asks for), of each chunk of [off,
// off+length). A CRC cannot tell apart chunks made of blocks that end in
// their own CRC-32C, however their bytes differ (docs/journal.md, "Block
// IDs"). A chunk with a corrupt block gets a sum that cannot match its
// bytes (the other side's good copy), so verify reports it out of sync and
// --resync rewrites it.
func ChunkSums(read func([]byte, int64) error, off, length, chunk uint64, ids bool) ([]uint32, error) {
	sums := make([]uint32, 0, (length+chunk-1)/chunk)
	buf := make([]byte, chunk)
	for o := off; o < off+length; o += chunk {
		b := buf[:min(chunk, off+length-o)]
		err := read(b, int64(o))
		corrupt := errors.Is(err, journal.ErrChecksum)
		if err != nil && !corrupt {
			return nil, err
		}
		sum := blockid.OrCRC(b, !ids)
		if corrupt {
			sum = ^sum
		}
		sums = append(sums, sum)
	}
	return sums, nil
}

// rewrite writes the primary's own bytes of each extent again through the
// Write path: every counted peer receives them in sequence order.
func (p *Side) rewrite(extents []extent.Extent) error {
	buf := make([]byte, resyncChunk)
	for _, e := range extents {
		for off, end := int64(e.Offset), int64(e.End()); off < end; off += resyncChunk {
			if err := p.rewriteOwn(buf[:min(resyncChunk, end-off)], off); err != nil {
				return err
			}
		}
	}
	return nil
}

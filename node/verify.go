package node

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/grbd/grbd/internal/mesh"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/primary"
)

// ErrNotPrimary is returned by operations only the primary can run.
var ErrNotPrimary = errors.New("node: not the primary")

// verifyProgress reports the running verify, or nil.
func (n *Node) verifyProgress() *VerifyProgress {
	if p := n.currentPrimary(); p != nil {
		return p.VerifyProgress()
	}
	return nil
}

// Verify compares every connected peer with this primary (grbd verify;
// primary.Side.Verify); with resync it rewrites what differs.
func (n *Node) Verify(ctx context.Context, resync bool) ([]VerifyResult, error) {
	p := n.currentPrimary()
	if p == nil {
		return nil, ErrNotPrimary
	}
	res, err := p.Verify(ctx, resync)
	if errors.Is(err, primary.ErrEnded) {
		return nil, fmt.Errorf("%w: the role ended during the verify: %w", ErrNotPrimary, err)
	}
	return res, err
}

// serveAdmin answers admin requests (verify) from a peer on its stream.
func (n *Node) serveAdmin(peer string, s net.Conn) {
	defer s.Close()
	r, w := mesh.StreamReader(s), wire.NewWriter(s)
	size := uint64(n.store.Size())
	for {
		m, err := r.ReadMsg()
		if err != nil {
			return
		}
		if ok, err := n.serveShard(w, m); ok {
			if err != nil || w.Flush() != nil {
				return
			}
			continue
		}
		if breq, ok := m.(*wire.BlockRequest); ok {
			if err := n.serveBlock(w, breq); err != nil {
				return
			}
			if err := w.Flush(); err != nil {
				return
			}
			continue
		}
		req, ok := m.(*wire.VerifyRequest)
		if !ok || req.Chunk == 0 || req.Chunk > 1<<20 || req.Offset+req.Length > size || req.Offset+req.Length < req.Offset ||
			req.Length/req.Chunk > primary.VerifyBatch {
			n.log.Warn("refusing admin request", "peer", peer, "type", m.Type())
			return
		}
		sums, err := primary.ChunkSums(n.store.ReadAt, req.Offset, req.Length, req.Chunk, req.IDs)
		if err != nil {
			n.log.Error("verify: read", "err", err)
			return
		}
		if err := w.WriteMsg(&wire.VerifyReply{ID: req.ID, Offset: req.Offset, Chunk: req.Chunk, Sums: sums, IDs: req.IDs}); err != nil {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

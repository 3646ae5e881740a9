package primary

import (
	"errors"
	"fmt"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// ErrResizeNotLarger is returned for a size not above the current one:
// the device only grows.
var ErrResizeNotLarger = errors.New("node: resize: the device only grows")

// Resize appends the resize record under the write lock, ships it, and
// waits until the protocol releases it and a flush made it durable here
// and on every counted peer (as protocol C or stronger, whatever the
// configured protocol: a grow is rare and must not be lost by a peer).
func (p *Side) Resize(size int64) error {
	p.mu.Lock()
	if cur := p.store.Size(); size <= cur {
		p.mu.Unlock()
		return fmt.Errorf("%w: %d bytes requested, the device has %d", ErrResizeNotLarger, size, cur)
	}
	p.log.Info("resize: growing the device", "from", p.store.Size(), "to", size)
	r := &writeReq{w: journal.Write{Epoch: p.epoch, Resize: size}, fua: true}
	p.logBatch([]*writeReq{r})
	p.mu.Unlock()
	return p.complete(r)
}

// announceSize journals the primary's current size again (a no-op record
// here) and sends it to the peer with flags: first in a region resync
// (wire.ResizeResync), so that a peer that missed a grow, and whose journal
// position is too old to get the record through catch-up, grows before any
// region past its old end; and last in a journal catch-up, so that a peer
// larger than the primary takes its size. Caller holds mu.
func (l *link) announceSize(flags uint32) error {
	p := l.p
	size := p.store.Size()
	seq, err := p.store.Append(journal.Write{Epoch: p.epoch, Resize: size})
	if err != nil {
		return fmt.Errorf("node: announce size: %w", err)
	}
	l.enqueue(&wire.Resize{Seq: seq, Epoch: p.epoch, Size: uint64(l.layout.storeSize(size)), Flags: flags})
	return nil
}

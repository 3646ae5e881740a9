package primary

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/peerwire"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/secondary"
)

// The primary's side of a data stream's handshake (link.session): its Hello
// and History out, the peer's Hello and what it asks to be resynced in.

// handshake sends Hello and History, and reads the peer's Hello and, for
// an Inconsistent peer, the Extents it needs besides the primary's changes
// and the progress of its interrupted resync (nil: none reported).
func (l *link) handshake(s net.Conn, r *wire.Reader, w *wire.Writer) (*wire.Hello, []extent.Extent, *wire.ResyncProgress, error) {
	h, extra, err := l.handshakeExtents(s, r, w)
	if err != nil || h.Flags&wire.HelloInconsistent == 0 || h.Flags&wire.HelloResume == 0 || l.p.cfg.Coder != nil {
		return h, extra, nil, err
	}
	prog, err := peerwire.ReadAs[*wire.ResyncProgress](r, "ResyncProgress")
	if err != nil {
		return nil, nil, nil, err
	}
	return h, extra, wire.Clone(prog).(*wire.ResyncProgress), nil
}

func (l *link) handshakeExtents(s net.Conn, r *wire.Reader, w *wire.Writer) (*wire.Hello, []extent.Extent, error) {
	_ = s.SetDeadline(time.Now().Add(HandshakeTimeout))
	defer s.SetDeadline(time.Time{})
	recorded := l.p.recordedDisk(l.name)
	if err := l.sendHello(w, recorded); err != nil {
		return nil, nil, err
	}
	m, err := r.ReadMsg()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h, err := l.checkPeerHello(m, recorded)
	if err != nil || h.Flags&wire.HelloInconsistent == 0 {
		return h, nil, err
	}
	ex, err := peerwire.ReadAs[*wire.Extents](r, "Extents")
	if err != nil {
		return nil, nil, err
	}
	size := uint64(l.p.store.Size())
	if ex.Flags&wire.ExtentsAll != 0 {
		return h, []extent.Extent{{Offset: 0, Length: size}}, nil
	}
	extra := make([]extent.Extent, 0, len(ex.Extents))
	for _, e := range ex.Extents {
		if e.Length == 0 || e.Offset+e.Length < e.Offset {
			return nil, nil, fmt.Errorf("%w: extent [%d,+%d) is empty or wraps", ErrHandshake, e.Offset, e.Length)
		}
		// A peer larger than this primary (it grew by a record no node
		// that can be primary has, e.g. the loser of a split brain) names
		// its own writes past this device's end: the resync's size
		// announcement cuts them off there, so only the part inside is
		// copied. Refusing them ended every session, and the peer never
		// caught up.
		if e.Offset >= size {
			continue
		}
		e.Length = min(e.Length, size-e.Offset)
		extra = append(extra, e)
	}
	return h, extra, nil
}

// sendHello sends the primary's Hello (recorded: the disk the control
// plane recorded for the peer) and its history.
func (l *link) sendHello(w *wire.Writer, recorded uint64) error {
	p := l.p
	me := &wire.Hello{Cluster: p.cfg.Cluster, From: p.cfg.Name, Role: wire.RolePrimary, Epoch: p.epoch,
		LastSeq: p.store.LastSeq(), DurableSeq: p.store.DurableSeq()}
	me.PutDisks(recorded, p.store.ID())
	if p.cfg.Coder == nil {
		me.Flags = wire.HelloResume
	}
	if p.cfg.Reestablished {
		me.Flags |= wire.HelloReestablished
	}
	if err := w.WriteMsg(me); err != nil {
		return err
	}
	if err := w.WriteMsg(peerwire.HistoryToWire(p.node.History(), me.LastSeq)); err != nil {
		return err
	}
	return w.Flush()
}

// checkPeerHello checks the peer's answer to the Hello: a Hello of the
// right cluster and name, with the recorded disk or asking for a full
// sync, keeping what this primary expects of it (a shard or a full copy).
func (l *link) checkPeerHello(m wire.Message, recorded uint64) (*wire.Hello, error) {
	p := l.p
	if nack, ok := m.(*wire.Nack); ok {
		if nack.Code == wire.NackState && strings.HasPrefix(nack.Reason, secondary.SplitBrainReason) {
			return nil, fmt.Errorf("%w: %s", ErrSplitBrain, nack.Reason)
		}
		if nack.Code == wire.NackState && strings.HasPrefix(nack.Reason, secondary.AheadReason) {
			return nil, fmt.Errorf("%w: %s", ErrBehindPeer, nack.Reason)
		}
		return nil, fmt.Errorf("%w: peer refused: code %d: %s", ErrHandshake, nack.Code, nack.Reason)
	}
	h, ok := m.(*wire.Hello)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: first message is %v", ErrHandshake, m.Type())
	case h.Cluster != p.cfg.Cluster:
		return nil, fmt.Errorf("%w: peer is in cluster %q, not %q", ErrHandshake, h.Cluster, p.cfg.Cluster)
	case h.From != l.name:
		return nil, fmt.Errorf("%w: peer says it is %q", ErrHandshake, h.From)
	}
	hc := *h
	disk, _ := hc.Disks()
	if recorded != 0 && disk != 0 && disk != recorded && hc.Flags&wire.HelloInconsistent == 0 {
		// A peer of this version resyncs itself in full when told its disk
		// is not the recorded one; one that does not must not be counted.
		return nil, fmt.Errorf("%w: %s has disk %s, not the recorded %s, and did not ask for a full sync", ErrHandshake,
			l.name, quorum.ShortDisk(disk), quorum.ShortDisk(recorded))
	}
	if p.cfg.Coder != nil && (hc.Flags&wire.HelloFullCopy != 0) != l.layout.fullCopy() {
		// Shard pieces must never reach a full copy, nor device writes a
		// shard: a node that took over keeps a full copy in the slot of its
		// configured shard (docs/erasure.md, "Failover").
		return nil, fmt.Errorf("%w: %s keeps %s, this primary expects %s", ErrHandshake, l.name,
			map[bool]string{true: "a full copy", false: "a shard"}[hc.Flags&wire.HelloFullCopy != 0],
			map[bool]string{true: "a full copy", false: fmt.Sprintf("shard %d", l.shard)}[l.shard < 0])
	}
	return &hc, nil
}

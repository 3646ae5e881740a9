package node

import (
	"fmt"
	"github.com/grbd/grbd/internal/extent"
	"net"
	"strings"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/quorum"
)

// The primary's side of a data stream's handshake (link.session): its Hello
// and History out, the peer's Hello and what it asks to be resynced in.

// handshake sends Hello and History, and reads the peer's Hello and, for
// an Inconsistent peer, the Extents it needs besides the primary's changes
// and the progress of its interrupted resync (nil: none reported).
func (l *link) handshake(s net.Conn, r *wire.Reader, w *wire.Writer) (*wire.Hello, []extent.Extent, *wire.ResyncProgress, error) {
	h, extra, err := l.handshakeExtents(s, r, w)
	if err != nil || h.Flags&helloFlagInconsistent == 0 || h.Flags&helloFlagResume == 0 || l.p.n.ec != nil {
		return h, extra, nil, err
	}
	m, err := r.ReadMsg()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: resync progress: %w", ErrHandshake, err)
	}
	prog, ok := m.(*wire.ResyncProgress)
	if !ok {
		return nil, nil, nil, fmt.Errorf("%w: expected ResyncProgress, got %v", ErrHandshake, m.Type())
	}
	return h, extra, wire.Clone(prog).(*wire.ResyncProgress), nil
}

func (l *link) handshakeExtents(s net.Conn, r *wire.Reader, w *wire.Writer) (*wire.Hello, []extent.Extent, error) {
	_ = s.SetDeadline(time.Now().Add(handshakeTimeout))
	defer s.SetDeadline(time.Time{})
	p := l.p
	me := &wire.Hello{Cluster: p.n.cfg.Cluster, From: p.n.me.Name, Role: wire.RolePrimary, Epoch: p.epoch,
		LastSeq: p.store.LastSeq(), DurableSeq: p.store.DurableSeq()}
	recorded := p.recordedDisk(l.name)
	putHelloDisks(me, recorded, p.store.ID())
	if p.n.ec == nil {
		me.Flags = helloFlagResume
	}
	hist := &wire.History{LastSeq: me.LastSeq}
	for _, e := range p.n.history() {
		var f uint8
		if e.Forced {
			f = wire.HistoryForced
		}
		hist.Entries = append(hist.Entries, wire.HistoryEntry{Epoch: e.Epoch, FirstSeq: e.FirstSeq, Flags: f})
	}
	if len(hist.Entries) > wire.MaxHistory {
		hist.Entries = hist.Entries[len(hist.Entries)-wire.MaxHistory:]
	}
	if err := w.WriteMsg(me); err != nil {
		return nil, nil, err
	}
	if err := w.WriteMsg(hist); err != nil {
		return nil, nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, nil, err
	}
	m, err := r.ReadMsg()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	if nack, ok := m.(*wire.Nack); ok {
		if nack.Code == wire.NackState && strings.HasPrefix(nack.Reason, splitBrainReason) {
			return nil, nil, fmt.Errorf("%w: %s", ErrSplitBrain, nack.Reason)
		}
		return nil, nil, fmt.Errorf("%w: peer refused: code %d: %s", ErrHandshake, nack.Code, nack.Reason)
	}
	h, ok := m.(*wire.Hello)
	switch {
	case !ok:
		return nil, nil, fmt.Errorf("%w: first message is %v", ErrHandshake, m.Type())
	case h.Cluster != p.n.cfg.Cluster:
		return nil, nil, fmt.Errorf("%w: peer is in cluster %q, not %q", ErrHandshake, h.Cluster, p.n.cfg.Cluster)
	case h.From != l.name:
		return nil, nil, fmt.Errorf("%w: peer says it is %q", ErrHandshake, h.From)
	}
	hc := *h
	disk, _ := helloDisks(&hc)
	if recorded != 0 && disk != 0 && disk != recorded && hc.Flags&helloFlagInconsistent == 0 {
		// A peer of this version resyncs itself in full when told its disk
		// is not the recorded one; one that does not must not be counted.
		return nil, nil, fmt.Errorf("%w: %s has disk %s, not the recorded %s, and did not ask for a full sync", ErrHandshake,
			l.name, quorum.ShortDisk(disk), quorum.ShortDisk(recorded))
	}
	if p.n.ec != nil && (hc.Flags&helloFlagFullCopy != 0) != (l.shard < 0) {
		// Shard pieces must never reach a full copy, nor device writes a
		// shard: a node that took over keeps a full copy in the slot of its
		// configured shard (docs/erasure.md, "Failover").
		return nil, nil, fmt.Errorf("%w: %s keeps %s, this primary expects %s", ErrHandshake, l.name,
			map[bool]string{true: "a full copy", false: "a shard"}[hc.Flags&helloFlagFullCopy != 0],
			map[bool]string{true: "a full copy", false: fmt.Sprintf("shard %d", l.shard)}[l.shard < 0])
	}
	if hc.Flags&helloFlagInconsistent == 0 {
		return &hc, nil, nil
	}
	m, err = r.ReadMsg()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: extents: %w", ErrHandshake, err)
	}
	ex, ok := m.(*wire.Extents)
	if !ok {
		return nil, nil, fmt.Errorf("%w: expected Extents, got %v", ErrHandshake, m.Type())
	}
	if ex.Flags&wire.ExtentsAll != 0 {
		return &hc, []extent.Extent{{Offset: 0, Length: uint64(p.store.Size())}}, nil
	}
	extra := make([]extent.Extent, 0, len(ex.Extents))
	for _, e := range ex.Extents {
		if e.Length == 0 || e.Offset+e.Length > uint64(p.store.Size()) || e.Offset+e.Length < e.Offset {
			return nil, nil, fmt.Errorf("%w: extent [%d,+%d) outside the device", ErrHandshake, e.Offset, e.Length)
		}
		extra = append(extra, e)
	}
	return &hc, extra, nil
}

package ecpeer

import (
	"fmt"
	"log/slog"

	"github.com/grbd/grbd/internal/wire"
)

// The shard peers' side of a failover (docs/erasure.md, "Failover"): the
// taking-over peer asks each for its journal position (ShardState),
// settles the usable ones at one position (ShardSettle) and reads their
// shards there (ShardRead).

// requestID is the ID of a failover request; false if m is not one.
func requestID(m wire.Message) (uint64, bool) {
	switch m := m.(type) {
	case *wire.ShardState:
		return m.ID, true
	case *wire.ShardSettle:
		return m.ID, true
	case *wire.ShardRead:
		return m.ID, true
	}
	return 0, false
}

// nack refuses request m (of id) with code and why.
func nack(w *wire.Writer, log *slog.Logger, m wire.Message, id uint64, code uint32, why error) error {
	log.Warn("refusing shard failover request", "type", m.Type(), "err", why)
	return w.WriteMsg(wire.NewNack(id, code, why.Error()))
}

// Refuse answers a failover request on the admin stream of a node without
// a Peer (a mirror); false if m is not one.
func Refuse(w *wire.Writer, m wire.Message, log *slog.Logger) (bool, error) {
	id, ok := requestID(m)
	if !ok {
		return false, nil
	}
	return true, nack(w, log, m, id, wire.NackState, errNotShard)
}

// Serve answers a failover request on an admin stream; false if m is not
// one.
func (p *Peer) Serve(w *wire.Writer, m wire.Message) (bool, error) {
	id, ok := requestID(m)
	if !ok {
		return false, nil
	}
	reply, code, err := p.answer(m)
	if err != nil {
		return true, nack(w, p.log, m, id, code, err)
	}
	return true, w.WriteMsg(reply)
}

// answer is the reply to failover request m, or the nack code and why.
func (p *Peer) answer(m wire.Message) (wire.Message, uint32, error) {
	switch m := m.(type) {
	case *wire.ShardState:
		if code, err := p.refusal(m.Epoch); err != nil {
			return nil, code, err
		}
		return p.stateReply(m.ID), 0, nil
	case *wire.ShardSettle:
		if code, err := p.refusal(m.Epoch); err != nil {
			return nil, code, err
		}
		if err := p.settle(m.Seq); err != nil {
			return nil, wire.NackState, err
		}
		return p.stateReply(m.ID), 0, nil
	case *wire.ShardRead:
		return p.read(m)
	}
	return nil, wire.NackState, fmt.Errorf("ecpeer: %v is not a failover request", m.Type())
}

// refusal is why a ShardState or ShardSettle of epoch is refused, with its
// nack code: no shard here, a primary here, or a stale epoch.
func (p *Peer) refusal(epoch uint64) (uint32, error) {
	if p.applier() == nil || p.host.Primary() {
		return wire.NackState, errNotShard
	}
	return wire.NackStaleEpoch, p.fenceOlder(epoch)
}

// stateReply is this shard peer's ShardStateReply.
func (p *Peer) stateReply(id uint64) *wire.ShardStateReply {
	store := p.host.Store()
	r := &wire.ShardStateReply{ID: id, LastSeq: store.LastSeq(), Epoch: p.host.Secondary().Epoch()}
	if sa := p.applier(); sa != nil {
		r.Applied = min(sa.Applied(), r.LastSeq)
	}
	if p.host.Secondary().Consistent() {
		r.Flags = wire.ShardStateConsistent
	}
	return r
}

// read answers a ShardRead: shard bytes, only at the settled position.
func (p *Peer) read(m *wire.ShardRead) (wire.Message, uint32, error) {
	if p.applier() == nil || p.host.Primary() {
		return nil, wire.NackState, errNotShard
	}
	store := p.host.Store()
	if p.settled.Load() != m.Seq+1 || store.LastSeq() != m.Seq || m.Epoch < p.host.Secondary().Epoch() {
		return nil, wire.NackState, fmt.Errorf("%w: not settled at %d (last %d)", ErrShardUnusable, m.Seq, store.LastSeq())
	}
	size := uint64(store.Size())
	if m.Offset > size || uint64(m.Length) > size-m.Offset {
		return nil, wire.NackOutOfRange, fmt.Errorf("ecpeer: [%d,+%d) beyond %d", m.Offset, m.Length, size)
	}
	data := make([]byte, m.Length)
	if err := store.ReadAt(data, int64(m.Offset)); err != nil {
		return nil, wire.NackIO, err
	}
	return &wire.ShardData{ID: m.ID, Offset: m.Offset, Seq: m.Seq, Data: data}, 0, nil
}

// settle brings this shard peer's image and journal to position d: writes
// up to d applied, those above dropped and forgotten. It refuses when the
// image holds a write above d or the journal does not reach d. A settled
// position serves ShardRead until a primary connects.
func (p *Peer) settle(d uint64) error {
	sa := p.applier()
	if sa == nil {
		return errNotShard
	}
	store, meta := p.host.Store(), p.host.Meta()
	last := store.LastSeq()
	if last < d || sa.Applied() > d {
		return fmt.Errorf("%w: journal at %d, applied %d, asked to settle at %d", ErrShardUnusable, last, sa.Applied(), d)
	}
	if last > d {
		if err := meta.Mark(settleFile, fmt.Sprintln(d)); err != nil {
			return fmt.Errorf("ecpeer: settle: %w", err)
		}
	}
	if err := sa.Settle(d, false); err != nil {
		return fmt.Errorf("%w: %w", ErrShardUnusable, err)
	}
	if last > d {
		if _, err := store.Rewind(d); err != nil {
			return fmt.Errorf("ecpeer: settle: rewind to %d: %w", d, err)
		}
		if err := meta.Unmark(settleFile); err != nil {
			return fmt.Errorf("ecpeer: %w", err)
		}
	}
	p.settled.Store(d + 1)
	p.log.Info("shard peer settled for a takeover", "seq", d, "dropped_from", last)
	return nil
}

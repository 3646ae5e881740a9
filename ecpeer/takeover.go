package ecpeer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/quorum"
)

// The taking-over side of the failover to a shard peer (docs/erasure.md,
// "Failover"): the shard peer the control plane elects asks every
// reachable shard peer for its journal position, settles the usable ones
// at D, the lowest journal position among them, rebuilds the device from K
// of them into its own store and serves as a full copy.

const (
	// takeoverTimeout bounds one takeover (state, settle, rebuild).
	takeoverTimeout = 60 * time.Second
	// shardCallTimeout bounds one request to a shard peer.
	shardCallTimeout = 5 * time.Second
	// shardDialTimeout: a shard peer whose member link is not up within
	// this is not reached (a lost peer must not delay the takeover).
	shardDialTimeout = time.Second
	// rebuildBytes is the device bytes decoded per step.
	rebuildBytes = 1 << 20
)

// TakeoverStats is what a takeover reports.
type TakeoverStats struct {
	D        uint64
	Used     []string
	Bytes    int64
	Duration time.Duration
}

// TakeOver rebuilds the device into this shard peer's store before it
// serves as primary of st.Epoch; false when it failed: the node must give
// the role back. The caller holds its role lock and stops the takeover
// through ctx.
func (p *Peer) TakeOver(ctx context.Context, st quorum.Status) bool {
	stats, err := p.takeover(ctx, st)
	if err != nil {
		p.log.Error("takeover failed: not serving", "epoch", st.Epoch, "err", err)
		p.host.Event(events.Event{Type: events.TypeTakeover, State: events.StateFailed, Epoch: st.Epoch,
			Cause: "promoted while keeping an erasure-code shard", Detail: err.Error()})
		if meta := p.host.Meta(); meta.Marked(takeoverFile) || meta.Marked(settleFile) {
			// Half rebuilt or half settled: neither the shard nor the
			// device. An Inconsistent full copy from now on.
			if rerr := p.Recover(); rerr != nil {
				p.log.Error("takeover: cannot mark the disk Inconsistent", "err", rerr)
			}
		}
		p.backOff()
		return false
	}
	detail := fmt.Sprintf("rebuilt %d bytes at seq %d from %v in %v", stats.Bytes, stats.D, stats.Used, stats.Duration.Round(time.Millisecond))
	p.log.Info("takeover done: this node is now a full copy", "seq", stats.D, "used", stats.Used, "bytes", stats.Bytes, "duration", stats.Duration)
	p.host.Event(events.Event{Type: events.TypeTakeover, State: events.StateDone, Epoch: st.Epoch, Bytes: stats.Bytes,
		Cause: "promoted while keeping an erasure-code shard: rebuilt the device from K shards", Detail: detail})
	p.last.Store(&stats)
	return true
}

// takeover runs the four steps: fence, survey, settle, rebuild.
func (p *Peer) takeover(ctx context.Context, st quorum.Status) (TakeoverStats, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, takeoverTimeout)
	defer cancel()
	p.host.Secondary().StopSessions()
	if err := p.fenceOlder(st.Epoch); err != nil {
		return TakeoverStats{}, err
	}
	g := p.cd.G

	// a. Every reachable shard peer's position, this node's too.
	survivors, conns := p.surveyShards(ctx, st)
	defer func() {
		for _, c := range conns {
			c.s.Close()
		}
	}()

	// b. The position and the usable survivors.
	plan, err := planTakeover(g.K, survivors)
	if err != nil {
		return TakeoverStats{}, fmt.Errorf("%w (survivors: %+v)", err, survivors)
	}
	p.log.Info("takeover: rebuilding the device from shard peers", "seq", plan.D, "usable", len(plan.Usable))

	// c. Settle the usable ones at D, until K are.
	readers, used := p.settleShards(st, plan, conns)
	if len(readers) < g.K {
		return TakeoverStats{}, fmt.Errorf("%w: %d settled at %d, need %d", ErrTooFewShards, len(readers), plan.D, g.K)
	}
	if err := ctx.Err(); err != nil {
		return TakeoverStats{}, err
	}

	// d. Rebuild into this node's own store.
	bytes, err := p.rebuild(plan.D, readers)
	if err != nil {
		return TakeoverStats{}, err
	}
	// Every byte of the device is the rebuild's now: what a power loss left
	// in doubt in the shard image (shard ranges) is moot, and must not be
	// rewritten as device ranges by the primary.
	if err := p.host.Store().ClearSuspects(); err != nil {
		return TakeoverStats{}, err
	}
	return TakeoverStats{D: plan.D, Used: used, Bytes: bytes, Duration: time.Since(start)}, nil
}

// surveyShards asks every shard peer for its position, in parallel; this
// node's own comes first. conns holds a connection to each peer that
// answered, by shard; the caller closes them.
func (p *Peer) surveyShards(ctx context.Context, st quorum.Status) ([]shardSurvivor, map[int]*shardConn) {
	store := p.host.Store()
	survivors := []shardSurvivor{{Name: p.name, Shard: p.Shard(), Reached: true, Outdated: st.IsOutdated(p.name),
		Consistent: p.host.Secondary().Consistent(), Last: store.LastSeq(), Applied: min(p.host.Applier().Applied(), store.LastSeq())}}
	conns := map[int]*shardConn{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range p.cfg.Nodes {
		h := p.cfg.ShardOf(m.Name)
		if h < 0 || m.Name == p.name {
			continue
		}
		wg.Go(func() {
			sv := shardSurvivor{Name: m.Name, Shard: h, Outdated: st.IsOutdated(m.Name)}
			c, err := p.dialShard(ctx, m.Name)
			var r *wire.ShardStateReply
			if err == nil {
				r, err = c.state(&wire.ShardState{ID: c.next(), Epoch: st.Epoch})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				p.log.Warn("takeover: shard peer not usable", "peer", m.Name, "err", err)
				if c != nil {
					c.s.Close()
				}
			} else {
				sv.Reached, sv.Consistent, sv.Last, sv.Applied = true, r.Flags&wire.ShardStateConsistent != 0, r.LastSeq, r.Applied
				conns[h] = c
			}
			survivors = append(survivors, sv)
		})
	}
	wg.Wait()
	return survivors, conns
}

// settleShards settles plan's usable survivors at plan.D, this node first
// (its reads are local), until K are, and returns a reader of each settled
// shard and the names of the nodes used.
func (p *Peer) settleShards(st quorum.Status, plan takeoverPlan, conns map[int]*shardConn) (map[int]func(a, b int64) ([]byte, error), []string) {
	me := p.Shard()
	slices.SortStableFunc(plan.Usable, func(a, b shardSurvivor) int {
		return cmp.Compare(boolInt(a.Shard != me), boolInt(b.Shard != me))
	})
	readers := map[int]func(a, b int64) ([]byte, error){}
	var used []string
	for _, s := range plan.Usable {
		if len(readers) == p.cd.G.K {
			break
		}
		if s.Shard == me {
			if err := p.settle(plan.D); err != nil {
				p.log.Warn("takeover: cannot settle own shard", "err", err)
				continue
			}
			store := p.host.Store()
			readers[me] = func(a, b int64) ([]byte, error) {
				buf := make([]byte, b-a)
				return buf, store.ReadAt(buf, a)
			}
			used = append(used, s.Name)
			continue
		}
		c := conns[s.Shard]
		r, err := c.state(&wire.ShardSettle{ID: c.next(), Epoch: st.Epoch, Seq: plan.D})
		if err != nil || r.LastSeq != plan.D {
			p.log.Warn("takeover: shard peer did not settle", "peer", s.Name, "err", err)
			continue
		}
		readers[s.Shard] = c.reader(st.Epoch, plan.D)
		used = append(used, s.Name)
	}
	return readers, used
}

// rebuild turns this node's shard store, settled at d, into a full copy
// of the device at d, decoded from readers (K shards at d; this node's own
// shard may be one of them). Stripes are rebuilt from the last to the
// first: stripe s is written over shard bytes of chunks >= s, all read
// already. The stripes are written in place (journal.WriteInPlace: once,
// not journaled and applied; checksums follow), each at a position above
// the last, then the journal is rewound to d, which checkpoints first: the
// store is the device as of d with no record to replay. A crash before the
// end leaves takeoverFile: the node restarts as an Inconsistent full copy
// (Recover), whatever the data file holds.
func (p *Peer) rebuild(d uint64, readers map[int]func(a, b int64) ([]byte, error)) (int64, error) {
	g := p.cd.G
	store, meta := p.host.Store(), p.host.Meta()
	if err := meta.Mark(takeoverFile, fmt.Sprintln(d)); err != nil {
		return 0, fmt.Errorf("ecpeer: takeover: %w", err)
	}
	// This node's own shard may not be one of the K (unusable, or not
	// needed): its pending writes must not hold the final rewind's
	// checkpoint back. Its image is overwritten anyway.
	if err := p.host.Applier().Settle(d, true); err != nil {
		return 0, fmt.Errorf("ecpeer: takeover: %w", err)
	}
	if _, err := store.Append(journalResize(g.Size)); err != nil {
		return 0, fmt.Errorf("ecpeer: takeover: grow the store to %d: %w", g.Size, err)
	}
	total, err := p.decodeInto(store, readers)
	if err != nil {
		return total, err
	}
	if _, err := store.Rewind(d); err != nil {
		return total, fmt.Errorf("ecpeer: takeover: rewind to %d: %w", d, err)
	}
	if err := store.Sync(d); err != nil {
		return total, fmt.Errorf("ecpeer: takeover: %w", err)
	}
	if err := meta.Mark(fullCopyFile, ""); err != nil {
		return total, fmt.Errorf("ecpeer: takeover: %w", err)
	}
	p.shard.Store(-1)
	if err := meta.Unmark(takeoverFile); err != nil {
		return total, fmt.Errorf("ecpeer: %w", err)
	}
	return total, nil
}

// decodeInto writes the device, decoded from readers, into store in
// place, rebuildBytes at a time from the last stripe to the first, each
// step at a position above the store's last; it returns the bytes written.
func (p *Peer) decodeInto(store Store, readers map[int]func(a, b int64) ([]byte, error)) (int64, error) {
	g := p.cd.G
	per := max(1, rebuildBytes/g.StripeBytes()) // stripes per step
	var total int64
	seq := store.LastSeq()
	for hi := g.Stripes(); hi > 0; hi -= per {
		lo := max(0, hi-per)
		a, b := lo*g.Chunk, hi*g.Chunk
		off, end := lo*g.StripeBytes(), min(hi*g.StripeBytes(), g.Size)
		shards := make([][]byte, g.Shards())
		var wg sync.WaitGroup
		errs := make([]error, g.Shards())
		for h, read := range readers {
			wg.Go(func() { shards[h], errs[h] = read(a, b) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return total, fmt.Errorf("ecpeer: takeover: read shards [%d,%d): %w", a, b, err)
		}
		data, err := p.cd.Decode(shards, a, b, off, end)
		if err != nil {
			return total, fmt.Errorf("ecpeer: takeover: decode [%d,%d): %w", off, end, err)
		}
		seq++
		if err := store.WriteInPlace(journal.Write{Seq: seq, Offset: off, Data: data}); err != nil {
			return total, fmt.Errorf("ecpeer: takeover: write [%d,%d): %w", off, end, err)
		}
		total += end - off
	}
	return total, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// shardConn is an admin stream to one shard peer.
type shardConn struct {
	name string
	s    net.Conn
	r    *wire.Reader
	w    *wire.Writer
	id   uint64
}

func (p *Peer) dialShard(ctx context.Context, name string) (*shardConn, error) {
	octx, cancel := context.WithTimeout(ctx, shardDialTimeout)
	defer cancel()
	s, err := p.host.OpenAdmin(octx, name)
	if err != nil {
		return nil, fmt.Errorf("ecpeer: shard peer %s: %w", name, err)
	}
	return &shardConn{name: name, s: s, r: wire.NewReader(s), w: wire.NewWriter(s)}, nil
}

// call sends m (its ID set by the caller from next()) and reads the reply.
func (c *shardConn) call(m wire.Message) (wire.Message, error) {
	_ = c.s.SetDeadline(time.Now().Add(shardCallTimeout))
	if err := c.w.WriteMsg(m); err != nil {
		return nil, fmt.Errorf("ecpeer: shard peer %s: %w", c.name, err)
	}
	if err := c.w.Flush(); err != nil {
		return nil, fmt.Errorf("ecpeer: shard peer %s: %w", c.name, err)
	}
	r, err := c.r.ReadMsg()
	if err != nil {
		return nil, fmt.Errorf("ecpeer: shard peer %s: %w", c.name, err)
	}
	if nk, ok := r.(*wire.Nack); ok {
		return nil, fmt.Errorf("%w: %s refused: code %d: %s", ErrShardUnusable, c.name, nk.Code, nk.Reason)
	}
	return wire.Clone(r), nil
}

func (c *shardConn) next() uint64 { c.id++; return c.id }

// state asks for the peer's journal position (ShardState or ShardSettle).
func (c *shardConn) state(m wire.Message) (*wire.ShardStateReply, error) {
	r, err := c.call(m)
	if err != nil {
		return nil, err
	}
	sr, ok := r.(*wire.ShardStateReply)
	if !ok {
		return nil, fmt.Errorf("%w: %s answered %v", ErrShardUnusable, c.name, r.Type())
	}
	return sr, nil
}

// reader returns the peer's shard bytes [a, b) at position d.
func (c *shardConn) reader(epoch, d uint64) func(a, b int64) ([]byte, error) {
	return func(a, b int64) ([]byte, error) {
		out := make([]byte, 0, b-a)
		for off := a; off < b; {
			n := min(b-off, wire.MaxShardRead)
			r, err := c.call(&wire.ShardRead{ID: c.next(), Epoch: epoch, Seq: d, Offset: uint64(off), Length: uint32(n)})
			if err != nil {
				return nil, err
			}
			sd, ok := r.(*wire.ShardData)
			if !ok || sd.Seq != d || sd.Offset != uint64(off) || int64(len(sd.Data)) != n {
				return nil, fmt.Errorf("%w: %s: bad ShardData for [%d,+%d)", ErrShardUnusable, c.name, off, n)
			}
			out = append(out, sd.Data...)
			off += n
		}
		return out, nil
	}
}

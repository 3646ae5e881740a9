// Package ecpeer is the shard-peer role of an erasure-coded resource
// (docs/erasure.md): the answers a shard peer gives to a taking-over peer
// (ShardState, ShardSettle, ShardRead), and the takeover by which a shard
// peer the control plane promotes rebuilds the device from K shards before
// it serves as a full copy. The data node (package node) wires a Peer to
// its store, secondary side and mesh through Host.
//
// The first data node in config order keeps the full copy and is the only
// node that takes the primary role while it lives; data node h+1 is shard
// peer h and keeps a compact shard image: its store is an ordinary
// journaled store of ShardSize bytes, written under the primary's sequence
// numbers (package primary encodes the pieces, package secondary applies
// them once committed).
package ecpeer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/ec"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/sidecar"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// Errors callers branch on.
var (
	// ErrShardUnusable: a shard peer cannot take part in a rebuild at the
	// asked position (its image is past it, or it is not a settled shard).
	ErrShardUnusable = errors.New("ecpeer: shard peer unusable for the rebuild")
	// ErrTooFewShards: fewer than K shard peers are usable: the device
	// cannot be rebuilt, the node does not serve.
	ErrTooFewShards = errors.New("ecpeer: too few usable shard peers to rebuild the device")
)

// errNotShard refuses a failover request to a node that keeps no shard.
var errNotShard = fmt.Errorf("%w: this node keeps no shard", ErrShardUnusable)

// Markers in a shard peer's data dir (sidecar): after a crash during a
// Settle (dropping journaled writes) the image may lack records the
// journal replays as applied, and during a takeover's rebuild the store is
// neither the shard nor the device; either way the node restarts
// Inconsistent (full resync), after a takeover as a full copy.
const (
	settleFile   = sidecar.Settle
	takeoverFile = sidecar.Takeover
	fullCopyFile = sidecar.FullCopy
)

// backoff is how long a shard peer whose takeover failed does not propose
// itself again.
const backoff = 3 * time.Second

// Store is the node's journaled store: the shard image, or the device
// once this node took over (*journal.Journal).
type Store interface {
	Size() int64
	LastSeq() uint64
	ReadAt(p []byte, off int64) error
	Append(w journal.Write) (uint64, error)
	WriteInPlace(w journal.Write) error
	Rewind(seq uint64) ([]extent.Extent, error)
	Sync(seq uint64) error
	ClearSuspects() error
}

// Applier defers a shard peer's image writes until committed
// (*secondary.ShardApply).
type Applier interface {
	Applied() uint64
	Settle(d uint64, force bool) error
}

// Secondary is the node's secondary side (*secondary.Side).
type Secondary interface {
	Epoch() uint64
	Consistent() bool
	Fence(epoch uint64) error
	StopSessions()
	SaveResync(rs *replicator.ResyncState) error
}

// Meta keeps the erasure-coding markers next to the journal
// (*sidecar.Store).
type Meta interface {
	Mark(m sidecar.Marker, note string) error
	Unmark(m sidecar.Marker) error
	Marked(m sidecar.Marker) bool
}

// Host is the data node a Peer runs in. Its getters are called only once
// the node opened what they return.
type Host interface {
	Store() Store
	Secondary() Secondary
	// Applier is nil while the node keeps no shard.
	Applier() Applier
	Meta() Meta
	// OpenAdmin opens an admin stream to member peer.
	OpenAdmin(ctx context.Context, peer string) (net.Conn, error)
	// Primary reports whether the node runs a primary instance.
	Primary() bool
	// Event records e in the node's event log.
	Event(e events.Event)
	// PromotableChanged: BackingOff changed; the node tells the control
	// plane again whether it may propose itself.
	PromotableChanged()
}

// Peer is a data node's erasure-coding state; nil for a mirrored resource.
// It is safe for concurrent use.
type Peer struct {
	cd   *ec.Coder
	cfg  *config.Config
	name string
	log  *slog.Logger
	host Host
	// shard is this node's shard, -1 on a full-copy node: the first node,
	// or a shard peer that took over.
	shard atomic.Int32
	// settled is 1 + the position this shard peer settled at for a
	// takeover in this run (0: none); it serves ShardRead only there.
	settled atomic.Uint64
	// noPromote: a takeover failed here recently.
	noPromote atomic.Bool
	last      atomic.Pointer[TakeoverStats]
}

// New builds the Peer of member name, or nil for a mirrored resource.
func New(cfg *config.Config, name string, log *slog.Logger, host Host) (*Peer, error) {
	e, ok := cfg.EC()
	if !ok {
		return nil, nil
	}
	cd, err := ec.NewCoder(ec.Geometry{K: e.K, M: e.M, Chunk: config.ECChunk, Size: int64(cfg.Device.Size)})
	if err != nil {
		return nil, fmt.Errorf("ecpeer: %w", err)
	}
	p := &Peer{cd: cd, cfg: cfg, name: name, log: log, host: host}
	p.shard.Store(int32(cfg.ShardOf(name)))
	return p, nil
}

// Coder is the resource's erasure coder.
func (p *Peer) Coder() *ec.Coder { return p.cd }

// Shard is this node's shard, -1 on a full copy.
func (p *Peer) Shard() int { return int(p.shard.Load()) }

// BackingOff reports that a takeover failed here just now: the node must
// not propose itself as primary.
func (p *Peer) BackingOff() bool { return p.noPromote.Load() }

// LastTakeover is what the last takeover of this run reported, nil if none
// succeeded.
func (p *Peer) LastTakeover() *TakeoverStats { return p.last.Load() }

// PrimaryArrived ends a settled position: it serves reads only until a
// primary connects.
func (p *Peer) PrimaryArrived() { p.settled.Store(0) }

// applier is the deferred apply while this node keeps a shard, else nil.
func (p *Peer) applier() Applier {
	if p.Shard() < 0 {
		return nil
	}
	return p.host.Applier()
}

// OpenLayout runs before the store opens: a node that took over keeps a
// full copy, not its configured shard.
func (p *Peer) OpenLayout() {
	meta := p.host.Meta()
	if p.Shard() >= 0 && (meta.Marked(fullCopyFile) || meta.Marked(takeoverFile)) {
		p.shard.Store(-1)
	}
}

// Recover runs after the store and the secondary side opened: an
// interrupted settle or rebuild leaves the disk Inconsistent, to be
// resynced in full from a primary.
func (p *Peer) Recover() error {
	meta, store := p.host.Meta(), p.host.Store()
	for _, f := range []sidecar.Marker{settleFile, takeoverFile} {
		if !meta.Marked(f) {
			continue
		}
		p.log.Warn("an erasure-code settle or takeover was interrupted: the disk is Inconsistent until a full resync", "file", f)
		if f == takeoverFile {
			p.shard.Store(-1)
			if err := meta.Mark(fullCopyFile, ""); err != nil {
				return err
			}
			if size := p.cd.G.Size; store.Size() < size {
				if _, err := store.Append(journalResize(size)); err != nil {
					return fmt.Errorf("ecpeer: grow the interrupted rebuild's store: %w", err)
				}
			}
		}
		if err := p.host.Secondary().SaveResync(&replicator.ResyncState{From: 0, All: true}); err != nil {
			return err
		}
		if err := meta.Unmark(f); err != nil {
			return fmt.Errorf("ecpeer: %w", err)
		}
	}
	return nil
}

// backOff keeps a shard peer whose takeover failed from proposing itself
// again for a while.
func (p *Peer) backOff() {
	p.noPromote.Store(true)
	p.host.PromotableChanged()
	time.AfterFunc(backoff, func() {
		p.noPromote.Store(false)
		p.host.PromotableChanged()
	})
}

// fenceOlder ends the session of every primary older than epoch here
// (secondary.Side.Fence) for a shard failover request.
func (p *Peer) fenceOlder(epoch uint64) error {
	if err := p.host.Secondary().Fence(epoch); err != nil {
		return fmt.Errorf("%w: %w", ErrShardUnusable, err)
	}
	return nil
}

// journalResize is a resize record to size bytes (the same size: changes
// nothing, but is journaled).
func journalResize(size int64) journal.Write { return journal.Write{Resize: size} }

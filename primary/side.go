// Package primary is the primary side of replication for one epoch: it
// batches client writes into the journal, ships them to every peer over
// its data stream in sequence order and releases them when the replication
// core (replicator) says the protocol is satisfied; it catches peers up
// from the journal, resyncs regions of Inconsistent peers, repairs corrupt
// blocks from an UpToDate peer, verifies peers online and grows the
// device. Mirrors and erasure-code shard peers differ only in their
// layout (layout.go, ec.go).
//
// The node that runs it is behind the Node interface; the lease gate (which
// requests may run) stays in the node.
package primary

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/ec"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// ErrFenced is returned for writes of a primary that lost its lease: they
// are not acknowledged. It carries EIO.
var ErrFenced = fmt.Errorf("node: primary fenced: no quorum: %w", syscall.EIO)

// Config is what a Side is built from.
type Config struct {
	Cluster, Name string
	Protocol      replicator.Protocol
	// SuspendOnNoQuorum: without the lease, requests wait SuspendTimeout
	// for it to come back (on-no-quorum: suspend-io) instead of failing
	// at once.
	SuspendOnNoQuorum bool
	SuspendTimeout    time.Duration
	// Resumed: the role continues this node's own role from before a
	// restart; it serves once every counted mirror peer has shown it holds
	// nothing of the epoch this disk lacks (resumecheck.go).
	Resumed bool
	// Reestablished: it led the epoch before this one too
	// (wire.HelloReestablished).
	Reestablished bool
	PeerTimeout   time.Duration // a counted peer silent this long is dropped
	// FlushTimeout: a counted peer that completes no flush this long while
	// one waits for it is dropped (0: defaultFlushTimeout).
	FlushTimeout time.Duration
	// DisconnectOnCongestion: a live peer more than CongestionFill behind
	// is cut off (on-congestion: disconnect) instead of holding new writes
	// until it drained (block).
	DisconnectOnCongestion bool
	CongestionFill         int64 // bytes queued for a peer; 0: 64 MiB (New fills it)
	ResyncRate             int64 // bytes per second of a paced region resync
	JournalMaxSize         int64
	Coder                  *ec.Coder // the erasure code; nil for mirrors
	Store                  *journal.Journal
	Log                    *slog.Logger // default: discard
	Transport              Transport
	Control                PeerControl
	Repairs                RepairCounters
	// DropsPiece, tests only (nil: never): the write with seq is not sent
	// to shard peer peer.
	DropsPiece func(peer string, seq uint64) bool
}

// RepairCounters count corrupt blocks over the node's life, across
// primaries (status and metrics read them).
type RepairCounters struct {
	Corrupt, Repaired, Unrepaired *atomic.Uint64
}

// Node is what the primary needs of the node that runs it.
type Node interface {
	// Disconnected: the operator disconnected peer (grbd disconnect).
	Disconnected(peer string) bool
	History() replicator.History
	// PeerState reports the data path to peer (ConnConnected, ...);
	// SplitBrain a peer whose data diverged; Event any other change.
	PeerState(peer, state, cause string)
	SplitBrain(peer, detail string)
	// PeerAhead: peer holds records this primary wrote and its disk lacks
	// (secondary.ErrAhead); the node steps down, or reports a split brain
	// (true) when the peer is Outdated.
	PeerAhead(peer, detail string) (splitBrain bool)
	Event(e events.Event)
}

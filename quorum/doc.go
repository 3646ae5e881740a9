// Package quorum holds grbd's control-plane rules: which data node may be
// primary, when a primary holds the lease that lets it serve, and when a
// peer is Outdated. The rules sit on go.etcd.io/raft/v3 (a RawNode per
// member): the cluster's metadata (State: epoch, primary, Outdated nodes) is
// a replicated state machine fed by that log. docs/quorum.md is the design
// and says why each invariant holds.
//
// Everything here is a deterministic state machine in the style of
// etcd-io/raft: a Member is fed ticks (Tick), messages (Step) and local facts
// (SetConsistent, RequestOutdate, ...) and hands back, through Ready, what
// to persist and which messages to send. It has no goroutines, clocks or
// sockets; its driver (node/, witness/, internal/sim) persists before it
// sends and serialises every call: a Member is not safe for concurrent use.
package quorum

import "errors"

// Errors callers branch on.
var (
	// ErrCorrupt marks a command, state or message that does not decode.
	ErrCorrupt = errors.New("quorum: corrupt encoding")
	// ErrInvalid marks a value that cannot be encoded or a bad Config.
	ErrInvalid = errors.New("quorum: invalid")
	// ErrUnknownMember is returned for a message from or to a non-member.
	ErrUnknownMember = errors.New("quorum: unknown member")
	// ErrNotDataNode is returned when a witness is asked to be primary.
	ErrNotDataNode = errors.New("quorum: not a data node")
	// ErrOutdated is returned when an Outdated node is asked to be primary
	// without force.
	ErrOutdated = errors.New("quorum: node is Outdated")
	// ErrNotPromotable is returned when a node whose disk is not known to
	// hold every acknowledged write is asked to be primary without force.
	ErrNotPromotable = errors.New("quorum: node is not promotable")
	// ErrNotMember is returned when a member without control-plane state
	// (lost, or not joined yet) is asked to act as a member.
	ErrNotMember = errors.New("quorum: not a member with control-plane state")
	// ErrNotAnnounced is returned when a replace names a member that
	// announced no join identity.
	ErrNotAnnounced = errors.New("quorum: member announced no join identity")
	// ErrIsPrimary is returned when a replace names the current primary.
	ErrIsPrimary = errors.New("quorum: member is the primary")
	// ErrReplaceBusy is returned while another membership change is under
	// way (a joint configuration or a learner not yet promoted).
	ErrReplaceBusy = errors.New("quorum: a membership change is under way")
	// ErrNoLeader is returned when no raft leader could commit a change.
	ErrNoLeader = errors.New("quorum: no raft leader")
)

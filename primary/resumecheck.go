package primary

import (
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/quorum"
)

// resumeCheck holds a resumed role back from serving until every counted
// mirror peer has completed a handshake or is Outdated. A node that takes
// its role back after a restart may run on a disk that lost records it
// wrote as the primary (a power loss took its unsynced tail, or a copy
// taken while it was the primary was restored); only a peer's handshake
// shows that (secondary.ErrAhead), and a read or write served before it
// would return old data or journal records that conflict with the peer's.
// A node that took over another node's role needs no check: it wrote none
// of the records its peers hold. Guarded by Side.coreMu.
//
// Like DRBD's wfc-timeout, the check also gives those peers until holdUntil
// to connect before a lost one is Outdated: a whole cluster restarts at
// about the same time, and a peer Outdated only because it started a moment
// later could no longer refuse a disk that lost writes (it would be a split
// brain for the operator instead of a handover).
type resumeCheck struct {
	waiting   map[string]bool // peers still to show their position
	holdUntil time.Time
	// done: waiting is empty. Atomic, since every NBD request reads it
	// (Side.Verified) and coreMu is the write path's busiest lock.
	done atomic.Bool
}

// begin starts the check (on: the role was resumed) over the peers in
// names that st counts, holding their Outdate back for wait.
func (r *resumeCheck) begin(on bool, st quorum.State, names []string, wait time.Duration) {
	r.waiting = map[string]bool{}
	r.holdUntil = time.Now().Add(wait)
	if on {
		for _, name := range names {
			if !st.IsOutdated(name) {
				r.waiting[name] = true
			}
		}
	}
	r.settle()
}

// handshook: peer completed a handshake; it holds nothing this disk lacks.
func (r *resumeCheck) handshook(peer string) {
	delete(r.waiting, peer)
	r.settle()
}

// outdated drops the peers st Outdates: they are no longer waited for, and
// what they hold is no longer the epoch's acknowledged data.
func (r *resumeCheck) outdated(st quorum.State) {
	for name := range r.waiting {
		if st.IsOutdated(name) {
			delete(r.waiting, name)
		}
	}
	r.settle()
}

// holdOutdate reports whether a lost peer's Outdate waits: the check still
// waits for it and the start-up wait has not passed.
func (r *resumeCheck) holdOutdate(peer string, now time.Time) bool {
	return r.waiting[peer] && now.Before(r.holdUntil)
}

func (r *resumeCheck) settle() {
	if r.waiting != nil && len(r.waiting) == 0 {
		r.done.Store(true)
	}
}

// Verified reports whether this primary may serve: it was promoted in this
// run, or every peer its resumed role waited for showed its position (false
// before Start).
func (p *Side) Verified() bool { return p.resume.done.Load() }

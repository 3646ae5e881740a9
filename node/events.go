package node

import (
	"fmt"
	"log/slog"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/member"
	"github.com/grbd/grbd/quorum"
)

// Event is one state change, as GET /events streams it (internal/events).
type Event = events.Event

// newEventLog makes the node's event log; every event is also logged once
// through slog, with its cause.
func newEventLog(name string, log *slog.Logger) *events.Log {
	l := events.NewLog(name, 0)
	l.OnAdd(func(e Event) { events.Slog(log, e) })
	return l
}

// peerState logs a change of the data path to peer (either direction).
func (n *Node) peerState(peer, state, cause string) {
	n.events.Change("peer/"+peer, state, Event{Type: events.TypePeer, Peer: peer, State: state, Cause: cause})
	if state == ConnConnected {
		n.events.Forget("split-brain/" + peer)
	}
}

// splitBrain logs a split brain with peer once until the peer connects.
func (n *Node) splitBrain(peer, detail string) {
	n.events.Change("split-brain/"+peer, "yes", Event{Type: events.TypeSplitBrain, Peer: peer, State: DiskSplitBrain,
		Cause: "data diverged after a forced promotion", Detail: detail})
}

// noteRoleLocked logs what changed between the previous role report and
// this one: the role or epoch (with why), else the lease; and every change
// of the Outdated set. Caller holds roleMu.
func (n *Node) noteRoleLocked(prev, ev RoleEvent, st quorum.Status) {
	first := prev == RoleEvent{}
	switch {
	case first || prev.Role != ev.Role || prev.Epoch != ev.Epoch:
		n.events.Add(Event{Type: events.TypeRole, Role: ev.Role, Epoch: ev.Epoch, Serving: ev.Serving, Primary: st.Primary,
			Cause: roleCause(n.me.Name, first, prev, ev, st)})
	case prev.Serving != ev.Serving && ev.Role == RolePrimary:
		if ev.Serving {
			n.events.Add(Event{Type: events.TypeUnfenced, Epoch: ev.Epoch, Primary: st.Primary,
				Cause: "a majority of the members granted the lease: I/O runs"})
		} else {
			n.events.Add(Event{Type: events.TypeFenced, Epoch: ev.Epoch, Primary: st.Primary,
				Cause: "lease expired: no majority of the members acknowledged it; I/O stops"})
		}
	}
	n.lastOutdated = member.NoteOutdated(n.events, first, n.lastOutdated, st)
	n.lastLost = member.NoteLostState(n.events, n.lastLost, st)
}

// roleCause explains a role or epoch change.
func roleCause(me string, first bool, prev, ev RoleEvent, st quorum.Status) string {
	forced := ""
	if st.Forced {
		forced = " (forced: writes it missed are lost)"
	}
	switch {
	case st.Phase != quorum.PhaseMember:
		// Without control-plane state (a wiped or rewound member) it knows
		// no epoch: epoch 0 is not the cluster's.
		return "not a member of the control plane yet: " + st.Phase.String()
	case first && ev.Role == RolePrimary:
		return fmt.Sprintf("started as the primary of epoch %d", ev.Epoch)
	case first && st.Primary == "":
		return "started; the cluster has no primary yet"
	case first:
		return fmt.Sprintf("started; %s is the primary of epoch %d", st.Primary, ev.Epoch)
	case ev.Role == RolePrimary:
		return fmt.Sprintf("promoted in epoch %d%s", ev.Epoch, forced)
	case prev.Role == RolePrimary && st.Primary == me:
		return "could not take the primary role: see the log"
	case prev.Role == RolePrimary && st.Primary == "":
		return fmt.Sprintf("demoted: epoch %d has no primary", ev.Epoch)
	case prev.Role == RolePrimary:
		return fmt.Sprintf("deposed: %s is the primary of epoch %d", st.Primary, ev.Epoch)
	case st.Primary == "":
		return fmt.Sprintf("the primary stepped down: epoch %d has none", ev.Epoch)
	}
	return fmt.Sprintf("%s became the primary of epoch %d%s", st.Primary, ev.Epoch, forced)
}

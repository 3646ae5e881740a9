package node

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/grbd/grbd/quorum"
)

// The durable watermark (docs/quorum.md, "Writes recorded as flushed"): the
// primary records in the control plane how far a completed FLUSH made
// every write durable on every node that is not Outdated, and a node whose
// journal ends before that lost acknowledged writes (its data directory
// restored from an older copy) and is not promotable until it caught up.

// durableEvery is how often the primary records a moved watermark: each
// record is a raft entry every member persists.
const durableEvery = 5 * time.Second

// staleMarks holds the reasons this node's disk must not be promoted
// (quorum.Member.SetStale takes one string): the role rule (staleForRole,
// peerAhead) and the durable watermark.
type staleMarks struct {
	mu            sync.Mutex
	role, durable string
}

// setStale sets one reason (role or the durable watermark), hands the
// control plane what remains when it changed, and returns the reason it
// replaced.
func (n *Node) setStale(role bool, why string) (old string) {
	s := &n.stale
	s.mu.Lock()
	defer s.mu.Unlock()
	slot := &s.durable
	if role {
		slot = &s.role
	}
	old, *slot = *slot, why
	if old == why {
		return old
	}
	var all []string
	for _, r := range []string{s.role, s.durable} {
		if r != "" {
			all = append(all, r)
		}
	}
	n.ctl.SetStale(strings.Join(all, "; "))
	return old
}

// durableStale says why this node's disk must not be promoted under st's
// watermark, "" when it may. Not checked: a node Outdated (it waits for a
// Clear anyway) or Inconsistent (not promotable), a cluster with one data
// node (no better copy), and erasure-coded clusters (a shard's journal
// position is not the device's).
func (n *Node) durableStale(st quorum.Status) string {
	if st.Durable == 0 || !st.Replayed || st.IsOutdated(n.me.Name) || len(n.cfg.Nodes) < 2 || n.ec != nil || !n.sec.Consistent() {
		return ""
	}
	last := n.store.LastSeq()
	if last >= st.Durable {
		return ""
	}
	return fmt.Sprintf("its journal ends at seq %d, before seq %d, which the cluster recorded as flushed on every node that is not Outdated: "+
		"the disk lost acknowledged writes (restored from an older copy?); it catches up from the primary (force it only if this disk is the only copy)", last, st.Durable)
}

// checkDurable marks or unmarks this node by durableStale.
func (n *Node) checkDurable(st quorum.Status) {
	why := n.durableStale(st)
	switch was := n.setStale(false, why); {
	case why != "" && was == "":
		n.log.Error("not promotable: "+why, "last_seq", n.store.LastSeq(), "durable", st.Durable)
	case why == "" && was != "":
		n.log.Info("the disk caught up past the recorded durable watermark: promotable again", "last_seq", n.store.LastSeq())
	}
}

// watchDurable checks the watermark every second (a node catches up with
// no control-plane change) and, as the serving primary, records a moved
// watermark every durableEvery.
func (n *Node) watchDurable(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := n.ctl.Status()
		n.checkDurable(st)
		if prim := n.currentPrimary(); prim != nil && st.Serving && time.Since(last) >= durableEvery {
			if w := prim.Flushed(); w > st.Durable {
				last = time.Now()
				n.ctl.RequestDurable(w)
			}
		}
	}
}

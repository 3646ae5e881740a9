package primary

import (
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/extent"
)

// healSuspects makes the regions an unclean stop left in doubt on this node
// (journal.Suspects: they may hold bytes of writes no peer has) equal on
// every peer: it writes its own bytes there again through the write path,
// as verify --resync does, so each peer receives them in order, live or by
// catch-up. The suspects are forgotten only after; an attempt that fails
// (fenced, stopped) is retried while this primary lives.
func (p *Side) healSuspects(suspects []extent.Extent) {
	p.log.Warn("an unclean stop (a power loss, or a crash that cut a large write) left regions that may differ from the peers: writing them again",
		"bytes", extent.Bytes(suspects))
	for {
		err := p.rewrite(suspects)
		if err == nil {
			err = p.store.ClearSuspects()
		}
		if err == nil {
			p.node.Event(events.Event{Type: events.TypeSuspects, State: events.StateDone, Bytes: int64(extent.Bytes(suspects)),
				Cause: "the regions an unclean stop left in doubt are written again through replication"})
			return
		}
		p.log.Warn("rewriting the regions an unclean stop left in doubt failed: retrying", "err", err)
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

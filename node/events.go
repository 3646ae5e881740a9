package node

import (
	"sync"
	"time"
)

// Event is one state change, as `grbd events` streams it (JSON lines, like
// drbdsetup events2). Field names are part of the admin API.
type Event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"` // role, peer, split-brain, diverged, resync
	Node    string    `json:"node,omitempty"`
	Role    string    `json:"role,omitempty"`
	Epoch   uint64    `json:"epoch,omitempty"`
	Serving bool      `json:"serving,omitempty"`
	Primary string    `json:"primary,omitempty"`
	Peer    string    `json:"peer,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

// eventLog keeps the latest events and feeds subscribers.
type eventLog struct {
	mu   sync.Mutex
	node string
	ring []Event
	subs map[chan Event]struct{}
}

const eventRing = 256

func newEventLog() *eventLog { return &eventLog{subs: map[chan Event]struct{}{}} }

func (l *eventLog) add(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Node == "" {
		e.Node = l.node
	}
	l.ring = append(l.ring, e)
	if len(l.ring) > eventRing {
		l.ring = l.ring[len(l.ring)-eventRing:]
	}
	for ch := range l.subs {
		select {
		case ch <- e:
		default: // a slow reader loses events rather than blocking the node
		}
	}
}

// subscribe returns the recent events and a channel of new ones.
func (l *eventLog) subscribe() ([]Event, chan Event, func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := make(chan Event, 64)
	l.subs[ch] = struct{}{}
	return append([]Event(nil), l.ring...), ch, func() {
		l.mu.Lock()
		delete(l.subs, ch)
		l.mu.Unlock()
	}
}

// Package events is the state-change log every grbd member keeps: the
// latest events in a ring, fed to subscribers and streamed as JSON lines by
// GET /events (what `grbd events` reads, like drbdsetup events2).
//
// Every state change of a member is one event, logged once, with its
// cause. Each event carries a sequence number, consecutive within one run
// of a member, so that a reader can tell that it missed some (a reader that
// falls too far behind is cut off and reconnects with ?since=SEQ).
//
// A Log is safe for concurrent use. Add never blocks on readers.
package events

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Event types. Values are part of the admin API: add, never rename.
const (
	TypeRole       = "role"        // the member's role, epoch or the cluster's primary changed
	TypeFenced     = "fenced"      // the primary lost its lease: I/O stops
	TypeUnfenced   = "unfenced"    // the primary holds its lease: I/O runs
	TypePeer       = "peer"        // a data path to a peer came up or went down (State)
	TypeMember     = "member"      // a member link (control plane) came up or went down (State)
	TypeOutdated   = "outdated"    // Peer was marked Outdated in the control plane
	TypeCleared    = "cleared"     // Peer left Outdated
	TypeDisk       = "disk"        // a disk state changed (Peer's, or the member's own when Peer is empty)
	TypeResync     = "resync"      // a resync started or finished (State)
	TypeSplitBrain = "split-brain" // data diverged after a forced promotion: the operator decides
	TypeDiverged   = "diverged"    // a secondary rewound writes no one acknowledged
	TypeVerify     = "verify"      // an online verify of Peer finished (State)
	TypeConnection = "connection"  // the operator ran grbd connect or disconnect
	TypeInvalidate = "invalidate"  // the operator ran grbd invalidate
	TypeResize     = "resize"      // the device grew to Bytes (grbd resize, applied in sequence order)
	TypeCorrupt    = "corrupt"     // a block failed its checksum: State repaired (from Peer) or failed (the read got EIO)
	TypeTakeover   = "takeover"    // an erasure-code shard peer took over as primary: State done (rebuilt Bytes) or failed
	TypeSuspects   = "suspects"    // a power loss left Bytes of the member's image in doubt (State started), made equal to the peers again (done)
	// Written by `grbd events` itself, never by a member.
	TypeUnreachable = "unreachable" // the member's admin endpoint does not answer
	TypeReachable   = "reachable"   // it answers again
)

// Event is one state change. Field names are part of the admin API: add
// fields, never rename them.
type Event struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Member string    `json:"member"` // the member that logged it
	Type   string    `json:"type"`
	// Node repeats Member: the first version of the API named the field so.
	Node    string `json:"node,omitempty"`
	Role    string `json:"role,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
	Serving bool   `json:"serving,omitempty"`
	Primary string `json:"primary,omitempty"`
	Peer    string `json:"peer,omitempty"`
	State   string `json:"state,omitempty"` // the new state: Connected, UpToDate, started, done...
	Bytes   int64  `json:"bytes,omitempty"`
	Cause   string `json:"cause,omitempty"`  // why it happened
	Detail  string `json:"detail,omitempty"` // what else an operator should know
}

// DefaultRing is the number of events a Log keeps for new readers.
const DefaultRing = 256

// subscriberBuffer is how many events a reader may be behind before it is
// cut off.
const subscriberBuffer = 256

// Log keeps the latest events of one member and feeds subscribers.
type Log struct {
	member string
	size   int
	run    string // identifies this run of the member: Seq restarts with it

	mu     sync.Mutex
	seq    uint64
	ring   []Event
	subs   map[chan Event]struct{}
	on     func(Event)
	last   map[string]string // Change: the latest state per key
	counts map[string]uint64 // events per type
	closed bool              // Close: streams end, new ones end at once
}

// NewLog returns the log of member, keeping the latest size events
// (DefaultRing when size <= 0).
func NewLog(member string, size int) *Log {
	if size <= 0 {
		size = DefaultRing
	}
	return &Log{member: member, size: size, run: strconv.FormatInt(time.Now().UnixNano(), 36), subs: map[chan Event]struct{}{},
		last: map[string]string{}, counts: map[string]uint64{}}
}

// Change logs e only when state differs from the last state Change saw
// for key (e.g. "peer/beta"), so that a condition that persists (a peer
// refusing every reconnect for the same reason) is logged once. It
// reports whether e was logged.
func (l *Log) Change(key, state string, e Event) bool {
	l.mu.Lock()
	old, seen := l.last[key]
	if seen && old == state {
		l.mu.Unlock()
		return false
	}
	l.last[key] = state
	l.addLocked(e)
	l.mu.Unlock()
	return true
}

// OnAdd sets a function told about every event, under the log's lock, in
// order (metrics and logging hooks); it must not call back into the Log.
func (l *Log) OnAdd(fn func(Event)) {
	l.mu.Lock()
	l.on = fn
	l.mu.Unlock()
}

// Add logs e, filling Seq, Member, Node and (when zero) Time, and returns
// it as logged.
func (l *Log) Add(e Event) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addLocked(e)
}

func (l *Log) addLocked(e Event) Event {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Member, e.Node = l.member, l.member
	l.seq++
	e.Seq = l.seq
	l.counts[e.Type]++
	l.ring = append(l.ring, e)
	if len(l.ring) > l.size {
		l.ring = append(l.ring[:0], l.ring[len(l.ring)-l.size:]...)
	}
	for ch := range l.subs {
		select {
		case ch <- e:
		default:
			// A reader this far behind is cut off rather than block the
			// member; it reconnects with ?since and learns the gap from Seq.
			delete(l.subs, ch)
			close(ch)
		}
	}
	if l.on != nil {
		l.on(e)
	}
	return e
}

// Recent returns the kept events with Seq above since (all of them when
// since is 0 or above the newest Seq: the member restarted).
func (l *Log) Recent(since uint64) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recentLocked(since)
}

func (l *Log) recentLocked(since uint64) []Event {
	if since > l.seq {
		since = 0
	}
	out := make([]Event, 0, len(l.ring))
	for _, e := range l.ring {
		if e.Seq > since {
			out = append(out, e)
		}
	}
	return out
}

// Subscribe returns the kept events with Seq above since and a channel of
// the events added after them. The channel is closed when the reader fell
// too far behind; cancel ends the subscription.
func (l *Log) Subscribe(since uint64) (recent []Event, ch <-chan Event, cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := make(chan Event, subscriberBuffer)
	if l.closed {
		close(c)
		return l.recentLocked(since), c, func() {}
	}
	l.subs[c] = struct{}{}
	return l.recentLocked(since), c, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, ok := l.subs[c]; ok {
			delete(l.subs, c)
			close(c)
		}
	}
}

// Close ends every subscription and makes later ones end after the kept
// events, so that an HTTP server can shut down while readers follow the
// stream (register it with http.Server.RegisterOnShutdown). Events may
// still be added.
func (l *Log) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for ch := range l.subs {
		delete(l.subs, ch)
		close(ch)
	}
}

// Forget drops what Change remembers for key: the next Change of key logs.
func (l *Log) Forget(key string) {
	l.mu.Lock()
	delete(l.last, key)
	l.mu.Unlock()
}

// Counts returns how many events of each type were logged since NewLog
// (for metrics).
func (l *Log) Counts() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.counts))
	for k, v := range l.counts {
		out[k] = v
	}
	return out
}

// RunHeader is the response header of GET /events that names the run of
// the member; a reader resuming with ?since=N passes it back as ?run=, so
// that after a restart of the member (Seq starts over) it gets everything.
const RunHeader = "X-Grbd-Events-Run"

// ServeHTTP streams events as JSON lines: the kept ones (with Seq above
// ?since=N when ?run= names this run), then, unless ?now=1, new ones as they
// happen until the client goes away or falls too far behind.
func (l *Log) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, _ := strconv.ParseUint(q.Get("since"), 10, 64)
	if run := q.Get("run"); run != "" && run != l.run {
		since = 0 // the member restarted since the reader's last event
	}
	recent, ch, cancel := l.Subscribe(since)
	defer cancel()
	w.Header().Set(RunHeader, l.run)
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, e := range recent {
		if enc.Encode(e) != nil {
			return
		}
	}
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	if r.URL.Query().Get("now") == "1" {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-ch:
			if !ok || enc.Encode(e) != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}

// States of resync and verify events.
const (
	StateStarted = "started"
	StateDone    = "done"
	StateFailed  = "failed"
)

// Slog writes e to log once, with its cause: a warning for what needs an
// operator's eye (fencing, split brain, an Outdated node, a lost link).
func Slog(log *slog.Logger, e Event) {
	lvl := slog.LevelInfo
	switch e.Type {
	case TypeFenced, TypeSplitBrain, TypeOutdated, TypeDiverged:
		lvl = slog.LevelWarn
	case TypeCorrupt:
		lvl = slog.LevelError
	case TypePeer, TypeMember:
		if e.State != "Connected" {
			lvl = slog.LevelWarn
		}
	case TypeVerify:
		if e.State == StateFailed {
			lvl = slog.LevelWarn
		}
	}
	attrs := []any{"type", e.Type, "seq", e.Seq}
	for _, kv := range [][2]string{{"role", e.Role}, {"primary", e.Primary}, {"peer", e.Peer}, {"state", e.State},
		{"cause", e.Cause}, {"detail", e.Detail}} {
		if kv[1] != "" {
			attrs = append(attrs, kv[0], kv[1])
		}
	}
	if e.Epoch != 0 {
		attrs = append(attrs, "epoch", e.Epoch)
	}
	if e.Type == TypeRole {
		attrs = append(attrs, "serving", e.Serving)
	}
	if e.Bytes != 0 {
		attrs = append(attrs, "bytes", e.Bytes)
	}
	log.Log(context.Background(), lvl, "state change", attrs...)
}

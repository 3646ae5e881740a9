package chaos

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Clock is the time source of the workload and the event log; tests use a
// manual one.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// RealClock reads the system's monotonic clock.
var RealClock Clock = realClock{}

// Event is one thing the harness did or saw: a fault injected or healed, a
// process started, a primary observed.
type Event struct {
	At     time.Duration `json:"at"` // since the log's start
	Kind   string        `json:"kind"`
	Target string        `json:"target,omitempty"`
	Detail string        `json:"detail,omitempty"`
}

func (e Event) String() string {
	s := fmt.Sprintf("%8.3fs %-14s %s", e.At.Seconds(), e.Kind, e.Target)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Event kinds that count as faults in a report.
const (
	EvKill      = "kill-9"
	EvStop      = "sigstop"
	EvCont      = "sigcont"
	EvPartition = "partition"
	EvOneWay    = "partition-1way"
	EvHeal      = "heal"
	EvLatency   = "latency"
	EvBandwidth = "bandwidth"
	EvDiskFull  = "disk-full"
	EvDiskFree  = "disk-freed"
	// EvDiskReadOnly: a file system under a node went read-only.
	EvDiskReadOnly = "disk-read-only"
	EvTear         = "torn-tail"
	EvBitFlip      = "bit-flip"
	EvNewEra       = "unsynced-lost"
)

var faultKinds = map[string]bool{EvKill: true, EvStop: true, EvPartition: true, EvOneWay: true,
	EvLatency: true, EvBandwidth: true, EvDiskFull: true, EvTear: true, EvBitFlip: true, EvReplaceDisk: true}

// IsFault reports whether an event kind injects a fault.
func IsFault(kind string) bool { return faultKinds[kind] }

// Events is a concurrency-safe event log. Logf, when set, also receives every
// event as a line (tests pass t.Logf).
type Events struct {
	clock Clock
	start time.Time
	logf  func(format string, args ...any)

	mu     sync.Mutex
	events []Event
}

// NewEvents starts a log at clock.Now().
func NewEvents(clock Clock, logf func(format string, args ...any)) *Events {
	return &Events{clock: clock, start: clock.Now(), logf: logf}
}

// Since is the time elapsed since the log started.
func (e *Events) Since() time.Duration { return e.clock.Now().Sub(e.start) }

// Add records an event now.
func (e *Events) Add(kind, target, format string, args ...any) Event {
	ev := Event{At: e.Since(), Kind: kind, Target: target, Detail: fmt.Sprintf(format, args...)}
	e.mu.Lock()
	e.events = append(e.events, ev)
	e.mu.Unlock()
	if e.logf != nil {
		e.logf("chaos: %s", ev)
	}
	return ev
}

// List returns the events so far.
func (e *Events) List() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events)
}

// Logf writes a free-form line to the log's sink without recording an event.
func (e *Events) Logf(format string, args ...any) {
	if e.logf != nil {
		e.logf("chaos: "+format, args...)
	}
}

package chaos

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// OpKind is what an operation did.
type OpKind uint8

// Operation kinds.
const (
	OpWrite OpKind = iota + 1
	OpRead
	OpFlush
)

func (k OpKind) String() string { return enumString(k, "op", "write", "read", "flush") }

// Outcome is what the client learned about an operation.
type Outcome uint8

// Outcomes.
const (
	// OK: the server acknowledged it.
	OK Outcome = iota + 1
	// Failed: the server answered with an error. A failed write is still
	// treated as possibly applied (see Unknown): a server may fail a write
	// after part of it reached the disk.
	Failed
	// Unknown: no answer (timeout, connection lost); a write may or may not
	// have happened, now or later.
	Unknown
)

func (o Outcome) String() string { return enumString(o, "outcome", "ok", "failed", "unknown") }

// enumString names v of an enum numbered from 1 (iota + 1) by names in
// declaration order, or prefix and the number for a value without a name.
func enumString[T ~uint8](v T, prefix string, names ...string) string {
	if v >= 1 && int(v) <= len(names) {
		return names[v-1]
	}
	return fmt.Sprintf("%s%d", prefix, uint8(v))
}

// ValueCorrupt is the value recorded for a read that returned a block which is
// neither zeroes nor an intact block written at that offset. No write has it,
// so the checks always flag it.
const ValueCorrupt = math.MaxUint64

// Op is one client operation. Times are offsets from the workload's start.
type Op struct {
	ID      uint64 // unique; for a write also the value it wrote
	Client  int    // worker index (porcupine's client id)
	Kind    OpKind
	Block   int    // reads and writes
	FUA     bool   // writes
	Value   uint64 // write: ID; read: the value observed (0: zeroes)
	Call    time.Duration
	Return  time.Duration
	Outcome Outcome
	Err     string // error text for Failed and Unknown; the decode error of a corrupt read
	Era     int    // see Workload.NewEra
	Node    string // member the operation was sent to
	Raw     []byte `json:"-"` // the bytes of a corrupt read, for markTorn
}

// History is an append-only, concurrency-safe list of operations.
type History struct {
	mu  sync.Mutex
	ops []Op
}

// Add appends op.
func (h *History) Add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of the operations in the order they were added.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// OpCounts summarises a history.
type OpCounts struct {
	Writes        int `json:"writes"`
	WritesOK      int `json:"writes_ok"`
	WritesFailed  int `json:"writes_failed"`
	WritesUnknown int `json:"writes_unknown"`
	Reads         int `json:"reads"`
	ReadsOK       int `json:"reads_ok"`
	TornReads     int `json:"torn_reads"` // see ValueTorn
	Flushes       int `json:"flushes"`
	FlushesOK     int `json:"flushes_ok"`
	// MaxWriteLatency is the longest acknowledged write: how long writes
	// stalled during a fault.
	MaxWriteLatency time.Duration  `json:"max_write_latency"`
	Errors          map[string]int `json:"errors,omitempty"` // error text (shortened) -> count
}

// Count summarises ops.
func Count(ops []Op) OpCounts {
	c := OpCounts{Errors: map[string]int{}}
	for _, op := range ops {
		ok := op.Outcome == OK
		switch op.Kind {
		case OpWrite:
			c.Writes++
			switch op.Outcome {
			case OK:
				c.WritesOK++
				c.MaxWriteLatency = max(c.MaxWriteLatency, op.Return-op.Call)
			case Failed:
				c.WritesFailed++
			case Unknown:
				c.WritesUnknown++
			}
		case OpRead:
			c.Reads++
			if ok {
				c.ReadsOK++
			}
			if op.Value == ValueTorn {
				c.TornReads++
			}
		case OpFlush:
			c.Flushes++
			if ok {
				c.FlushesOK++
			}
		}
		if op.Outcome != OK && op.Err != "" {
			c.Errors[shortErr(op.Err)]++
		}
	}
	return c
}

// shortErr keeps error texts groupable: the last ": "-separated part, which
// names the cause.
func shortErr(s string) string {
	for i := len(s) - 2; i >= 0; i-- {
		if s[i] == ':' && s[i+1] == ' ' {
			return s[i+2:]
		}
	}
	return s
}

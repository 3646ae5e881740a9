package chaos

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// Anomaly is one thing the checks found wrong.
type Anomaly struct {
	Kind   string `json:"kind"`
	Block  int    `json:"block"`
	Detail string `json:"detail"`
}

// Anomaly kinds.
const (
	// AnomalyLinearizability: an era's history has no linearization.
	AnomalyLinearizability = "not-linearizable"
	// AnomalyLostWrite: a read missed a write that was durable (acknowledged
	// and then covered by a completed FLUSH, or acknowledged with FUA) before
	// the read began.
	AnomalyLostWrite = "lost-durable-write"
	// AnomalyCorrupt: a read returned bytes that are neither zeroes nor an
	// intact block written for that offset.
	AnomalyCorrupt = "corrupt-read"
	// AnomalyPhantom: a read returned an intact block of this run whose
	// value no write in the history produced.
	AnomalyPhantom = "phantom-read"
	// AnomalyScenario: a scenario-specific expectation failed (images
	// differ, corruption not detected, ...).
	AnomalyScenario = "scenario"
)

// never is later than any time in a history.
const never = time.Duration(math.MaxInt64)

// durableWrite is a write and the moment it became durable.
type durableWrite struct {
	at  time.Duration // when a FLUSH covering it returned (or its own return, with FUA)
	op  Op
	max int // index (in the sorted slice) of the write with the latest call among [0..i]
}

// CheckDurability checks every successful read against the writes that were
// durable before the read was called: the value read must not come from a
// write that finished before such a durable write began (nor be the initial
// zeroes). It also reports corrupt and phantom reads. It holds across eras:
// only unsynced data may be lost.
func CheckDurability(ops []Op) []Anomaly {
	writes := map[uint64]Op{}
	var flushes []Op
	for _, op := range ops {
		switch {
		case op.Kind == OpWrite:
			writes[op.ID] = op
		case op.Kind == OpFlush && op.Outcome == OK:
			flushes = append(flushes, op)
		}
	}
	durable := durableByBlock(writes, flushes)
	var out []Anomaly
	for _, r := range ops {
		if r.Kind != OpRead || r.Outcome != OK || r.Value == ValueTorn {
			continue
		}
		if r.Value == ValueCorrupt {
			out = append(out, Anomaly{Kind: AnomalyCorrupt, Block: r.Block,
				Detail: fmt.Sprintf("read %d at %v from %s: %s", r.ID, r.Call, r.Node, r.Err)})
			continue
		}
		src, known := writes[r.Value]
		if r.Value != 0 && (!known || src.Block != r.Block) {
			out = append(out, Anomaly{Kind: AnomalyPhantom, Block: r.Block,
				Detail: fmt.Sprintf("read %d at %v from %s returned value %d, which no write of this block produced", r.ID, r.Call, r.Node, r.Value)})
			continue
		}
		d, ok := latestDurable(durable[r.Block], r.Call)
		if !ok {
			continue
		}
		srcDone := never // zeroes, or a write that may still be in flight
		if r.Value == 0 {
			srcDone = -1
		} else if src.Outcome == OK {
			srcDone = src.Return
		}
		if d.op.ID != r.Value && srcDone < d.op.Call {
			out = append(out, Anomaly{Kind: AnomalyLostWrite, Block: r.Block,
				Detail: fmt.Sprintf("read %d at %v from %s returned %s, but write %d (acked at %v on %s) was durable at %v",
					r.ID, r.Call, r.Node, describeValue(r.Value), d.op.ID, d.op.Return, d.op.Node, d.at)})
		}
	}
	return out
}

// durableByBlock lists, per block, the acknowledged writes that became
// durable, sorted by when, each with the running maximum of call times. A
// FLUSH covers the writes acknowledged before it was called in the same era:
// writes lost by a simulated power loss (an era boundary) before the FLUSH
// began are not made durable by it.
func durableByBlock(writes map[uint64]Op, flushes []Op) map[int][]durableWrite {
	// Per era, flushes sorted by call; minRet[i] is the earliest return
	// among flushes[i:], i.e. the first moment a flush called at or after
	// flushes[i].Call had completed.
	type eraFlushes struct {
		calls  []time.Duration
		minRet []time.Duration
	}
	byEra := map[int]*eraFlushes{}
	sort.Slice(flushes, func(i, j int) bool { return flushes[i].Call < flushes[j].Call })
	for _, f := range flushes {
		e := byEra[f.Era]
		if e == nil {
			e = &eraFlushes{}
			byEra[f.Era] = e
		}
		e.calls = append(e.calls, f.Call)
		e.minRet = append(e.minRet, f.Return)
	}
	for _, e := range byEra {
		for i := len(e.minRet) - 2; i >= 0; i-- {
			e.minRet[i] = min(e.minRet[i], e.minRet[i+1])
		}
	}
	out := map[int][]durableWrite{}
	for _, w := range writes {
		if w.Outcome != OK {
			continue
		}
		at := w.Return
		if !w.FUA {
			at = never
			if e := byEra[w.Era]; e != nil {
				if i := sort.Search(len(e.calls), func(i int) bool { return e.calls[i] > w.Return }); i < len(e.calls) {
					at = e.minRet[i]
				}
			}
		}
		if at == never {
			continue
		}
		out[w.Block] = append(out[w.Block], durableWrite{at: at, op: w})
	}
	for b, ds := range out {
		slices.SortFunc(ds, func(x, y durableWrite) int {
			if x.at != y.at {
				return cmpDur(x.at, y.at)
			}
			return cmpDur(x.op.Call, y.op.Call)
		})
		for i := range ds {
			ds[i].max = i
			if i > 0 && ds[ds[i-1].max].op.Call > ds[i].op.Call {
				ds[i].max = ds[i-1].max
			}
		}
		out[b] = ds
	}
	return out
}

// latestDurable returns, among the writes durable strictly before t, the one
// called last: any value read at t must come from a write that did not finish
// before that one began.
func latestDurable(ds []durableWrite, t time.Duration) (durableWrite, bool) {
	i := sort.Search(len(ds), func(i int) bool { return ds[i].at >= t })
	if i == 0 {
		return durableWrite{}, false
	}
	return ds[ds[i-1].max], true
}

func cmpDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

package chaos

import (
	"fmt"
	"sort"
	"strings"
)

// ValueTorn is the value recorded for a torn read: bytes that are not one
// block but, byte by byte, a mix of blocks that a write in flight during the
// read and the value before it could have left. Block devices (and NBD) do
// not promise that a read overlapping a write in flight sees either all old
// or all new bytes, so a torn read is no anomaly; it is counted, and the
// checks leave it out (it says nothing about which value was current).
const ValueTorn = ValueCorrupt - 1

// markTorn re-examines the corrupt reads of ops (in place): those explained
// as torn by the writes to their block get ValueTorn. Bytes that no
// candidate explains, or a corrupt read with no write in flight, stay
// corrupt.
func markTorn(ops []Op, codec Codec) {
	var writes map[int][]Op // by block, built on first need
	for i := range ops {
		r := &ops[i]
		if r.Kind != OpRead || r.Value != ValueCorrupt || len(r.Raw) != BlockSize {
			continue
		}
		if writes == nil {
			writes = map[int][]Op{}
			for _, w := range ops {
				if w.Kind == OpWrite {
					writes[w.Block] = append(writes[w.Block], w)
				}
			}
		}
		if ids, ok := explainTorn(r, writes[r.Block], codec); ok {
			r.Value = ValueTorn
			r.Err = fmt.Sprintf("torn read: a byte mix of values %s (%s)", ids, r.Err)
		}
	}
}

// explainTorn checks whether r's bytes are a mix of the candidates: writes
// in flight during r (at least one is required) and the values that may have
// been current when r began (zeroes if no write had completed).
func explainTorn(r *Op, writes []Op, codec Codec) (string, bool) {
	var inflight, before []Op
	latestCall := never * -1 // latest call among writes completed before r
	for _, w := range writes {
		switch {
		case w.Call >= r.Return:
		case w.Outcome != OK || w.Return > r.Call:
			inflight = append(inflight, w)
		default:
			before = append(before, w)
			latestCall = max(latestCall, w.Call)
		}
	}
	if len(inflight) == 0 {
		return "", false
	}
	cands := inflight
	for _, w := range before {
		if w.Return >= latestCall { // not certainly overwritten before r began
			cands = append(cands, w)
		}
	}
	blocks := make([][]byte, 0, len(cands)+1)
	var ids []string
	for _, w := range cands {
		b := make([]byte, BlockSize)
		codec.Encode(b, w.Block, w.Value, w.Client)
		blocks = append(blocks, b)
		ids = append(ids, fmt.Sprint(w.Value))
	}
	if len(before) == 0 {
		blocks = append(blocks, make([]byte, BlockSize))
		ids = append(ids, "zeroes")
	}
	for i, x := range r.Raw {
		found := false
		for _, b := range blocks {
			if b[i] == x {
				found = true
				break
			}
		}
		if !found {
			return "", false
		}
	}
	sort.Strings(ids)
	return strings.Join(ids, ", "), true
}

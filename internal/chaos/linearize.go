package chaos

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// farFuture is the return time given to writes of unknown outcome: they may
// take effect at any point after their call, or never.
const farFuture = int64(math.MaxInt64 / 4)

// regInput is one register operation as porcupine sees it.
type regInput struct {
	Block int
	Write bool
	Value uint64 // written, or read
}

// regState is a block's value; known is false at the start of an era that
// began with lost unsynced data, where any intact value may be read first.
type regState struct {
	known bool
	value uint64
}

// registerModel is one register per block, partitioned by block. With
// freshStart every block starts as zeroes (value 0).
func registerModel(freshStart bool) porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byBlock := map[int][]porcupine.Operation{}
			for _, op := range history {
				b := op.Input.(regInput).Block
				byBlock[b] = append(byBlock[b], op)
			}
			keys := make([]int, 0, len(byBlock))
			for k := range byBlock {
				keys = append(keys, k)
			}
			sort.Ints(keys)
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byBlock[k])
			}
			return out
		},
		Init: func() any { return regState{known: freshStart} },
		Step: func(state, input, _ any) (bool, any) {
			s, in := state.(regState), input.(regInput)
			switch {
			case in.Write:
				return true, regState{known: true, value: in.Value}
			case in.Value == ValueCorrupt:
				return false, s
			case !s.known:
				return true, regState{known: true, value: in.Value}
			default:
				return s.value == in.Value, s
			}
		},
		Equal: func(a, b any) bool { return a.(regState) == b.(regState) },
		DescribeOperation: func(input, _ any) string {
			in := input.(regInput)
			if in.Write {
				return fmt.Sprintf("write b%d := %d", in.Block, in.Value)
			}
			return fmt.Sprintf("read b%d -> %s", in.Block, describeValue(in.Value))
		},
		DescribeState: func(state any) string {
			s := state.(regState)
			if !s.known {
				return "?"
			}
			return describeValue(s.value)
		},
	}
}

func describeValue(v uint64) string {
	switch v {
	case 0:
		return "zeroes"
	case ValueCorrupt:
		return "CORRUPT"
	}
	return fmt.Sprint(v)
}

// porcupineOps converts the reads and writes of one era. Failed and torn
// reads say nothing and are left out. Writes that did not succeed may still apply and
// get a far-future return; those whose value no read observed are left out
// as well: placing such a write after every other operation is always a
// valid choice for it, so dropping it changes no verdict, and unobserved
// unknown writes are what makes the search explode after an error storm.
func porcupineOps(ops []Op, era int) []porcupine.Operation {
	seen := map[uint64]bool{}
	for _, op := range ops {
		if op.Kind == OpRead && op.Outcome == OK {
			seen[op.Value] = true
		}
	}
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Era != era || (op.Kind != OpRead && op.Kind != OpWrite) {
			continue
		}
		ret := int64(op.Return)
		switch {
		case op.Kind == OpRead && (op.Outcome != OK || op.Value == ValueTorn):
			continue
		case op.Kind == OpWrite && op.Outcome != OK:
			if !seen[op.Value] {
				continue
			}
			ret = farFuture
		}
		out = append(out, porcupine.Operation{
			ClientId: op.Client,
			Input:    regInput{Block: op.Block, Write: op.Kind == OpWrite, Value: op.Value},
			Call:     int64(op.Call),
			Return:   ret,
			Metadata: op.Node,
		})
	}
	return out
}

// EraResult is the linearizability verdict for one era.
type EraResult struct {
	Era    int    `json:"era"`
	Ops    int    `json:"ops"`
	Result string `json:"result"` // Ok, Illegal, or Unknown (the check timed out)
	// Blocks whose sub-history is not linearizable (only when Illegal).
	Blocks []int `json:"blocks,omitempty"`

	info  porcupine.LinearizationInfo
	model porcupine.Model
}

// CheckLinearizable checks each era of ops separately, each within timeout.
// Era 0 starts from zeroes when freshStart; every later era begins after a
// simulated loss of unsynced data, so each block's first observed value is
// taken as given (durability is CheckDurability's job).
func CheckLinearizable(ops []Op, freshStart bool, timeout time.Duration) []EraResult {
	eras := map[int]bool{}
	for _, op := range ops {
		eras[op.Era] = true
	}
	keys := make([]int, 0, len(eras))
	for e := range eras {
		keys = append(keys, e)
	}
	slices.Sort(keys)
	var out []EraResult
	for _, era := range keys {
		model := registerModel(freshStart && era == 0)
		pops := porcupineOps(ops, era)
		res, info := porcupine.CheckOperationsVerbose(model, pops, timeout)
		r := EraResult{Era: era, Ops: len(pops), Result: string(res), info: info, model: model}
		if res == porcupine.Illegal {
			r.Blocks = illegalBlocks(model, pops, timeout)
		}
		out = append(out, r)
	}
	return out
}

// illegalBlocks rechecks block by block to name the culprits.
func illegalBlocks(model porcupine.Model, pops []porcupine.Operation, timeout time.Duration) []int {
	var bad []int
	for _, part := range model.Partition(pops) {
		if porcupine.CheckOperationsTimeout(model, part, timeout) == porcupine.Illegal {
			bad = append(bad, part[0].Input.(regInput).Block)
		}
	}
	return bad
}

// Visualize writes porcupine's HTML visualization of an era's check.
func (r EraResult) Visualize(path string) error {
	if r.model.Init == nil {
		return fmt.Errorf("chaos: era %d has no check to visualize", r.Era)
	}
	return porcupine.VisualizePath(r.model, r.info, path)
}

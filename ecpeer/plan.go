package ecpeer

import (
	"fmt"
	"slices"
)

// shardSurvivor is one shard peer as the taking-over node sees it.
type shardSurvivor struct {
	Name       string
	Shard      int
	Reached    bool // it answered ShardState
	Outdated   bool // Outdated in the control plane
	Consistent bool // no unfinished resync, no split brain
	Last       uint64
	Applied    uint64
}

// takeoverPlan is where and from whom the device is rebuilt.
type takeoverPlan struct {
	D      uint64
	Usable []shardSurvivor // Applied <= D, in shard order
}

// planTakeover decides the rebuild position and the usable survivors.
// Every acknowledged write is journaled on every peer that is not Outdated
// (protocol C, Outdate before writes go on without a peer), so every one is
// at most D, the lowest journal position among the reached, consistent,
// not Outdated survivors. A survivor whose image holds a write above D
// (Applied > D) cannot be brought back to D and is not used. At least k
// must remain.
func planTakeover(k int, all []shardSurvivor) (takeoverPlan, error) {
	var cands []shardSurvivor
	for _, s := range all {
		if s.Reached && !s.Outdated && s.Consistent {
			cands = append(cands, s)
		}
	}
	if len(cands) < k {
		return takeoverPlan{}, fmt.Errorf("%w: %d reachable consistent shard peers that are not Outdated, need %d", ErrTooFewShards, len(cands), k)
	}
	d := cands[0].Last
	for _, s := range cands {
		d = min(d, s.Last)
	}
	plan := takeoverPlan{D: d}
	for _, s := range cands {
		if s.Applied <= d {
			plan.Usable = append(plan.Usable, s)
		}
	}
	slices.SortFunc(plan.Usable, func(a, b shardSurvivor) int { return a.Shard - b.Shard })
	if len(plan.Usable) < k {
		return takeoverPlan{}, fmt.Errorf("%w: %d shard peers at applied position <= %d, need %d", ErrTooFewShards, len(plan.Usable), d, k)
	}
	return plan, nil
}

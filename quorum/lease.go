package quorum

import (
	"math"
	"slices"
)

// never is the acknowledgement tick of a voter that acknowledged nothing.
const never = math.MinInt64 / 4

// LeaseExpiry is the tick at which a lease stops being valid, given, per
// voter, the send tick of the newest lease request that voter acknowledged
// (never if none) and q, the size of a majority: the lease holds while q
// voters acknowledged a request sent less than leaseTicks ago, so it
// expires leaseTicks after the q-th newest acknowledgement.
//
// The result may be in the past; with fewer than q voters it is never.
func LeaseExpiry(acked []int64, q int, leaseTicks int64) int64 {
	if q <= 0 || len(acked) < q {
		return never
	}
	s := slices.Clone(acked)
	slices.Sort(s)
	kth := s[len(s)-q]
	if kth == never {
		return never
	}
	return kth + leaseTicks
}

// Majority is the size of a majority of n voters.
func Majority(n int) int { return n/2 + 1 }

package bench

import (
	"fmt"
	"slices"
	"strings"
)

// Goal metrics.
const (
	// MetricRatio: IOPS of the system on Job over IOPS of Against on Job,
	// measured in the same run (for one block size, also the bandwidth ratio).
	MetricRatio = "ratio"
	// MetricP999Ratio: p99.9 latency of the system on Job over Against's
	// p99.9 on Job (a bound on stalls: Max).
	MetricP999Ratio = "p99.9-ratio"
	// MetricResyncRate: resync bytes moved per second (ResyncResult).
	MetricResyncRate = "resync-rate"
	// MetricResyncAmplification: resync bytes moved / bytes written while
	// the peer was away.
	MetricResyncAmplification = "resync-amplification"
)

// Goal is one performance target from the issues. A goal holds when the
// measured value is >= Min (when Min > 0) and <= Max (when Max > 0).
type Goal struct {
	Issue  int    `json:"issue"`
	Metric string `json:"metric"`
	// Systems are candidates: the first one measured in the run is judged
	// (a 2-node cluster with a witness, else one without).
	Systems []string `json:"systems,omitempty"`
	Job     string   `json:"workload,omitempty"`
	Against string   `json:"against,omitempty"`
	Min     float64  `json:"min,omitempty"`
	Max     float64  `json:"max,omitempty"`
}

// System names of the standard suite.
const (
	SysNBDKit       = "nbdkit-file"
	SysQemuQuorum   = "qemu-quorum-2"
	SysGrbd1        = "grbd-1n"
	SysGrbd2Witness = "grbd-2n+w-C"
	SysGrbd2C       = "grbd-2n-C"
	SysGrbd3C       = "grbd-3n-C"
	SysGrbd2A       = "grbd-2n-A"
	// SysGrbdEC22 is erasure coding 2+2: a full-copy primary and four
	// shard peers (docs/erasure.md); compare with SysGrbd3C, three full
	// copies (a primary and two mirrors), which also survives two lost
	// peers.
	SysGrbdEC22 = "grbd-ec2+2-C"
)

// DefaultGoals are the targets of issue 2 (single node), issue 3
// (replication) and issue 17 (write bandwidth; its 4 KiB and resync goals
// are issue 3's).
func DefaultGoals() []Goal {
	one := []string{SysGrbd1}
	two := []string{SysGrbd2Witness, SysGrbd2C}
	return []Goal{
		{Issue: 2, Metric: MetricRatio, Systems: one, Job: "randwrite-4k-qd32", Against: SysNBDKit, Min: 0.9},
		{Issue: 2, Metric: MetricRatio, Systems: one, Job: "randread-4k-qd32", Against: SysNBDKit, Min: 0.9},
		{Issue: 2, Metric: MetricRatio, Systems: one, Job: "seqwrite-1m-qd8", Against: SysNBDKit, Min: 0.8},
		{Issue: 3, Metric: MetricRatio, Systems: two, Job: "randwrite-4k-qd32", Against: SysNBDKit, Min: 0.7},
		{Issue: 3, Metric: MetricRatio, Systems: two, Job: "randwrite-4k-qd32", Against: SysQemuQuorum, Min: 3},
		{Issue: 3, Metric: MetricRatio, Systems: two, Job: "randread-4k-qd32", Against: SysNBDKit, Min: 0.9},
		{Issue: 3, Metric: MetricRatio, Systems: two, Job: "seqwrite-1m-qd8", Against: SysNBDKit, Min: 0.5},
		{Issue: 3, Metric: MetricResyncRate, Min: 1e9},
		{Issue: 3, Metric: MetricResyncAmplification, Max: 1.1},
		{Issue: 17, Metric: MetricRatio, Systems: one, Job: "seqwrite-1m-qd8", Against: SysNBDKit, Min: 0.5},
		{Issue: 17, Metric: MetricRatio, Systems: one, Job: "seqwrite-1m-qd8", Against: SysQemuQuorum, Min: 2},
		{Issue: 17, Metric: MetricRatio, Systems: two, Job: "seqwrite-1m-qd8", Against: SysQemuQuorum, Min: 2},
		{Issue: 17, Metric: MetricP999Ratio, Systems: one, Job: "seqwrite-1m-qd8", Against: SysNBDKit, Max: 2},
		{Issue: 17, Metric: MetricP999Ratio, Systems: two, Job: "seqwrite-1m-qd8", Against: SysNBDKit, Max: 2},
	}
}

// GoalResult is a goal judged against one run.
type GoalResult struct {
	Goal
	Text     string  `json:"text"`             // the goal in words
	System   string  `json:"system,omitempty"` // the system judged
	Measured float64 `json:"measured"`
	// Status is "pass", "FAIL" or "skipped: reason".
	Status string `json:"status"`
}

// Pass reports whether the goal was met.
func (g GoalResult) Pass() bool { return g.Status == "pass" }

// EvaluateGoals judges every goal against the results of one run.
func EvaluateGoals(goals []Goal, results []Result, resync *ResyncResult) []GoalResult {
	out := make([]GoalResult, 0, len(goals))
	for _, g := range goals {
		out = append(out, evaluate(g, results, resync))
	}
	return out
}

func evaluate(g Goal, results []Result, resync *ResyncResult) GoalResult {
	r := GoalResult{Goal: g, Text: g.text()}
	switch g.Metric {
	case MetricRatio, MetricP999Ratio:
		for _, s := range g.Systems {
			if _, ok := find(results, s, g.Job); ok {
				r.System = s
				break
			}
		}
		if r.System == "" {
			return r.skip("%s did not run %s", strings.Join(g.Systems, " / "), g.Job)
		}
		m, _ := find(results, r.System, g.Job)
		b, ok := find(results, g.Against, g.Job)
		if !ok || b.IOPS == 0 {
			return r.skip("%s did not run %s", g.Against, g.Job)
		}
		switch {
		case g.Metric == MetricRatio:
			r.Measured = m.IOPS / b.IOPS
		case b.P999 == 0:
			return r.skip("%s has no p99.9 on %s", g.Against, g.Job)
		default:
			r.Measured = m.P999 / b.P999
		}
	case MetricResyncRate, MetricResyncAmplification:
		if resync == nil || resync.Skipped != "" || resync.Error != "" || resync.Seconds == 0 {
			return r.skip("no resync measurement")
		}
		r.System = resync.System
		r.Measured = resync.BytesPerSecond
		if g.Metric == MetricResyncAmplification {
			r.Measured = resync.Amplification
		}
	default:
		return r.skip("unknown metric %q", g.Metric)
	}
	r.Status = "pass"
	if (g.Min > 0 && r.Measured < g.Min) || (g.Max > 0 && r.Measured > g.Max) {
		r.Status = "FAIL"
	}
	return r
}

func (r GoalResult) skip(format string, args ...any) GoalResult {
	r.Status = "skipped: " + fmt.Sprintf(format, args...)
	return r
}

// text renders the goal, e.g. "grbd-1n randwrite-4k-qd32 >= 0.90x nbdkit-file".
func (g Goal) text() string {
	bound := func(unit func(float64) string) string {
		var parts []string
		if g.Min > 0 {
			parts = append(parts, ">= "+unit(g.Min))
		}
		if g.Max > 0 {
			parts = append(parts, "<= "+unit(g.Max))
		}
		return strings.Join(parts, " and ")
	}
	switch g.Metric {
	case MetricRatio:
		return fmt.Sprintf("%s %s %s %s", strings.Join(g.Systems, " / "), g.Job,
			bound(func(v float64) string { return fmt.Sprintf("%.2fx", v) }), g.Against)
	case MetricP999Ratio:
		return fmt.Sprintf("%s %s p99.9 latency %s %s's", strings.Join(g.Systems, " / "), g.Job,
			bound(func(v float64) string { return fmt.Sprintf("%.2fx", v) }), g.Against)
	case MetricResyncRate:
		return "resync " + bound(func(v float64) string { return fmt.Sprintf("%.1f GB/s", v/1e9) })
	case MetricResyncAmplification:
		return "resync bytes moved " + bound(func(v float64) string { return fmt.Sprintf("%.2fx", v) }) + " bytes written while away"
	}
	return g.Metric
}

// FormatMeasured renders a goal's measured value in the goal's unit.
func (g GoalResult) FormatMeasured() string {
	if strings.HasPrefix(g.Status, "skipped") {
		return "-"
	}
	if g.Metric == MetricResyncRate {
		return fmt.Sprintf("%.2f GB/s", g.Measured/1e9)
	}
	return fmt.Sprintf("%.2fx", g.Measured)
}

// find returns the result of system on job.
func find(results []Result, system, job string) (Result, bool) {
	i := slices.IndexFunc(results, func(r Result) bool { return r.System == system && r.Job == job })
	if i < 0 {
		return Result{}, false
	}
	return results[i], true
}

// Ratio is a result's IOPS relative to the baseline system on the same job
// (0 when the baseline did not run it).
func Ratio(results []Result, r Result, baseline string) float64 {
	b, ok := find(results, baseline, r.Job)
	if !ok || b.IOPS == 0 {
		return 0
	}
	return r.IOPS / b.IOPS
}

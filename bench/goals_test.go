package bench

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEvaluateGoals(t *testing.T) {
	results := []Result{
		{System: SysNBDKit, Job: "w", IOPS: 1000, P999: 100},
		{System: SysQemuQuorum, Job: "w", IOPS: 200},
		{System: SysGrbd1, Job: "w", IOPS: 950, P999: 150},
		{System: SysGrbd2C, Job: "w", IOPS: 650, P999: 250},
	}
	resync := &ResyncResult{System: "r", Seconds: 2, BytesPerSecond: 1.2e9, Amplification: 1.3}
	two := []string{SysGrbd2Witness, SysGrbd2C}
	for _, tc := range []struct {
		name     string
		goal     Goal
		resync   *ResyncResult
		system   string
		measured float64
		status   string
	}{
		{"ratio pass", Goal{Metric: MetricRatio, Systems: []string{SysGrbd1}, Job: "w", Against: SysNBDKit, Min: 0.9},
			nil, SysGrbd1, 0.95, "pass"},
		{"ratio fail", Goal{Metric: MetricRatio, Systems: two, Job: "w", Against: SysNBDKit, Min: 0.7},
			nil, SysGrbd2C, 0.65, "FAIL"},
		{"first candidate that ran is judged", Goal{Metric: MetricRatio, Systems: two, Job: "w", Against: SysQemuQuorum, Min: 3},
			nil, SysGrbd2C, 3.25, "pass"},
		{"system did not run", Goal{Metric: MetricRatio, Systems: []string{SysGrbd3C}, Job: "w", Against: SysNBDKit, Min: 1},
			nil, "", 0, "skipped: grbd-3n-C did not run w"},
		{"baseline did not run", Goal{Metric: MetricRatio, Systems: []string{SysGrbd1}, Job: "w", Against: "other", Min: 1},
			nil, SysGrbd1, 0, "skipped: other did not run w"},
		{"p99.9 pass", Goal{Metric: MetricP999Ratio, Systems: []string{SysGrbd1}, Job: "w", Against: SysNBDKit, Max: 2},
			nil, SysGrbd1, 1.5, "pass"},
		{"p99.9 fail", Goal{Metric: MetricP999Ratio, Systems: two, Job: "w", Against: SysNBDKit, Max: 2},
			nil, SysGrbd2C, 2.5, "FAIL"},
		{"baseline without p99.9", Goal{Metric: MetricP999Ratio, Systems: two, Job: "w", Against: SysQemuQuorum, Max: 2},
			nil, SysGrbd2C, 0, "skipped: qemu-quorum-2 has no p99.9 on w"},
		{"resync rate pass", Goal{Metric: MetricResyncRate, Min: 1e9}, resync, "r", 1.2e9, "pass"},
		{"resync amplification fail", Goal{Metric: MetricResyncAmplification, Max: 1.1}, resync, "r", 1.3, "FAIL"},
		{"resync skipped", Goal{Metric: MetricResyncRate, Min: 1e9}, &ResyncResult{Outcome: Outcome{Skipped: "x"}},
			"", 0, "skipped: no resync measurement"},
		{"resync missing", Goal{Metric: MetricResyncRate, Min: 1e9}, nil, "", 0, "skipped: no resync measurement"},
		{"unknown metric", Goal{Metric: "bogus"}, nil, "", 0, `skipped: unknown metric "bogus"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := EvaluateGoals([]Goal{tc.goal}, results, tc.resync)[0]
			require.Equal(t, tc.status, g.Status)
			require.Equal(t, tc.system, g.System)
			require.InDelta(t, tc.measured, g.Measured, 1e-9)
			require.Equal(t, tc.status == "pass", g.Pass())
		})
	}
}

func TestGoalText(t *testing.T) {
	gs := EvaluateGoals(DefaultGoals(), nil, &ResyncResult{Seconds: 1, BytesPerSecond: 2.5e9, Amplification: 0.5})
	require.Len(t, gs, 14)
	require.Equal(t, "grbd-1n randwrite-4k-qd32 >= 0.90x nbdkit-file", gs[0].Text)
	require.Equal(t, "grbd-2n+w-C / grbd-2n-C randwrite-4k-qd32 >= 3.00x qemu-quorum-2", gs[4].Text)
	require.Equal(t, "resync >= 1.0 GB/s", gs[7].Text)
	require.Equal(t, "2.50 GB/s", gs[7].FormatMeasured())
	require.Equal(t, "resync bytes moved <= 1.10x bytes written while away", gs[8].Text)
	require.Equal(t, "0.50x", gs[8].FormatMeasured())
	require.Equal(t, "-", gs[0].FormatMeasured(), "skipped")
	require.Equal(t, "grbd-2n+w-C / grbd-2n-C seqwrite-1m-qd8 p99.9 latency <= 2.00x nbdkit-file's", gs[13].Text)
}

func TestRatio(t *testing.T) {
	rs := []Result{
		{System: SysNBDKit, Job: "w", IOPS: 1000},
		{System: SysGrbd1, Job: "w", IOPS: 900},
		{System: SysGrbd1, Job: "other", IOPS: 5},
	}
	require.InDelta(t, 0.9, Ratio(rs, rs[1], SysNBDKit), 1e-9)
	require.Zero(t, Ratio(rs, rs[2], SysNBDKit), "no baseline for that job")
}

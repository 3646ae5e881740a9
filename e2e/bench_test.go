package e2e

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/bench"
	"github.com/stretchr/testify/require"
)

// TestBenchShort runs `grbd bench --short`, the smoke run of the benchmark
// suite: it checks that the harness starts every system (grbd clusters as
// real processes), runs the embedded fio jobs against each, measures resync
// and failover (or skips them for a stated reason), reports process
// resources, ratios and goals, and writes JSON and a PNG, all within two
// minutes. It checks the harness, not the speed.
func TestBenchShort(t *testing.T) {
	requireTools(t, "fio", "nbdkit", "qemu-nbd")
	dir := t.TempDir()
	t.Cleanup(func() { logMemberLogsOnFailure(t, filepath.Join(dir, "run")) })
	jsonPath, pngPath := filepath.Join(dir, "bench.json"), filepath.Join(dir, "bench.png")
	start := time.Now()
	table := run(t, 3*time.Minute, grbdBin, "bench", "--short", "--dir", filepath.Join(dir, "run"),
		"--json", jsonPath, "--png", pngPath)
	elapsed := time.Since(start)
	t.Logf("grbd bench --short took %v:\n%s", elapsed.Round(time.Second), table)
	require.Less(t, elapsed, 2*time.Minute, "--short must stay a quick smoke run")
	require.Contains(t, table, "1.00x", "the baseline's own ratio")
	require.Contains(t, table, "goals (issues 2, 3 and 17)")
	require.Contains(t, table, "CPU of the server processes per write", "issue 17: CPU per GiB and per 100k writes")

	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep bench.Report
	require.NoError(t, json.Unmarshal(b, &rep))

	// Every system ran every short job, or was skipped for a stated reason.
	ran := map[string]int{}
	for _, r := range rep.Results {
		require.Positive(t, r.IOPS, "%s on %s measured nothing", r.Job, r.System)
		require.Positive(t, r.P99, "%s on %s has no latency", r.Job, r.System)
		ran[r.System]++
	}
	skipped := map[string]string{}
	for _, s := range rep.Skipped {
		skipped[s.System] = s.Reason
	}
	for _, sys := range []string{bench.SysNBDKit, bench.SysQemuQuorum, bench.SysGrbd1, bench.SysGrbd3C, bench.SysGrbd2A} {
		require.Equal(t, len(bench.ShortJobs), ran[sys], "%s did not run every job", sys)
	}
	if ran[bench.SysGrbd2Witness] == 0 {
		require.Equal(t, "grbd witness not available", skipped[bench.SysGrbd2Witness])
		require.Equal(t, len(bench.ShortJobs), ran[bench.SysGrbd2C], "the stand-in 2-node cluster must run")
	}

	// CPU during each job of every server process (issue 17).
	for _, r := range rep.Results {
		require.NotEmpty(t, r.CPU, "no CPU for %s on %s", r.Job, r.System)
	}

	// Peak RSS and CPU time of every grbd data node.
	nodes := map[string]int{}
	for _, p := range rep.Procs {
		require.Positive(t, p.PeakRSS, "%s %s", p.System, p.Process)
		require.GreaterOrEqual(t, p.CPUSeconds, 0.0)
		nodes[p.System]++
	}
	require.Equal(t, 1, nodes[bench.SysGrbd1])
	require.Equal(t, 3, nodes[bench.SysGrbd3C])
	require.Equal(t, 3, nodes[bench.SysQemuQuorum], "qemu-nbd and its two nbdkit children")

	// Resync must work today; failover is measured or skipped until grbd
	// fails over by itself.
	require.NotNil(t, rep.Resync)
	require.Empty(t, rep.Resync.Error)
	require.Empty(t, rep.Resync.Skipped)
	require.Positive(t, rep.Resync.BytesWritten)
	require.Positive(t, rep.Resync.BytesMoved)
	require.Positive(t, rep.Resync.BytesPerSecond)
	require.NotNil(t, rep.Failover)
	require.Empty(t, rep.Failover.Error)
	if rep.Failover.Skipped != "" {
		require.Contains(t, rep.Failover.Skipped, "needs automatic failover")
	} else {
		require.Positive(t, rep.Failover.Seconds)
		require.NotEqual(t, rep.Failover.OldPrimary, rep.Failover.NewPrimary)
	}

	// Every goal of issues 2, 3 and 17 is judged or says why not.
	require.Len(t, rep.Goals, len(bench.DefaultGoals()))
	for _, g := range rep.Goals {
		ok := g.Status == "pass" || g.Status == "FAIL" || strings.HasPrefix(g.Status, "skipped: ")
		require.True(t, ok, "goal %q has status %q", g.Text, g.Status)
		if g.Metric == bench.MetricRatio || g.Metric == bench.MetricP999Ratio {
			require.NotEqual(t, "skipped", g.Status[:min(7, len(g.Status))], "ratio goal %q not judged", g.Text)
		}
	}

	f, err := os.Open(pngPath)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	require.Greater(t, img.Bounds().Dx(), 500)
}

// logMemberLogsOnFailure prints the end of every member log under dir when
// t failed: the run's directory is a TempDir, removed after the test, and a
// system that failed its fio jobs (a lost lease, a failover) says why only
// there.
func logMemberLogsOnFailure(t *testing.T, dir string) {
	if !t.Failed() {
		return
	}
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			t.Logf("%s ends:\n%s", path, tail(string(b), 40))
		}
		return nil
	})
}

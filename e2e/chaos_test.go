package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/chaos"
	"github.com/stretchr/testify/require"
)

// The fault suite (issue 5, internal/chaos). `make test` runs TestChaos, the
// short schedule of every scenario with one seed, and
// TestChaosCatchesPlantedBug; `make chaos SEED=.. DURATION=..` runs
// TestChaosSoak. Flags (after -args) or environment variables:
//
//	-chaos.seed N        GRBD_CHAOS_SEED      seed (default 1; make chaos: the time)
//	-chaos.duration D    GRBD_CHAOS_DURATION  soak length; 0 runs the short suite
//	-chaos.scenario S    GRBD_CHAOS_SCENARIO  only scenarios whose name contains S
//	-chaos.report DIR    GRBD_CHAOS_REPORT    keep every report there (default:
//	                                          a temp dir, kept only on failure)
var (
	chaosSeed     = flag.String("chaos.seed", "", "fault suite seed (default 1, or $GRBD_CHAOS_SEED)")
	chaosDuration = flag.String("chaos.duration", "", "soak duration for TestChaosSoak (or $GRBD_CHAOS_DURATION)")
	chaosScenario = flag.String("chaos.scenario", "", "run only scenarios whose name contains this (or $GRBD_CHAOS_SCENARIO)")
	chaosReport   = flag.String("chaos.report", "", "directory for chaos reports (or $GRBD_CHAOS_REPORT)")
)

func chaosSetting(flagVal *string, env string) string {
	if *flagVal != "" {
		return *flagVal
	}
	return os.Getenv(env)
}

func chaosSeedValue(t *testing.T) uint64 {
	s := chaosSetting(chaosSeed, "GRBD_CHAOS_SEED")
	if s == "" {
		return 1
	}
	n, err := strconv.ParseUint(s, 10, 64)
	require.NoError(t, err, "chaos seed %q", s)
	return n
}

func chaosSoak(t *testing.T) time.Duration {
	s := chaosSetting(chaosDuration, "GRBD_CHAOS_DURATION")
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	require.NoError(t, err, "chaos duration %q", s)
	return d
}

func chaosScenarios() []chaos.Scenario {
	filter := chaosSetting(chaosScenario, "GRBD_CHAOS_SCENARIO")
	var out []chaos.Scenario
	for _, sc := range chaos.Scenarios() {
		if strings.Contains(sc.Name, filter) {
			out = append(out, sc)
		}
	}
	return out
}

// chaosReportDir is where a test's reports go: the -chaos.report directory
// (kept), or a temp dir removed unless the test fails.
func chaosReportDir(t *testing.T) string {
	if d := chaosSetting(chaosReport, "GRBD_CHAOS_REPORT"); d != "" {
		abs, err := filepath.Abs(d)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(abs, 0o755))
		return abs
	}
	d, err := os.MkdirTemp("", "grbd-chaos-")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chaos reports and member logs kept in %s", d)
			return
		}
		os.RemoveAll(d)
	})
	return d
}

// runChaos executes one scenario and fails the test on unexpected anomalies;
// expected ones (known gaps) must be found. The report, when there is one, is
// stored in *out before any assertion.
func runChaos(t *testing.T, bin, dir string, sc chaos.Scenario, seed uint64, soak time.Duration, out **chaos.Report) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), soak+10*time.Minute)
	defer cancel()
	env := chaos.Env{Bin: bin, Dir: dir, Logf: t.Logf, Soak: soak}
	rep, err := chaos.Execute(ctx, env, sc, seed)
	if chaos.IsSkip(err) {
		t.Skip(err)
	}
	if rep != nil {
		*out = rep
		t.Logf("%s\n%s", sc.Doc, rep.Summary())
	}
	require.NoError(t, err, "seed %d", seed)
	require.True(t, rep.OK(), "scenario %s seed %d failed; replay: %s; report: %s", sc.Name, seed, rep.Replay(), rep.Dir)
	for _, kind := range sc.Expected {
		require.True(t, rep.Found(kind), "scenario %s expects the suite to find %q (a known gap); it did not: has grbd fixed it? update the scenario's Expected", sc.Name, kind)
	}
}

// TestChaos runs every scenario's short schedule with one seed. Scenarios
// that need what the machine or the binary lacks skip with the reason. The
// scenarios run one after another, beside the other parallel tests (each
// on its own ports and nftables table): run alone they held the whole suite
// for two minutes.
func TestChaos(t *testing.T) {
	if chaosSoak(t) > 0 {
		t.Skip("soak run requested: TestChaosSoak runs it")
	}
	t.Parallel()
	seed := chaosSeedValue(t)
	dir := chaosReportDir(t)
	for _, sc := range chaosScenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			var rep *chaos.Report
			runChaos(t, grbdBin, dir, sc, seed, 0, &rep)
		})
	}
}

// TestChaosCatchesPlantedBug builds grbd with the planted bug (the primary
// acknowledges protocol C writes before its peer has them,
// primary/plantedbug_on.go) and shows that the suite fails on it: the secondary,
// promoted after the primary's crash, lacks acknowledged writes.
func TestChaosCatchesPlantedBug(t *testing.T) {
	if chaosSoak(t) > 0 {
		t.Skip("soak run requested")
	}
	bin := filepath.Join(t.TempDir(), "grbd-planted")
	build := exec.Command("go", "build", "-tags", "grbd_plantedbug", "-o", bin, "../cmd/grbd")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building the planted binary:\n%s", out)
	// With the quorum the control plane promotes the secondary; without it
	// the harness does, by starting it alone.
	name := "two-crash-promote"
	if chaos.SupportsWitness(bin) {
		name = "failover-stall-crash"
	}
	sc, ok := chaos.ScenarioByName(name)
	require.True(t, ok)
	seed := chaosSeedValue(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := chaos.Execute(ctx, chaos.Env{Bin: bin, Dir: chaosReportDir(t), Logf: t.Logf}, sc, seed)
	require.NoError(t, err)
	t.Logf("against the planted bug:\n%s", rep.Summary())
	require.False(t, rep.OK(), "the suite did not catch a primary that acknowledges protocol C writes early (seed %d)", seed)
	require.True(t, rep.Found(chaos.AnomalyLinearizability) || rep.Found(chaos.AnomalyLostWrite), "caught, but not as lost writes")
	require.NotEmpty(t, rep.Visualization, "a failed check writes porcupine's visualization")
}

// TestChaosSoak is `make chaos`: rounds of every (selected) scenario, each
// run repeating its faults for a slice of the duration, with seeds seed,
// seed+1, ... until the duration is spent. It writes summary.txt next to
// the runs' reports and fails listing the replay command of every failed
// run.
func TestChaosSoak(t *testing.T) {
	soak := chaosSoak(t)
	if soak <= 0 {
		t.Skip("set -chaos.duration (make chaos DURATION=..) for a soak run")
	}
	seed, dir := chaosSeedValue(t), chaosReportDir(t)
	scenarios := chaosScenarios()
	require.NotEmpty(t, scenarios, "no scenario matches")
	slice := min(max(soak/time.Duration(2*len(scenarios)), 20*time.Second), 2*time.Minute)
	deadline := time.Now().Add(soak)
	var runs, skipped, ops, faults int
	var failed []string
	for k := uint64(0); time.Now().Before(deadline) && k < 100_000; k++ {
		for _, sc := range scenarios {
			if !time.Now().Before(deadline) {
				break
			}
			var rep *chaos.Report
			ok := t.Run(fmt.Sprintf("%s/seed=%d", sc.Name, seed+k), func(t *testing.T) {
				runChaos(t, grbdBin, dir, sc, seed+k, slice, &rep)
			})
			switch {
			case rep == nil && ok:
				skipped++
				continue
			case rep == nil:
				failed = append(failed, fmt.Sprintf("make chaos SEED=%d SCENARIO=%s (harness error)", seed+k, sc.Name))
				continue
			}
			runs++
			ops += rep.Ops.Writes + rep.Ops.Reads + rep.Ops.Flushes
			faults += rep.Faults
			if !ok {
				failed = append(failed, rep.Replay()+" # report "+rep.Dir)
			}
		}
		if runs == 0 {
			break // everything skips here
		}
	}
	summary := fmt.Sprintf("chaos soak: seed %d, %v: %d runs (%d skipped), %d operations, %d faults, %d failed\n%s\n",
		seed, soak, runs, skipped, ops, faults, len(failed), strings.Join(failed, "\n"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(summary), 0o644))
	t.Log(summary)
	require.Empty(t, failed)
}

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBenchShort runs `grbd bench --short`: it checks that the harness starts
// every system, runs fio against each and reports ratios, not the speed.
func TestBenchShort(t *testing.T) {
	requireTools(t, "fio", "nbdkit")
	out := filepath.Join(t.TempDir(), "bench.json")
	table := run(t, 5*time.Minute, grbdBin, "bench", "--short", "--json", out)
	require.Contains(t, table, "nbdkit-file")
	require.Contains(t, table, "grbd-1node")
	require.Contains(t, table, "1.00x", "the baseline's own ratio")

	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var rs []struct {
		System   string  `json:"system"`
		Workload string  `json:"workload"`
		IOPS     float64 `json:"iops"`
	}
	require.NoError(t, json.Unmarshal(b, &rs))
	seen := map[string]int{}
	for _, r := range rs {
		require.Positive(t, r.IOPS, "%s on %s measured nothing", r.Workload, r.System)
		seen[r.System]++
	}
	require.Equal(t, seen["nbdkit-file"], seen["grbd-1node"], "every workload on every system")
	require.GreaterOrEqual(t, seen["grbd-1node"], 4)
}

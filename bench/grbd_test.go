package bench

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/grbd/grbd/internal/config"
	"github.com/stretchr/testify/require"
)

func TestGrbdClusterConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		g       GrbdCluster
		nodes   int
		witness bool
	}{
		{"one node", GrbdCluster{Label: "a", DataNodes: 1}, 1, false},
		{"two nodes and a witness, protocol A", GrbdCluster{Label: "b", DataNodes: 2, Witness: true, Protocol: "A"}, 2, true},
		{"three nodes, small journal", GrbdCluster{Label: "c", DataNodes: 3,
			Journal: config.Journal{MaxSize: 64 << 20, SegmentSize: 4 << 20}}, 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, tc.g.writeConfig(dir, 64<<20))
			cfg, err := config.Load(filepath.Join(dir, "grbd.yaml"))
			require.NoError(t, err)
			require.Len(t, cfg.Nodes, tc.nodes)
			require.Equal(t, tc.witness, cfg.Witness != nil)
			require.Equal(t, config.Size(64<<20), cfg.Device.Size)
			require.Len(t, tc.g.members, tc.nodes+map[bool]int{true: 1}[tc.witness])
			require.Len(t, tc.g.dataNodes(), tc.nodes)
			for _, m := range tc.g.members {
				mc, isWitness, err := cfg.Member(m.name)
				require.NoError(t, err)
				require.Equal(t, m.witness, isWitness)
				require.Equal(t, mc.Admin, m.admin)
				require.Equal(t, filepath.Join(dir, m.name), mc.DataDir)
			}
			if tc.g.Journal.MaxSize != 0 {
				require.Equal(t, tc.g.Journal.MaxSize, cfg.Journal.MaxSize)
			}
		})
	}
}

func TestGrbdClusterConfigErrors(t *testing.T) {
	g := GrbdCluster{Label: "x", DataNodes: 1, ExtraYAML: "no-such-key: 1"}
	err := g.writeConfig(t.TempDir(), 64<<20)
	require.ErrorIs(t, err, config.ErrInvalid, "the generated config is validated before use")
	g = GrbdCluster{Label: "x"}
	require.Error(t, g.writeConfig(t.TempDir(), 64<<20))
}

// TestWitnessSkip: a cluster with a witness is skipped, not failed, when
// the binary has no witness command.
func TestWitnessSkip(t *testing.T) {
	sh, err := exec.LookPath("false")
	require.NoError(t, err)
	g := &GrbdCluster{Label: "w", Binary: sh, DataNodes: 2, Witness: true}
	_, err = g.Start(context.Background(), t.TempDir(), 64<<20)
	require.ErrorIs(t, err, ErrSkip)
	require.Equal(t, "grbd witness not available", skipReason(err))
	require.Equal(t, Outcome{Skipped: "grbd witness not available"}, outcome(err))
}

func TestSuite(t *testing.T) {
	cfg := Suite("/nonexistent/grbd", "")
	var names []string
	for _, s := range cfg.Systems {
		names = append(names, s.Name())
	}
	// Without a witness command, a plain 2-node cluster stands in for the
	// witness cluster so the replication goals are still judged.
	require.Equal(t, []string{SysNBDKit, SysQemuQuorum, SysGrbd1, SysGrbd2Witness, SysGrbd2C, SysGrbd3C, SysGrbd2A, SysGrbdEC22}, names)
	require.Equal(t, "failover-3n-C", cfg.Failover.Name())
	require.Equal(t, JobOrder, cfg.Jobs)

	cfg.Short()
	require.Equal(t, ShortJobs, cfg.Jobs)
	require.Equal(t, 1, cfg.Rounds)
	require.Equal(t, config.Size(64<<20), cfg.Resync.Journal.MaxSize)

	require.NoError(t, cfg.SelectSystems([]string{SysGrbd1, SysNBDKit}))
	require.Len(t, cfg.Systems, 2)
	require.Equal(t, SysNBDKit, cfg.Systems[0].Name(), "suite order is kept")
	require.ErrorIs(t, cfg.SelectSystems([]string{"nope"}), ErrUnknownSystem)

	cfg.CompareWith("/old/grbd", "@base")
	require.Len(t, cfg.Systems, 3)
	base := cfg.Systems[2].(*GrbdCluster)
	require.Equal(t, SysGrbd1+"@base", base.Name())
	require.Equal(t, "/old/grbd", base.Binary)
	require.NotEqual(t, "/old/grbd", cfg.Systems[1].(*GrbdCluster).Binary, "the original keeps its binary")
}

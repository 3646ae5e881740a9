package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/ec"
	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

// TestECFioKillTwoPeers: 1 full-copy primary + 4 shard peers (ec 2+2) under
// fio verify writes; two shard peers are killed with SIGKILL mid-run and the
// writes go on (they are Outdated first). They come back through a
// re-encoded resync, per-shard verify finds every shard in sync, and after
// kill -9 of the primary no shard peer takes over (none holds the device);
// the restarted primary reads back every acknowledged write. Finally every
// pair of shard images decodes to the primary's image, byte for byte.
func TestECFioKillTwoPeers(t *testing.T) {
	requireTools(t, "fio")
	start := time.Now()
	dir := t.TempDir()
	cfgPath := clusterConfig(t, dir, 5, "128MiB", "replication:\n  redundancy: ec 2+2\n")
	cfg, err := config.Load(cfgPath)
	require.NoError(t, err)
	c := &replCluster{t: t, dir: dir, cfgPath: cfgPath, cfg: cfg}
	procs := map[string]*proc{}
	for _, n := range []string{"n1", "n2", "n3", "n4", "n0"} { // n0 serves once a quorum is up
		procs[n] = c.start(n, n)
	}
	st := c.waitPeer(20 * time.Second)
	require.Equal(t, "ec 2+2", st.Redundancy)
	for i, p := range st.Peers {
		require.NotNil(t, p.Shard, p.Name)
		require.Equal(t, i, *p.Shard)
	}

	args := []string{"--size=32m", "--offset_increment=32m"}
	var out string
	var fioErr error
	var wg sync.WaitGroup
	wg.Go(func() { out, fioErr = runErr(3*time.Minute, "fio", fioVerifyArgs(c.uri("n0"), args...)...) })
	time.Sleep(500 * time.Millisecond)
	procs["n1"].kill9()
	procs["n3"].kill9()
	wg.Wait()
	require.NoError(t, fioErr, out)
	require.NotContains(t, out, "verify: bad", out)
	require.Contains(t, out, "WRITE:", out)
	t.Logf("fio with two shard peers killed after 0.5s:\n%s", fioSummary(out))
	st, err = c.status("n0")
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"n1", "n3"}, st.Quorum.Outdated, "the killed shard peers are Outdated")
	status := run(t, 30*time.Second, grbdBin, "status", "--config", cfgPath)
	require.Contains(t, status, "SHARD", status)

	// The two come back: a resync re-encoded from the full copy.
	procs["n1"] = c.start("n1", "n1-again")
	procs["n3"] = c.start("n3", "n3-again")
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		if err != nil || len(st.Quorum.Outdated) > 0 {
			return false
		}
		for _, p := range st.Peers {
			if p.Disk != node.DiskUpToDate || p.Behind != 0 {
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "the shard peers never came back UpToDate")
	vout := run(t, 2*time.Minute, grbdBin, "verify", "--config", cfgPath)
	require.NotContains(t, vout, "out of sync:", vout)

	// Without the full copy no one serves: a shard peer refuses the role.
	procs["n0"].kill9()
	time.Sleep(2 * time.Second)
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		st, err := c.status(n)
		require.NoError(t, err)
		require.Equal(t, node.RoleSecondary, st.Role, n)
	}
	procs["n0"] = c.start("n0", "n0-again")
	c.waitPeer(30 * time.Second)
	out = run(t, 2*time.Minute, "fio", fioVerifyArgs(c.uri("n0"), append(args, "--verify_only")...)...)
	require.NotContains(t, out, "verify: bad", "acknowledged writes lost:\n%s", out)
	require.Contains(t, out, "READ:", out)

	for _, n := range []string{"n1", "n2", "n3", "n4", "n0"} {
		procs[n].stop()
	}
	requireShardImagesDecode(t, cfg)
	t.Logf("EC e2e took %v", time.Since(start).Round(time.Millisecond))
}

// requireShardImagesDecode decodes the device from every pair of shard
// images of a stopped 2+2 cluster and compares it with the full copy.
func requireShardImagesDecode(t *testing.T, cfg *config.Config) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(cfg.Nodes[0].DataDir, "data.img"))
	require.NoError(t, err)
	g := ec.Geometry{K: 2, M: 2, Chunk: config.ECChunk, Size: int64(cfg.Device.Size)}
	cd, err := ec.NewCoder(g)
	require.NoError(t, err)
	shards := make([][]byte, 4)
	for h := range shards {
		b, err := os.ReadFile(filepath.Join(cfg.Nodes[h+1].DataDir, "data.img"))
		require.NoError(t, err)
		require.Equal(t, g.ShardSize(), int64(len(b)), "compact shard image of %s", cfg.Nodes[h+1].Name)
		shards[h] = b
	}
	for i := range shards {
		for j := i + 1; j < len(shards); j++ {
			sub := make([][]byte, len(shards))
			sub[i], sub[j] = bytes.Clone(shards[i]), bytes.Clone(shards[j])
			got, err := cd.Decode(sub, 0, g.ShardSize(), 0, g.Size)
			require.NoError(t, err)
			require.True(t, bytes.Equal(want[:g.Size], got), "shards %d and %d do not decode to the full copy", i, j)
		}
	}
}

// fioSummary is fio's group status lines.
func fioSummary(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "WRITE:") || strings.Contains(l, "READ:") || strings.Contains(l, "IOPS=") {
			b.WriteString(strings.TrimSpace(l) + "\n")
		}
	}
	return b.String()
}

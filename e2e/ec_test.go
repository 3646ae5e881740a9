package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/ec"
	"github.com/grbd/grbd/internal/ec/ectest"
	"github.com/grbd/grbd/internal/nbdclient"
	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

// TestECFioKillTwoPeers: 1 full-copy primary + 4 shard peers (ec 2+2) under
// fio verify writes; two shard peers are killed with SIGKILL mid-run and the
// writes go on (they are Outdated first). They come back through a
// re-encoded resync, per-shard verify finds every shard in sync. Then the
// failover: fio writes again (verify state saved, no verify pass), the
// primary is killed with SIGKILL mid-run, a shard peer takes over (it
// rebuilds the device from two shards), and fio --verify_only against it
// reads back every acknowledged write. The old primary returns as a full
// mirror of the new one. Finally every pair of the remaining shard images
// decodes to the new primary's image, byte for byte, and the old primary's
// image equals it.
func TestECFioKillTwoPeers(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio")
	start := time.Now()
	dir := t.TempDir()
	// Two of five killed leave exactly a majority: on a loaded machine one
	// of the three can renew the lease late, and a fenced moment would fail
	// fio's writes with EIO. They are held instead (suspend-io): this test
	// is about shards; fencing has its own tests (quorum_test.go).
	cfgPath := clusterConfig(t, dir, 5, "128MiB", "replication:\n  redundancy: ec 2+2\n"+
		"quorum:\n  lease: 600ms\n  failover-timeout: 600ms\n  on-no-quorum: suspend-io\n  suspend-timeout: 10s\n")
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
	c.waitPeersOf("n0", 60*time.Second, true)
	vout := run(t, 2*time.Minute, grbdBin, "verify", "--config", cfgPath)
	require.NotContains(t, vout, "out of sync:", vout)

	// Failover: kill -9 of the primary while fio writes. fio saves which
	// writes completed (verify_state_save); a shard peer takes over.
	aux := t.TempDir()
	fargs := append(args, "--do_verify=0", "--verify_state_save=1", "--aux-path="+aux)
	st, err = c.status("n0")
	require.NoError(t, err)
	before := st.Journal.LastSeq
	wg.Go(func() { out, fioErr = runErr(3*time.Minute, "fio", fioVerifyArgs(c.uri("n0"), fargs...)...) })
	// The kill lands mid-run: after writes of this run were journaled (fio
	// may take more than a second to connect on a loaded machine).
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && st.Journal.LastSeq >= before+2000
	}, 30*time.Second, 10*time.Millisecond, "fio wrote nothing through n0")
	procs["n0"].kill9()
	killed := time.Now()
	wg.Wait()
	t.Logf("fio against the killed primary (expected to fail): %v\n%s", fioErr, fioSummary(out))
	states, _ := filepath.Glob(filepath.Join(aux, "*verify.state"))
	require.NotEmpty(t, states, "fio saved no verify state:\n%s", out)
	np, st := c.waitPrimary([]string{"n1", "n2", "n3", "n4"}, 30*time.Second)
	t.Logf("%s primary and serving %v after the kill", np, time.Since(killed).Round(time.Millisecond))
	require.Nil(t, st.Shard, "the new primary is a full copy")
	logb, err := os.ReadFile(procs[np].Log)
	require.NoError(t, err)
	for _, l := range strings.Split(string(logb), "\n") {
		if strings.Contains(l, "takeover done") {
			t.Logf("%s", l)
		}
	}
	require.Contains(t, string(logb), "takeover done")
	// A first write: the last block's bytes written back unchanged (fio
	// verifies what is there next).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	cl, err := nbdclient.DialURI(ctx, c.uri(np), nbdclient.Options{})
	require.NoError(t, err)
	blk := make([]byte, 4096)
	require.NoError(t, cl.ReadAt(ctx, blk, cl.Size()-4096))
	require.NoError(t, cl.WriteAt(ctx, blk, cl.Size()-4096, 0))
	t.Logf("first write acknowledged by %s %v after the kill", np, time.Since(killed).Round(time.Millisecond))
	require.NoError(t, cl.Close())
	cancel()
	require.Equal(t, int64(cfg.Device.Size), st.DeviceSize)
	vargs := append(args, "--verify_only", "--verify_state_load=1", "--aux-path="+aux)
	out = run(t, 2*time.Minute, "fio", fioVerifyArgs(c.uri(np), vargs...)...)
	require.NotContains(t, out, "verify: bad", "acknowledged writes lost:\n%s", out)
	require.Regexp(t, `READ: bw=.*, io=[0-9.]+[KMG]i?B`, out, "the verify pass read nothing")
	t.Logf("fio --verify_only against %s %v after the kill:\n%s", np, time.Since(killed).Round(time.Millisecond), fioSummary(out))

	// The old primary comes back as a full mirror of the new one.
	procs["n0"] = c.startAs("n0", "n0-again", "listening ")
	c.waitPeersOf(np, 60*time.Second, true)

	for _, n := range []string{"n1", "n2", "n3", "n4", "n0"} {
		procs[n].stop()
	}
	requireShardImagesDecode(t, cfg, np)
	t.Logf("EC e2e took %v", time.Since(start).Round(time.Millisecond))
}

// waitPrimary waits until one of names is a serving primary.
func (c *replCluster) waitPrimary(names []string, timeout time.Duration) (string, node.Status) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, n := range names {
			st, err := c.status(n)
			if err == nil && st.Role == node.RolePrimary && st.Quorum.Serving {
				return n, st
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("none of %v became a serving primary within %v", names, timeout)
	return "", node.Status{}
}

// requireShardImagesDecode decodes the device from every pair of shard
// images of a stopped 2+2 cluster and compares it with the full copy of
// primary, and with n0's.
func requireShardImagesDecode(t *testing.T, cfg *config.Config, primary string) {
	t.Helper()
	m, _, err := cfg.Member(primary)
	require.NoError(t, err)
	want, err := os.ReadFile(filepath.Join(m.DataDir, "data.img"))
	require.NoError(t, err)
	n0, err := os.ReadFile(filepath.Join(cfg.Nodes[0].DataDir, "data.img"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, n0), "n0's full copy differs from %s's", primary)
	g := ec.Geometry{K: 2, M: 2, Chunk: config.ECChunk, Size: int64(cfg.Device.Size)}
	cd, err := ec.NewCoder(g)
	require.NoError(t, err)
	shards := make([][]byte, 4)
	for h := range shards {
		if cfg.Nodes[h+1].Name == primary {
			continue // its slot is vacant: it keeps the full copy
		}
		b, err := os.ReadFile(filepath.Join(cfg.Nodes[h+1].DataDir, "data.img"))
		require.NoError(t, err)
		require.Equal(t, g.ShardSize(), int64(len(b)), "compact shard image of %s", cfg.Nodes[h+1].Name)
		shards[h] = b
	}
	ectest.RequireEveryPairDecodes(t, cd, shards, want)
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

// startAs starts data node name and waits for a stdout line starting with
// wait.
func (c *replCluster) startAs(name, logName, wait string) *proc {
	c.t.Helper()
	return startMember(c.t, c.dir, logName, wait, "node", "--config", c.cfgPath, "--name", name)
}

package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

// waitServing waits until data node name reports itself the serving primary
// and returns how long that took.
func (c *replCluster) waitServing(name string, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		st, err := c.status(name)
		if err == nil && st.Role == node.RolePrimary && st.Quorum.Serving && !st.AwaitingPeers {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("%s not serving as primary within %v", name, timeout)
	return 0
}

// servingPrimary waits until exactly one data node serves as primary and
// returns its name.
func (c *replCluster) servingPrimary(timeout time.Duration) string {
	c.t.Helper()
	var found []string
	require.Eventually(c.t, func() bool {
		found = nil
		for _, m := range c.cfg.Nodes {
			if st, err := c.status(m.Name); err == nil && st.Role == node.RolePrimary && st.Quorum.Serving && !st.AwaitingPeers {
				found = append(found, m.Name)
			}
		}
		return len(found) == 1
	}, timeout, 20*time.Millisecond, "not exactly one serving primary: %v", found)
	return found[0]
}

// TestFailoverAfterKill9 kills the primary of 2 data nodes + witness with
// SIGKILL after fio verified its writes: the secondary takes over within the
// failover timeout and holds every acknowledged block; the old primary
// comes back as a secondary, and after a clean stop all images match.
func TestFailoverAfterKill9(t *testing.T) {
	t.Parallel()
	c, prim, sec := startFioPair(t, "64MiB")
	args := []string{"--size=16m", "--offset_increment=16m"}
	out := fioVerify(t, 2*time.Minute, prim.uri(), args...)

	prim.kill9()
	took := c.waitServing("n1", 10*time.Second)
	t.Logf("failover after kill -9: n1 serving %v after the kill was noticed by the test", took)
	require.Less(t, took, 3*time.Second, "failover too slow")
	out = run(t, 2*time.Minute, "fio", fioVerifyArgs(c.uri("n1"), append(args, "--verify_only")...)...)
	require.NotContains(t, out, "verify: bad", "the new primary lacks acknowledged writes:\n%s", out)
	require.Contains(t, out, "READ:", out)
	st, err := c.status("n1")
	require.NoError(t, err)
	require.Contains(t, st.Quorum.Outdated, "n0", "the dead primary is Outdated before writes go on")

	// New writes on the new primary; the old one rejoins as a secondary
	// (its unacknowledged tail, if any, is rewound and resynced).
	out = fioVerify(t, 2*time.Minute, c.uri("n1"), "--size=8m", "--offset_increment=8m", "--offset=64m")
	old := startMember(t, c.dir, "n0-again", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	require.Eventually(t, func() bool {
		st, err := c.status("n1")
		return err == nil && len(st.Peers) == 1 && st.Peers[0].Disk == node.DiskUpToDate && st.Peers[0].Behind == 0 && len(st.Quorum.Outdated) == 0
	}, 30*time.Second, 50*time.Millisecond, "n0 never caught up and Cleared")
	ost, err := c.status("n0")
	require.NoError(t, err)
	require.Equal(t, node.RoleSecondary, ost.Role)
	require.Equal(t, uint64(2), ost.Quorum.Epoch)

	c.stopAndCompare(old, sec)
}

// TestWitnessAndSecondaryLoss: losing the witness leaves the primary
// serving; losing the secondary too leaves it alone, a minority: it fences
// (requests fail with EIO) instead of acknowledging anything. When the
// members return there is one primary again and the data is identical.
func TestWitnessAndSecondaryLoss(t *testing.T) {
	t.Parallel()
	c, prim, sec := startFioPair(t, "64MiB")

	c.witness.kill9()
	out := run(t, 2*time.Minute, "fio", fioVerifyArgs(prim.uri(), "--size=8m", "--offset_increment=8m")...)
	require.NotContains(t, out, "verify: bad", "with the witness down the primary must keep serving:\n%s", out)

	sec.kill9()
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && !st.Quorum.Serving
	}, 5*time.Second, 10*time.Millisecond, "a lone primary must fence")
	out, err := runErr(30*time.Second, "fio", "--name=fenced", "--ioengine=nbd", "--uri="+prim.uri(), "--rw=write", "--bs=4k", "--size=64k")
	require.Error(t, err, "a fenced primary acknowledged writes:\n%s", out)
	require.Contains(t, out, "Input/output error", out)

	// Heal: the members return, one primary serves, everything agrees.
	c.witness = startMember(t, c.dir, "w-again", "ready witness", "witness", "--config", c.cfgPath, "--name", "w")
	sec = startMember(t, c.dir, "n1-again", "listening ", "node", "--config", c.cfgPath, "--name", "n1")
	p := c.servingPrimary(15 * time.Second)
	require.Eventually(t, func() bool {
		st, err := c.status(p)
		return err == nil && len(st.Peers) == 1 && st.Peers[0].Disk == node.DiskUpToDate && st.Peers[0].Behind == 0
	}, 30*time.Second, 50*time.Millisecond, "the other data node never caught up")
	out = fioVerify(t, 2*time.Minute, c.uri(p), "--size=8m", "--offset_increment=8m", "--verify_only")
	c.stopAndCompare(prim, sec)
}

// TestForcedPromotionSplitBrain: an Outdated node promoted with --force
// diverges from the old primary's data; when the old primary returns it
// detects the split brain, refuses to resync silently and reports it, until
// `grbd resolve --discard` says which side loses.
func TestForcedPromotionSplitBrain(t *testing.T) {
	t.Parallel()
	c, prim, sec := startFioPair(t, "64MiB")
	sec.kill9()
	// n1 is Outdated, then misses these writes.
	run(t, time.Minute, "fio", "--name=a", "--ioengine=nbd", "--uri="+prim.uri(), "--rw=write", "--bs=64k", "--size=4m")
	prim.kill9()
	sec = startMember(t, c.dir, "n1-forced", "listening ", "node", "--config", c.cfgPath, "--name", "n1")
	out, err := runErr(30*time.Second, grbdBin, "primary", "n1", "--config", c.cfgPath)
	require.Error(t, err, "an Outdated node must not be promoted without --force:\n%s", out)
	require.Contains(t, out, "Outdated")
	run(t, 30*time.Second, grbdBin, "primary", "n1", "--force", "--config", c.cfgPath)
	run(t, time.Minute, "fio", "--name=b", "--ioengine=nbd", "--uri="+c.uri("n1"), "--rw=write", "--bs=64k", "--size=2m", "--offset=8m")

	prim = startMember(t, c.dir, "n0-back", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && st.Disk == node.DiskSplitBrain
	}, 15*time.Second, 50*time.Millisecond, "n0 did not report the split brain")
	st, err := c.status("n1")
	require.NoError(t, err)
	require.Equal(t, node.DiskSplitBrain, st.Peers[0].Disk)

	run(t, 30*time.Second, grbdBin, "resolve", "--discard", "n0", "--config", c.cfgPath)
	require.Eventually(t, func() bool {
		st, err := c.status("n1")
		return err == nil && st.Peers[0].Disk == node.DiskUpToDate && st.Peers[0].Behind == 0
	}, 30*time.Second, 50*time.Millisecond, "n0 did not resync after resolve")
	c.stopAndCompare(prim, sec)
	_, err = os.Stat(filepath.Join(c.cfg.Nodes[0].DataDir, "resync"))
	require.ErrorIs(t, err, os.ErrNotExist, "n0 still Inconsistent")
}

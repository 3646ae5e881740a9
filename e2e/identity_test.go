package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/chaos"
	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

// wipeStore replaces a stopped data node's disk (chaos.WipeStore): its store
// goes, its control-plane state stays.
func wipeStore(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, chaos.WipeStore(dir))
}

// TestReplacedDiskIsNeverPromoted is the first case of issue 14 with the
// control-plane state kept: the secondary's disk is replaced while every
// member is stopped, and it starts with the witness only. It must not be
// promoted over the data (it would serve zeros and wipe the good copy when
// the other node returns); status says why; a promotion without force is
// refused. When the node with the data returns it becomes primary, the
// replaced disk gets a full sync, its new identity is recorded, and after
// the primary's death it serves every acknowledged write.
func TestReplacedDiskIsNeverPromoted(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio")
	c := newReplCluster(t, "C", "64MiB")
	n0 := c.start("n0", "n0")
	n1 := c.start("n1", "n1")
	st := c.waitPeersOf("n0", 20*time.Second, true)
	require.NotNil(t, st.Identity)
	args := []string{"--size=8m", "--offset_increment=8m", "--numjobs=2"}
	out := fioVerify(t, 2*time.Minute, n0.uri(), args...)
	require.Eventually(t, func() bool {
		st, err := c.status("n1")
		return err == nil && st.Identity != nil && st.Identity.Recorded == st.Identity.Disk && st.Identity.Promotable
	}, 10*time.Second, 50*time.Millisecond, "n1's disk never recorded")
	before, err := c.status("n1")
	require.NoError(t, err)

	stopAll(t, n0, n1, c.witness) // at once: nobody gets Outdated or promoted meanwhile
	wipeStore(t, c.cfg.Nodes[1].DataDir)

	c.witness = startMember(t, c.dir, "w-2", "ready witness", "witness", "--config", c.cfgPath, "--name", "w")
	n1 = c.start("n1", "n1-new-disk")
	time.Sleep(3 * time.Second) // five failover timeouts
	st, err = c.status("n1")
	require.NoError(t, err)
	require.Equal(t, node.RoleSecondary, st.Role, "a node on a replaced disk was promoted")
	require.NotNil(t, st.Identity)
	require.NotEqual(t, before.Identity.Disk, st.Identity.Disk, "a new store has a new identity")
	require.False(t, st.Identity.Promotable)
	require.Contains(t, st.Identity.NotPromotable, "not the recorded disk "+before.Identity.Disk)
	out, err = runErr(30*time.Second, grbdBin, "primary", "n1", "--config", c.cfgPath)
	require.Error(t, err, "promoting a node on a replaced disk without force must fail:\n%s", out)
	require.Contains(t, out, "not promotable", out)
	out = run(t, 30*time.Second, grbdBin, "status", "--config", c.cfgPath, "--timeout", "1s")
	require.Contains(t, out, "n1: not promotable: disk "+st.Identity.Disk+" is not the recorded disk", out)

	n0 = c.start("n0", "n0-back")
	c.waitPeersOf("n0", 60*time.Second, true)
	require.Contains(t, logOf(t, c, "n1-new-disk"), "full sync", "the replaced disk must get a full sync")
	require.Eventually(t, func() bool {
		st, err := c.status("n1")
		return err == nil && st.Identity != nil && st.Identity.Recorded == st.Identity.Disk && st.Identity.Promotable
	}, 10*time.Second, 50*time.Millisecond, "n1's new disk never recorded after its full sync")

	n0.kill9()
	c.waitServing("n1", 10*time.Second)
	out = run(t, 2*time.Minute, "fio", fioVerifyArgs(c.uri("n1"), append(args, "--verify_only")...)...)
	require.NotContains(t, out, "verify: bad", "the node on the replaced disk lacks acknowledged writes:\n%s", out)
	require.True(t, strings.Contains(out, "READ:"), out)
}

// TestDiskReplacedUnderRunningPrimary: the secondary's disk is replaced
// while the primary runs. It comes back Inconsistent, gets a full sync, and
// is never promoted before the sync finished: the primary is killed in the
// middle of it and the node stays a secondary until the primary returns;
// then the sync completes and the node serves every acknowledged write.
func TestDiskReplacedUnderRunningPrimary(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio")
	c := newReplCluster(t, "C", "64MiB")
	// A full sync of the 256 MiB device takes about 8 s at this rate.
	b, err := os.ReadFile(c.cfgPath)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(c.cfgPath, []byte(strings.Replace(string(b), "replication:\n", "replication:\n  resync-rate: 32MiB\n", 1)), 0o644))
	n0 := c.start("n0", "n0")
	n1 := c.start("n1", "n1")
	c.waitPeersOf("n0", 20*time.Second, true)
	args := []string{"--size=8m", "--offset_increment=8m", "--numjobs=2"}
	out := fioVerify(t, 2*time.Minute, n0.uri(), args...)

	n1.kill9()
	wipeStore(t, c.cfg.Nodes[1].DataDir)
	c.start("n1", "n1-new-disk")
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		if err != nil || len(st.Peers) != 1 {
			return false
		}
		p := st.Peers[0]
		return p.Disk == node.DiskInconsistent && p.ResyncDone > 0 && p.ResyncDone < p.ResyncTotal
	}, 30*time.Second, 20*time.Millisecond, "no full sync of the replaced disk")
	n0.kill9()
	time.Sleep(3 * time.Second) // five failover timeouts
	st, err := c.status("n1")
	require.NoError(t, err)
	require.Equal(t, node.RoleSecondary, st.Role, "a node in the middle of its full sync was promoted")
	require.Equal(t, node.DiskInconsistent, st.Disk)
	require.False(t, st.Identity.Promotable)

	c.start("n0", "n0-back")
	c.waitPeersOf("n0", 90*time.Second, true)
	require.Eventually(t, func() bool {
		st, err := c.status("n1")
		return err == nil && st.Identity != nil && st.Identity.Promotable && st.Disk == node.DiskUpToDate
	}, 10*time.Second, 50*time.Millisecond, "n1 not UpToDate and promotable after its full sync")
	run(t, 30*time.Second, grbdBin, "primary", "n1", "--config", c.cfgPath)
	c.waitServing("n1", 10*time.Second)
	out = run(t, 2*time.Minute, "fio", fioVerifyArgs(c.uri("n1"), append(args, "--verify_only")...)...)
	require.NotContains(t, out, "verify: bad", "the node on the replaced disk lacks acknowledged writes:\n%s", out)
}

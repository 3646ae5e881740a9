package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSwappedDisksAreNamedAndNeverPromoted: the operator swaps the two data
// nodes' disks while the cluster is down; the disk n0 gets missed writes
// that only the other one holds. Neither node is promoted with the other's
// disk, and each says whose disk it holds (the stale one must never serve,
// and a full sync from it would overwrite the only complete copy). Swapped
// back, the cluster serves every write again.
func TestSwappedDisksAreNamedAndNeverPromoted(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio")
	c := newReplCluster(t, "C", "64MiB")
	n0, n1 := c.startPair()
	fioWrite(t, c.uri("n0"), "0", "8m")
	n1.stop()
	fioWrite(t, c.uri("n0"), "8m", "8m") // only n0's disk has these
	n0.stop()
	swap := func() {
		d0, d1 := c.cfg.Nodes[0].DataDir, c.cfg.Nodes[1].DataDir
		require.NoError(t, os.Rename(d0, d0+".x"))
		require.NoError(t, os.Rename(d1, d0))
		require.NoError(t, os.Rename(d0+".x", d1))
	}
	swap()
	n0 = startMember(t, c.dir, "n0-with-n1s-disk", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	n1 = startMember(t, c.dir, "n1-with-n0s-disk", "listening ", "node", "--config", c.cfgPath, "--name", "n1")
	whose := map[string]string{"n0": "n1", "n1": "n0"}
	require.Eventually(t, func() bool {
		for me, owner := range whose {
			st, err := c.status(me)
			if err != nil || st.Identity.Promotable || !strings.Contains(st.Identity.NotPromotable, "the recorded disk of "+owner) {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "the nodes do not say whose disks they hold")
	time.Sleep(3 * time.Second) // a failover takes about a second
	for me := range whose {
		st, err := c.status(me)
		require.NoError(t, err)
		require.NotEqual(t, "Primary", string(st.Role), "%s was promoted with another node's disk", me)
	}
	stopAll(t, n0, n1)

	swap()
	n0 = c.start("n0", "n0-again")
	n1 = c.start("n1", "n1-again")
	c.waitPeersOf("n0", time.Minute, true)
	out := run(t, time.Minute, "fio", "--name=w", "--ioengine=nbd", "--uri="+c.uri("n0"), "--rw=write", "--bs=64k",
		"--size=16m", "--verify=crc32c", "--verify_only", "--verify_fatal=1")
	require.NotContains(t, out, "verify: bad", out)
	c.stopAndCompare(n0, n1)
}

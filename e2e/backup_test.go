package e2e

import (
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRestoredBackupOfThePrimaryIsNotServed: the primary's data directory
// is restored from a copy taken before writes that were then acknowledged
// on both nodes (a backup, a snapshot). The control plane cannot see it:
// the node was never Outdated and its disk is the recorded one. It must
// not serve as the primary of an epoch its disk has no record of, since
// the peer would be rewound and every write after the copy lost; the peer
// takes over, the restored node catches up from it, and every write is
// there.
func TestRestoredBackupOfThePrimaryIsNotServed(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio", "cp")
	c := newReplCluster(t, "C", "64MiB")
	n0, n1 := c.startPair()
	fioWrite(t, c.uri("n0"), "0", "8m")
	stopAll(t, n0, n1)
	d0 := c.cfg.Nodes[0].DataDir
	out, err := exec.Command("cp", "-a", d0, d0+".backup").CombinedOutput()
	require.NoError(t, err, string(out))
	n0 = c.start("n0", "n0")
	n1 = c.start("n1", "n1")
	c.waitPeersOf("n0", time.Minute, true)
	fioWrite(t, c.uri("n0"), "8m", "8m") // after the copy
	stopAll(t, n0, n1)
	out, err = exec.Command("sh", "-c", "rm -rf "+d0+" && mv "+d0+".backup "+d0).CombinedOutput()
	require.NoError(t, err, string(out))

	n0 = startMember(t, c.dir, "n0-restored", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	n1 = startMember(t, c.dir, "n1-again", "listening ", "node", "--config", c.cfgPath, "--name", "n1")
	require.Equal(t, "n1", c.servingPrimary(30*time.Second), "the restored disk serves")
	fout := run(t, time.Minute, "fio", "--name=w", "--ioengine=nbd", "--uri="+c.uri("n1"), "--rw=write", "--bs=64k",
		"--size=16m", "--verify=crc32c", "--verify_only", "--verify_fatal=1")
	require.NotContains(t, fout, "verify: bad", fout)
	c.waitPeersOf("n1", time.Minute, true)
	st, err := c.status("n0")
	require.NoError(t, err)
	require.True(t, st.Identity.Promotable, "n0 caught up but is not promotable: %s", st.Identity.NotPromotable)
	c.stopAndCompare(n0, n1)
}

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A power loss can leave an image with bytes of writes its journal lost
// (docs/journal.md, "Activity log"). These tests make one: kill -9, then
// bytes written straight into the killed node's data.img inside a region
// it had just written (what a lost write leaves), then a restart in
// another boot (--boot-id; the page cache of the old one is gone). The
// images must be equal again once the cluster is in sync: without the
// activity log the planted bytes stay on one copy.

const rebooted = "--boot-id=after-the-power-loss"

// plantLostWrite writes 4 KiB of bytes no client wrote into name's image at
// 4 KiB, where the workload wrote just before.
func plantLostWrite(t *testing.T, c *replCluster, name string) {
	t.Helper()
	m, _, err := c.cfg.Member(name)
	require.NoError(t, err)
	f, err := os.OpenFile(filepath.Join(m.DataDir, "data.img"), os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte(strings.Repeat("lost write, never acknowledged. ", 128)), 4096)
	require.NoError(t, err)
}

// startWrittenPair starts a 64 MiB fio pair (startFioPair), has fio write
// and verify 8 MiB per job on the primary and waits for the secondary to
// be in sync.
func startWrittenPair(t *testing.T) (c *replCluster, prim, sec *proc) {
	t.Helper()
	c, prim, sec = startFioPair(t, "64MiB")
	fioVerify(t, 2*time.Minute, prim.uri(), "--size=8m", "--offset_increment=8m")
	c.waitPeer(10 * time.Second)
	return c, prim, sec
}

// reboot starts data node name again after its power loss, logging to
// name-rebooted.log.
func (c *replCluster) reboot(name string) *proc {
	c.t.Helper()
	return startMember(c.t, c.dir, name+"-rebooted", "listening ", "node", "--config", c.cfgPath, "--name", name, rebooted)
}

// A secondary's power loss: back, it resyncs what it held in doubt from the
// primary before it counts as UpToDate.
func TestPowerLossOfSecondary(t *testing.T) {
	t.Parallel()
	c, prim, sec := startWrittenPair(t)
	sec.kill9()
	plantLostWrite(t, c, "n1")
	sec = c.reboot("n1")
	c.waitPeer(30 * time.Second)
	c.stopAndCompare(prim, sec)
	require.Contains(t, logOf(t, c, "n1-rebooted"), "left regions that may differ from the primary's")
}

// Both data nodes lose power: whichever is promoted writes what it held in
// doubt again through replication, the other resyncs its own.
func TestPowerLossOfWholeCluster(t *testing.T) {
	t.Parallel()
	c, prim, sec := startWrittenPair(t)
	prim.kill9()
	sec.kill9()
	plantLostWrite(t, c, "n0")
	n0 := c.reboot("n0")
	n1 := c.reboot("n1")
	p := c.servingPrimary(30 * time.Second)
	c.waitPeersOf(p, 30*time.Second, true)
	require.Eventually(t, func() bool {
		for _, name := range []string{"n0", "n1"} {
			if st, err := c.status(name); err != nil || st.Journal.SuspectBytes != 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "suspects left after the power loss")
	c.waitPeersOf(p, 30*time.Second, true)
	c.stopAndCompare(n0, n1)
	require.Contains(t, logOf(t, c, p+"-rebooted"), "written again through replication")
}

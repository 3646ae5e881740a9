package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/nbdclient"
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

// A block that rots while a crashed secondary is down is caught after the
// restart: the node keeps its block IDs in data.sum and re-reads only the
// activity log's extents (four here, of a 256 MiB device), not the cold
// block. Made primary, it repairs the block from its peer and returns the
// written bytes. (Before, a restart after a crash rebuilt every ID from
// data.img, took the rotten bytes for the data, and served them.)
func TestRotAfterCrashRepaired(t *testing.T) {
	t.Parallel()
	c := newReplCluster(t, "C", "64MiB\n  activity-extents: 4")
	n0, n1 := c.startPair()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := nbdclient.DialURI(ctx, c.uri("n0"), nbdclient.Options{})
	require.NoError(t, err)
	want := []byte(strings.Repeat("a block written once, then left alone.  ", 128)[:4096])
	require.NoError(t, cl.WriteAt(ctx, want, 0, 0))
	require.NoError(t, cl.Flush(ctx))
	// Writes far away push block 0's extent out of the activity log (4 hot
	// extents), and on until n1 checkpointed past block 0's record (replay
	// would rewrite the block otherwise).
	// (32 KiB writes: journaled with their data, they fill the journal;
	// larger ones go in place and barely do.)
	small := make([]byte, 32<<10)
	checkpointed := false
	for i := int64(0); i < 3072 && !checkpointed; i++ {
		require.NoError(t, cl.WriteAt(ctx, small, 128<<20+i*int64(len(small)), 0))
		if i%32 == 31 {
			require.NoError(t, cl.Flush(ctx))
			st, err := c.status("n1")
			checkpointed = err == nil && st.Journal.CheckpointSeq > 1
		}
	}
	require.True(t, checkpointed, "n1 never checkpointed")
	require.NoError(t, cl.Close())
	c.waitPeer(10 * time.Second)

	n1.kill9()
	m, _, err := c.cfg.Member("n1")
	require.NoError(t, err)
	f, err := os.OpenFile(filepath.Join(m.DataDir, "data.img"), os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("rot"), 100)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	n1 = c.start("n1", "n1-back") // the same boot: a process crash
	c.waitPeer(30 * time.Second)
	require.Contains(t, logOf(t, c, "n1-back"), "re-read the block checksums a crash can have left stale")

	run(t, 30*time.Second, grbdBin, "secondary", "n0", "--config", c.cfgPath)
	run(t, 30*time.Second, grbdBin, "primary", "n1", "--config", c.cfgPath)
	c.waitServing("n1", 15*time.Second)
	cl, err = nbdclient.DialURI(ctx, c.uri("n1"), nbdclient.Options{})
	require.NoError(t, err)
	got := make([]byte, 4096)
	require.NoError(t, cl.ReadAt(ctx, got, 0))
	require.NoError(t, cl.Close())
	require.True(t, bytes.Equal(want, got), "the rotten block was served: %q", got[:64])
	st, err := c.status("n1")
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Checksums.Repaired, "the block was not repaired from the peer")
	stopAll(t, n0, n1)
}

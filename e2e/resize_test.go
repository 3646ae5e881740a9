package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
)

// nbdExportSize is the size nbdinfo reports on a new connection to uri.
func nbdExportSize(t *testing.T, uri string) int64 {
	t.Helper()
	var info struct {
		Exports []struct {
			Size int64 `json:"export-size"`
		} `json:"exports"`
	}
	out := run(t, 30*time.Second, "nbdinfo", "--json", uri)
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	require.Len(t, info.Exports, 1)
	return info.Exports[0].Size
}

// fioWrite writes size bytes at offset with fio and checks them back.
func fioWrite(t *testing.T, uri, offset, size string) {
	t.Helper()
	out := run(t, 2*time.Minute, "fio", "--name=w", "--ioengine=nbd", "--uri="+uri, "--rw=write", "--bs=64k", "--iodepth=8",
		"--offset="+offset, "--size="+size, "--verify=crc32c", "--verify_fatal=1", "--do_verify=1")
	require.Contains(t, out, "WRITE:", out)
	require.NotContains(t, out, "verify: bad", out)
}

// TestResize grows a running 2-node + witness cluster with grbd resize:
// bad requests change nothing; a good one grows both nodes, a new NBD
// connection sees the new size, and writes past the old end reach the peer.
// A second grow while the secondary is killed: it grows when it returns
// (catch-up). After a clean stop both images have the new size and are
// byte-identical.
func TestResize(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio", "nbdinfo")
	dir := t.TempDir()
	path := clusterConfig(t, dir, 2, "32MiB", "replication:\n  protocol: C\n")
	cfg, err := config.Load(path)
	require.NoError(t, err)
	c := &replCluster{t: t, dir: dir, cfgPath: path, cfg: cfg}
	c.witness = startMember(t, dir, "w", "ready witness", "witness", "--config", path, "--name", "w")
	prim, sec := c.startPair()
	fioWrite(t, prim.uri(), "0", "8m")

	resize := func(args ...string) (string, error) {
		return runErr(time.Minute, grbdBin, append([]string{"resize", "--config", path}, args...)...)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--size", "16MiB"}, "only grows"},
		{[]string{"--size", "2GB!"}, `--size "2GB!"`},
		{[]string{"n1", "--size", "64MiB"}, "not primary"},
	} {
		out, err := resize(bad.args...)
		require.Error(t, err, out)
		require.Contains(t, out, bad.want)
	}
	for _, n := range []string{"n0", "n1"} {
		st, err := c.status(n)
		require.NoError(t, err)
		require.EqualValues(t, 32<<20, st.DeviceSize, "%s changed by a refused resize", n)
	}
	require.EqualValues(t, 32<<20, nbdExportSize(t, prim.uri()))

	out, err := resize("--size", "64MiB")
	require.NoError(t, err, out)
	require.Contains(t, out, "device grown to 64MiB")
	require.EqualValues(t, 64<<20, nbdExportSize(t, prim.uri()), "a new connection sees the new size")
	fioWrite(t, prim.uri(), "40m", "8m")
	st := c.waitPeer(10 * time.Second)
	require.EqualValues(t, 64<<20, st.DeviceSize)
	sst, err := c.status("n1")
	require.NoError(t, err)
	require.EqualValues(t, 64<<20, sst.DeviceSize)
	human := run(t, 30*time.Second, grbdBin, "status", "--config", path)
	require.Contains(t, human, "device 64MiB (config device.size 32MiB)", human)

	// The secondary is away during the next grow and the writes past it.
	sec.kill9()
	out, err = resize("--size", "96MiB")
	require.NoError(t, err, out)
	fioWrite(t, prim.uri(), "80m", "8m")
	sec = c.start("n1", "n1-restarted")
	c.waitPeer(30 * time.Second)
	sst, err = c.status("n1")
	require.NoError(t, err)
	require.EqualValues(t, 96<<20, sst.DeviceSize)

	prim.stop()
	sec.stop()
	for _, m := range cfg.Nodes {
		fi, err := os.Stat(filepath.Join(m.DataDir, "data.img"))
		require.NoError(t, err)
		require.EqualValues(t, 96<<20, fi.Size(), "%s image size", m.Name)
	}
	c.requireSameImages()
	require.Contains(t, logOf(t, c, "n1-restarted"), "device grown", "n1 grew on its return")
}

// TestSplitBrainLoserThatGrewTakesTheWinnersSize: a primary grows while its
// peer is away and is then lost; the peer is promoted with --force at the
// old size. The old primary's grow was acknowledged by no node that is now
// primary, so when `grbd resolve --discard` makes it resync from the
// winner, it takes the winner's smaller size instead of keeping its own
// (before, a store never shrank: the two images' sizes differed until the
// operator grew the cluster to match).
func TestSplitBrainLoserThatGrewTakesTheWinnersSize(t *testing.T) {
	t.Parallel()
	requireTools(t, "nbdinfo")
	c, prim, sec := startFioPair(t, "64MiB") // a 256 MiB device
	sec.kill9()
	out, err := runErr(time.Minute, grbdBin, "resize", "--config", c.cfgPath, "--size", "320MiB")
	require.NoError(t, err, out)
	fioWrite(t, prim.uri(), "260m", "2m") // past the old end
	prim.kill9()

	sec = startMember(t, c.dir, "n1-forced", "listening ", "node", "--config", c.cfgPath, "--name", "n1")
	run(t, 30*time.Second, grbdBin, "primary", "n1", "--force", "--config", c.cfgPath)
	fioWrite(t, c.uri("n1"), "8m", "2m")
	prim = startMember(t, c.dir, "n0-back", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && st.Disk == node.DiskSplitBrain
	}, 15*time.Second, 50*time.Millisecond, "n0 did not report the split brain")
	run(t, 30*time.Second, grbdBin, "resolve", "--discard", "n0", "--config", c.cfgPath)
	require.Eventually(t, func() bool {
		st, err := c.status("n1")
		return err == nil && len(st.Peers) == 1 && st.Peers[0].Disk == node.DiskUpToDate && st.Peers[0].Behind == 0
	}, 30*time.Second, 50*time.Millisecond, "n0 did not resync after resolve")
	st, err := c.status("n0")
	require.NoError(t, err)
	require.EqualValues(t, 256<<20, st.DeviceSize, "n0 kept the size of a grow no primary has")
	c.stopAndCompare(prim, sec)
}

// TestGrowDuringResync: the cluster grows while a wiped secondary is still
// Inconsistent in its full resync, and writes land past the old end. The
// resync planned at the old size finishes, the secondary takes the grow and
// the writes past the old end, and both images end equal at the new size.
func TestGrowDuringResync(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio", "nbdinfo")
	c := resumeCluster(t, 2, "256MiB", "32MiB")
	n0 := c.start("n0", "n0")
	n1 := c.start("n1", "n1")
	c.waitPeersOf("n0", 20*time.Second, true)
	fioWrite(t, c.uri("n0"), "0", "16m")
	n1.stop()
	wipeStore(t, c.cfg.Nodes[1].DataDir)
	n1 = c.start("n1", "n1-wiped")
	waitResync(t, c, "n0", "n1", 0.2)

	out, err := runErr(time.Minute, grbdBin, "resize", "--config", c.cfgPath, "--size", "320MiB")
	require.NoError(t, err, out)
	st, err := c.status("n0")
	require.NoError(t, err)
	require.Equal(t, node.DiskInconsistent, st.Peers[0].Disk, "the grow did not land during the resync")
	fioWrite(t, c.uri("n0"), "260m", "2m") // past the old end
	c.waitPeersOf("n0", 2*time.Minute, true)
	for _, n := range []string{"n0", "n1"} {
		st, err := c.status(n)
		require.NoError(t, err)
		require.EqualValues(t, 320<<20, st.DeviceSize, "%s", n)
	}
	c.stopAndCompare(n0, n1)
}

package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fioVerifyArgs is a randwrite QD32 workload over 4 connections, each on its
// own 32 MiB slice, every block stamped with a crc32c verify header.
func fioVerifyArgs(uri string, extra ...string) []string {
	args := []string{
		"--name=verify", "--ioengine=nbd", "--uri=" + uri, "--rw=randwrite", "--bs=4k",
		"--iodepth=32", "--numjobs=4", "--size=32m", "--offset_increment=32m",
		"--verify=crc32c", "--verify_fatal=1", "--randrepeat=1", "--group_reporting",
	}
	return append(args, extra...)
}

// startFioVerify starts fio with fioVerifyArgs(uri, extra...) in the
// background. The function it returns waits for fio (2 minutes at most),
// requires that it verified every block, and returns its output.
func startFioVerify(t *testing.T, uri string, extra ...string) func() string {
	t.Helper()
	fio := exec.Command("fio", fioVerifyArgs(uri, extra...)...)
	fio.Dir = t.TempDir() // fio leaves verify state files there
	var out strings.Builder
	fio.Stdout, fio.Stderr = &out, &out
	require.NoError(t, fio.Start())
	done := make(chan error, 1)
	go func() { done <- fio.Wait() }()
	return func() string {
		t.Helper()
		select {
		case err := <-done:
			require.NoError(t, err, out.String())
		case <-time.After(2 * time.Minute):
			t.Fatal("fio hangs")
		}
		require.NotContains(t, out.String(), "verify: bad", out.String())
		require.Contains(t, out.String(), "WRITE:", out.String())
		return out.String()
	}
}

// fioVerify runs fio with fioVerifyArgs(uri, extra...) and requires that it
// verified every block; it returns fio's output.
func fioVerify(t *testing.T, timeout time.Duration, uri string, extra ...string) string {
	t.Helper()
	out := run(t, timeout, "fio", fioVerifyArgs(uri, extra...)...)
	require.NotContains(t, out, "verify: bad", out)
	return out
}

// startFioNode requires fio and starts n0 of a one-node 256 MiB cluster
// whose config file, cfg, is written to dir.
func startFioNode(t *testing.T, dir string) (cfg string, n0 *proc) {
	t.Helper()
	requireTools(t, "fio")
	cfg = clusterConfig(t, dir, 1, "256MiB", "")
	return cfg, startGrbd(t, dir, "n0", "node", "--config", cfg, "--name", "n0")
}

// TestFioVerifySurvivesKill writes with fio's verifier through several NBD
// connections, checks the data, kills the node with SIGKILL (no clean
// shutdown, no checkpoint), restarts it and has fio verify every block again:
// the journal replay must reproduce exactly what was acknowledged. The 128 MiB
// of writes overflow the 64 MiB journal, so checkpoints and segment recycling
// run during the workload.
func TestFioVerifySurvivesKill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, node := startFioNode(t, dir)
	uri := node.uri()
	out := run(t, 5*time.Minute, "fio", fioVerifyArgs(uri)...)
	require.NotContains(t, out, "verify: bad", "fio verify failed:\n%s", out)
	require.Contains(t, out, "WRITE:", "fio printed no write summary:\n%s", out)

	node.kill9()
	node = startGrbd(t, dir, "n0-restarted", "node", "--config", cfg, "--name", "n0")
	out = run(t, 5*time.Minute, "fio", fioVerifyArgs(node.uri(), "--verify_only")...)
	require.NotContains(t, out, "verify: bad", "after kill -9 and replay:\n%s", out)
	require.Contains(t, out, "READ:", "verify pass read nothing:\n%s", out)

	// The status command sees the restarted node and its journal position.
	status := run(t, 30*time.Second, grbdBin, "status", "--config", cfg)
	require.Contains(t, status, "n0")
	require.Contains(t, status, "Primary")
	node.stop()
}

// TestFioWithFlush interleaves FLUSH (fio's fsync maps to NBD_CMD_FLUSH) with
// writes on two connections, then verifies.
func TestFioWithFlush(t *testing.T) {
	t.Parallel()
	_, node := startFioNode(t, t.TempDir())
	out := fioVerify(t, 5*time.Minute, node.uri(), "--fsync=16", "--size=8m", "--offset_increment=8m", "--numjobs=2")
	require.True(t, strings.Contains(out, "WRITE:"), out)
	node.stop()
}

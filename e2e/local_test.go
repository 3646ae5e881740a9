package e2e

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/datadir"
	"github.com/stretchr/testify/require"
)

// A member that dies while `grbd local` starts the cluster (here the
// witness: its data directory is locked by another process) stops every
// member, and grbd local exits non-zero (issue 15: it kept running with
// the others alone).
func TestLocalStopsWhenAMemberFailsToStart(t *testing.T) {
	dir := t.TempDir()
	cdir := filepath.Join(dir, "cluster")
	hold, err := datadir.Acquire(filepath.Join(cdir, "witness"))
	require.NoError(t, err)
	defer hold.Release()

	nbdPort, base, _ := localPorts(t)
	cmd := exec.Command(grbdBin, "local", "--dir", cdir, "--size", "64MiB", "--nbd-port", strconv.Itoa(nbdPort), "--base-port", strconv.Itoa(base))
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("grbd local still runs with a member that failed to start:\n%s", out)
	}
	require.Error(t, err, "grbd local exits non-zero")
	require.Contains(t, string(out), "member witness pid")
	require.Contains(t, string(out), "exited during start")
	require.Contains(t, string(out), "data directory in use")
	// Every member stopped: their data directories are free again.
	for _, name := range []string{"alpha", "beta"} {
		l, err := datadir.Acquire(filepath.Join(cdir, name))
		require.NoError(t, err, "%s still runs:\n%s", name, out)
		require.NoError(t, l.Release())
	}
	t.Logf("grbd local: %v\n%s", err, tail(string(out), 1500))
}

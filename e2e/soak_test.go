package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLeaseSoak runs 2 data nodes + witness with the default (LAN) timings
// on a machine loaded by a CPU hog on every core, idle and then under a
// steady fio write load, and counts the times the primary lost its lease
// (`fenced` events) and the I/O errors fio saw. Issue 15: a busy host must
// not make the primary fence itself now and then. Long: it runs only when
// GRBD_SOAK is set to the duration of each half (`make soak`, 10m).
// GRBD_SOAK_BIN runs another grbd binary, GRBD_SOAK_LEASE another lease.
func TestLeaseSoak(t *testing.T) {
	soak := os.Getenv("GRBD_SOAK")
	if soak == "" {
		t.Skip("set GRBD_SOAK=DURATION (make soak) to run the lease soak")
	}
	d, err := time.ParseDuration(soak)
	require.NoError(t, err)
	requireTools(t, "fio")
	if bin := os.Getenv("GRBD_SOAK_BIN"); bin != "" {
		grbdBin, oldBinary = bin, true // compare another build, e.g. an older release
	}
	dir := t.TempDir()
	// The defaults the README's clusters run with, not the tests' tolerant
	// ones; GRBD_SOAK_LEASE compares another lease (e.g. the old 250ms).
	quorum := "quorum:\n  tick: 10ms\n"
	if l := os.Getenv("GRBD_SOAK_LEASE"); l != "" {
		quorum += "  lease: " + l + "\n"
	}
	cfgPath := clusterConfig(t, dir, 2, "256MiB", quorum)
	w := startMember(t, dir, "w", "ready witness", "witness", "--config", cfgPath, "--name", "w")
	n0 := startMember(t, dir, "n0", "ready ", "node", "--config", cfgPath, "--name", "n0")
	startMember(t, dir, "n1", "listening ", "node", "--config", cfgPath, "--name", "n1")
	_ = w
	time.Sleep(2 * time.Second)

	for i := 0; i < runtime.NumCPU(); i++ {
		hog := exec.Command("sh", "-c", "while :; do :; done")
		require.NoError(t, hog.Start())
		t.Cleanup(func() { _ = hog.Process.Signal(syscall.SIGKILL); _ = hog.Wait() })
	}
	fencedIdle := countFenced(t, dir)
	time.Sleep(d)
	fencedIdle = countFenced(t, dir) - fencedIdle

	fencedBefore := countFenced(t, dir)
	out, ferr := runErr(d+2*time.Minute, "fio", "--name=soak", "--ioengine=nbd", "--uri="+n0.uri(), "--rw=randwrite", "--bs=4k",
		"--iodepth=8", "--size=128m", "--time_based", fmt.Sprintf("--runtime=%ds", int(d.Seconds())), "--rate_iops=500")
	fencedBusy := countFenced(t, dir) - fencedBefore
	t.Logf("lease soak, %v idle + %v busy (500 writes/s), a CPU hog on each of %d cores: fenced %d times idle, %d times busy; fio: %v",
		d, d, runtime.NumCPU(), fencedIdle, fencedBusy, ferr)
	require.NoError(t, ferr, "fio saw an I/O error:\n%s", tail(out, 4096))
	require.Zero(t, fencedIdle+fencedBusy, "spurious fencing on a busy host")
}

// countFenced counts the fenced events in the members' logs under dir.
func countFenced(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, name := range []string{"n0", "n1"} {
		b, err := os.ReadFile(fmt.Sprintf("%s/%s.log", dir, name))
		require.NoError(t, err)
		n += strings.Count(string(b), "type=fenced")
	}
	return n
}

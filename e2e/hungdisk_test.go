package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

// hangableDisk is an ext4 file system on nbdkit's memory plugin (through
// nbdfuse and a loop device) that hangs while nbdkit is stopped: every
// write, sync and read that reaches it waits, nothing fails.
type hangableDisk struct {
	mnt    string
	nbdkit *exec.Cmd
}

func newHangableDisk(t *testing.T, dir string) *hangableDisk {
	t.Helper()
	requireMountPrivileges(t)
	requireTools(t, "nbdkit")
	sock := filepath.Join(dir, "nbdkit.sock")
	d := &hangableDisk{nbdkit: exec.Command("nbdkit", "-f", "-U", sock, "memory", "1G")}
	d.nbdkit.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, d.nbdkit.Start())
	t.Cleanup(func() { _ = d.nbdkit.Process.Kill(); _ = d.nbdkit.Wait() }) // after the file system is gone
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 10*time.Second, 20*time.Millisecond)
	m := attach(t, dir, "nbd+unix:///?socket="+sock)
	run(t, time.Minute, "mkfs.ext4", "-q", m.loop)
	m.mount()
	d.mnt = m.mnt
	return d
}

// hang stops the disk; the returned func (also run at the test's end, before
// the processes on it are stopped: they cannot exit while inside it) lets it
// answer again.
func (d *hangableDisk) hang(t *testing.T) (answer func()) {
	require.NoError(t, d.nbdkit.Process.Signal(syscall.SIGSTOP))
	answer = func() { _ = d.nbdkit.Process.Signal(syscall.SIGCONT) }
	t.Cleanup(answer)
	return answer
}

// A primary whose disk hangs (nothing fails, nothing returns) is detached
// after device.disk-timeout: it gives the role back, the peer serves, and a
// client of grbd proxy sees a pause, not an error. Its status still answers
// and shows the disk Failed. Without the detach, the primary kept its lease
// and the proxy's requests failed with EIO after its 30 s hold timeout.
func TestHungPrimaryDiskFailsOver(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	disk := newHangableDisk(t, dir)
	p := clusterConfig(t, dir, 2, "256MiB", "replication:\n  protocol: C\n")
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	yaml := strings.Replace(string(b), "size: 256MiB", "size: 256MiB\n  disk-timeout: 3s", 1)
	yaml = strings.Replace(yaml, "data-dir: n0\n", "data-dir: "+filepath.Join(disk.mnt, "n0")+"\n", 1)
	require.NoError(t, os.WriteFile(p, []byte(yaml), 0o644))
	cfg, err := config.Load(p)
	require.NoError(t, err)
	c := &replCluster{t: t, dir: dir, cfgPath: p, cfg: cfg}
	c.witness = startMember(t, dir, "w", "ready witness", "witness", "--config", p, "--name", "w")
	c.startPair()
	_, uri := c.startProxy(grbdBin)
	fio := func(offset string) (string, error) {
		return runErr(60*time.Second, "fio", "--name=w", "--ioengine=nbd", "--uri="+uri, "--rw=randwrite", "--bs=4k",
			"--iodepth=8", "--fsync=16", "--size=1m", "--offset="+offset)
	}
	out, err := fio("0")
	require.NoError(t, err, out)

	answer := disk.hang(t)
	hung := time.Now()
	out, err = fio("4m")
	require.NoError(t, err, "writes through the proxy while the primary's disk hangs:\n%s", out)
	took := time.Since(hung)
	t.Logf("1 MiB written through the proxy %v after the primary's disk hung", took.Round(time.Millisecond))
	require.Less(t, took, 20*time.Second)
	st, err := c.status("n1")
	require.NoError(t, err)
	require.Equal(t, node.RolePrimary, st.Role)
	// Its status answers (the first read of the journal's figures may
	// wait 2 s, as long as this client does) and says why.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, err := c.status("n0")
		if err == nil && st.Disk == node.DiskFailed && strings.Contains(st.DiskError, "disk not answering") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the detached node's status: disk %q (%s), err %v", st.Disk, st.DiskError, err)
		}
	}
	answer()
}

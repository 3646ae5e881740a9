package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/nbdkernel"
	"github.com/stretchr/testify/require"
)

// mountedFS is an ext4 filesystem on a grbd export, through the only path this
// kernel offers without an NBD driver: nbdfuse exposes the export as a file,
// losetup turns the file into a block device, mount mounts it.
type mountedFS struct {
	t       *testing.T
	fuseDir string
	mnt     string
	loop    string
	fuse    *exec.Cmd
	fuseEnd chan struct{}
}

func requireMountPrivileges(t *testing.T) {
	t.Helper()
	requireTools(t, "nbdfuse", "losetup", "mkfs.ext4", "e2fsck", "fusermount3")
	if os.Geteuid() != 0 {
		t.Skip("the ext4 test needs root (losetup, mount); run `make test` as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("the ext4 test needs /dev/fuse: ", err)
	}
}

// attach starts nbdfuse for uri and a loop device on its file.
func attach(t *testing.T, dir, uri string) *mountedFS {
	t.Helper()
	m := &mountedFS{t: t, fuseDir: filepath.Join(dir, "fuse"), mnt: filepath.Join(dir, "mnt"), fuseEnd: make(chan struct{})}
	require.NoError(t, os.MkdirAll(m.fuseDir, 0o755))
	require.NoError(t, os.MkdirAll(m.mnt, 0o755))
	m.fuse = exec.Command("nbdfuse", m.fuseDir, uri)
	m.fuse.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, m.fuse.Start())
	go func() { _ = m.fuse.Wait(); close(m.fuseEnd) }()
	file := filepath.Join(m.fuseDir, "nbd")
	require.Eventually(t, func() bool { st, err := os.Stat(file); return err == nil && st.Size() > 0 }, 20*time.Second, 50*time.Millisecond, "nbdfuse did not expose %s", file)
	m.loop = strings.TrimSpace(run(t, 30*time.Second, "losetup", "--find", "--show", file))
	t.Cleanup(m.detach)
	return m
}

func (m *mountedFS) mount() { run(m.t, time.Minute, "mount", "-t", "ext4", m.loop, m.mnt) }

func (m *mountedFS) umount() { run(m.t, time.Minute, "umount", m.mnt) }

// detach tears the stack down in reverse order; it tolerates a dead server.
func (m *mountedFS) detach() {
	if m.loop == "" {
		return
	}
	if _, err := runErr(30*time.Second, "umount", m.mnt); err != nil {
		_, _ = runErr(30*time.Second, "umount", "-l", m.mnt)
	}
	_, _ = runErr(30*time.Second, "losetup", "-d", m.loop)
	_, _ = runErr(30*time.Second, "fusermount3", "-u", m.fuseDir)
	select {
	case <-m.fuseEnd:
	case <-time.After(10 * time.Second):
		_ = m.fuse.Process.Kill()
		<-m.fuseEnd
	}
	m.loop = ""
}

// writeFiles writes n files of random sizes and returns their checksums.
func writeFiles(t *testing.T, dir, prefix string, n int) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for i := 0; i < n; i++ {
		b := make([]byte, 4096*(1+i*37%500)+i)
		_, _ = rand.Read(b)
		name := filepath.Join(dir, fmt.Sprintf("%s-%03d.bin", prefix, i))
		require.NoError(t, os.WriteFile(name, b, 0o644))
		h := sha256.Sum256(b)
		sums[name] = hex.EncodeToString(h[:])
	}
	return sums
}

func checkFiles(t *testing.T, sums map[string]string, when string) {
	t.Helper()
	for name, want := range sums {
		b, err := os.ReadFile(name)
		require.NoError(t, err, when)
		h := sha256.Sum256(b)
		require.Equal(t, want, hex.EncodeToString(h[:]), "%s: %s changed", when, name)
	}
}

// TestExt4SurvivesKill makes an ext4 filesystem on grbd, writes files,
// checks them across an unmount/remount, then writes more, syncs, kills the
// node with SIGKILL, restarts it and checks that the filesystem is clean and
// every synced file has its checksum.
func TestExt4SurvivesKill(t *testing.T) {
	requireMountPrivileges(t)
	dir := t.TempDir()
	cfg := clusterConfig(t, dir, 1, "256MiB", "")
	node := startGrbd(t, dir, "n0", "node", "--config", cfg, "--name", "n0")

	m := attach(t, dir, node.uri())
	run(t, 2*time.Minute, "mkfs.ext4", "-q", "-F", m.loop)
	m.mount()
	sums := writeFiles(t, m.mnt, "first", 20)
	run(t, time.Minute, "sync")
	m.umount()
	m.mount()
	checkFiles(t, sums, "after unmount and remount")

	for k, v := range writeFiles(t, m.mnt, "second", 20) {
		sums[k] = v
	}
	run(t, time.Minute, "sync", "-f", m.mnt)
	node.kill9()
	m.detach()

	node = startGrbd(t, dir, "n0-restarted", "node", "--config", cfg, "--name", "n0")
	m = attach(t, dir, node.uri())
	m.mount() // replays the ext4 journal if the kill left it dirty
	checkFiles(t, sums, "after kill -9, restart and remount")
	m.unmountAndCheck()
	m.detach()
	node.stop()
}

// TestAttachKernelSurvivesKill: ext4 on /dev/nbdX through grbd attach, fio
// verifying, the primary killed mid-run: no I/O error, no remount. Needs
// the nbd module (skips without; cmd/grbd's TestAttachLocalExportFollowsPrimary
// covers the kernel's connection everywhere).
func TestAttachKernelSurvivesKill(t *testing.T) {
	requireTools(t, "fio", "mkfs.ext4", "e2fsck")
	if os.Geteuid() != 0 {
		t.Skip("attaching /dev/nbdX needs root")
	}
	_ = exec.Command("modprobe", "nbd").Run()
	dev, err := nbdkernel.Host.Check("/dev/nbd0", true)
	if err != nil {
		t.Skipf("no usable kernel NBD device, grbd attach's failover is tested where the nbd module exists: %v", err)
	}
	c := newReplCluster(t, "C", "64MiB")
	n0, _ := c.startPair()
	att := startMember(t, c.dir, "attach", "attached ", "attach", "--config", c.cfgPath, "--device", dev.Path)
	defer att.stop()
	run(t, 2*time.Minute, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", dev.Path)
	m := &mountedFS{t: t, mnt: t.TempDir(), loop: dev.Path}
	m.mount()
	defer func() { _, _ = runErr(30*time.Second, "umount", m.mnt) }()
	fio := startFio(t, c.dir, m.mnt, "fio.dat", "48m")
	time.Sleep(3 * time.Second)
	n0.kill9()
	fio.finish("across the failover")
	fio.verifyOnly()
	m.unmountAndCheck()
}

package chaos

// Disk failures under a running cluster (issue 15): a full or read-only
// file system under one data node. The node's disk must fail visibly and
// the cluster go on without it; nothing acknowledged may be lost.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// diskNode is the data node whose directory is on its own small file
// system in the disk scenarios; it starts as the primary (rank 0).
const diskNode = "n0"

func diskShape(ext4 bool) Shape {
	s := quorumShape()
	s.TmpfsData, s.Ext4Data = diskNode, ext4
	return s
}

// injectDiskFailure fails the disk of the node in role which (moving the
// primary role first when needed, so that the faulty file system is under
// it): full (filled) or read-only (an ext4 error). Then it waits for the
// cluster to go on without the node, heals the file system and restarts the
// node, which must catch up.
func injectDiskFailure(which role, readOnly bool) func(context.Context, *Run) error {
	return func(ctx context.Context, r *Run) error {
		if err := r.placeRole(ctx, which); err != nil {
			return err
		}
		dir := r.C.Member(diskNode).DataDir
		mnt := filepath.Dir(dir)
		r.expectWrites(ctx, 100, "no writes before the disk fault")
		t0 := time.Now()
		var heal func() error
		if readOnly {
			if err := TriggerFSError(mnt); err != nil {
				return err
			}
			r.C.Events().Add(EvDiskReadOnly, diskNode, "ext4 error: remounted read-only")
			heal = func() error { return RepairExt4(mnt) }
		} else {
			free, err := FillDisk(dir, 0)
			if err != nil {
				return err
			}
			r.C.Events().Add(EvDiskFull, diskNode, "0 bytes left")
			heal = free
		}
		if which == rolePrimary {
			if _, took, err := r.awaitFailover(ctx, diskNode, t0, "%v after the disk fault"); err != nil {
				r.Anomaly("no failover after the primary's disk failed: %v", err)
			} else {
				r.Note("failover %v after the disk fault", took)
			}
		}
		// A secondary fails at its first write that needs new space (a
		// journal segment, the control-plane log): with the workload
		// running that comes within seconds.
		if !r.waitDiskFailed(ctx, 30*time.Second) {
			r.Anomaly("%s's disk never reported Failed after the fault", diskNode)
		}
		r.expectWrites(ctx, 200, "no writes without the node whose disk failed")
		if prim, _, err := r.C.Primary(ctx); err == nil {
			if st, err := r.C.Status(ctx, prim); err == nil && st.Quorum != nil && !slices.Contains(st.Quorum.Outdated, diskNode) {
				r.Anomaly("writes went on without %s, but the primary %s does not report it Outdated", diskNode, prim)
			}
		}
		r.C.Kill(diskNode)
		if err := heal(); err != nil {
			return err
		}
		r.C.Events().Add(EvDiskFree, diskNode, "healed")
		return r.rejoin(ctx, diskNode)
	}
}

// waitDiskFailed waits until diskNode reports its disk Failed, or exited
// on its own because of the fault (its control-plane log is on the same
// file system: a member whose control plane cannot persist stops with exit
// status 1). Which of the two writes meets the full disk first is a race:
// a journal write (the log says "disk failed") or a control-plane save (the
// log says the control plane cannot persist; a secondary under a parallel
// test's load hit this first). Such an exit, before or after the node
// reported Failed, is the fault's doing, not a crash.
func (r *Run) waitDiskFailed(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	p := r.C.Process(diskNode)
	p.AcceptExitIf(func(tail string) bool { return diskFaultExit(tail) != "" })
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if done, _ := p.Exited(); done {
			why := diskFaultExit(p.LogTail(1 << 20))
			if why != "" {
				r.Note("%s %s", diskNode, why)
			}
			return why != ""
		}
		if st, err := r.C.Status(ctx, diskNode); err == nil && st.Disk == "Failed" {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// diskFaultExit says why a member's log shows that it stopped because of
// a disk fault, or "" if it does not.
func diskFaultExit(tail string) string {
	switch {
	case strings.Contains(tail, "disk failed"):
		return "detached its disk and exited (its control plane could not persist)"
	case strings.Contains(tail, "the control plane cannot persist") &&
		(strings.Contains(tail, "no space left on device") || strings.Contains(tail, "read-only file system")):
		return "exited: its control plane could not persist on the faulty file system"
	}
	return ""
}

// placeRole makes diskNode the primary (which == rolePrimary) or a
// secondary, with `grbd primary`.
func (r *Run) placeRole(ctx context.Context, which role) error {
	prim, _, err := r.C.Primary(ctx)
	if err != nil {
		return err
	}
	if (prim == diskNode) == (which == rolePrimary) {
		return nil
	}
	target := diskNode
	if which != rolePrimary {
		target = otherData(r, diskNode)[0].Name
	}
	out, err := exec.CommandContext(ctx, r.C.cfg.Bin, "primary", target, "--config", r.C.ConfigPath()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("chaos: grbd primary %s: %w: %s", target, err, out)
	}
	return nil
}

// MountExt4 makes a small ext4 image (errors=remount-ro) and loop-mounts it
// on dir; it returns the unmount. ErrSkip when not root or without mkfs.ext4.
func MountExt4(dir string, size int64) (func() error, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: a loop-mounted ext4 needs root", ErrSkip)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return nil, fmt.Errorf("%w: mkfs.ext4 not installed", ErrSkip)
	}
	img := dir + ".img"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: ext4 dir: %w", err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return nil, fmt.Errorf("chaos: ext4 image: %w", err)
	}
	if err := os.Truncate(img, size+size/8+16<<20); err != nil {
		return nil, fmt.Errorf("chaos: ext4 image: %w", err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("chaos: mkfs.ext4: %w: %s", err, out)
	}
	if err := mountExt4(img, dir); err != nil {
		return nil, err
	}
	return func() error {
		defer os.Remove(img)
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("chaos: umount %s: %w: %s", dir, err, out)
		}
		return nil
	}, nil
}

func mountExt4(img, dir string) error {
	if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", img, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("chaos: mount %s: %w: %s", img, err, out)
	}
	return nil
}

// TriggerFSError makes the ext4 mounted on dir report an error, which with
// errors=remount-ro turns it read-only: every write then fails with EROFS.
func TriggerFSError(dir string) error {
	dev, err := mountSource(dir)
	if err != nil {
		return err
	}
	knob := filepath.Join("/sys/fs/ext4", filepath.Base(dev), "trigger_fs_error")
	if err := os.WriteFile(knob, []byte("grbd chaos: disk fault\n"), 0); err != nil {
		return fmt.Errorf("chaos: %s: %w", knob, err)
	}
	return nil
}

// RepairExt4 unmounts the read-only ext4 on dir, checks it and mounts it
// again read-write, as an operator would after a disk error.
func RepairExt4(dir string) error {
	if err := unix.Unmount(dir, 0); err != nil {
		return fmt.Errorf("chaos: unmount %s: %w", dir, err)
	}
	img := dir + ".img"
	// e2fsck exits 1 when it corrected errors: fine here.
	if out, err := exec.Command("e2fsck", "-fy", img).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			return fmt.Errorf("chaos: e2fsck: %w: %s", err, out)
		}
	}
	return mountExt4(img, dir)
}

// mountSource is the device mounted on dir (from /proc/self/mountinfo).
func mountSource(dir string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("chaos: mountinfo: %w", err)
	}
	abs, _ := filepath.Abs(dir)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != abs {
			continue
		}
		for i, x := range f {
			if x == "-" && i+2 < len(f) {
				return f[i+2], nil
			}
		}
	}
	return "", fmt.Errorf("chaos: nothing mounted on %s", dir)
}

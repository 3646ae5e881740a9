// Package nbdkernel attaches an NBD export to a Linux /dev/nbdX device
// through the kernel's NBD client (the ioctl interface of drivers/block/nbd.c),
// as nbd-client does: the handshake runs here, in user space, then the
// socket is handed to the kernel, which serves the block device from it
// until it is disconnected.
//
// Unlike github.com/pojntfx/go-nbd's client, it sets NBD_SET_FLAGS from the
// transmission flags the server advertised, so that the kernel sends FLUSH,
// FUA and TRIM (without them a file system's barriers never reach the
// server). The wire constants come from go-nbd's pkg/protocol.
//
// Everything that needs the device is behind Attach and Detach; Negotiate,
// KernelFlags, ChooseBlockSize and Check work anywhere, so that hosts
// without the nbd module (and tests) can exercise them. Functions are safe
// for concurrent use on different devices.
package nbdkernel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Errors callers branch on.
var (
	// ErrNoModule: the kernel has no NBD client (module not loaded).
	ErrNoModule = errors.New("nbdkernel: the nbd kernel module is not loaded")
	// ErrNoDevice: the named device does not exist or is not an NBD block
	// device.
	ErrNoDevice = errors.New("nbdkernel: no such NBD device")
	// ErrBusy: the device is attached already.
	ErrBusy = errors.New("nbdkernel: device in use")
	// ErrNegotiate: the server's handshake failed or offered nothing usable.
	ErrNegotiate = errors.New("nbdkernel: handshake failed")
	// ErrReadOnly: the export is read-only (not a serving primary).
	ErrReadOnly = errors.New("nbdkernel: export is read-only")
)

// Sys locates the kernel's files; tests point it at a fake tree.
type Sys struct {
	SysFS string // "/sys"
	Dev   string // "/dev"
}

// Host is the running system.
var Host = Sys{SysFS: "/sys", Dev: "/dev"}

// Device is one NBD device of the host.
type Device struct {
	Path string // /dev/nbd0
	Name string // nbd0
}

// Check verifies that the kernel has an NBD client and that path names
// one of its devices, with a message that tells an operator what to do.
// With wantFree it also refuses a device that is attached already.
func (s Sys) Check(path string, wantFree bool) (Device, error) {
	if _, err := os.Stat(filepath.Join(s.SysFS, "module", "nbd")); err != nil {
		return Device{}, fmt.Errorf("%w (no %s): load it with `modprobe nbd` (on some distributions it ships in "+
			"linux-modules-extra), or mount the export through FUSE with nbdfuse (see docs/cli.md)",
			ErrNoModule, filepath.Join(s.SysFS, "module", "nbd"))
	}
	name := filepath.Base(path)
	if !strings.HasPrefix(name, "nbd") || !isDigits(strings.TrimPrefix(name, "nbd")) {
		return Device{}, fmt.Errorf("%w: %s: want /dev/nbdN", ErrNoDevice, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return Device{}, fmt.Errorf("%w: %s: %w (the module creates nbds_max devices: modprobe nbd nbds_max=16)", ErrNoDevice, path, err)
	}
	if fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 {
		return Device{}, fmt.Errorf("%w: %s is not a block device", ErrNoDevice, path)
	}
	d := Device{Path: path, Name: name}
	if wantFree {
		if pid, busy := s.Owner(d); busy {
			return Device{}, fmt.Errorf("%w: %s is attached (client pid %s): grbd detach --device %s", ErrBusy, path, pid, path)
		}
	}
	return d, nil
}

// Owner reports the pid of the process serving d, if it is attached (the
// kernel publishes /sys/block/nbdX/pid while it is).
func (s Sys) Owner(d Device) (string, bool) {
	b, err := os.ReadFile(filepath.Join(s.SysFS, "block", d.Name, "pid"))
	if err != nil {
		return "", false
	}
	pid := strings.TrimSpace(string(b))
	return pid, pid != ""
}

func isDigits(s string) bool {
	_, err := strconv.ParseUint(s, 10, 16)
	return err == nil
}

// Conn is the stream socket Attach hands to the kernel: a TCP connection to
// a server, or one end of a local socket pair whose other end a process on
// this host serves. File returns a duplicate of its descriptor.
type Conn interface {
	File() (*os.File, error)
}

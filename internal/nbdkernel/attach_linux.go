package nbdkernel

import (
	"errors"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Ioctls of the kernel's NBD client: _IO(0xab, n) in <linux/nbd.h>. Part of
// the Linux ABI: do not change.
const (
	ioctlSetSock       = 0xab00 // NBD_SET_SOCK
	ioctlSetBlockSize  = 0xab01 // NBD_SET_BLKSIZE
	ioctlDoIt          = 0xab03 // NBD_DO_IT
	ioctlClearSock     = 0xab04 // NBD_CLEAR_SOCK
	ioctlClearQueue    = 0xab05 // NBD_CLEAR_QUE
	ioctlSetSizeBlocks = 0xab07 // NBD_SET_SIZE_BLOCKS
	ioctlDisconnect    = 0xab08 // NBD_DISCONNECT
	ioctlSetTimeout    = 0xab09 // NBD_SET_TIMEOUT
	ioctlSetFlags      = 0xab0a // NBD_SET_FLAGS
)

// ioctlStep is one configuration ioctl of Attach, in the order it runs.
type ioctlStep struct {
	name string
	req  uint
	arg  uint64
}

// setupSteps are the ioctls that configure a device for export x before
// the socket is handed over: block size, size in blocks, the flags the
// server advertised (without NBD_SET_FLAGS the kernel never sends FLUSH,
// FUA or TRIM) and the request timeout.
func setupSteps(x Export, bs uint32, timeout time.Duration) []ioctlStep {
	steps := []ioctlStep{
		{"NBD_SET_BLKSIZE", ioctlSetBlockSize, uint64(bs)},
		{"NBD_SET_SIZE_BLOCKS", ioctlSetSizeBlocks, x.Size / uint64(bs)},
		{"NBD_SET_FLAGS", ioctlSetFlags, KernelFlags(x.Flags)},
	}
	if timeout > 0 {
		steps = append(steps, ioctlStep{"NBD_SET_TIMEOUT", ioctlSetTimeout, uint64(max(1, timeout/time.Second))})
	}
	return steps
}

// AttachOptions tune Attach.
type AttachOptions struct {
	// Timeout is the kernel's per-request timeout (0: the kernel's default).
	Timeout time.Duration
	// OnReady is called once the device is configured, just before the
	// kernel starts serving it (NBD_DO_IT blocks until Detach).
	OnReady func()
}

// Attach hands conn, which Negotiate has brought to the transmission
// phase for export x, to the kernel as device d, and serves it until the
// device is disconnected (Detach, or the connection breaks). It needs the
// privilege to open the device (root or the disk group) and blocks, like
// nbd-client -nofork.
func Attach(d Device, conn Conn, x Export, opts AttachOptions) error {
	if x.Flags&nbdproto.FlagReadOnly != 0 {
		return fmt.Errorf("%w: refusing to attach %s read-only", ErrReadOnly, d.Path)
	}
	bs, err := ChooseBlockSize(x)
	if err != nil {
		return err
	}
	dev, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("nbdkernel: open %s: %w", d.Path, err)
	}
	defer dev.Close()
	sock, err := conn.File() // a dup: the kernel takes the descriptor's socket
	if err != nil {
		return fmt.Errorf("nbdkernel: socket: %w", err)
	}
	defer sock.Close()
	fd := int(dev.Fd())
	for _, s := range setupSteps(x, bs, opts.Timeout) {
		if err := unix.IoctlSetInt(fd, s.req, int(s.arg)); err != nil {
			return fmt.Errorf("nbdkernel: %s %s: %w", d.Path, s.name, err)
		}
	}
	if err := unix.IoctlSetInt(fd, ioctlSetSock, int(sock.Fd())); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w: %s: %w", ErrBusy, d.Path, err)
		}
		return fmt.Errorf("nbdkernel: %s NBD_SET_SOCK: %w", d.Path, err)
	}
	if opts.OnReady != nil {
		opts.OnReady()
	}
	// NBD_DO_IT returns when the device is disconnected or the socket dies.
	doErr := unix.IoctlSetInt(fd, ioctlDoIt, 0)
	_ = unix.IoctlSetInt(fd, ioctlClearQueue, 0)
	_ = unix.IoctlSetInt(fd, ioctlClearSock, 0)
	if doErr != nil && !errors.Is(doErr, unix.EINTR) {
		return fmt.Errorf("nbdkernel: %s: connection ended: %w", d.Path, doErr)
	}
	return nil
}

// Detach disconnects device d: the kernel sends NBD_CMD_DISC, fails
// requests still queued, and the Attach serving it returns.
func Detach(d Device) error {
	dev, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("nbdkernel: open %s: %w", d.Path, err)
	}
	defer dev.Close()
	fd := int(dev.Fd())
	if err := unix.IoctlSetInt(fd, ioctlDisconnect, 0); err != nil {
		return fmt.Errorf("nbdkernel: %s NBD_DISCONNECT: %w", d.Path, err)
	}
	if err := unix.IoctlSetInt(fd, ioctlClearSock, 0); err != nil {
		return fmt.Errorf("nbdkernel: %s NBD_CLEAR_SOCK: %w", d.Path, err)
	}
	return nil
}

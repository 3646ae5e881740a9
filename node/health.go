package node

// Disk health (issue 15; docs/replication.md, "A failing disk"): an I/O
// error, a full or a read-only file system under the node's store makes the
// node's disk Failed, as DRBD's on-io-error detach. A Failed node stops
// taking part in the data path — a primary gives the role back so that an
// UpToDate peer is promoted, a secondary drops the primary's stream and is
// Outdated — is never promoted, and says so at ERROR, in an event, in
// status and in metrics. It stays Failed until it is restarted on a
// repaired disk; it then replays its journal and catches up like any node
// that was away.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/journal"
)

// DiskFailed is the disk state of a node whose store failed.
const DiskFailed = "Failed"

// ErrDiskFailed is returned for I/O on a node whose disk failed. It carries
// EIO: a write the node could not store is not acknowledged.
var ErrDiskFailed = fmt.Errorf("node: disk failed: %w", syscall.EIO)

// ErrDiskHung is the failure of a disk whose operation has not returned
// within device.disk-timeout (diskwatch.go).
var ErrDiskHung = errors.New("node: disk not answering")

// isDiskError reports whether err says the store's disk cannot be written
// or read: the journal's sticky failure, or a file operation (a path error)
// that failed with an I/O error, no space, or a read-only file system. A
// refused or fenced request, a closed store or a corrupt block (repair
// handles it) is not one, even when it carries EIO for the client.
func isDiskError(err error) bool {
	if err == nil || errors.Is(err, journal.ErrChecksum) || errors.Is(err, journal.ErrClosed) {
		return false
	}
	if errors.Is(err, journal.ErrFailed) {
		return true
	}
	var pe *fs.PathError
	var se *os.SyscallError
	if !errors.As(err, &pe) && !errors.As(err, &se) {
		return false
	}
	for _, e := range []syscall.Errno{syscall.EIO, syscall.ENOSPC, syscall.EROFS, syscall.EDQUOT, syscall.ENXIO, syscall.ENODEV} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// diskFailure is the error that failed the disk, or nil.
func (n *Node) diskFailure() error {
	if p := n.diskErr.Load(); p != nil {
		return *p
	}
	return nil
}

// checkDisk notes a disk error returned by the store (it returns err, or
// ErrDiskFailed in its place once the disk failed, so that clients see EIO
// rather than, say, EPERM for EROFS). The first one detaches the disk.
func (n *Node) checkDisk(op string, err error) error {
	if !isDiskError(err) {
		return err
	}
	n.failDisk(fmt.Errorf("%s: %w", op, err))
	return fmt.Errorf("%w: %w", ErrDiskFailed, err)
}

// failDisk makes the disk Failed for err and detaches it, the first time.
// detach runs on a goroutine of its own: for a disk that hangs it may never
// return (it waits for the requests inside the disk), and it must not hold
// up whoever found the failure.
func (n *Node) failDisk(err error) {
	if n.diskErr.CompareAndSwap(nil, &err) {
		n.diskErrors.Add(1)
		n.log.Error("disk failed: detaching it (no more I/O here; an UpToDate peer takes over; restart the node on a repaired disk)", "err", err)
		n.events.Add(Event{Type: events.TypeDisk, State: DiskFailed, Cause: err.Error()})
		go n.detach()
	}
}

// detach takes a Failed node out of the data path: it may no longer be
// promoted, a primary gives the role back, a secondary lets go of the
// primary's stream (and refuses new ones: secondary.handle).
func (n *Node) detach() {
	n.setConsistent(false)
	if n.currentPrimary() != nil {
		if err := n.ctl.RequestDemote(); err != nil {
			// The control plane is down too (its log is on this disk):
			// the lease lapses and the others elect a new primary.
			n.log.Error("disk failed: cannot give the primary role back through the control plane; the lease lapses instead", "err", err)
		}
		// Stop serving now: the demotion takes a round through the log,
		// or never commits when the log cannot be written.
		n.roleMu.Lock()
		n.stopPrimaryLocked(ErrDiskFailed)
		n.roleMu.Unlock()
	}
	n.sec.DropFrom("*")
}

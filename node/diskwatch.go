package node

// A disk that hangs (docs/replication.md, "A disk that hangs") fails no
// operation: its writes and syncs just never return, and whatever waits for
// them waits too. Nothing is acknowledged that did not reach the disk, so
// no data is at risk, but a node that only waits tells nobody why. The
// store and sidecar files go through a vfs.Watched file system, and the
// oldest operation in flight shows in status, in the metrics and, once it
// has waited diskStallWarn, in the log. Once one has been seen in flight
// for device.disk-timeout, the disk is Failed and detached like a disk that
// returns errors (health.go), without waiting for it.

import (
	"context"
	"fmt"
	"time"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/vfs"
)

const (
	// diskStallShown: an operation on the store in flight this long shows
	// in status (disk_stall) and in grbd_disk_stall_seconds.
	diskStallShown = time.Second
	// diskStallWarn: ... and this long, in the log at WARN (once).
	diskStallWarn = 10 * time.Second
)

// DiskStall is the oldest operation on the node's store that has not
// returned, once it has waited a second.
type DiskStall struct {
	Op      string  `json:"op"`   // write, sync, read, ...
	File    string  `json:"file"` // its file
	Seconds float64 `json:"seconds"`
}

// journalFigures is what Status shows of the store.
type journalFigures struct {
	journal        JournalStatus
	checksumErrors uint64
}

// diskStall is the oldest store operation in flight, when it has waited
// diskStallShown.
func (n *Node) diskStall() *DiskStall {
	st, ok := n.disk.Stalled()
	if !ok || st.For < diskStallShown {
		return nil
	}
	return &DiskStall{Op: st.Op.String(), File: st.Name, Seconds: st.For.Seconds()}
}

// journalWait bounds how long Status waits for the store's figures: a
// write that hangs holds the journal's locks, and status must still answer.
const journalWait = 2 * time.Second

// journalRead is a read of the store's figures in flight; done is closed
// once f is set.
type journalRead struct {
	done  chan struct{}
	start time.Time
	f     journalFigures
}

// journalStatus returns the store's figures, or, when they take longer
// than journalWait (the disk may hang), the figures read last. One read
// runs at a time: callers meanwhile wait for it, and a read that hangs is
// never joined by a second one. A caller that finds the read in flight
// for journalWait already does not wait again: status answers at once
// for as long as the disk hangs.
func (n *Node) journalStatus() journalFigures {
	r := &journalRead{done: make(chan struct{}), start: time.Now()}
	if !n.journalRead.CompareAndSwap(nil, r) {
		if cur := n.journalRead.Load(); cur != nil {
			r = cur
		} else {
			return n.journalStatus() // the read ended just now: start another
		}
	} else {
		go func() {
			r.f = n.readJournal()
			n.lastJournal.Store(&r.f)
			n.journalRead.Store(nil)
			close(r.done)
		}()
	}
	last := func() journalFigures {
		if f := n.lastJournal.Load(); f != nil {
			return *f
		}
		return journalFigures{}
	}
	wait := journalWait - time.Since(r.start)
	if wait <= 0 {
		select {
		case <-r.done:
			return r.f
		default:
			return last()
		}
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-r.done:
		return r.f
	case <-t.C:
		return last()
	}
}

// readJournal reads the store's figures.
func (n *Node) readJournal() journalFigures {
	js := n.store.Stats()
	return journalFigures{
		journal: JournalStatus{
			LastSeq: js.LastSeq, DurableSeq: js.DurableSeq, CheckpointSeq: js.CheckpointSeq,
			FirstRetainedSeq: js.FirstRetainedSeq, Bytes: js.JournalBytes, Segments: js.Segments, Syncs: js.Syncs,
			SuspectBytes: extent.Bytes(n.store.Suspects()), ActivityCommits: js.ActivityCommits,
			ExtentRecords: js.ExtentRecords, SegmentsReused: js.SegmentsReused,
		},
		checksumErrors: js.ChecksumErrors,
	}
}

// hangClock measures, tick by tick, how long the oldest operation on the
// store has been seen in flight: from the first tick that saw it, not from
// its start, and afresh after a tick that came late (the process itself
// was stopped, or the host suspended, so an operation in flight across the
// gap is no evidence of a disk that hangs).
type hangClock struct {
	every     time.Duration
	lastTick  time.Time
	seen      time.Time // the first tick that saw the operation in flight
	opStarted time.Time
}

// observe records a tick at now that found st (ok: an operation in flight)
// and returns how long that operation has been seen in flight.
func (h *hangClock) observe(now time.Time, st vfs.Stall, ok bool) time.Duration {
	late := !h.lastTick.IsZero() && now.Sub(h.lastTick) > 3*h.every
	h.lastTick = now
	started := now.Add(-st.For)
	if !ok || late || h.seen.IsZero() || started.Sub(h.opStarted).Abs() > h.every {
		h.seen, h.opStarted = time.Time{}, time.Time{}
		if ok {
			h.seen, h.opStarted = now, started
		}
		return 0
	}
	return now.Sub(h.seen)
}

// watchDisk logs an operation on the store that has not returned for warn,
// once, and when it returns; with timeout (device.disk-timeout; 0: off), it
// fails the disk once one has been seen in flight that long, which detaches
// it (health.go). Each tick also lifts a stale mark once the disk caught up
// (clearStaleIfCaughtUp).
func (n *Node) watchDisk(ctx context.Context, every, warn, timeout time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var warned time.Time // the start of the operation warned about
	clock := hangClock{every: every}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n.staleEpoch.Load() != 0 {
			go n.clearStaleIfCaughtUp() // it talks to the control plane, which may wait for this disk
		}
		st, ok := n.disk.Stalled()
		now := time.Now()
		started := now.Add(-st.For)
		if !warned.IsZero() && (!ok || started.Sub(warned) > every) {
			n.log.Info("disk: the operation that hung returned (or another took its place)", "waited", now.Sub(warned).Round(time.Millisecond))
			warned = time.Time{}
		}
		if ok && st.For >= warn && warned.IsZero() {
			n.log.Warn("disk: an operation on the store has not returned: the disk may hang (requests that need it wait; it is detached after device.disk-timeout)",
				"op", st.Op.String(), "file", st.Name, "waited", st.For.Round(time.Millisecond), "disk_timeout", timeout)
			warned = started
		}
		if seen := clock.observe(now, st, ok); timeout > 0 && seen >= timeout && n.diskFailure() == nil {
			n.failDisk(fmt.Errorf("%w: a %s of %s has not returned for %v (device.disk-timeout %v)",
				ErrDiskHung, st.Op, st.Name, st.For.Round(time.Second), timeout))
		}
	}
}

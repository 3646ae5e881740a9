package replicator

import (
	"errors"
	"fmt"
	"github.com/grbd/grbd/internal/extent"
)

// ErrUntrusted marks a resync progress report that the primary cannot check
// and therefore ignores (the peer then takes the whole resync).
var ErrUntrusted = errors.New("replicator: resync progress not trusted")

// ResumeSource is what a primary knows about its own data when it judges a
// peer's ResyncProgress: its disk, its journal position, its history and
// the device size.
type ResumeSource struct {
	Disk, LastSeq, Size uint64
	History             History
}

// Check reports whether p, from a peer Inconsistent since from, may be
// trusted (nil) or must be ignored (an error wrapping ErrUntrusted). A
// report is trusted only when the primary can check every part of its
// claim against its own data (docs/replication.md, "Resuming a resync"):
// it names this primary's disk, a position this primary's journal holds
// (at most LastSeq, after from) whose epoch in this primary's history is
// the one the peer recorded, and ranges inside the device.
func (s ResumeSource) Check(p ResyncProgress, from uint64) error {
	switch {
	case p.Source == 0 || p.Source != s.Disk:
		return fmt.Errorf("%w: copied by disk %#x, this primary's is %#x", ErrUntrusted, p.Source, s.Disk)
	case p.AsOf > s.LastSeq:
		return fmt.Errorf("%w: position %d above this primary's journal (%d)", ErrUntrusted, p.AsOf, s.LastSeq)
	case p.AsOf <= from:
		return fmt.Errorf("%w: position %d not after the resync began (%d)", ErrUntrusted, p.AsOf, from)
	case p.Epoch == 0 || s.History.EpochOf(p.AsOf) != p.Epoch:
		return fmt.Errorf("%w: position %d is of epoch %d here, not %d", ErrUntrusted, p.AsOf, s.History.EpochOf(p.AsOf), p.Epoch)
	}
	for _, e := range p.Copied {
		if e.Length == 0 || e.Offset+e.Length < e.Offset || e.Offset+e.Length > s.Size {
			return fmt.Errorf("%w: range [%d,+%d) outside the device of %d bytes", ErrUntrusted, e.Offset, e.Length, s.Size)
		}
	}
	return nil
}

// Resume plans a resumed resync: the ranges to copy are those of target not
// copied yet, together with every range changed on the primary after the
// position the copied ones are current to; kept is what remains current of
// copied (copied minus changed).
func Resume(target, copied, changed []extent.Extent) (copy, kept []extent.Extent) {
	return extent.Union(extent.Subtract(target, copied), changed), extent.Subtract(copied, changed)
}

// Offer is the secondary's side of the same rule: it reports its progress
// to a primary only if that primary's Hello (disk, last sequence, history)
// would pass Check, and its own history agrees with the primary's up to
// the progress position (no record at or below it was discarded since).
func Offer(p ResyncProgress, from uint64, pri ResumeSource, mine History) bool {
	pri.Size = ^uint64(0)
	if pri.Check(p, from) != nil {
		return false
	}
	return Diverge(pri.History, pri.LastSeq, mine, p.AsOf).Common == p.AsOf
}

package node

import (
	"github.com/grbd/grbd/journal"
)

// device adapts the journaled store to the NBD export's Device interface.
//
// Durability contract (NBD semantics): a completed write is visible to reads
// at once; it is durable after a FLUSH that follows it, or at once when it
// carried FUA or the config says journal.sync: always. On the primary,
// "completed" and "durable" also cover every UpToDate peer as the replication
// protocol prescribes (docs/replication.md). A secondary's device is
// read-only: the NBD server advertises READ_ONLY and refuses writes.
type device struct {
	store      *journal.Journal
	syncAlways bool
	epoch      uint64
	prim       *primary // nil on a secondary
}

func (d *device) Size() int64 { return d.store.Size() }

// ReadOnly implements blockdev.ReadOnlyChecker.
func (d *device) ReadOnly() bool { return d.prim == nil }

func (d *device) ReadAt(p []byte, off int64) error { return d.store.ReadAt(p, off) }

func (d *device) WriteAt(p []byte, off int64, fua bool) error {
	if d.prim == nil {
		return ErrReadOnly
	}
	return d.prim.write(journal.Write{Epoch: d.epoch, Offset: off, Data: p}, fua || d.syncAlways)
}

func (d *device) WriteZeroes(off, length int64, fua bool) error {
	if d.prim == nil {
		return ErrReadOnly
	}
	return d.prim.write(journal.Write{Epoch: d.epoch, Offset: off, ZeroLength: length}, fua || d.syncAlways)
}

// Flush makes every completed write durable: they all have a sequence number
// at or below LastSeq, and Sync group-commits the journal up to it.
func (d *device) Flush() error {
	if d.prim == nil {
		return d.store.Sync(d.store.LastSeq())
	}
	return d.prim.flush(0)
}

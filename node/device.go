package node

import (
	"github.com/grbd/grbd/journal"
)

// device adapts the journaled store to the NBD export's Device interface.
//
// Durability contract (NBD semantics): a completed write is visible to reads
// at once; it is durable after a FLUSH that follows it, or at once when it
// carried FUA or the config says journal.sync: always.
type device struct {
	store      *journal.Journal
	syncAlways bool
	epoch      uint64
}

func (d *device) Size() int64 { return d.store.Size() }

func (d *device) ReadAt(p []byte, off int64) error { return d.store.ReadAt(p, off) }

func (d *device) WriteAt(p []byte, off int64, fua bool) error {
	seq, err := d.store.Append(journal.Write{Epoch: d.epoch, Offset: off, Data: p})
	if err != nil {
		return err
	}
	if fua || d.syncAlways {
		return d.store.Sync(seq)
	}
	return nil
}

func (d *device) WriteZeroes(off, length int64, fua bool) error {
	seq, err := d.store.Append(journal.Write{Epoch: d.epoch, Offset: off, ZeroLength: length})
	if err != nil {
		return err
	}
	if fua || d.syncAlways {
		return d.store.Sync(seq)
	}
	return nil
}

// Flush makes every completed write durable: they all have a sequence number
// at or below LastSeq, and Sync group-commits the journal up to it.
func (d *device) Flush() error { return d.store.Sync(d.store.LastSeq()) }

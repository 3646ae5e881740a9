package node

import (
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/grbd/grbd/internal/bufpool"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/primary"
)

// device adapts the node to the NBD export's Device interface; what a
// request may do depends on the node's role at that moment.
//
// Durability contract (NBD semantics): a completed write is visible to reads
// at once; it is durable after a FLUSH that follows it, or at once when it
// carried FUA or the config says journal.sync: always. "Completed" and
// "durable" also cover every counted peer as the replication protocol
// prescribes (docs/replication.md).
//
// Roles: on the primary, requests run only while it holds the lease
// (docs/quorum.md); without it they wait a short grace (a lease, or
// suspend-timeout with on-no-quorum: suspend-io) and then fail with EIO.
// On a secondary writes fail with EPERM, and reads too unless
// nbd.secondary-reads is set.
type device struct {
	n *Node
}

func (d *device) Size() int64 {
	if d.n.shardPeer() {
		return d.n.ec.Coder().G.Size // the store is a shard image; reads are refused
	}
	return d.n.store.Size()
}

// ReadOnly implements blockdev.ReadOnlyChecker: a connection opened while
// the node is not primary is read-only for its lifetime.
func (d *device) ReadOnly() bool { return d.n.currentPrimary() == nil }

// grace is how long a request waits for the lease before it fails.
func (d *device) grace() time.Duration {
	q := d.n.cfg.Quorum
	if q.OnNoQuorum == config.OnNoQuorumSuspend {
		return q.SuspendTimeout.D()
	}
	// A new primary waits out its predecessor's lease before it serves;
	// requests that arrive meanwhile wait with it.
	return q.Lease.D()*5/4 + 3*q.Tick.D()
}

// serving returns the primary instance once it may serve (it holds the
// lease and, resumed after a restart, its peers showed their positions:
// primary.Side.Verified), waiting up to the grace; nil with ErrReadOnly on
// a secondary.
func (d *device) serving() (*primary.Side, error) {
	var deadline, verifyBy time.Time
	for {
		if d.n.diskFailure() != nil {
			return nil, ErrDiskFailed
		}
		p := d.n.currentPrimary()
		if p == nil {
			return nil, ErrReadOnly
		}
		leased := d.n.ctl.Serving()
		if leased && p.Verified() {
			return p, nil
		}
		by, wait := &deadline, d.grace()
		if leased {
			// A resumed role waits for its peers' positions: a handshake,
			// or an Outdate, held back for the peer timeout after the
			// start (primary.resumeCheck).
			by, wait = &verifyBy, d.grace()+2*d.n.cfg.Replication.PeerTimeout.D()
		}
		now := time.Now()
		if by.IsZero() {
			*by = now.Add(wait)
		}
		if !now.Before(*by) {
			return nil, ErrFenced
		}
		time.Sleep(min(d.n.cfg.Quorum.Tick.D(), by.Sub(now)))
	}
}

// complete is the final check of a request that ran on prim: only a
// primary that holds the lease acknowledges it. A lease that lapsed while
// the request ran (a scheduler hiccup on a busy host delays the renewal by
// a few milliseconds) is waited for up to the grace: acknowledging once the
// lease of the same epoch is back is safe, since a majority granted it
// again and so no other primary can exist (docs/quorum.md, "The lease").
func (d *device) complete(prim *primary.Side, err error) error {
	if err != nil {
		return d.n.checkDisk("nbd request", err)
	}
	if d.n.diskFailure() != nil {
		// Detached while the request ran (a disk that hung and came
		// back): a peer may serve now; the client retries there.
		return ErrDiskFailed
	}
	if d.n.ctl.Serving() {
		return nil
	}
	deadline := time.Now().Add(d.grace())
	for {
		if d.n.currentPrimary() != prim {
			return ErrDeposed
		}
		if d.n.ctl.Serving() {
			return nil
		}
		now := time.Now()
		if !now.Before(deadline) {
			return ErrFenced
		}
		time.Sleep(min(d.n.cfg.Quorum.Tick.D(), deadline.Sub(now)))
	}
}

func (d *device) ReadAt(p []byte, off int64) error {
	prim, err := d.serving()
	if err != nil {
		if err == ErrReadOnly && d.n.cfg.NBD.SecondaryReads {
			return d.n.store.ReadAt(p, off)
		}
		return err
	}
	if err := prim.ReadBarrier(off, int64(len(p))); err != nil {
		return err
	}
	return d.complete(prim, prim.ReadChecked(p, off))
}

func (d *device) WriteAt(p []byte, off int64, fua bool) error {
	prim, err := d.serving()
	if err != nil {
		return err
	}
	return d.complete(prim, prim.Write(journal.Write{Epoch: prim.Epoch(), Offset: off, Data: p}, fua || d.syncAlways()))
}

var _ blockdev.OwnedWriter = (*device)(nil)

// WriteOwned is WriteAt for a payload buffer blockdev hands over: the
// primary ships it to its peers without a copy and puts it back in the pool
// once every peer link is done with it (blockdev.OwnedWriter).
func (d *device) WriteOwned(p *[]byte, off int64, fua bool) error {
	prim, err := d.serving()
	if err != nil {
		bufpool.Put(p)
		return err
	}
	return d.complete(prim, prim.WriteOwned(journal.Write{Epoch: prim.Epoch(), Offset: off, Data: *p}, p, fua || d.syncAlways()))
}

func (d *device) WriteZeroes(off, length int64, fua bool) error {
	prim, err := d.serving()
	if err != nil {
		return err
	}
	return d.complete(prim, prim.Write(journal.Write{Epoch: prim.Epoch(), Offset: off, ZeroLength: length}, fua || d.syncAlways()))
}

// Flush makes every completed write durable, locally and on every counted
// peer.
func (d *device) Flush() error {
	prim, err := d.serving()
	if err != nil {
		return err
	}
	return d.complete(prim, prim.Flush(0))
}

func (d *device) syncAlways() bool { return d.n.cfg.Journal.Sync == config.SyncAlways }

package node

import (
	"sync/atomic"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/replicator"
)

// faultHooks inject faults into the erasure-coded write path and the
// secondary's resync offer of the nodes a test starts with them (Options.faults; nil injects none). A hook may be
// set and cleared while the nodes run.
type faultHooks struct {
	// dropPiece: the primary skips a shard peer's piece of seq (the write
	// then waits for that peer: a crash with writes in flight).
	dropPiece atomic.Pointer[func(peer string, seq uint64) bool]
	// ignoreCommit: a shard peer ignores Commit messages (its image stays
	// at an older position).
	ignoreCommit atomic.Pointer[func(node string) bool]
	// applyEagerly: a shard peer applies without waiting for Commit (its
	// image gets ahead of the committed position).
	applyEagerly atomic.Pointer[func(node string) bool]
	// forgeOffer: a secondary offers this resync progress without checking
	// it, so that the primary's checks are tested alone.
	forgeOffer atomic.Pointer[replicator.ResyncProgress]
	// disk, set before Start, is the file system under the data
	// directory (default vfs.Default): a test's disk can hang.
	disk vfs.FS
}

// diskFS is the file system under the data directory.
func (f *faultHooks) diskFS() vfs.FS {
	if f == nil || f.disk == nil {
		return vfs.Default
	}
	return f.disk
}

func (f *faultHooks) dropsPiece(peer string, seq uint64) bool {
	if f == nil {
		return false
	}
	h := f.dropPiece.Load()
	return h != nil && (*h)(peer, seq)
}

func (f *faultHooks) ignoresCommit(node string) bool {
	return f != nil && f.holds(&f.ignoreCommit, node)
}

func (f *faultHooks) appliesEagerly(node string) bool {
	return f != nil && f.holds(&f.applyEagerly, node)
}

func (f *faultHooks) holds(hook *atomic.Pointer[func(node string) bool], node string) bool {
	h := hook.Load()
	return h != nil && (*h)(node)
}

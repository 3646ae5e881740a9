package wire

import "encoding/binary"

// Hello.Flags bits. Part of the format (docs/wire.md).
const (
	// HelloInconsistent, from a secondary: the sender is in the middle of a
	// region resync from LastSeq (it persisted that before the resync
	// began) and must not be caught up from its journal position; an
	// Extents message with its own regions to resync follows the Hello.
	HelloInconsistent uint32 = 1
	// HelloFullCopy, in a secondary's Hello of an erasure-coded resource:
	// its store is a full copy of the device (the first node, or a shard
	// peer that took over), not its configured shard.
	HelloFullCopy uint32 = 2
	// HelloResume (docs/replication.md, "Resuming a resync"): in a
	// primary's Hello, it takes a ResyncProgress after an Inconsistent
	// peer's Extents; in a secondary's, that ResyncProgress follows. A node
	// that does not know the bit ignores it, and then neither side sends the
	// message.
	HelloResume uint32 = 4
	// HelloReestablished, in a primary's Hello: it was also the primary of
	// the epoch its history names before its current one (it restarted and
	// took its role back), so it wrote every record of that epoch: a peer
	// holding one past this primary's entry into its current epoch holds
	// what this primary's disk lost, and refuses to rewind it
	// (secondary.ErrAhead). A node that does not know the bit rewinds.
	HelloReestablished uint32 = 8
)

// PutDisks fills Generation with two store identities. From a primary: the
// disk the control plane records for the receiving peer, then the
// primary's own. From a secondary: its own disk, then zero.
func (m *Hello) PutDisks(first, second uint64) {
	binary.LittleEndian.PutUint64(m.Generation[0:8], first)
	binary.LittleEndian.PutUint64(m.Generation[8:16], second)
}

// Disks reads what PutDisks wrote (zeros from a version before data
// identity).
func (m *Hello) Disks() (first, second uint64) {
	return binary.LittleEndian.Uint64(m.Generation[0:8]), binary.LittleEndian.Uint64(m.Generation[8:16])
}

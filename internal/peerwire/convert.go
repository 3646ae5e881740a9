// Package peerwire is what the peer protocol's messages mean to the two
// sides of replication: the conversions between wire messages and journal
// writes or replicator histories, and the typed read of a handshake
// message. The primary side (node/) and the secondary side (secondary/)
// share it, so that what one ships is what the other journals.
package peerwire

import (
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// WireWrite converts a journal record to its wire message, copying the data:
// the caller's buffer is not retained. The message is shared, read-only, by
// every peer queue.
func WireWrite(w journal.Write, epoch uint64, fua bool) wire.Message {
	w.Data = append([]byte(nil), w.Data...)
	return ShippedWrite(w, nil, epoch, fua)
}

// ShippedWrite is WireWrite without the copy of w.Data: the message holds
// w.Data itself, which must not change until the message has been sent.
// blockSums, when not nil, are the CRC32C of each block of w.Data
// (wire.Write.BlockSums: every peer's frame CRC is joined from them), shared,
// not copied: the caller must not reuse them.
func ShippedWrite(w journal.Write, blockSums []byte, epoch uint64, fua bool) wire.Message {
	switch {
	case w.Resize > 0:
		return &wire.Resize{Seq: w.Seq, Epoch: epoch, Size: uint64(w.Resize)}
	case w.ZeroLength > 0:
		return &wire.Zero{Seq: w.Seq, Epoch: epoch, Offset: uint64(w.Offset), Length: uint64(w.ZeroLength), FUA: fua}
	}
	return &wire.Write{Seq: w.Seq, Epoch: epoch, Offset: uint64(w.Offset), FUA: fua, Data: w.Data, BlockSums: blockSums}
}

// ClientWrite converts a client write or zeroing message to its journal
// write.
func ClientWrite(m wire.Message) (journal.Write, bool) {
	switch m := m.(type) {
	case *wire.Write:
		return journal.Write{Seq: m.Seq, Epoch: m.Epoch, Offset: int64(m.Offset), Data: m.Data}, true
	case *wire.Zero:
		return journal.Write{Seq: m.Seq, Epoch: m.Epoch, Offset: int64(m.Offset), ZeroLength: int64(m.Length)}, true
	}
	return journal.Write{}, false
}

// JournalWrite converts a message that carries a write (a client write or
// zeroing, a resync copy, written under the session's epoch, or a resize)
// to its journal write.
func JournalWrite(m wire.Message, epoch uint64) (journal.Write, bool) {
	if w, ok := ClientWrite(m); ok {
		return w, true
	}
	switch m := m.(type) {
	case *wire.ResyncData:
		return journal.Write{Seq: m.AsOf, Epoch: epoch, Offset: int64(m.Offset), Data: m.Data}, true
	case *wire.Resize:
		return journal.Write{Seq: m.Seq, Epoch: m.Epoch, Resize: int64(m.Size)}, true
	}
	return journal.Write{}, false
}

package node

// The conversions between journal writes and their wire messages, in one
// place: the primary ships journal records as wire messages, a secondary
// journals the messages it receives.

import (
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
)

// wireWrite converts a journal record to its wire message, copying the data:
// the caller's buffer is not retained. The message is shared, read-only, by
// every peer queue.
func wireWrite(w journal.Write, epoch uint64, fua bool) wire.Message {
	if w.Resize > 0 {
		return &wire.Resize{Seq: w.Seq, Epoch: epoch, Size: uint64(w.Resize)}
	}
	if w.ZeroLength > 0 {
		return &wire.Zero{Seq: w.Seq, Epoch: epoch, Offset: uint64(w.Offset), Length: uint64(w.ZeroLength), FUA: fua}
	}
	return &wire.Write{Seq: w.Seq, Epoch: epoch, Offset: uint64(w.Offset), FUA: fua, Data: append([]byte(nil), w.Data...)}
}

// clientWrite converts a client write or zeroing message to its journal
// write.
func clientWrite(m wire.Message) (journal.Write, bool) {
	switch m := m.(type) {
	case *wire.Write:
		return journal.Write{Seq: m.Seq, Epoch: m.Epoch, Offset: int64(m.Offset), Data: m.Data}, true
	case *wire.Zero:
		return journal.Write{Seq: m.Seq, Epoch: m.Epoch, Offset: int64(m.Offset), ZeroLength: int64(m.Length)}, true
	}
	return journal.Write{}, false
}

// journalWrite converts a message that carries a write (a client write or
// zeroing, a resync copy, written under the session's epoch, or a resize)
// to its journal write.
func journalWrite(m wire.Message, epoch uint64) (journal.Write, bool) {
	if w, ok := clientWrite(m); ok {
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

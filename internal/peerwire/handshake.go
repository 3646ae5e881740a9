package peerwire

import (
	"errors"
	"fmt"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/replicator"
)

// ErrHandshake is returned when a peer's Hello or a message of the
// handshake is missing or refused.
var ErrHandshake = errors.New("node: handshake refused")

// ReadAs reads the next handshake message, which must be a T (what names
// it in errors).
func ReadAs[T wire.Message](r *wire.Reader, what string) (T, error) {
	var zero T
	m, err := r.ReadMsg()
	if err != nil {
		return zero, fmt.Errorf("%w: %s: %w", ErrHandshake, what, err)
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("%w: expected %s, got %v", ErrHandshake, what, m.Type())
	}
	return t, nil
}

// HistoryToWire is a History message of h (the newest wire.MaxHistory
// entries) at lastSeq.
func HistoryToWire(h replicator.History, lastSeq uint64) *wire.History {
	wh := &wire.History{LastSeq: lastSeq}
	for _, e := range h {
		var f uint8
		if e.Forced {
			f = wire.HistoryForced
		}
		wh.Entries = append(wh.Entries, wire.HistoryEntry{Epoch: e.Epoch, FirstSeq: e.FirstSeq, Flags: f})
	}
	if len(wh.Entries) > wire.MaxHistory {
		wh.Entries = wh.Entries[len(wh.Entries)-wire.MaxHistory:]
	}
	return wh
}

// HistoryFromWire is the History a History message carries.
func HistoryFromWire(wh *wire.History) replicator.History {
	var h replicator.History
	for _, e := range wh.Entries {
		h = append(h, replicator.HistoryEntry{Epoch: e.Epoch, FirstSeq: e.FirstSeq, Forced: e.Flags&wire.HistoryForced != 0})
	}
	return h
}

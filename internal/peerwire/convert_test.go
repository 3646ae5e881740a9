package peerwire

import (
	"testing"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/stretchr/testify/require"
)

// What the primary ships is what a secondary journals.
func TestWireWriteRoundTrip(t *testing.T) {
	for _, w := range []journal.Write{
		{Seq: 7, Epoch: 3, Offset: 4096, Data: []byte("abcd")},
		{Seq: 8, Epoch: 3, Offset: 8192, ZeroLength: 65536},
		{Seq: 9, Epoch: 3, Resize: 1 << 30},
	} {
		m := WireWrite(w, w.Epoch, false)
		got, ok := JournalWrite(m, 0)
		require.True(t, ok, "%T", m)
		require.Equal(t, w, got)
	}
	data := []byte("xyz")
	m := WireWrite(journal.Write{Seq: 1, Epoch: 1, Data: data}, 1, true).(*wire.Write)
	data[0] = 'X'
	require.Equal(t, []byte("xyz"), m.Data, "the message keeps its own copy")
	require.True(t, m.FUA)
	// A resync copy is journaled under the session's epoch.
	got, ok := JournalWrite(&wire.ResyncData{AsOf: 5, Offset: 512, Data: []byte("r")}, 4)
	require.True(t, ok)
	require.Equal(t, journal.Write{Seq: 5, Epoch: 4, Offset: 512, Data: []byte("r")}, got)
	_, ok = JournalWrite(&wire.Flush{}, 4)
	require.False(t, ok, "a flush carries no write")
	_, ok = ClientWrite(&wire.ResyncData{})
	require.False(t, ok, "a resync copy is not a client write")
}

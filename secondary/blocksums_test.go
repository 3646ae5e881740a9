package secondary

import (
	"bytes"
	"net"
	"testing"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// tcpPair is a connected loopback TCP pair: unlike net.Pipe, what one end
// writes waits in the kernel, so the other end reads several frames at once.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	b = <-accepted
	require.NotNil(t, b)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestBurstOfLargeWritesKeepsBlockSums: large writes that arrive together
// are journaled as one batch of extent records, each with its data copied
// out of the wire Reader (which reuses its buffer on every read) and the
// block checksums of its own record in the table, so every block reads back
// with a matching checksum, also after a reopen replays the records.
func TestBurstOfLargeWritesKeepsBlockSums(t *testing.T) {
	fs := vfs.NewMem()
	s, _ := newSideOn(t, fs, 4<<20, 0, false)
	side, prim := tcpPair(t)
	r, w, sent := connectOn(t, s, &wire.Hello{Cluster: "t", From: "p", Role: wire.RolePrimary, Epoch: 1}, replicator.History{{Epoch: 1, FirstSeq: 1}}, side, prim)
	read[*wire.Hello](t, r)
	require.NoError(t, <-sent)

	const n, size = 12, wire.BlockSumsMin
	want := make([][]byte, n)
	for i := range n {
		want[i] = bytes.Repeat([]byte{byte(i + 1), byte(7 * i)}, size/2)
		// Small writes between the large ones keep the batch going.
		require.NoError(t, w.WriteMsg(&wire.Write{Seq: uint64(2*i + 1), Epoch: 1, Offset: uint64(i * size), Data: want[i]}))
		require.NoError(t, w.WriteMsg(&wire.Write{Seq: uint64(2*i + 2), Epoch: 1, Offset: 3 << 20, Data: block(byte(i))}))
	}
	require.NoError(t, w.Flush())
	for acked := uint64(0); acked < 2*n; {
		acked = read[*wire.Ack](t, r).Seq
	}
	store := s.cfg.Store
	require.Positive(t, store.Stats().ExtentRecords, "the large writes must be extent records")
	check := func(store *journal.Journal) {
		got := make([]byte, size)
		for i := range n {
			require.NoError(t, store.ReadAt(got, int64(i*size)), "write %d", i)
			require.Equal(t, want[i], got, "write %d", i)
		}
	}
	check(store)
	s.Close()
	require.NoError(t, store.Close())
	check(openStore(t, journal.Options{Dir: "/d", FS: fs, DeviceSize: 4 << 20, SegmentSize: 1 << 20, MaxSize: 4 << 20}))
}

package secondary

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/peerwire"
	"github.com/grbd/grbd/internal/sidecar"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// fakeNode is the Node of these tests: it records what the side reports.
type fakeNode struct {
	mu                              sync.Mutex
	hist                            replicator.History
	consistent                      *bool
	connected, lost                 []string
	splitBrain, diverged            []string
	inconsistent, consisted, shrunk []string
	disconnected                    bool
	applied                         uint64 // the control plane's applied epoch
}

func (f *fakeNode) Disconnected(string) bool            { return f.disconnected }
func (f *fakeNode) DiskFailure() error                  { return nil }
func (f *fakeNode) CheckDisk(_ string, err error) error { return err }
func (f *fakeNode) PrimaryArrived()                     {}
func (f *fakeNode) AppliedEpoch() uint64                { return f.applied }
func (f *fakeNode) Grown(string)                        {}
func (f *fakeNode) Shrunk(cause string)                 { f.record(&f.shrunk, cause) }
func (f *fakeNode) FullCopyOfCode() bool                { return false }
func (f *fakeNode) ShardApplier() *ShardApply           { return nil }

func (f *fakeNode) SetConsistent(ok bool) { f.mu.Lock(); f.consistent = &ok; f.mu.Unlock() }

func (f *fakeNode) History() replicator.History {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(replicator.History(nil), f.hist...)
}

func (f *fakeNode) SetHistory(h replicator.History) error {
	f.mu.Lock()
	f.hist = h
	f.mu.Unlock()
	return nil
}

func (f *fakeNode) record(to *[]string, s string) { f.mu.Lock(); *to = append(*to, s); f.mu.Unlock() }

func (f *fakeNode) PrimaryConnected(peer, _ string) { f.record(&f.connected, peer) }
func (f *fakeNode) PrimaryLost(peer, _ string)      { f.record(&f.lost, peer) }
func (f *fakeNode) SplitBrain(peer, _ string)       { f.record(&f.splitBrain, peer) }
func (f *fakeNode) Diverged(peer, _ string)         { f.record(&f.diverged, peer) }
func (f *fakeNode) Inconsistent(cause string)       { f.record(&f.inconsistent, cause) }
func (f *fakeNode) Consistent(cause string)         { f.record(&f.consisted, cause) }

// newSide is a side on an in-memory store whose journal holds records
// 1..records of epoch 1 (the node followed a primary of epoch 1).
func newSide(t *testing.T, records int, discard bool) (*Side, *fakeNode) {
	t.Helper()
	return newSideOn(t, vfs.NewMem(), 1<<20, records, discard)
}

// newSideOn is newSide on fs with a device of size bytes.
func newSideOn(t *testing.T, fs vfs.FS, size int64, records int, discard bool) (*Side, *fakeNode) {
	t.Helper()
	return newSideMeta(t, fs, sidecar.New(fs, "/d"), size, records, discard)
}

// newSideMeta is newSideOn with the resync state kept by meta.
func newSideMeta(t *testing.T, fs vfs.FS, meta Meta, size int64, records int, discard bool) (*Side, *fakeNode) {
	t.Helper()
	store := openStore(t, journal.Options{Dir: "/d", FS: fs, DeviceSize: size, SegmentSize: 1 << 20, MaxSize: 4 << 20})
	for i := 0; i < records; i++ {
		_, err := store.Append(journal.Write{Epoch: 1, Offset: int64(i) * 4096, Data: block(byte(i))})
		require.NoError(t, err)
	}
	node := &fakeNode{hist: replicator.History{{Epoch: 1, FirstSeq: 1}}}
	s, err := New(Config{Cluster: "t", Name: "s", Protocol: replicator.ProtocolC, DiscardOnSplitBrain: discard,
		HandshakeTimeout: 5 * time.Second, Store: store, Meta: meta}, node)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s, node
}

// openStore opens a journal with opts, creating its directory; the test's
// end closes it.
func openStore(t *testing.T, opts journal.Options) *journal.Journal {
	t.Helper()
	require.NoError(t, opts.FS.MkdirAll(opts.Dir, 0o700))
	store, err := journal.Open(opts)
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	return store
}

func block(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

// connect runs a session of the side on one end of a pipe and, on the
// other, sends the primary's Hello and History (in the background: a side
// that refuses the stream answers before it reads them). sent reports the
// send's outcome.
func connect(t *testing.T, s *Side, epoch, last uint64, pri replicator.History) (r *wire.Reader, w *wire.Writer, sent chan error) {
	t.Helper()
	return connectHello(t, s, &wire.Hello{Cluster: "t", From: "p", Role: wire.RolePrimary, Epoch: epoch, LastSeq: last}, pri)
}

// connectHello is connect with the primary's Hello h.
func connectHello(t *testing.T, s *Side, h *wire.Hello, pri replicator.History) (r *wire.Reader, w *wire.Writer, sent chan error) {
	t.Helper()
	side, prim := net.Pipe()
	return connectOn(t, s, h, pri, side, prim)
}

// connectOn is connectHello over the connection side (the Side's end) and
// prim (the test's end).
func connectOn(t *testing.T, s *Side, h *wire.Hello, pri replicator.History, side, prim net.Conn) (r *wire.Reader, w *wire.Writer, sent chan error) {
	t.Helper()
	go s.Handle("p", side)
	t.Cleanup(func() { prim.Close() })
	w, sent = wire.NewWriter(prim), make(chan error, 1)
	go func() {
		err := w.WriteMsg(h)
		if err == nil {
			err = w.WriteMsg(peerwire.HistoryToWire(pri, h.LastSeq))
		}
		if err == nil {
			err = w.Flush()
		}
		sent <- err
	}()
	return wire.NewReader(prim), w, sent
}

func read[T wire.Message](t *testing.T, r *wire.Reader) T {
	t.Helper()
	m, err := r.ReadMsg()
	require.NoError(t, err)
	got, ok := m.(T)
	require.True(t, ok, "got %v", m.Type())
	return got
}

// A primary's writes are journaled in order and acknowledged as journaled.
func TestSessionJournalsAndAcknowledges(t *testing.T) {
	s, node := newSide(t, 2, false)
	r, w, sent := connect(t, s, 1, 2, replicator.History{{Epoch: 1, FirstSeq: 1}})
	h := read[*wire.Hello](t, r)
	require.NoError(t, <-sent)
	require.Equal(t, uint64(2), h.LastSeq)
	require.Zero(t, h.Flags&wire.HelloInconsistent)
	require.Equal(t, uint64(2), read[*wire.Ack](t, r).Seq, "the side announces what it holds")
	for seq := uint64(3); seq <= 5; seq++ {
		require.NoError(t, w.WriteMsg(&wire.Write{Seq: seq, Epoch: 1, Offset: seq * 4096, Data: block(byte(seq))}))
	}
	require.NoError(t, w.Flush())
	var acked uint64
	for acked < 5 {
		a := read[*wire.Ack](t, r)
		require.Equal(t, wire.AckJournaled, a.Level)
		acked = a.Seq
	}
	require.Equal(t, uint64(5), s.cfg.Store.LastSeq())
	got := make([]byte, 4096)
	require.NoError(t, s.cfg.Store.ReadAt(got, 4*4096))
	require.Equal(t, block(4), got)
	st := s.State()
	require.True(t, st.Connected)
	require.Equal(t, "p", st.Primary)
	require.Equal(t, []string{"p"}, node.connected)

	// A newer epoch ends the session of the old primary.
	s.SetEpoch(2, "q")
	_, err := r.ReadMsg()
	require.Error(t, err)
	require.Eventually(t, func() bool {
		node.mu.Lock()
		defer node.mu.Unlock()
		return len(node.lost) == 1
	}, 5*time.Second, time.Millisecond)
	require.False(t, s.State().Connected)
}

// The Hello of a primary of an epoch older than the newest known, of
// another cluster, or sent while this node is primary is refused.
func TestSessionRefusesStalePrimaries(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(s *Side, n *fakeNode)
		want  string
	}{
		{"stale epoch", func(s *Side, _ *fakeNode) { s.SetEpoch(3, "q") }, "stale epoch"},
		// A member that just joined from a snapshot: the control plane
		// applied epoch 3, the node has not told the side yet.
		{"stale epoch applied, not yet told", func(_ *Side, n *fakeNode) { n.applied = 3 }, "stale epoch"},
		{"this node is primary", func(s *Side, _ *fakeNode) { s.SetEpoch(1, "s") }, "this node is primary"},
		{"disconnected by the operator", func(_ *Side, n *fakeNode) { n.disconnected = true }, "disconnected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, node := newSide(t, 2, false)
			tc.setup(s, node)
			r, _, _ := connect(t, s, 2, 2, replicator.History{{Epoch: 1, FirstSeq: 1}, {Epoch: 2, FirstSeq: 3}})
			n := read[*wire.Nack](t, r)
			require.Equal(t, wire.NackState, n.Code)
			require.Contains(t, n.Reason, tc.want)
			require.Equal(t, uint64(2), s.cfg.Store.LastSeq(), "nothing rewound")
		})
	}
}

// Records the primary's history does not hold are rewound and their
// regions resynced; after a forced promotion that is a split brain, which
// only the policy (or grbd resolve) may discard.
func TestSessionDivergence(t *testing.T) {
	for _, tc := range []struct {
		name       string
		forced     bool
		discard    bool
		splitBrain bool
	}{
		{"deposed primary's records", false, false, false},
		{"split brain refused", true, false, true},
		{"split brain discarded by policy", true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, node := newSide(t, 4, tc.discard)
			// The primary of epoch 2 took over after seq 2: records 3 and 4
			// here are epoch 1's, which it never got.
			pri := replicator.History{{Epoch: 1, FirstSeq: 1}, {Epoch: 2, FirstSeq: 3, Forced: tc.forced}}
			r, _, _ := connect(t, s, 2, 6, pri)
			if tc.splitBrain {
				n := read[*wire.Nack](t, r)
				require.True(t, strings.HasPrefix(n.Reason, SplitBrainReason), n.Reason)
				require.Equal(t, []string{"p"}, node.splitBrain)
				require.True(t, s.State().SplitBrain)
				require.False(t, s.Consistent())
				require.Equal(t, uint64(4), s.cfg.Store.LastSeq(), "nothing discarded")
				return
			}
			h := read[*wire.Hello](t, r)
			require.Equal(t, wire.HelloInconsistent, h.Flags&wire.HelloInconsistent)
			require.Equal(t, uint64(2), h.LastSeq, "rewound to the common point")
			ex := read[*wire.Extents](t, r)
			require.NotEmpty(t, ex.Extents, "the rewound records' regions are resynced")
			require.Equal(t, uint64(2), s.cfg.Store.LastSeq())
			require.False(t, s.Consistent(), "Inconsistent until the resync ends")
			require.Equal(t, []string{"p"}, node.diverged)
			require.Equal(t, pri, node.History(), "the primary's history adopted")
			rs, err := s.cfg.Meta.Resync()
			require.NoError(t, err)
			require.NotNil(t, rs, "the resync state is persisted")
		})
	}
}

// A new primary's stream can arrive before this node applied the
// promotion: the SetEpoch that follows must not end it, since the session
// checks the Hello against the epoch itself. (It did end it, and the
// primary then had this node Outdated right after a new cluster's first
// promotion.) A stale Hello is still refused: TestSessionRefusesStalePrimaries.
func TestSetEpochKeepsAStreamBeforeItsHello(t *testing.T) {
	s, _ := newSide(t, 2, false)
	side, prim := net.Pipe()
	go s.Handle("p", side)
	t.Cleanup(func() { prim.Close() })
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.sessions) == 1
	}, 5*time.Second, time.Millisecond, "the stream is registered")
	s.SetEpoch(2, "p") // the promotion of p into epoch 2, applied here now

	h := &wire.Hello{Cluster: "t", From: "p", Role: wire.RolePrimary, Epoch: 2, LastSeq: 2}
	w := wire.NewWriter(prim)
	go func() {
		_ = w.WriteMsg(h)
		_ = w.WriteMsg(peerwire.HistoryToWire(replicator.History{{Epoch: 1, FirstSeq: 1}, {Epoch: 2, FirstSeq: 3}}, h.LastSeq))
		_ = w.Flush()
	}()
	got := read[*wire.Hello](t, wire.NewReader(prim))
	require.Equal(t, uint64(2), got.LastSeq, "the session goes on")
}

// The newest epoch never goes back, whatever order sessions, SetEpoch and
// Fence raise it in. (A load and a store let a slower, older raise undo a
// newer one.)
func TestEpochOnlyGrows(t *testing.T) {
	s, _ := newSide(t, 2, false)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := uint64(g); e < 20000; e += 8 {
				if got := s.raiseEpoch(e); got < e {
					t.Errorf("raiseEpoch(%d) = %d", e, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Equal(t, uint64(19999), s.Epoch())
}

package secondary

import (
	"bytes"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/planted"
	"github.com/grbd/grbd/internal/racetest"
	"github.com/grbd/grbd/internal/sidecar"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// chunkData is resync chunk k's content, different in every 4 KiB block.
func chunkData(k, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(k*31 + i/4096 + 1)
	}
	return b
}

// resumeSession connects s to a primary of epoch 1 at seq 2 that resumes
// a resync, and returns the primary's end after the handshake.
func resumeSession(t *testing.T, s *Side) (*wire.Reader, *wire.Writer) {
	t.Helper()
	h := &wire.Hello{Cluster: "t", From: "p", Role: wire.RolePrimary, Epoch: 1, LastSeq: 2, Flags: wire.HelloResume}
	h.PutDisks(s.store.ID(), 0xd15c)
	r, w, sent := connectHello(t, s, h, replicator.History{{Epoch: 1, FirstSeq: 1}})
	read[*wire.Hello](t, r)
	require.NoError(t, <-sent)
	require.Equal(t, uint64(2), read[*wire.Ack](t, r).Seq)
	return r, w
}

// answer is an Ack, a FlushAck or a Nack of the session (copied: the Reader reuses
// its messages).
type answer struct {
	nack     bool
	flushAck bool
	seq      uint64
	level    uint8
	err      uint32
}

// answers reads the session's answers on a goroutine of its own: a pipe
// has no buffer, so they must be taken while the test sends.
func answers(r *wire.Reader) <-chan answer {
	out := make(chan answer, 64)
	go func() {
		defer close(out)
		for {
			m, err := r.ReadMsg()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *wire.Ack:
				out <- answer{seq: m.Seq, level: m.Level}
			case *wire.FlushAck:
				out <- answer{flushAck: true, seq: m.Seq, err: m.Err}
			case *wire.Nack:
				out <- answer{nack: true, seq: m.Seq}
			}
		}
	}()
	return out
}

// A resync target writes region copies in place (no journal record) and,
// before its progress names a copy, makes it durable. The test cuts the
// power right after the progress was saved, in many ways, and checks every
// copied range the progress names. It fails if the progress is saved after
// a journal sync only (the planted bug of TestInPlaceProgressCatchesPlantedBug).
func TestInPlaceResyncProgressSurvivesPowerLoss(t *testing.T) {
	const chunk, chunks = 256 << 10, 6
	mem := vfs.NewMem()
	s, node := newSideOn(t, mem, 4<<20, 2, false)
	r, w := resumeSession(t, s)
	before := s.store.Stats()
	last := uint64(2 + chunks)
	msgs := answers(r)
	await := func(done func(answer) bool) {
		t.Helper()
		for m := range msgs {
			if done(m) {
				return
			}
		}
		t.Fatal("the session ended")
	}
	for k := range chunks {
		if k == chunks-1 {
			time.Sleep(progressEvery + 100*time.Millisecond) // the last copy saves the progress
		}
		require.NoError(t, w.WriteMsg(&wire.ResyncData{AsOf: uint64(3 + k), Offset: uint64(k * chunk), Data: chunkData(k, chunk)}))
		require.NoError(t, w.Flush())
	}
	await(func(a answer) bool { return !a.flushAck && a.seq == last })
	var rs *replicator.ResyncState
	require.Eventually(t, func() bool {
		var err error
		rs, err = sidecar.New(mem, "/d").Resync()
		return err == nil && rs != nil && rs.Progress != nil
	}, 5*time.Second, time.Millisecond, "the side saved its progress")
	require.Equal(t, uint64(chunks*chunk), extent.Bytes(rs.Progress.Copied))
	st := s.store.Stats()
	require.Equal(t, before.Writes, st.Writes, "region copies are not journaled")
	require.Equal(t, uint64(chunks*chunk), st.InPlaceBytes-before.InPlaceBytes)
	require.Equal(t, last, s.store.LastSeq())
	require.NotEmpty(t, node.inconsistent)

	// A live write after the progress, flushed: the journal's position
	// passes the progress's, so a restart trusts the progress.
	require.NoError(t, w.WriteMsg(&wire.Write{Seq: last + 1, Epoch: 1, Offset: 3 << 20, Data: block(9)}))
	require.NoError(t, w.WriteMsg(&wire.Flush{ID: 1, Seq: last + 1}))
	require.NoError(t, w.Flush())
	await(func(a answer) bool { return a.flushAck && a.err == 0 })

	for seed := range uint64(racetest.Sample(6)) {
		crashed := mem.CrashClone(rand.New(rand.NewPCG(seed, 5)))
		got, err := sidecar.New(crashed, "/d").Resync()
		require.NoError(t, err)
		require.NotNil(t, got, "Inconsistent survives")
		require.NotNil(t, got.Progress, "the saved progress survives")
		store, err := journal.Open(journal.Options{Dir: "/d", FS: crashed})
		require.NoError(t, err)
		require.GreaterOrEqual(t, store.LastSeq(), got.Progress.AsOf, "the position covers the progress")
		for _, e := range got.Progress.Copied {
			b := make([]byte, 4096)
			for off := e.Offset; off < e.End(); off += 4096 {
				want := bytes.Repeat([]byte{byte(int(off/chunk)*31 + int(off%chunk)/4096 + 1)}, 4096)
				require.NoError(t, store.ReadAt(b, int64(off)))
				require.True(t, bytes.Equal(want, b), "seed %d: copied block at %d lost", seed, off)
			}
		}
		require.NoError(t, store.Close())
	}
}

// TestInPlaceProgressCatchesPlantedBug builds this package with the planted
// bug (plantedbug_progress_on.go: progress saved after a journal sync only)
// and requires the power-loss test above to fail on it.
func TestInPlaceProgressCatchesPlantedBug(t *testing.T) {
	racetest.FullOnly(t)
	out, err := planted.GoTest(t, "grbd_plantedbug_progress", "^TestInPlaceResyncProgressSurvivesPowerLoss$")
	require.Error(t, err, "the power-loss test passed with the planted bug:\n%s", out)
	require.Contains(t, out, "lost", "it failed for another reason:\n%s", out)
}

// A resync keeps the stream full while the target's disk is the slower
// side: the target must still acknowledge as it goes (every ackInterval),
// or the primary's watchdog takes it for dead after peer-timeout and drops
// the session, and a resync that restarts from scratch never ends (seen
// under load in node TestResyncProgressNotTrusted).
func TestAcksFlowDuringAFullStream(t *testing.T) {
	// A disk slower than the wire: each data-file write takes 1 ms.
	slow := vfs.WithErrors(vfs.NewMem(), func(op vfs.Op, name string) error {
		if op == vfs.OpWrite && strings.HasSuffix(name, "data.img") {
			time.Sleep(time.Millisecond)
		}
		return nil
	})
	s, _ := newSideOn(t, slow, 4<<20, 2, false)
	h := &wire.Hello{Cluster: "t", From: "p", Role: wire.RolePrimary, Epoch: 1, LastSeq: 2, Flags: wire.HelloResume}
	h.PutDisks(s.store.ID(), 0xd15c)
	// TCP, not a pipe: the socket holds what the sender wrote, so each
	// read of the target fills its whole buffer and it rarely runs dry.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	prim, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	side, err := l.Accept()
	require.NoError(t, err)
	r, w, sent := connectOn(t, s, h, replicator.History{{Epoch: 1, FirstSeq: 1}}, side, prim)
	read[*wire.Hello](t, r)
	require.NoError(t, <-sent)
	require.Equal(t, uint64(2), read[*wire.Ack](t, r).Seq)

	acks := make(chan uint64, 1024)
	go func() {
		defer close(acks)
		for {
			m, err := r.ReadMsg()
			if err != nil {
				return
			}
			if a, ok := m.(*wire.Ack); ok {
				acks <- a.Seq
			}
		}
	}()
	const wantAcks = 20
	stop := make(chan struct{})
	streamed := make(chan int, 1)
	go func() { // never pauses, so the target's buffer never runs dry
		data := chunkData(1, 12<<10)
		k := 0
		defer func() { streamed <- k }()
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); k++ {
			select {
			case <-stop:
				return
			default:
			}
			m := &wire.ResyncData{AsOf: uint64(3 + k), Offset: uint64(k%300) * (12 << 10), Data: data}
			if w.WriteMsg(m) != nil {
				return
			}
		}
		_ = w.Flush()
	}()
	for seen := 0; seen < wantAcks; {
		select {
		case _, ok := <-acks:
			require.True(t, ok, "the session ended")
			seen++
		case k := <-streamed:
			t.Fatalf("%d acks while a stream of %d chunks (5 s) went on: the target acknowledges only when its buffer runs dry", seen, k)
		}
	}
	close(stop)
	<-streamed
}

// A resync target acks its copies as Received only, and as Journaled once
// it took the ResyncDone and is Consistent: the primary counts it (and the
// control plane Clears it) only then. Journaled acks of the copies came
// before the ResyncDone behind them, and a promotion in between found the
// node Inconsistent (e2e TestReplacedDiskAllStopped).
func TestResyncTargetAcksJournaledOnlyOnceConsistent(t *testing.T) {
	const chunk = 256 << 10
	s, node := newSideOn(t, vfs.NewMem(), 4<<20, 2, false)
	r, w := resumeSession(t, s)
	acks := answers(r)
	consistent := func() bool {
		node.mu.Lock()
		defer node.mu.Unlock()
		return node.consistent != nil && *node.consistent
	}
	const last = 5
	for k := range last - 2 {
		require.NoError(t, w.WriteMsg(&wire.ResyncData{AsOf: uint64(3 + k), Offset: uint64(k * chunk), Data: chunkData(k, chunk)}))
		require.NoError(t, w.Flush())
	}
	for a := range acks {
		require.Equal(t, wire.AckReceived, a.level, "a copy acked as journaled (seq %d) before ResyncDone", a.seq)
		if a.seq == last {
			break
		}
	}
	require.False(t, consistent())
	require.NoError(t, w.WriteMsg(&wire.ResyncDone{AsOf: last}))
	require.NoError(t, w.Flush())
	for a := range acks {
		if a.level == wire.AckJournaled {
			require.Equal(t, uint64(last), a.seq)
			require.True(t, consistent(), "acked as journaled before it was Consistent")
			return
		}
	}
	t.Fatal("the session ended without a journaled ack")
}

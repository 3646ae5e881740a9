package node

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/stretchr/testify/require"
)

// ackModel keeps, per 4 KiB block, the content of the last acknowledged
// write and of writes whose outcome is unknown (failed after being sent).
type ackModel struct {
	mu    sync.Mutex
	acked map[int64][]byte
	maybe map[int64][][]byte
}

func newAckModel() *ackModel {
	return &ackModel{acked: map[int64][]byte{}, maybe: map[int64][][]byte{}}
}

func (m *ackModel) done(off int64, data []byte, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		m.acked[off] = data
		m.maybe[off] = nil
		return
	}
	m.maybe[off] = append(m.maybe[off], data)
}

// check reads every block the model knows through n's device.
func (m *ackModel) check(t *testing.T, n *Node) int {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	got := make([]byte, 4096)
	for off, want := range m.acked {
		require.NoError(t, n.dev.ReadAt(got, off))
		if bytes.Equal(got, want) {
			continue
		}
		ok := false
		for _, d := range m.maybe[off] {
			ok = ok || bytes.Equal(got, d)
		}
		require.True(t, ok, "block at %d: not the acknowledged write (nor an unacknowledged later one)", off)
	}
	return len(m.acked)
}

// writers runs w goroutines writing random 4 KiB blocks (each its own set
// of blocks) through p until stop closes, recording outcomes in m.
func writers(p *Node, m *ackModel, w int, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	blocks := p.store.Size() / 4096
	for g := range w {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := (rng.Int64N(blocks/int64(w))*int64(w) + int64(g)) * 4096
				data := bytes.Repeat([]byte{byte(g), byte(i), byte(i >> 8), 0x77}, 1024)
				err := p.dev.WriteAt(data, off, false)
				m.done(off, data, err)
				if err != nil && !errors.Is(err, ErrDeposed) && !errors.Is(err, ErrFenced) {
					return
				}
				if err != nil {
					return
				}
			}
		})
	}
	return &wg
}

func takeoverEvent(n *Node, state string) *events.Event {
	for _, e := range n.events.Recent(0) {
		if e.Type == events.TypeTakeover && e.State == state {
			return &e
		}
	}
	return nil
}

// The primary stops under writes: a shard peer takes over, rebuilds the
// device from the shards, and every acknowledged write reads back; the
// survivors decode to its copy, and the old primary comes back as a
// mirror.
func TestECFailoverRebuildsAckedWrites(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 5, false, ecConf)
	p := c.primary()
	require.Equal(t, "d0", p.me.Name)
	rng := rand.New(rand.NewPCG(11, 12))
	ecWrites(t, p, rng, 100) // unaligned writes and zeroings first
	m := newAckModel()
	stop := make(chan struct{})
	wg := writers(p, m, 4, stop)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	c.stop("d0") // writes in flight fail (ErrDeposed): their outcome is unknown
	close(stop)
	wg.Wait()

	np := c.primary()
	t.Logf("takeover: %s serving %v after the stop", np.me.Name, time.Since(start))
	require.NotEqual(t, "d0", np.me.Name)
	require.False(t, np.shardPeer(), "the new primary is a full copy")
	require.Equal(t, np.ec.Coder().G.Size, np.store.Size())
	ev := takeoverEvent(np, events.StateDone)
	require.NotNil(t, ev, "takeover event")
	require.Equal(t, np.ec.Coder().G.Size, ev.Bytes)
	t.Logf("takeover event: %s", ev.Detail)
	st := np.Status()
	require.Nil(t, st.Shard)
	require.Equal(t, np.ec.Coder().G.Size, st.DeviceSize)
	require.Positive(t, m.check(t, np), "acknowledged writes read back")

	// It goes on: writes, the survivors resync, and decode to its copy.
	ecWrites(t, np, rng, 50)
	c.requireShardsDecode(np)

	// The old primary returns as a mirror of the new one.
	d0 := c.start("d0")
	require.Eventually(t, func() bool { return len(np.ctl.Status().Outdated) == 0 }, 20*time.Second, 10*time.Millisecond, "d0 Cleared")
	c.waitUpToDate(np)
	want := make([]byte, np.store.Size())
	got := make([]byte, d0.store.Size())
	require.NoError(t, np.store.ReadAt(want, 0))
	require.NoError(t, d0.store.ReadAt(got, 0))
	require.True(t, bytes.Equal(want, got), "d0 resynced as a full mirror")

	// A restart keeps the new layout: the new primary is a full copy.
	name := np.me.Name
	c.stop(name)
	n2 := c.start(name)
	require.False(t, n2.shardPeer())
	require.Equal(t, n2.ec.Coder().G.Size, n2.store.Size())
}

// Survivors at different journal positions and applied positions: d4
// never got the last writes (they wait for it), d3 never applied anything
// past an early point, d1 journaled writes above d4's position. The
// takeover settles them at the lowest journal position (d4's) and rebuilds
// exactly the device as of that position from d1 and d3 (d2 is Outdated).
func TestECFailoverSurvivorsAtDifferentPositions(t *testing.T) {
	t.Parallel()
	survivorsAtDifferentPositions(t, false)
}

// The same, but d1 applied writes above d4's position (its image is past
// D): it is not used, the device is rebuilt from d3 and d4, also when d1
// is the node taking over (its own store is then overwritten unread).
func TestECFailoverImagePastDIsNotUsed(t *testing.T) {
	t.Parallel()
	survivorsAtDifferentPositions(t, true)
}

func survivorsAtDifferentPositions(t *testing.T, d1Eager bool) {
	faults := &faultHooks{}
	if d1Eager {
		eager := func(node string) bool { return node == "d1" }
		faults.applyEagerly.Store(&eager)
	}
	c := newTestCluster(t, 5, false, ecConf, Options{faults: faults})
	p := c.primary()
	ecWrites(t, p, rand.New(rand.NewPCG(13, 14)), 60)
	m := newAckModel()
	for i := range 20 {
		data := bytes.Repeat([]byte{byte(i), 0xab, 0xcd, 0xef}, 1024)
		off := int64(i) * 3 * 4096
		m.done(off, data, p.dev.WriteAt(data, off, false))
	}
	c.waitUpToDate(p)
	held := p.store.LastSeq()
	ignore := func(node string) bool { return node == "d3" }
	faults.ignoreCommit.Store(&ignore) // d3's image stays behind
	for i := range 20 {
		data := bytes.Repeat([]byte{byte(i), 0x11, 0x22, 0x33}, 1024)
		off := int64(i) * 5 * 4096
		m.done(off, data, p.dev.WriteAt(data, off, false))
	}
	x := p.store.LastSeq()
	snap := make([]byte, p.store.Size())
	require.NoError(t, p.store.ReadAt(snap, 0)) // the device as of x
	c.stop("d2")
	require.Eventually(t, func() bool { return len(p.ctl.Status().Outdated) == 1 }, 5*time.Second, 5*time.Millisecond)
	drop := func(peer string, seq uint64) bool { return peer == "d4" && seq > x }
	faults.dropPiece.Store(&drop) // d4 never journals what comes next
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			data := bytes.Repeat([]byte{byte(i), 0x99, 0x98, 0x97}, 1024)
			off := int64(i) * 7 * 4096
			m.done(off, data, p.dev.WriteAt(data, off, false)) // waits for d4
		})
	}
	require.Eventually(t, func() bool {
		return c.nodes["d1"].store.LastSeq() >= x+8 && c.nodes["d3"].store.LastSeq() >= x+8
	}, 5*time.Second, 5*time.Millisecond, "d1 and d3 journaled writes d4 never got")
	require.LessOrEqual(t, c.nodes["d3"].sa.Applied(), x, "d3 applied nothing uncommitted")
	if d1Eager {
		require.Eventually(t, func() bool { return c.nodes["d1"].sa.Applied() > x }, 5*time.Second, 5*time.Millisecond, "d1's image is past x")
	} else {
		require.Less(t, c.nodes["d1"].sa.Applied(), c.nodes["d1"].store.LastSeq(), "d1 holds uncommitted writes unapplied")
	}
	t0 := time.Now()
	c.stop("d0")
	wg.Wait()
	t.Logf("d0 stopped in %v", time.Since(t0))
	faults.dropPiece.Store(nil)
	faults.ignoreCommit.Store(nil)
	faults.applyEagerly.Store(nil)

	np := c.primary()
	ev := takeoverEvent(np, events.StateDone)
	require.NotNil(t, ev)
	t.Logf("%s took over %v after the stop: %s", np.me.Name, time.Since(t0), ev.Detail)
	stats := np.ec.LastTakeover()
	require.NotNil(t, stats)
	require.Equal(t, x, stats.D, "rebuilt at d4's journal position")
	require.Greater(t, x, held)
	require.Len(t, stats.Used, 2)
	require.Contains(t, stats.Used, "d3", "the lagging image is settled forward and used")
	if d1Eager {
		require.ElementsMatch(t, []string{"d3", "d4"}, stats.Used, "d1's image is past D")
	}
	got := make([]byte, np.store.Size())
	require.NoError(t, np.store.ReadAt(got, 0))
	require.True(t, bytes.Equal(snap, got), "the rebuilt device is the device as of seq %d", x)
	m.check(t, np)
	ecWrites(t, np, rand.New(rand.NewPCG(15, 16)), 30)
	c.requireShardsDecode(np)
}

// With fewer than K usable shard peers nobody serves: the elected shard
// peer refuses (event), its store stays its shard.
func TestECFailoverTooFewShards(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 5, false, ecConf)
	p := c.primary()
	ecWrites(t, p, rand.New(rand.NewPCG(17, 18)), 30)
	c.waitUpToDate(p)
	for _, n := range []string{"d2", "d3", "d4"} {
		require.NoError(t, p.SetDisconnected(n, true))
	}
	ecWrites(t, p, rand.New(rand.NewPCG(19, 20)), 30) // go on once the three are Outdated
	require.ElementsMatch(t, []string{"d2", "d3", "d4"}, p.ctl.Status().Outdated)
	c.stop("d0")
	require.Eventually(t, func() bool { return takeoverEvent(c.nodes["d1"], events.StateFailed) != nil }, 15*time.Second, 10*time.Millisecond,
		"d1, the only one not Outdated, tries and refuses")
	ev := takeoverEvent(c.nodes["d1"], events.StateFailed)
	require.Contains(t, ev.Detail, "too few usable shard peers")
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for name, n := range c.nodes {
			require.False(t, n.currentPrimary() != nil && n.ctl.Serving(), "%s serves", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d1 := c.nodes["d1"]
	require.True(t, d1.shardPeer())
	require.Equal(t, d1.ec.Coder().G.ShardSize(), d1.store.Size())
}

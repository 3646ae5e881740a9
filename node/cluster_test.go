package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/bufpool"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/datadir"
	"github.com/grbd/grbd/internal/freeport"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/witness"
	"github.com/stretchr/testify/require"
)

// testCluster runs data nodes and a witness in this process, on loopback.
type testCluster struct {
	t     testing.TB
	cfg   *config.Config
	nodes map[string]*Node
	wit   *witness.Witness
	opts  Options // every node's, besides the logger
	log   *slog.Logger
}

// newTestCluster writes a config for n data nodes (d0, d1, ...) and, with
// wit, a witness w; extra is YAML appended at the top level.
// opts, at most one, are the nodes' Options besides the test logger.
func newTestCluster(t testing.TB, n int, wit bool, extra string, opts ...Options) *testCluster {
	return newSizedCluster(t, "4MiB", n, wit, extra, opts...)
}

// newSizedCluster is newTestCluster with a device of size bytes.
func newSizedCluster(t testing.TB, size string, n int, wit bool, extra string, opts ...Options) *testCluster {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	if !strings.Contains(extra, "peer-timeout:") {
		// The same for the peer timeout: with 2 s, three clusters
		// resyncing at once under -race missed yamux keepalives and acks,
		// dropped sessions, and a resync that restarts from scratch never
		// ended (TestResyncProgressNotTrusted).
		if strings.Contains(extra, "replication:\n") {
			extra = strings.Replace(extra, "replication:\n", "replication:\n  peer-timeout: 6s\n", 1)
		} else {
			extra += "replication:\n  peer-timeout: 6s\n"
		}
	}
	fmt.Fprintf(&b, "cluster: t\ndevice:\n  size: %s\njournal:\n  max-size: 8MiB\n  segment-size: 1MiB\n%s", size, extra)
	if !strings.Contains(extra, "quorum:") {
		// Tolerant timings: tests run under -race on two busy cores, where
		// a 250 ms lease lapses now and then and a failover starts (with
		// 1 s, CI still saw a lapse and a failover under a test that
		// assumes one primary: TestECShardsDecodeToFullCopy).
		b.WriteString(testQuorum)
	}
	b.WriteString("nodes:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: d%d, address: '%s', nbd: '%s', admin: '%s', data-dir: d%d}\n", i, freeport.Loopback(t), freeport.Loopback(t), freeport.Loopback(t), i)
	}
	if wit {
		fmt.Fprintf(&b, "witness: {name: w, address: '%s', admin: '%s', data-dir: w}\n", freeport.Loopback(t), freeport.Loopback(t))
	}
	path := filepath.Join(dir, "c.yaml")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	c := &testCluster{t: t, cfg: cfg, nodes: map[string]*Node{}}
	t.Cleanup(c.closeAll) // after the log is printed (cleanups run last first)
	c.log = clusterLogger(t)
	if len(opts) > 0 {
		c.opts = opts[0]
	}
	for i := range n {
		c.start(fmt.Sprintf("d%d", i))
	}
	if wit {
		c.startWitness()
	}
	if n > 1 && !strings.Contains(extra, "auto-failover: false") {
		c.firstPrimaryD0()
	}
	return c
}

// firstPrimaryD0 hands the first primary's role to d0 when another data
// node won the first election: tests name d0 the primary and d1 a
// secondary, and on a loaded machine d1 wins now and then.
func (c *testCluster) firstPrimaryD0() {
	c.t.Helper()
	p := c.primary()
	if p.me.Name == "d0" {
		return
	}
	c.waitUpToDate(p)
	// UpToDate shows before the control plane records d0's disk as
	// holding the data (the primary's Clear commits a little later).
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := c.nodes["d0"].ctl.RequestPromote(false)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("d0 not promotable after 15s: %v", err)
		}
	}
	require.Eventually(c.t, func() bool {
		for name, n := range c.nodes {
			if (name == "d0") != (n.currentPrimary() != nil && n.ctl.Serving()) {
				return false // d0 not serving yet, or the old primary not yet stepped down
			}
		}
		return true
	}, 15*time.Second, 10*time.Millisecond, "d0 not promoted")
	c.waitUpToDate(c.nodes["d0"])
}

const testQuorum = "quorum:\n  lease: 2s\n  failover-timeout: 2s\n"

func testLogger() *slog.Logger {
	if os.Getenv("GRBD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (c *testCluster) start(name string) *Node {
	c.t.Helper()
	o := c.opts
	o.Logger = c.log
	n, err := Start(c.cfg, name, o)
	require.NoError(c.t, err)
	c.nodes[name] = n
	return n
}

func (c *testCluster) startWitness() {
	w, err := witness.Start(c.cfg, "w", c.log)
	require.NoError(c.t, err)
	c.wit = w
}

func (c *testCluster) stop(name string) {
	require.NoError(c.t, c.nodes[name].Close())
	delete(c.nodes, name)
}

func (c *testCluster) closeAll() {
	for name, n := range c.nodes {
		_ = n.Close()
		delete(c.nodes, name)
	}
	if c.wit != nil {
		_ = c.wit.Close()
		c.wit = nil
	}
}

// primary waits for a serving primary and returns it.
func (c *testCluster) primary() *Node {
	c.t.Helper()
	var p *Node
	// The condition runs on a goroutine of its own that can outlive a
	// failed wait: it reads a copy of the node set, not c.nodes, which the
	// test's cleanup then empties.
	nodes := slices.Collect(maps.Values(c.nodes))
	require.Eventually(c.t, func() bool {
		p = nil
		for _, n := range nodes {
			if n.currentPrimary() != nil && n.ctl.Serving() {
				p = n
			}
		}
		return p != nil
	}, 15*time.Second, 5*time.Millisecond, "no serving primary")
	return p
}

// waitUpToDate waits until the primary sees every other running node
// UpToDate with nothing outstanding; a failure shows the peers as they
// were at the end of the wait.
func (c *testCluster) waitUpToDate(p *Node) {
	c.t.Helper()
	upToDate := func() (bool, []PeerStatus) {
		peers := p.Status().Peers
		for _, ps := range peers {
			if _, running := c.nodes[ps.Name]; running && (ps.Disk != DiskUpToDate || ps.Behind != 0) {
				return false, peers
			}
		}
		return true, peers
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ok, peers := upToDate()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("peers not UpToDate after 20s: %+v", peers)
		}
	}
}

func block(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8), 0xa5, 0x5a}, 1024) }

// writeBlocks writes blocks [from, to) at offsets i*4096 through the device.
func writeBlocks(t *testing.T, n *Node, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		retryFenced(t, func() error { return n.dev.WriteAt(block(i), int64(i%1024)*4096, false) })
	}
}

// newSyncedPair starts two data nodes and a witness, writes blocks [0, n)
// on the primary and waits until the secondary is UpToDate.
func newSyncedPair(t *testing.T, n int) (*testCluster, *Node) {
	t.Helper()
	return newSyncedCluster(t, 2, n)
}

// newSyncedCluster is newSyncedPair with data data nodes.
func newSyncedCluster(t *testing.T, data, n int) (*testCluster, *Node) {
	t.Helper()
	c := newTestCluster(t, data, true, "")
	p := c.primary()
	writeBlocks(t, p, 0, n)
	c.waitUpToDate(p)
	return c, p
}

// requireSameImages compares every running node's image with want.
func (c *testCluster) requireImages(want func(i int) []byte, blocks int) {
	c.t.Helper()
	for name, n := range c.nodes {
		got := make([]byte, 4096)
		for i := range blocks {
			require.NoError(c.t, n.store.ReadAt(got, int64(i)*4096))
			require.Equal(c.t, want(i), got, "%s block %d", name, i)
		}
	}
}

func TestClusterReplicatesAndAgrees(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{"A", "B", "C"} {
		t.Run("protocol "+proto, func(t *testing.T) {
			c := newTestCluster(t, 2, true, "replication:\n  protocol: "+proto+"\n")
			p := c.primary()
			require.Equal(t, "d0", p.me.Name, "the first data node leads a new cluster")
			writeBlocks(t, p, 0, 200)
			require.NoError(t, p.dev.Flush())
			c.waitUpToDate(p)
			c.requireImages(block, 200)
			st := p.Status()
			require.Equal(t, RolePrimary, st.Role)
			require.True(t, st.Quorum.Serving)
			require.Equal(t, "d0", st.Quorum.Primary)
		})
	}
}

// A client reuses its buffer as soon as a write completes, and with
// protocol A that is before the peer was sent the write: what the peer gets
// must be the bytes of the write, whatever the client or the next writes
// (which reuse the pooled copies) do meanwhile. 64 KiB writes take the
// in-place path, 4 KiB writes the logged one. The same holds for the
// payload buffers blockdev hands over (WriteOwned): they go back to the pool
// for the next writes once the links are done with them.
func TestShippedWritesOutliveTheClientBuffer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		proto string
		owned bool
	}{{"A", false}, {"C", false}, {"A", true}, {"C", true}} {
		t.Run(fmt.Sprintf("protocol %s owned %t", tc.proto, tc.owned), func(t *testing.T) {
			c := newTestCluster(t, 2, true, "replication:\n  protocol: "+tc.proto+"\n")
			p := c.primary()
			const writers, blocks = 8, 512
			write := func(b []byte, off int64) error { // retryFenced, off the test goroutine
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
					var err error
					if tc.owned {
						buf := bufpool.Get(len(b)) // given up to the device
						copy(*buf, b)
						err = p.dev.WriteOwned(buf, off, false)
					} else {
						err = p.dev.WriteAt(b, off, false)
					}
					if err == nil || !errors.Is(err, ErrFenced) || time.Now().After(deadline) {
						return err
					}
				}
			}
			errs := make(chan error, writers)
			var wg sync.WaitGroup
			for g := range writers {
				wg.Go(func() {
					big, small := make([]byte, 64<<10), make([]byte, 4096)
					for i := g * 16; i < blocks/2; i += writers * 16 { // [0, 256): 16 blocks a write
						for j := range 16 {
							copy(big[j*4096:], block(i+j))
						}
						if err := write(big, int64(i)*4096); err != nil {
							errs <- err
							return
						}
						clear(big)
					}
					for i := blocks/2 + g; i < blocks; i += writers { // [256, 512): a block a write
						copy(small, block(i))
						if err := write(small, int64(i)*4096); err != nil {
							errs <- err
							return
						}
						clear(small) // at once, as a client reusing its buffer would
					}
				})
			}
			wg.Wait()
			close(errs)
			require.NoError(t, <-errs)
			require.NoError(t, p.dev.Flush())
			c.waitUpToDate(p)
			c.requireImages(block, blocks)
		})
	}
}

func TestSecondaryRefusesIO(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, true, "")
	c.primary()
	sec := c.nodes["d1"]
	err := sec.dev.WriteAt(block(1), 0, false)
	require.ErrorIs(t, err, ErrReadOnly)
	require.ErrorIs(t, err, syscall.EPERM)
	require.ErrorIs(t, sec.dev.ReadAt(make([]byte, 4096), 0), syscall.EPERM)
	require.True(t, sec.dev.ReadOnly())
}

func TestFailoverKeepsAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, true, "")
	p := c.primary()
	writeBlocks(t, p, 0, 100)
	// The first data session of a new cluster can fail (the secondary is
	// then Outdated until it caught up and was Cleared): only a node that
	// holds every acknowledged write may take over, so wait for that.
	c.waitUpToDate(p)
	require.Eventually(t, func() bool { return len(p.Status().Quorum.Outdated) == 0 }, 10*time.Second, 10*time.Millisecond,
		"the secondary was never Cleared")
	c.stop(p.me.Name) // its lease runs out; the other data node takes over
	start := time.Now()
	np := c.primary()
	require.Equal(t, "d1", np.me.Name)
	t.Logf("failover took %v", time.Since(start))
	c.requireImages(block, 100)
	writeBlocks(t, np, 100, 150)

	// The old primary comes back as a secondary and catches up.
	old := c.start("d0")
	c.waitUpToDate(np)
	require.Equal(t, RoleSecondary, old.Status().Role)
	c.requireImages(block, 150)
}

func TestCatchUpAfterRestart(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, false, "")
	p := c.primary()
	writeBlocks(t, p, 0, 50)
	c.waitUpToDate(p)
	c.stop("d2")
	writeBlocks(t, p, 50, 300) // d2 is Outdated first, then writes go on
	require.Contains(t, p.ctl.Status().Outdated, "d2")
	c.start("d2")
	c.waitUpToDate(p)
	require.Eventually(t, func() bool { return len(p.ctl.Status().Outdated) == 0 }, 5*time.Second, 10*time.Millisecond, "Clear after catch-up")
	c.requireImages(block, 300)
}

func TestRegionResyncAfterCompaction(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, true, "")
	p := c.primary()
	c.stop("d1")
	// 8 MiB journal, 4 MiB device: several passes compact the journal past
	// d1's position, so it needs a region resync.
	for pass := range 3 {
		for i := range 1024 {
			require.NoError(t, p.dev.WriteAt(block(pass*1024+i), int64(i)*4096, false))
		}
	}
	require.Greater(t, p.store.Stats().FirstRetainedSeq, uint64(1))
	c.start("d1")
	c.waitUpToDate(p)
	c.requireImages(func(i int) []byte { return block(2*1024 + i) }, 1024)
	require.Positive(t, p.Status().Peers[0].CatchupBytes)
}

func TestPrimaryFencesWithoutQuorum(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, true, "")
	p := c.primary()
	writeBlocks(t, p, 0, 10)
	require.NoError(t, c.wit.Close())
	c.wit = nil
	writeBlocks(t, p, 10, 20) // witness down: service continues
	c.stop("d1")
	// Alone, p cannot renew its lease: within a lease (plus grace) every
	// request fails with EIO, and nothing is acknowledged.
	require.Eventually(t, func() bool {
		err := p.dev.WriteAt(block(99), 0, false)
		return errors.Is(err, ErrFenced) && errors.Is(err, syscall.EIO)
	}, 5*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, p.dev.ReadAt(make([]byte, 4096), 0), syscall.EIO)
}

func TestManualPromotion(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, true, testQuorum+"  auto-failover: false\n")
	time.Sleep(500 * time.Millisecond)
	for _, n := range c.nodes {
		require.Nil(t, n.currentPrimary(), "no primary without an operator")
	}
	// d1 takes the request once it has the control plane's state (under
	// load that comes later than 500 ms after the start).
	var err error
	require.Eventually(t, func() bool {
		err = c.nodes["d1"].ctl.RequestPromote(false)
		return !errors.Is(err, quorum.ErrNotMember)
	}, 10*time.Second, 20*time.Millisecond, "d1 never joined the control plane")
	require.NoError(t, err)
	p := c.primary()
	require.Equal(t, "d1", p.me.Name)
	writeBlocks(t, p, 0, 20)
	c.waitUpToDate(p)
	require.NoError(t, p.ctl.RequestDemote())
	require.Eventually(t, func() bool { return p.currentPrimary() == nil }, 5*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, p.dev.WriteAt(block(1), 0, false), syscall.EPERM)
}

func TestDisconnectOutdatesAndConnectCatchesUp(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 10)
	require.NoError(t, p.SetDisconnected("d1", true))
	writeBlocks(t, p, 10, 40) // goes on once d1 is Outdated
	require.Contains(t, p.ctl.Status().Outdated, "d1")
	require.True(t, p.Status().Peers[0].Disconnected)
	require.Error(t, p.SetDisconnected("nobody", true))
	require.NoError(t, p.SetDisconnected("d1", false))
	require.Eventually(t, func() bool { return len(p.ctl.Status().Outdated) == 0 }, 10*time.Second, 5*time.Millisecond, "d1 Cleared after connect")
	c.waitUpToDate(p)
	c.requireImages(block, 40)
}

func TestInvalidateResyncsEverything(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 100)
	require.Error(t, p.Invalidate(), "the primary cannot be invalidated")
	before, d1Before := p.store.LastSeq(), c.nodes["d1"].store.Stats()
	require.NoError(t, c.nodes["d1"].Invalidate())
	require.Eventually(t, func() bool { return p.Status().Peers[0].ResyncTotal == 4<<20 }, 10*time.Second, 5*time.Millisecond,
		"the whole device is copied")
	c.waitUpToDate(p)
	// The target acks its copies as journaled only once it took the
	// ResyncDone behind them and is Consistent: the primary counts it
	// after that.
	require.NotEqual(t, DiskInconsistent, c.nodes["d1"].Status().Disk, "the primary counted the target before it was Consistent")
	require.Eventually(t, func() bool { return c.nodes["d1"].Status().Disk == DiskUpToDate }, 10*time.Second, 5*time.Millisecond,
		"the target never finished its resync")
	c.requireImages(block, 100)

	// The primary journals only a 4 KiB head of each 1 MiB chunk, for
	// the chunk's sequence (issue 17: not every resync byte again).
	var journaled int
	var lastCopy uint64
	err := p.store.ReadRecords(before+1, func(w journal.Write) error {
		journaled += len(w.Data)
		lastCopy = w.Seq
		return nil
	})
	require.NoError(t, err, "the primary journaled so much during the resync that it compacted its journal")
	require.Positive(t, journaled)
	require.LessOrEqual(t, journaled, 4*4096+4096, "resync bytes journaled again on the primary")

	// The target wrote every copy in place, journaled none, and sealed its
	// journal at the end: it serves no catch-up from below its copies.
	d1 := c.nodes["d1"].store.Stats()
	require.Equal(t, d1Before.Writes+1, d1.Writes, "the target journaled more than the size announcement")
	require.Equal(t, uint64(4<<20), d1.InPlaceBytes-d1Before.InPlaceBytes)
	require.Greater(t, d1.FirstRetainedSeq, lastCopy, "the target's journal still reaches below its copies")
}

// A second member on a running member's data directory is refused before
// it reads or writes anything there (issue 15: it replayed the running
// node's journal), and so is a second witness.
func TestDataDirLockedWhileRunning(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 1, true, "")
	_, err := Start(c.cfg, "d0", Options{Logger: testLogger()})
	require.ErrorIs(t, err, datadir.ErrLocked)
	require.Contains(t, err.Error(), fmt.Sprintf("this process (pid %d)", os.Getpid()))
	_, err = witness.Start(c.cfg, "w", testLogger())
	require.ErrorIs(t, err, datadir.ErrLocked)
	// The running node still serves.
	writeBlocks(t, c.primary(), 0, 4)
	c.stop("d0")
	c.start("d0") // released by Close
}

// A promotion of a node whose disk is Inconsistent is refused before the
// control plane is asked (after waiting, bounded by the request, for a
// resync to finish): asking first deposed the primary, and the node then
// refused the role, leaving no primary until another election.
func TestPromotingAnInconsistentNodeIsRefusedFirst(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 10)
	d1 := c.nodes["d1"]
	require.NoError(t, p.SetDisconnected("d1", true))
	require.NoError(t, d1.Invalidate())
	before := p.ctl.Status()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	rec := httptest.NewRecorder()
	d1.adminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/primary", nil).WithContext(ctx))
	require.Equal(t, http.StatusConflict, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), "Inconsistent")
	after := p.ctl.Status()
	require.Equal(t, before.Epoch, after.Epoch, "the control plane was asked")
	require.Equal(t, p.me.Name, after.Primary)
}

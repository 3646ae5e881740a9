package node

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/ec"
	"github.com/grbd/grbd/internal/ec/ectest"
	"github.com/stretchr/testify/require"
)

const ecConf = "replication:\n  redundancy: ec 2+2\n"

// ecWrites writes n random writes (unaligned, inside a chunk, across
// chunks and stripes, zeroings) through the primary's device.
func ecWrites(t *testing.T, p *Node, rng *rand.Rand, n int) {
	t.Helper()
	size := p.store.Size()
	for range n {
		off := rng.Int64N(size/512) * 512
		length := min(size-off, 512*(1+rng.Int64N(600)))
		if rng.IntN(8) == 0 {
			retryFenced(t, func() error { return p.dev.WriteZeroes(off, length, false) })
			continue
		}
		buf := make([]byte, length)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		retryFenced(t, func() error { return p.dev.WriteAt(buf, off, false) })
	}
}

// retryFenced runs a write again, as a client would, while the primary is
// fenced: members in one process under -race on two busy cores miss a
// lease renewal now and then (a fenced write is not acknowledged, and the
// lease comes back). Any other error fails the test.
func retryFenced(t *testing.T, write func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := write()
		if err == nil || !errors.Is(err, ErrFenced) || time.Now().After(deadline) {
			require.NoError(t, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// requireShardsDecode reads every shard image of the running shard peers
// and checks that each k-subset of them decodes to the primary's copy, and
// that per-shard verify finds nothing out of sync.
func (c *testCluster) requireShardsDecode(p *Node) {
	c.t.Helper()
	c.waitUpToDate(p)
	want := make([]byte, p.store.Size())
	require.NoError(c.t, p.store.ReadAt(want, 0))
	g := p.ec.Coder().G
	shards := make([][]byte, g.Shards())
	for _, n := range c.nodes {
		if !n.shardPeer() {
			continue
		}
		img := make([]byte, g.ShardSize())
		require.Equal(c.t, g.ShardSize(), n.store.Size(), "compact shard image")
		require.NoError(c.t, n.store.ReadAt(img, 0))
		shards[n.ec.Shard()] = img
	}
	ectest.RequireEveryPairDecodes(c.t, p.ec.Coder(), shards, want)
	res, err := p.Verify(c.t.Context(), false)
	require.NoError(c.t, err)
	for _, r := range res {
		if _, running := c.nodes[r.Peer]; running {
			require.Empty(c.t, r.Error, r.Peer)
			require.Empty(c.t, r.OutOfSync, "verify of %s", r.Peer)
		}
	}
}

func TestECShardsDecodeToFullCopy(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 5, false, ecConf)
	p := c.primary()
	require.Equal(t, "d0", p.me.Name, "the full-copy node leads")
	ecWrites(t, p, rand.New(rand.NewPCG(1, 2)), 300)
	require.NoError(t, p.dev.Flush())
	c.requireShardsDecode(p)

	st := p.Status()
	require.Equal(t, "ec 2+2", st.Redundancy)
	require.Nil(t, st.Shard)
	for i, ps := range st.Peers {
		require.NotNil(t, ps.Shard, ps.Name)
		require.Equal(t, i, *ps.Shard, ps.Name)
		require.Equal(t, DiskUpToDate, ps.Disk)
	}
	sec := c.nodes["d3"].Status()
	require.Equal(t, 2, *sec.Shard)
	require.Equal(t, int64(4<<20), sec.DeviceSize)
	require.Equal(t, int64(2<<20), c.nodes["d3"].store.Size())
	require.ErrorIs(t, p.Resize(8<<20), ErrECUnsupported)
}

func TestECTwoPeersLostWritesGoOnAndResync(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 5, false, ecConf)
	p := c.primary()
	rng := rand.New(rand.NewPCG(3, 4))
	ecWrites(t, p, rng, 50)
	c.waitUpToDate(p)
	c.stop("d1")
	c.stop("d4")
	ecWrites(t, p, rng, 200) // both are Outdated, then writes go on
	require.ElementsMatch(t, []string{"d1", "d4"}, p.ctl.Status().Outdated)
	c.requireShardsDecode(p) // shards 1 and 2 alone hold the device

	c.start("d1")
	c.start("d4")
	ecWrites(t, p, rng, 100) // writes during their resync
	require.Eventually(t, func() bool { return len(p.ctl.Status().Outdated) == 0 }, 20*time.Second, 10*time.Millisecond, "Clear after resync")
	c.requireShardsDecode(p)
	for _, ps := range p.Status().Peers {
		if ps.Name == "d1" || ps.Name == "d4" {
			require.Positive(t, ps.CatchupBytes, "%s came back through a re-encoded resync", ps.Name)
		}
	}
}

func TestECVerifyRepairsAShard(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 5, false, ecConf)
	p := c.primary()
	ecWrites(t, p, rand.New(rand.NewPCG(5, 6)), 100)
	c.waitUpToDate(p)
	// Damage parity shard 3 (d4) behind its back, in its second stripe and
	// in its 19th (past the first piece the primary encodes to compare).
	img, err := os.OpenFile(filepath.Join(c.nodes["d4"].me.DataDir, "data.img"), os.O_WRONLY, 0)
	require.NoError(t, err)
	for _, stripe := range []int64{1, 18} {
		_, err = img.WriteAt(bytes.Repeat([]byte{0xee}, 512), stripe*ec.DefaultChunk+100)
		require.NoError(t, err)
	}
	require.NoError(t, img.Close())

	res, err := p.Verify(t.Context(), true)
	require.NoError(t, err)
	for _, r := range res {
		if r.Peer != "d4" {
			require.Empty(t, r.OutOfSync, r.Peer)
			continue
		}
		require.Len(t, r.OutOfSync, 2)
		for i, stripe := range []uint64{1, 18} {
			require.Equal(t, stripe*ec.DefaultChunk*2, r.OutOfSync[i].Offset, "device range of the damaged stripe %d", stripe)
		}
		require.True(t, r.Resynced)
	}
	c.requireShardsDecode(p)
}

// With the failover to shard peers switched off (NoShardFailover), a shard
// peer never takes the primary role.
func TestECShardPeerNeverPromotesWhenDisabled(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 5, false, ecConf, Options{NoShardFailover: true})
	p := c.primary()
	ecWrites(t, p, rand.New(rand.NewPCG(7, 8)), 20)
	c.waitUpToDate(p)
	c.stop("d0")
	// Four of five members keep a quorum, but none of them holds the
	// device: no one takes over (docs/erasure.md, "Failover").
	time.Sleep(3 * time.Second)
	for name, n := range c.nodes {
		require.Nil(t, n.currentPrimary(), "%s became primary", name)
	}
	np := c.start("d0")
	require.Same(t, np, c.primary())
	c.requireShardsDecode(np)
}

func TestECRefusesAStoreOfAnotherLayout(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, true, "")
	c.primary()
	c.closeAll()
	// The same data dirs, now declared erasure-coded 2+1 with 4 nodes: d1's
	// full-size mirror store is not a shard image.
	cfg := *c.cfg
	cfg.Replication.Redundancy = "ec 2+1"
	cfg.Nodes = append(cfg.Nodes, cfg.Nodes[1], cfg.Nodes[1])
	cfg.Nodes[2].Name, cfg.Nodes[3].Name = "d2", "d3"
	_, err := Start(&cfg, "d1", Options{Logger: testLogger()})
	require.ErrorIs(t, err, ErrECUnsupported)
	require.ErrorContains(t, err, "start from an empty data-dir")
}

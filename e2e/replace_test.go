package e2e

import (
	"context"
	"encoding/binary"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/nbdclient"
	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

// Issue 14: replacing the disk of a data node (its whole data directory:
// data and control-plane state) and replacing hosts one at a time while
// writes go on. Every test ends with every flushed write read back from the
// final primary, and no promotion of a node without the data.

// taggedWriter writes blocks whose content names the block and a sequence
// number, through whichever node serves, and remembers the last value of
// each block that a FLUSH made durable.
type taggedWriter struct {
	c      *replCluster
	blocks int

	mu      sync.Mutex
	flushed map[int]uint64 // block -> value covered by a flush
	writes  int
}

const tagBlock = 4096

func tagged(block int, v uint64) []byte {
	b := make([]byte, tagBlock)
	binary.LittleEndian.PutUint64(b, uint64(block))
	binary.LittleEndian.PutUint64(b[8:], v)
	return b
}

// run writes until ctx ends, moving to the new primary when the one it
// writes to fails.
func (w *taggedWriter) run(ctx context.Context) {
	var cl *nbdclient.Client
	defer func() {
		if cl != nil {
			cl.Close()
		}
	}()
	pending := map[int]uint64{}
	v := uint64(0)
	for ctx.Err() == nil {
		if cl == nil {
			name := w.primaryNow(ctx)
			if name == "" {
				continue
			}
			var err error
			if cl, err = nbdclient.DialURI(ctx, w.c.uri(name), nbdclient.Options{}); err != nil {
				cl = nil
				continue
			}
			clear(pending) // unflushed writes to the old primary: outcome unknown
		}
		v++
		b := int(v) % w.blocks
		if err := cl.WriteAt(ctx, tagged(b, v), int64(b)*tagBlock, 0); err != nil {
			cl.Close()
			cl = nil
			continue
		}
		pending[b] = v
		if v%16 == 0 {
			if err := cl.Flush(ctx); err != nil {
				cl.Close()
				cl = nil
				continue
			}
			w.mu.Lock()
			for blk, val := range pending {
				w.flushed[blk] = val
			}
			w.writes += len(pending)
			w.mu.Unlock()
			clear(pending)
		}
	}
}

// primaryNow returns the serving primary, or "" after a short wait.
func (w *taggedWriter) primaryNow(ctx context.Context) string {
	for _, m := range w.c.cfg.Nodes {
		if st, err := w.c.status(m.Name); err == nil && st.Role == node.RolePrimary && st.Quorum.Serving {
			return m.Name
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(50 * time.Millisecond):
	}
	return ""
}

// verify reads every flushed block back from node name. A block may hold a
// newer value than the flushed one (written after the flush), never an
// older one.
func (w *taggedWriter) verify(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := nbdclient.DialURI(ctx, w.c.uri(name), nbdclient.Options{})
	require.NoError(t, err)
	defer cl.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	require.NotEmpty(t, w.flushed, "nothing was flushed: the test checks nothing")
	buf := make([]byte, tagBlock)
	for b, want := range w.flushed {
		require.NoError(t, cl.ReadAt(ctx, buf, int64(b)*tagBlock))
		gotBlock, got := binary.LittleEndian.Uint64(buf), binary.LittleEndian.Uint64(buf[8:])
		require.Equal(t, uint64(b), gotBlock, "block %d holds another block's data (or zeros) on %s", b, name)
		require.GreaterOrEqual(t, got, want, "block %d lost a flushed write on %s", b, name)
	}
	t.Logf("%d flushed writes over %d blocks read back from %s", w.writes, len(w.flushed), name)
}

// verifyFailover kills the primary p, waits until name serves in its place
// and checks that name holds every flushed write.
func (w *taggedWriter) verifyFailover(t *testing.T, p *proc, name string) {
	t.Helper()
	p.kill9()
	w.c.waitServing(name, 15*time.Second)
	w.verify(t, name)
}

// startWriter runs a taggedWriter over blocks in the background; stop ends
// it and waits.
func startWriter(c *replCluster, blocks int) (w *taggedWriter, stop func()) {
	w = &taggedWriter{c: c, blocks: blocks, flushed: map[int]uint64{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx) })
	time.Sleep(time.Second) // some flushed writes before the fault
	return w, func() { cancel(); wg.Wait() }
}

// wipeMember deletes a stopped member's whole data directory: a new disk.
func (c *replCluster) wipeMember(name string) {
	c.t.Helper()
	m, _, err := c.cfg.Member(name)
	require.NoError(c.t, err)
	require.NoError(c.t, os.RemoveAll(m.DataDir))
}

// awaitingReplace waits until name says it lost its control-plane state.
func (c *replCluster) awaitingReplace(name string) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		st, err := c.status(name)
		return err == nil && st.Quorum.Phase == "awaiting replace (control-plane state lost)"
	}, 15*time.Second, 50*time.Millisecond, "%s never reported awaiting replace", name)
}

// memberReplace runs grbd member replace name and returns its output. The
// member reports "awaiting replace" as soon as it starts; the member that
// carries out the replace may learn its announcement a moment later (its
// link to the restarted member comes back first) and refuses until then:
// the command is repeated, as an operator would.
func memberReplace(t *testing.T, cfgPath, name string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	out, err := runErr(time.Minute, grbdBin, "member", "replace", name, "--config", cfgPath)
	for err != nil && strings.Contains(out, "announced no join identity") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		out, err = runErr(time.Minute, grbdBin, "member", "replace", name, "--config", cfgPath)
	}
	require.NoError(t, err, "grbd member replace %s:\n%s", name, tail(out, 8192))
	return out
}

// replace runs grbd member replace and waits until the member joined.
func (c *replCluster) replace(name string) {
	c.t.Helper()
	out := memberReplace(c.t, c.cfgPath, name)
	require.Contains(c.t, out, "replaced "+name)
	require.Eventually(c.t, func() bool {
		st, err := c.status(name)
		return err == nil && st.Quorum.Phase == "member"
	}, 20*time.Second, 50*time.Millisecond, "%s never joined", name)
}

// replaceSynced replaces name and waits until primary has it UpToDate and
// no node is Outdated.
func (c *replCluster) replaceSynced(name, primary string) {
	c.t.Helper()
	c.replace(name)
	c.waitPeersOf(primary, 60*time.Second, true)
}

// newDisk kills the data node name (running as p) and starts it again on a
// new, empty disk (data directory), logging to logName.
func (c *replCluster) newDisk(p *proc, name, logName string) *proc {
	c.t.Helper()
	p.kill9()
	c.wipeMember(name)
	return startMember(c.t, c.dir, logName, "listening ", "node", "--config", c.cfgPath, "--name", name)
}

// Case 3 of issue 14: the secondary's disk is replaced (its whole data
// directory). Before the fix every start panicked in raft. Now it is
// refused with the command to run, replaced, fully synced, recorded, and
// then holds every flushed write: it serves them after the primary dies.
func TestReplaceDataNode(t *testing.T) {
	t.Parallel()
	c := newReplCluster(t, "C", "16MiB")
	prim, sec := c.startPair()
	w, stop := startWriter(c, 512)
	defer stop()

	sec = c.newDisk(sec, "n1", "n1-new-disk")
	logContains(t, sec, `grbd member replace n1 --config FILE`, 15*time.Second)
	c.awaitingReplace("n1")
	st, err := c.status("n1")
	require.NoError(t, err)
	require.Equal(t, node.RoleSecondary, st.Role)
	out := run(t, time.Minute, grbdBin, "status", "--config", c.cfgPath)
	require.Contains(t, out, "n1: awaiting replace")

	c.replaceSynced("n1", "n0")
	require.Contains(t, logOf(t, c, "n1-new-disk"), "full sync", "a replaced disk gets a full sync")
	require.Eventually(t, func() bool {
		st, err := c.status("n1")
		return err == nil && st.Identity != nil && st.Identity.Promotable && st.Identity.Recorded == st.Identity.Disk
	}, 10*time.Second, 50*time.Millisecond, "n1's new disk never recorded")
	time.Sleep(500 * time.Millisecond)
	stop()
	w.verifyFailover(t, prim, "n1")
}

// A data node's disk is replaced while the witness is down: the primary
// alone is no majority (fenced), the replace cannot commit and says so;
// once the witness returns the primary serves, the replace goes through and
// the node is synced. It is never promoted without the data.
func TestReplaceDataNodeWhileWitnessDown(t *testing.T) {
	t.Parallel()
	c := newReplCluster(t, "C", "16MiB")
	prim, sec := c.startPair()
	w, stop := startWriter(c, 256)
	defer stop()

	c.witness.kill9()
	sec = c.newDisk(sec, "n1", "n1-new-disk")
	c.awaitingReplace("n1")
	out, err := runErr(30*time.Second, grbdBin, "member", "replace", "n1", "--config", c.cfgPath)
	require.Error(t, err, "a replace without a majority must fail:\n%s", out)
	st, err := c.status("n1")
	require.NoError(t, err)
	require.Equal(t, node.RoleSecondary, st.Role, "a node without its data was promoted")

	c.witness = startMember(t, c.dir, "w-back", "ready witness", "witness", "--config", c.cfgPath, "--name", "w")
	c.waitServing("n0", 20*time.Second)
	c.replaceSynced("n1", "n0")
	stop()
	w.verifyFailover(t, prim, "n1")
}

// Every member replaced one at a time while writes go on: the witness,
// the secondary, then the primary (after the role moved away). Every
// flushed write is on the final primary.
func TestRollingReplacement(t *testing.T) {
	t.Parallel()
	c := newReplCluster(t, "C", "16MiB")
	procs := map[string]*proc{"n0": c.start("n0", "n0"), "n1": c.start("n1", "n1")}
	c.waitPeer(10 * time.Second)
	w, stop := startWriter(c, 512)
	defer stop()

	// The witness.
	c.witness.kill9()
	c.wipeMember("w")
	c.witness = startMember(t, c.dir, "w-new", "ready witness", "witness", "--config", c.cfgPath, "--name", "w")
	c.awaitingReplace("w")
	c.replace("w")

	// Each data node, the secondary first; the primary after the role
	// moved to the node just synced.
	for i, name := range []string{"n1", "n0"} {
		other := map[string]string{"n0": "n1", "n1": "n0"}[name]
		if i == 1 {
			run(t, time.Minute, grbdBin, "primary", other, "--config", c.cfgPath)
			c.waitServing(other, 15*time.Second)
		}
		procs[name] = c.newDisk(procs[name], name, name+"-new")
		c.awaitingReplace(name)
		c.replaceSynced(name, other)
		w.mu.Lock()
		before := w.writes
		w.mu.Unlock()
		require.Eventually(t, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.writes > before },
			15*time.Second, 50*time.Millisecond, "writes stopped after %s was replaced", name)
	}
	stop()
	prim := c.servingPrimary(15 * time.Second)
	w.verify(t, prim)
	other := map[string]string{"n0": "n1", "n1": "n0"}[prim]
	w.verifyFailover(t, procs[prim], other)
}

// Case 1 of issue 14 as reported: flushed writes, every member stopped
// cleanly, beta's whole data directory deleted, beta and the witness
// started, alpha 10 s later. Before the fix beta was promoted on its empty
// disk and alpha then rewound to it. Now beta waits to be replaced (it
// never votes or serves), alpha becomes primary when it returns, and beta
// is replaced and synced.
func TestReplacedDiskAllStopped(t *testing.T) {
	t.Parallel()
	c := newReplCluster(t, "C", "16MiB")
	n0, n1 := c.startPair()
	w := &taggedWriter{c: c, blocks: 2048, flushed: map[int]uint64{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	w.run(ctx)
	cancel()

	stopAll(t, n0, n1, c.witness)
	c.wipeMember("n1")
	c.witness = startMember(t, c.dir, "w-2", "ready witness", "witness", "--config", c.cfgPath, "--name", "w")
	startMember(t, c.dir, "n1-new-disk", "listening ", "node", "--config", c.cfgPath, "--name", "n1")
	c.awaitingReplace("n1")
	time.Sleep(3 * time.Second) // five failover timeouts and more
	st, err := c.status("n1")
	require.NoError(t, err)
	require.Equal(t, node.RoleSecondary, st.Role, "a node on an empty disk was promoted")

	c.start("n0", "n0-back")
	c.waitServing("n0", 20*time.Second)
	w.verify(t, "n0")
	c.replaceSynced("n1", "n0")
	run(t, time.Minute, grbdBin, "primary", "n1", "--config", c.cfgPath)
	c.waitServing("n1", 15*time.Second)
	w.verify(t, "n1")
}

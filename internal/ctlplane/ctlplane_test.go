package ctlplane

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/raftlog"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/quorum"
	"github.com/stretchr/testify/require"
)

// net is an in-memory mesh: every member has an inbox drained by its own
// goroutine (Deliver must not run under the sender's lock).
type memNet struct {
	mu      sync.Mutex
	drivers map[string]*Driver
	inbox   map[string]chan envelope
}

type envelope struct {
	from string
	c    *wire.Control
}

type sender struct {
	n    *memNet
	from string
}

func (s sender) Send(peer string, c *wire.Control) {
	// Through the wire codec, as on a real link.
	frame := wire.AppendFrame(nil, c)
	m, _, err := wire.DecodeFrame(frame)
	if err != nil {
		panic(err)
	}
	s.n.mu.Lock()
	ch := s.n.inbox[peer]
	s.n.mu.Unlock()
	if ch != nil {
		select {
		case ch <- envelope{s.from, m.(*wire.Control)}:
		default: // a full inbox loses the message, like a slow link
		}
	}
}

type testCluster struct {
	t      *testing.T
	net    *memNet
	fs     map[string]*vfs.MemFS
	cancel map[string]context.CancelFunc
	wg     sync.WaitGroup
}

var members = []quorum.MemberInfo{{Name: "a", Data: true}, {Name: "b", Data: true}, {Name: "w"}}

func newTestCluster(t *testing.T) *testCluster {
	c := &testCluster{t: t, net: &memNet{drivers: map[string]*Driver{}, inbox: map[string]chan envelope{}},
		fs: map[string]*vfs.MemFS{}, cancel: map[string]context.CancelFunc{}}
	t.Cleanup(func() {
		for n := range c.cancel {
			c.stop(n)
		}
		c.wg.Wait()
	})
	return c
}

func (c *testCluster) start(name string, newCluster bool) *Driver {
	if c.fs[name] == nil {
		c.fs[name] = vfs.NewMem()
	}
	d, err := Open(Config{Self: name, Members: members, Dir: "dir", FS: c.fs[name], Tick: 5 * time.Millisecond,
		Timing: quorum.DefaultTiming(), AutoFailover: true, Seed: uint64(len(c.cancel)) + 1, Fresh: true, NewCluster: newCluster})
	require.NoError(c.t, err)
	ch := make(chan envelope, 1024)
	c.net.mu.Lock()
	c.net.drivers[name], c.net.inbox[name] = d, ch
	c.net.mu.Unlock()
	d.SetSender(sender{c.net, name})
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel[name] = cancel
	c.wg.Go(func() { d.Run(ctx) })
	c.wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-ch:
				d.Deliver(e.from, e.c)
			}
		}
	})
	return d
}

func (n *memNet) driver(name string) *Driver {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.drivers[name]
}

func (c *testCluster) stop(name string) {
	c.net.mu.Lock()
	delete(c.net.inbox, name)
	c.net.mu.Unlock()
	if cancel := c.cancel[name]; cancel != nil {
		cancel()
		delete(c.cancel, name)
	}
}

func (c *testCluster) eventually(what string, ok func() bool) {
	c.t.Helper()
	require.Eventually(c.t, ok, 10*time.Second, 5*time.Millisecond, what)
}

// startServing starts a, b and w and waits for a serving primary for
// which also(its status, its name) holds. Either data node may win the
// first election: under load the second one's staggered proposal can
// commit first.
func (c *testCluster) startServing(also func(quorum.Status, string) bool) (p *Driver, name string) {
	c.t.Helper()
	d := map[string]*Driver{"a": c.start("a", false), "b": c.start("b", false)}
	c.start("w", false)
	c.eventually("a primary", func() bool {
		for n, dr := range d {
			if st := dr.Status(); st.Serving && also(st, n) {
				p, name = dr, n
				return true
			}
		}
		return false
	})
	return p, name
}

func TestDriverBootstrapAndReplace(t *testing.T) {
	c := newTestCluster(t)
	p, self := c.startServing(func(quorum.Status, string) bool { return true })
	_, ok, err := raftlog.LoadJoinID(c.fs[self], "dir")
	require.NoError(t, err)
	require.False(t, ok, "an initial member keeps no join identity")

	// The witness's disk is lost.
	c.stop("w")
	c.fs["w"] = nil
	w := c.start("w", false)
	c.eventually("w awaits a replace", func() bool { return w.Status().Phase == quorum.PhaseAwaitReplace })
	j, ok, err := raftlog.LoadJoinID(c.fs["w"], "dir")
	require.NoError(t, err)
	require.True(t, ok, "the join identity is persisted at once")
	require.False(t, j.Joined)
	require.Equal(t, j.ID, w.Status().JoinID)
	c.eventually("the primary reports w's lost state", func() bool { return len(p.Status().LostState) == 1 })

	// A restart keeps the announced identity.
	c.stop("w")
	w = c.start("w", false)
	c.eventually("w announces again", func() bool { return w.Status().JoinID == j.ID && len(p.Status().LostState) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err = p.Replace(ctx, self)
	require.ErrorIs(t, err, quorum.ErrInvalid)
	id, voter, err := p.Replace(ctx, "w")
	require.NoError(t, err)
	require.Equal(t, j.ID, id)
	require.True(t, voter)
	c.eventually("w joined", func() bool { return w.Status().Phase == quorum.PhaseMember && w.Status().ID == id })
	c.eventually("join file marked joined", func() bool {
		j, _, _ := raftlog.LoadJoinID(c.fs["w"], "dir")
		return j == raftlog.JoinID{ID: id, Joined: true}
	})
	require.True(t, p.Status().Serving)

	// Restarted, w runs under the joined ID.
	c.stop("w")
	w = c.start("w", false)
	require.Equal(t, id, w.Status().ID)
	require.Equal(t, quorum.PhaseMember, w.Status().Phase)
}

func TestDriverNeedsEveryMemberOrOverride(t *testing.T) {
	c := newTestCluster(t)
	a := c.start("a", false)
	b := c.start("b", false)
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, quorum.PhaseProbing, a.Status().Phase)
	require.Contains(t, a.Status().PhaseReason, "waiting for w")
	l, err := raftlog.Load(c.fs["a"], "dir")
	require.NoError(t, err)
	require.Empty(t, l.Entries, "nothing persisted")

	c.stop("a")
	c.stop("b")
	a, b = c.start("a", true), c.start("b", true)
	// Either may win the election (see TestDriverBootstrapAndReplace).
	c.eventually("a primary with --new-cluster", func() bool { return a.Status().Serving || b.Status().Serving })
	require.Equal(t, quorum.PhaseMember, a.Status().Phase)
	require.Equal(t, quorum.PhaseMember, b.Status().Phase)
}

// A control plane that cannot persist its log (ENOSPC on raft.state.tmp)
// reports it through Stopped and Err, so that the member stops instead of
// running on with a frozen applied index (issue 15).
func TestStoppedWhenLogCannotPersist(t *testing.T) {
	var full atomic.Bool
	fs := vfs.WithErrors(vfs.Default, func(op vfs.Op, name string) error {
		if full.Load() && (op == vfs.OpOpen || op == vfs.OpWrite) {
			return syscall.ENOSPC
		}
		return nil
	})
	d, err := Open(Config{Self: "a", Members: []quorum.MemberInfo{{Name: "a", Data: true}}, Dir: t.TempDir(),
		FS: fs, Tick: 10 * time.Millisecond, Timing: quorum.DefaultTiming(), AutoFailover: true, Seed: 1, Fresh: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	require.NoError(t, d.Err())
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	require.NoError(t, d.WaitState(wctx, func(s quorum.Status) bool { return s.Role == quorum.RolePrimary }))
	full.Store(true)
	_ = d.RequestDemote() // a log entry to persist
	select {
	case <-d.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("the control plane never reported that it stopped")
	}
	require.ErrorIs(t, d.Err(), syscall.ENOSPC)
}

// A member's directory restored from an older copy while the others run
// (docs/quorum.md, "A restored control-plane log"): the member drops its
// rewound log, saves an empty one with a new, unjoined identity before it
// announces it, keeps that identity across a restart, and joins after the
// replace. Without the driver's save of the identity, the restart would
// announce another one than the replace may already have committed.
func TestDriverRestoredLogAwaitsReplace(t *testing.T) {
	c := newTestCluster(t)
	p, self := c.startServing(func(st quorum.Status, name string) bool { return st.RaftLeader == name })
	// A backup of the settled directory: its creation reached the disk too.
	require.NoError(t, c.fs["w"].SyncDir("."))
	backup := c.fs["w"].CrashClone(rand.New(rand.NewPCG(1, 2)))
	l, err := raftlog.Load(backup, "dir")
	require.NoError(t, err)
	require.NotEmpty(t, l.Entries, "the copy holds a log")
	other := map[string]string{"a": "b", "b": "a"}[self]
	p.RequestOutdate(other) // an entry the copy lacks, which w acknowledges
	c.eventually("w applied the Outdate", func() bool { return c.net.driver("w").Status().IsOutdated(other) })

	c.stop("w")
	c.fs["w"] = backup
	w := c.start("w", false)
	c.eventually("w awaits a replace", func() bool {
		st := w.Status()
		return st.Phase == quorum.PhaseAwaitReplace && strings.Contains(st.PhaseReason, "control-plane log rewound")
	})
	require.Contains(t, w.Status().Rewound, "raft leader "+self)
	require.Empty(t, p.Status().Rewound)
	j, ok, err := raftlog.LoadJoinID(c.fs["w"], "dir")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, raftlog.JoinID{ID: w.Status().JoinID}, j, "the announced identity is saved, not joined")
	l, err = raftlog.Load(c.fs["w"], "dir")
	require.NoError(t, err)
	require.Zero(t, l.HardState.Commit, "the rewound log is dropped on disk")
	require.Empty(t, l.Entries)

	c.stop("w")
	w = c.start("w", false)
	c.eventually("w announces the same identity after a restart", func() bool {
		st := w.Status()
		return st.Phase == quorum.PhaseAwaitReplace && st.JoinID == j.ID
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, _, err := p.Replace(ctx, "w")
	require.NoError(t, err)
	require.Equal(t, j.ID, id)
	c.eventually("w joined", func() bool { return w.Status().Phase == quorum.PhaseMember && w.Status().ID == id })
	require.True(t, p.Status().Serving)
}

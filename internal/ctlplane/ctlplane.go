// Package ctlplane drives a member's control plane: it runs the pure
// quorum.Member against real time and I/O. It owns the member's raft log on
// disk (internal/raftlog), turns the monotonic clock into ticks, carries
// raft and lease messages over the member links (wire.Control frames), and
// publishes the member's role and lease as a deadline the data path checks
// on every request.
//
// Concurrency: a Driver is safe for concurrent use. Every call into the
// quorum core happens under one mutex, followed by the Ready cycle (persist,
// then send, then Advance) before the mutex is released, so the core never
// sends a message about state that is not on disk. OnChange runs on a
// goroutine of its own, one call at a time.
package ctlplane

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/raftlog"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/quorum"
	"go.etcd.io/raft/v3"
)

// Sender delivers control messages to a peer (internal/mesh.Mesh).
type Sender interface {
	Send(peer string, c *wire.Control)
}

// Config configures a Driver.
type Config struct {
	Self         string
	Members      []quorum.MemberInfo
	Dir          string // holds raft.state
	FS           vfs.FS
	Tick         time.Duration
	Timing       quorum.Timing
	AutoFailover bool
	Seed         uint64
	// Fresh: this member holds no block data (the witness always; a data
	// node whose store holds no write). See quorum.Config.Fresh.
	Fresh bool
	// NewCluster creates a new cluster without hearing from every member
	// (grbd node/witness --new-cluster). See quorum.Config.NewCluster.
	NewCluster bool
	Logger     *slog.Logger
	// OnChange is told that Status may have changed (role, epoch, lease,
	// Outdated set).
	OnChange func()
	// OnFail, if set, is told once, on a goroutine of its own, that the
	// control plane stopped because its log could not be persisted: the
	// member no longer votes, acks leases or serves (see Failed).
	OnFail func(error)
}

// Driver runs one member's control plane. See the package documentation.
type Driver struct {
	cfg   Config
	log   *slog.Logger
	start time.Time

	mu     sync.Mutex
	m      *quorum.Member
	send   Sender
	failed error
	last   quorum.Status

	// The join-identity file (raftlog.JoinFileName) as last written: the
	// identity a member without state announces, then the ID it joined
	// under; none for an initial member.
	joinFile  raftlog.JoinID
	joinSaved bool
	lastPhase quorum.Phase
	phaseLog  time.Time // when the phase was last logged
	// rewoundLogged: the member's drop of a rewound log was logged.
	rewoundLogged bool

	servingUntil atomic.Int64 // nanoseconds since start; <= 0: not serving
	status       atomic.Pointer[quorum.Status]
	// promotable and failedPub publish Promotable and failed for readers
	// that must not wait for mu: a do that persists the log holds mu for
	// as long as the disk takes, forever if it hangs, and status must
	// still answer.
	promotable atomic.Pointer[promotability]
	failedPub  atomic.Pointer[error]
	changed    chan struct{}
	stateCond  *sync.Cond    // on mu: applied state changed
	stopped    chan struct{} // closed when failed is set
}

// Open reads the member's raft log and builds its core.
func Open(cfg Config) (*Driver, error) {
	if cfg.FS == nil {
		cfg.FS = vfs.Default
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tick <= 0 {
		return nil, fmt.Errorf("ctlplane: tick %v", cfg.Tick)
	}
	l, err := raftlog.Load(cfg.FS, cfg.Dir)
	if err != nil {
		return nil, err
	}
	st := raft.NewMemoryStorage()
	if !raft.IsEmptySnap(l.Snapshot) {
		if err := st.ApplySnapshot(l.Snapshot); err != nil {
			return nil, fmt.Errorf("ctlplane: restore snapshot: %w", err)
		}
	}
	if err := st.SetHardState(l.HardState); err != nil {
		return nil, fmt.Errorf("ctlplane: restore hard state: %w", err)
	}
	if err := st.Append(l.Entries); err != nil {
		return nil, fmt.Errorf("ctlplane: restore entries: %w", err)
	}
	d := &Driver{cfg: cfg, log: cfg.Logger, start: time.Now(), changed: make(chan struct{}, 1), stopped: make(chan struct{})}
	joinID, err := d.joinIdentity(l)
	if err != nil {
		return nil, err
	}
	m, err := quorum.NewMember(quorum.Config{
		Self: cfg.Self, Members: cfg.Members, Storage: st, Timing: cfg.Timing,
		AutoFailover: cfg.AutoFailover, Seed: cfg.Seed, Logger: raftLogger{cfg.Logger},
		JoinID: joinID, Fresh: cfg.Fresh, NewCluster: cfg.NewCluster,
	})
	if err != nil {
		return nil, err
	}
	d.m = m
	d.lastPhase = quorum.PhaseMember
	d.stateCond = sync.NewCond(&d.mu)
	s := m.Status()
	d.status.Store(&s)
	d.publishPromotableLocked()
	return d, nil
}

// Stopped is closed when the control plane stopped for good because it
// could not persist its log (Err says why). The member must then stop
// too: it would otherwise run on with a frozen applied index and look
// healthy (issue 15).
func (d *Driver) Stopped() <-chan struct{} { return d.stopped }

// Err is why the control plane stopped, nil while it runs.
func (d *Driver) Err() error {
	if p := d.failedPub.Load(); p != nil {
		return *p
	}
	return nil
}

// joinIdentity reads (or, for a member without state, creates and
// persists at once) the join-identity file, and returns the JoinID for the
// core (docs/raftlog.md, "Join identity").
func (d *Driver) joinIdentity(l raftlog.Log) (uint64, error) {
	fs, dir := d.cfg.FS, d.cfg.Dir
	pos := slices.IndexFunc(d.cfg.Members, func(mi quorum.MemberInfo) bool { return mi.Name == d.cfg.Self }) + 1
	j, ok, err := raftlog.LoadJoinID(fs, dir)
	if err != nil {
		return 0, err
	}
	d.joinFile, d.joinSaved = j, ok
	empty := raft.IsEmptySnap(l.Snapshot) && raft.IsEmptyHardState(l.HardState) && len(l.Entries) == 0
	if !empty {
		cs := l.Snapshot.Metadata.ConfState
		if ok && (j.Joined || slices.Contains(slices.Concat(cs.Voters, cs.Learners, cs.VotersOutgoing), j.ID)) {
			return j.ID, nil
		}
		return 0, nil // the initial incarnation (a stale file is removed at the next save)
	}
	if ok && !j.Joined && quorum.PositionOf(j.ID) == pos {
		return j.ID, nil // announced before a restart: keep it
	}
	// A new identity, never the one a joined and then wiped member had.
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("ctlplane: join identity: %w", err)
	}
	j = raftlog.JoinID{ID: quorum.NewJoinID(binary.LittleEndian.Uint64(b[:]), pos)}
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("ctlplane: %w", err)
	}
	if err := raftlog.SaveJoinID(fs, dir, j); err != nil {
		return 0, fmt.Errorf("ctlplane: save join identity: %w", err)
	}
	d.joinFile, d.joinSaved = j, true
	return j.ID, nil
}

// noteSavedLocked brings the join-identity file in line with the raft
// state just saved: the ID a joined member runs under, none for the
// initial incarnation, and for a member that dropped its state (a rewound
// log) the new identity it is about to announce.
func (d *Driver) noteSavedLocked() error {
	var want raftlog.JoinID
	switch id := d.m.ID(); {
	case id == 0:
		want = raftlog.JoinID{ID: d.m.JoinID()}
	case quorum.IncarnationOf(id) != 0:
		want = raftlog.JoinID{ID: id, Joined: true}
	}
	switch {
	case want.ID == 0 && d.joinSaved:
		if err := raftlog.RemoveJoinID(d.cfg.FS, d.cfg.Dir); err != nil {
			return err
		}
		d.joinSaved = false
	case want.ID != 0 && (!d.joinSaved || d.joinFile != want):
		if err := raftlog.SaveJoinID(d.cfg.FS, d.cfg.Dir, want); err != nil {
			return err
		}
		d.joinFile, d.joinSaved = want, true
	}
	return nil
}

// SetSender sets where messages go; until then they are dropped.
func (d *Driver) SetSender(s Sender) {
	d.mu.Lock()
	d.send = s
	d.mu.Unlock()
}

// Run ticks the core until ctx ends.
func (d *Driver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.changed:
				if d.cfg.OnChange != nil {
					d.cfg.OnChange()
				}
			}
		}
	})
	t := time.NewTicker(d.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			d.do(func(m *quorum.Member) error {
				// Catch up with real time: after a pause (GC, SIGSTOP) many
				// ticks pass at once, so leases expire as they must.
				target := int64(time.Since(d.start) / d.cfg.Tick)
				for n := 0; m.Now() < target && n < 100000; n++ {
					m.Tick()
				}
				return nil
			})
		}
	}
}

// do runs fn on the core, then the Ready cycle, then publishes the status.
func (d *Driver) do(fn func(m *quorum.Member) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed != nil {
		return d.failed
	}
	if err := fn(d.m); err != nil {
		return err
	}
	for d.m.HasReady() {
		rd := d.m.Ready()
		if rd.Persist {
			hs, snap, ents := d.m.Persisted()
			err := raftlog.Save(d.cfg.FS, d.cfg.Dir, raftlog.Log{HardState: hs, Snapshot: snap, Entries: ents})
			if err == nil {
				err = d.noteSavedLocked()
			}
			if err != nil {
				// The core believes the log is on disk: it is not safe to
				// go on. Stop serving and refuse further work.
				d.failed = fmt.Errorf("ctlplane: persist raft log: %w", err)
				d.failedPub.Store(&d.failed)
				d.servingUntil.Store(0)
				d.log.Error("control plane stopped", "err", d.failed)
				if d.cfg.OnFail != nil {
					go d.cfg.OnFail(d.failed)
				}
				close(d.stopped)
				return d.failed
			}
		}
		for _, msg := range rd.Messages {
			d.sendLocked(msg)
		}
		d.m.Advance()
	}
	d.publishLocked()
	return nil
}

func (d *Driver) sendLocked(msg quorum.Message) {
	if d.send == nil {
		return
	}
	c := &wire.Control{Epoch: msg.Epoch, Sent: uint64(msg.Sent)}
	switch msg.Type {
	case quorum.MsgRaft:
		b, err := msg.Raft.Marshal()
		if err != nil {
			return
		}
		c.Kind, c.Data = wire.ControlRaft, b
	case quorum.MsgLeaseRequest:
		c.Kind, c.Data = wire.ControlLeaseRequest, wire.AppendLeaseID(nil, msg.ID)
	case quorum.MsgLeaseAck:
		c.Kind, c.Data = wire.ControlLeaseAck, wire.AppendLeaseID(nil, msg.ID)
	case quorum.MsgProbe:
		p := wire.Probe{JoinID: msg.ID}
		if msg.Fresh {
			p.Flags |= wire.ProbeFresh
		}
		c.Kind, c.Data = wire.ControlProbe, p.Append(nil)
	case quorum.MsgProbeReply:
		r := wire.ProbeReply{ID: msg.ID, Echo: msg.Echo}
		for _, f := range []struct {
			on   bool
			flag uint8
		}{{msg.Fresh, wire.ProbeFresh}, {msg.HasState, wire.ProbeHasState}, {msg.Counted, wire.ProbeCounted}, {msg.Newcomer, wire.ProbeNewcomer}} {
			if f.on {
				r.Flags |= f.flag
			}
		}
		c.Kind, c.Data = wire.ControlProbeReply, r.Append(nil)
	case quorum.MsgReplaced:
		c.Kind, c.Data = wire.ControlReplaced, wire.Replaced{Stale: msg.ID, Current: msg.Echo}.Append(nil)
	default:
		return
	}
	d.send.Send(msg.To, c)
}

// publishLocked updates the serving deadline and the status, and signals a
// change.
func (d *Driver) publishLocked() {
	s := d.m.Status()
	until := int64(0)
	if s.Serving {
		until = s.ServingUntil * int64(d.cfg.Tick)
	}
	d.servingUntil.Store(until)
	d.status.Store(&s)
	d.publishPromotableLocked()
	d.logPhaseLocked(s)
	if s.Role != d.last.Role || s.Epoch != d.last.Epoch || s.Primary != d.last.Primary || s.Serving != d.last.Serving || s.Durable != d.last.Durable ||
		s.Forced != d.last.Forced || !slices.Equal(s.Outdated, d.last.Outdated) || !maps.Equal(s.Disks, d.last.Disks) ||
		s.Phase != d.last.Phase || s.PhaseReason != d.last.PhaseReason || !slices.Equal(s.IDs, d.last.IDs) ||
		!slices.Equal(s.Learners, d.last.Learners) || !slices.Equal(s.LostState, d.last.LostState) {
		d.last = s
		d.stateCond.Broadcast()
		select {
		case d.changed <- struct{}{}:
		default:
		}
	}
}

// phaseLogEvery is how often a member that cannot take part says why.
const phaseLogEvery = 30 * time.Second

// logPhaseLocked logs, once and then every phaseLogEvery, why this member
// takes no part in the control plane, and logs its joining.
func (d *Driver) logPhaseLocked(s quorum.Status) {
	changed := s.Phase != d.lastPhase
	if s.Rewound != "" && !d.rewoundLogged {
		d.rewoundLogged = true
		d.log.Error("control-plane log rewound: this member dropped its control-plane state and must be replaced (grbd member replace) before it votes again",
			"join_id", fmt.Sprintf("%#x", s.JoinID), "detail", s.Rewound)
	}
	if changed && s.Phase == quorum.PhaseMember && d.lastPhase == quorum.PhaseJoining {
		d.log.Info("joined the control plane", "raft_id", fmt.Sprintf("%#x", s.ID))
	} else if changed && s.Phase == quorum.PhaseMember && d.lastPhase == quorum.PhaseProbing {
		d.log.Info("created the cluster's control plane", "raft_id", fmt.Sprintf("%#x", s.ID))
	}
	d.lastPhase = s.Phase
	if s.Phase == quorum.PhaseMember || s.Phase == quorum.PhaseJoining || (!changed && time.Since(d.phaseLog) < phaseLogEvery) {
		return
	}
	d.phaseLog = time.Now()
	switch s.Phase {
	case quorum.PhaseAwaitReplace:
		d.log.Error(fmt.Sprintf("control-plane state lost: this member must be replaced: run \"grbd member replace %s --config FILE\" on any host", d.cfg.Self),
			"join_id", fmt.Sprintf("%#x", s.JoinID), "detail", s.PhaseReason)
	case quorum.PhaseReplaced:
		d.log.Error("this member was replaced: it no longer votes or acknowledges leases (empty its data directory to join again)", "detail", s.PhaseReason)
	default:
		if changed {
			return // give the first answers a moment
		}
		d.log.Warn("control plane not started", "detail", s.PhaseReason)
	}
}

// Replace asks the control plane to replace member name (grbd member
// replace): name lost its state and announced a join identity. It waits
// until the change committed (the new ID holds name's position), then up to
// the rest of ctx for the joiner to become a voter, and returns the new ID
// and whether it is a voter yet.
func (d *Driver) Replace(ctx context.Context, name string) (uint64, bool, error) {
	pos := slices.IndexFunc(d.cfg.Members, func(mi quorum.MemberInfo) bool { return mi.Name == name }) + 1
	var id uint64
	if err := d.do(func(m *quorum.Member) error {
		var err error
		id, err = m.RequestReplace(name)
		return err
	}); err != nil {
		return 0, false, err
	}
	commit, cancel := context.WithTimeout(ctx, replaceCommitTimeout)
	defer cancel()
	if err := d.WaitState(commit, func(s quorum.Status) bool { return len(s.IDs) >= pos && s.IDs[pos-1] == id }); err != nil {
		return id, false, fmt.Errorf("%w: the replace of %s did not commit within %v: a majority of the members must be up and connected", quorum.ErrNoLeader, name, replaceCommitTimeout)
	}
	voter := func(s quorum.Status) bool { return !slices.Contains(s.Learners, name) }
	_ = d.WaitState(ctx, voter)
	return id, voter(d.Status()), nil
}

// replaceCommitTimeout bounds how long Replace waits for the change to
// commit.
const replaceCommitTimeout = 10 * time.Second

// Deliver feeds a control message from peer.
func (d *Driver) Deliver(peer string, c *wire.Control) {
	msg := quorum.Message{From: peer, To: d.cfg.Self, Epoch: c.Epoch, Sent: int64(c.Sent)}
	switch c.Kind {
	case wire.ControlRaft:
		msg.Type = quorum.MsgRaft
		if err := msg.Raft.Unmarshal(c.Data); err != nil {
			d.log.Warn("dropping undecodable raft message", "peer", peer, "err", err)
			return
		}
	case wire.ControlLeaseRequest, wire.ControlLeaseAck:
		msg.Type = quorum.MsgLeaseRequest
		if c.Kind == wire.ControlLeaseAck {
			msg.Type = quorum.MsgLeaseAck
		}
		id, err := wire.ParseLeaseID(c.Data)
		if err != nil {
			return
		}
		msg.ID = id
	case wire.ControlProbe:
		p, err := wire.ParseProbe(c.Data)
		if err != nil {
			return
		}
		msg.Type, msg.ID, msg.Fresh = quorum.MsgProbe, p.JoinID, p.Flags&wire.ProbeFresh != 0
	case wire.ControlProbeReply:
		r, err := wire.ParseProbeReply(c.Data)
		if err != nil {
			return
		}
		msg.Type, msg.ID, msg.Echo = quorum.MsgProbeReply, r.ID, r.Echo
		msg.Fresh, msg.HasState, msg.Counted = r.Flags&wire.ProbeFresh != 0, r.Flags&wire.ProbeHasState != 0, r.Flags&wire.ProbeCounted != 0
		msg.Newcomer = r.Flags&wire.ProbeNewcomer != 0
	case wire.ControlReplaced:
		r, err := wire.ParseReplaced(c.Data)
		if err != nil {
			return
		}
		msg.Type, msg.ID, msg.Echo = quorum.MsgReplaced, r.Stale, r.Current
	default:
		return
	}
	if err := d.do(func(m *quorum.Member) error { return m.Step(msg) }); err != nil {
		d.log.Debug("dropping control message", "peer", peer, "err", err)
	}
}

// Serving reports whether this member may complete I/O as primary now.
func (d *Driver) Serving() bool {
	return int64(time.Since(d.start)) < d.servingUntil.Load()
}

// Status is the member's latest published view.
func (d *Driver) Status() quorum.Status { return *d.status.Load() }

// RequestPromote asks for this member to become primary.
func (d *Driver) RequestPromote(force bool) error {
	return d.do(func(m *quorum.Member) error { return m.RequestPromote(force) })
}

// RequestDemote asks for this member to stop being primary.
func (d *Driver) RequestDemote() error {
	return d.do(func(m *quorum.Member) error { m.RequestDemote(); return nil })
}

// RequestOutdate asks, as primary, for peer to be marked Outdated.
func (d *Driver) RequestOutdate(peer string) {
	_ = d.do(func(m *quorum.Member) error { m.RequestOutdate(peer); return nil })
}

// RequestDurable asks, as primary, for seq to be recorded as the durable
// watermark (quorum.Member.RequestDurable).
func (d *Driver) RequestDurable(seq uint64) {
	_ = d.do(func(m *quorum.Member) error { m.RequestDurable(seq); return nil })
}

// RequestClear asks, as primary, for peer to leave Outdated and for disk
// to be recorded as its disk; it returns the generation the Clear names
// (see quorum.Member.RequestClear).
func (d *Driver) RequestClear(peer string, disk uint64) (uint64, bool) {
	var g uint64
	var ok bool
	_ = d.do(func(m *quorum.Member) error { g, ok = m.RequestClear(peer, disk); return nil })
	return g, ok
}

// SetDisk tells the core this data node's disk identity.
func (d *Driver) SetDisk(disk uint64) {
	_ = d.do(func(m *quorum.Member) error { m.SetDisk(disk); return nil })
}

// Promotable reports whether this data node may be promoted without force,
// and if not, why.
func (d *Driver) Promotable() (ok bool, why string) {
	p := d.promotable.Load() // published since Open
	return p.ok, p.why
}

// promotability is Promotable's answer as last published.
type promotability struct {
	ok  bool
	why string
}

// publishPromotableLocked publishes the core's Promotable, storing only a
// change. Caller holds mu, or is Open.
func (d *Driver) publishPromotableLocked() {
	ok, why := d.m.Promotable()
	if p := d.promotable.Load(); p == nil || *p != (promotability{ok, why}) {
		d.promotable.Store(&promotability{ok, why})
	}
}

// SetStale tells the core why this node's disk must not serve as primary
// ("" clears it).
func (d *Driver) SetStale(reason string) {
	_ = d.do(func(m *quorum.Member) error { m.SetStale(reason); return nil })
}

// SetConsistent tells the core whether this node's disk may be promoted.
func (d *Driver) SetConsistent(ok bool) {
	_ = d.do(func(m *quorum.Member) error { m.SetConsistent(ok); return nil })
}

// WaitState waits until the applied state satisfies ok, or ctx ends.
func (d *Driver) WaitState(ctx context.Context, ok func(quorum.Status) bool) error {
	stop := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		d.stateCond.Broadcast()
		d.mu.Unlock()
	})
	defer stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	for !ok(*d.status.Load()) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.failed != nil {
			return d.failed
		}
		d.stateCond.Wait()
	}
	return nil
}

// raftLogger sends raft's own log lines to slog at debug level (warnings
// and errors at their level).
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)              { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(f string, v ...any)   { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Info(v ...any)               { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Infof(f string, v ...any)    { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Warning(v ...any)            { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(f string, v ...any) { r.l.Warn(fmt.Sprintf(f, v...)) }
func (r raftLogger) Error(v ...any)              { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(f string, v ...any)   { r.l.Error(fmt.Sprintf(f, v...)) }
func (r raftLogger) Fatal(v ...any)              { panic(fmt.Sprint(v...)) }
func (r raftLogger) Fatalf(f string, v ...any)   { panic(fmt.Sprintf(f, v...)) }
func (r raftLogger) Panic(v ...any)              { panic(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...any)   { panic(fmt.Sprintf(f, v...)) }

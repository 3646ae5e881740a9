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
	"fmt"
	"log/slog"
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
	Logger       *slog.Logger
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

	servingUntil atomic.Int64 // nanoseconds since start; <= 0: not serving
	status       atomic.Pointer[quorum.Status]
	changed      chan struct{}
	stateCond    *sync.Cond    // on mu: applied state changed
	stopped      chan struct{} // closed when failed is set
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
	m, err := quorum.NewMember(quorum.Config{
		Self: cfg.Self, Members: cfg.Members, Storage: st, Timing: cfg.Timing,
		AutoFailover: cfg.AutoFailover, Seed: cfg.Seed, Logger: raftLogger{cfg.Logger},
	})
	if err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, log: cfg.Logger, start: time.Now(), m: m, changed: make(chan struct{}, 1), stopped: make(chan struct{})}
	d.stateCond = sync.NewCond(&d.mu)
	s := m.Status()
	d.status.Store(&s)
	return d, nil
}

// Stopped is closed when the control plane stopped for good because it
// could not persist its log (Err says why). The member must then stop
// too: it would otherwise run on with a frozen applied index and look
// healthy (issue 15).
func (d *Driver) Stopped() <-chan struct{} { return d.stopped }

// Err is why the control plane stopped, nil while it runs.
func (d *Driver) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failed
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
			if err := raftlog.Save(d.cfg.FS, d.cfg.Dir, raftlog.Log{HardState: hs, Snapshot: snap, Entries: ents}); err != nil {
				// The core believes the log is on disk: it is not safe to
				// go on. Stop serving and refuse further work.
				d.failed = fmt.Errorf("ctlplane: persist raft log: %w", err)
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
		c.Kind = wire.ControlLeaseRequest
	case quorum.MsgLeaseAck:
		c.Kind = wire.ControlLeaseAck
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
	if s.Role != d.last.Role || s.Epoch != d.last.Epoch || s.Primary != d.last.Primary || s.Serving != d.last.Serving ||
		s.Forced != d.last.Forced || fmt.Sprint(s.Outdated) != fmt.Sprint(d.last.Outdated) || fmt.Sprint(s.Disks) != fmt.Sprint(d.last.Disks) {
		d.last = s
		d.stateCond.Broadcast()
		select {
		case d.changed <- struct{}{}:
		default:
		}
	}
}

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
	case wire.ControlLeaseRequest:
		msg.Type = quorum.MsgLeaseRequest
	case wire.ControlLeaseAck:
		msg.Type = quorum.MsgLeaseAck
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
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m.Promotable()
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

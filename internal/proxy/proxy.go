package proxy

import (
	"context"
	"errors"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/nbdclient"
)

// Primary is the data node serving as primary, as a Locator found it.
type Primary struct {
	Name  string
	Addr  string // NBD address, host:port
	Epoch uint64 // control-plane epoch in which it serves
	Size  int64  // device size it reports
}

// Locator finds the serving primary.
type Locator interface {
	// Locate returns the data node serving as primary now, or an error
	// (wrapping ErrNotPrimary when every node answered and none serves).
	Locate(ctx context.Context) (Primary, error)
}

// Backend is one NBD connection to a primary; *nbdclient.Client with an
// Abort fits. A nil error or an nbdclient.Errno is the node's answer; any
// other error leaves the outcome unknown.
type Backend interface {
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, flags nbdproto.CmdFlags) error
	WriteZeroes(ctx context.Context, off, length int64, flags nbdproto.CmdFlags) error
	Flush(ctx context.Context) error
	Info() nbdclient.ExportInfo
	// Abort closes the connection at once: every request in flight on it
	// fails with an error of unknown outcome.
	Abort()
}

// Dialer connects to a primary's NBD export.
type Dialer interface {
	Dial(ctx context.Context, p Primary) (Backend, error)
}

// Options tune a Proxy. Zero values select the defaults.
type Options struct {
	// HoldTimeout bounds how long a request may wait for a serving primary,
	// counted from its arrival; then it fails with EIO. Default 30 s.
	HoldTimeout time.Duration
	// Poll is how often Run asks the members who serves while it follows a
	// primary (a primary cut off from the proxy and replaced is noticed this
	// way). Default 500 ms.
	Poll time.Duration
	// Retry is the pause between attempts while no primary serves. Default
	// 20 ms: each attempt costs one GET /status per data node.
	Retry time.Duration
	// LocateTimeout bounds one Locate, and then one Dial. Default 1 s.
	LocateTimeout time.Duration
	Logger        *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.HoldTimeout <= 0 {
		o.HoldTimeout = 30 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 500 * time.Millisecond
	}
	if o.Retry <= 0 {
		o.Retry = 20 * time.Millisecond
	}
	if o.LocateTimeout <= 0 {
		o.LocateTimeout = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// session is one connection to one primary. It is dropped once, by the
// first request that sees it fail or by Run when another node serves.
type session struct {
	prim    Primary
	be      Backend
	since   time.Time
	dropped atomic.Bool
}

// Proxy forwards block requests to the serving primary; it implements
// blockdev.Device. Run must be running for requests to make progress.
type Proxy struct {
	loc  Locator
	dial Dialer
	opts Options
	size atomic.Int64

	mu      sync.Mutex
	cur     *session
	changed chan struct{} // closed and replaced whenever cur is set
	lost    time.Time     // when the last session was dropped (zero: never had one or following)
	kick    chan struct{} // buffered: a request dropped the session

	stats stats
}

// New returns a proxy that finds primaries with loc and connects with dial.
func New(loc Locator, dial Dialer, opts Options) *Proxy {
	return &Proxy{loc: loc, dial: dial, opts: opts.withDefaults(),
		changed: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Size is the device size last reported by the primary; blockdev reads it
// at every handshake, so new connections see a grown device.
func (p *Proxy) Size() int64 { return p.size.Load() }

// ReadAt reads from the primary, retried across failovers.
func (p *Proxy) ReadAt(b []byte, off int64) error {
	return p.do(opRead, func(ctx context.Context, be Backend) error { return be.ReadAt(ctx, b, off) })
}

// WriteAt writes to the primary; an unanswered write is sent again to the
// next primary. It does not retain b.
func (p *Proxy) WriteAt(b []byte, off int64, fua bool) error {
	return p.do(opWrite, func(ctx context.Context, be Backend) error { return be.WriteAt(ctx, b, off, fuaFlag(fua)) })
}

// WriteZeroes forwards WRITE_ZEROES and TRIM (the node serves TRIM as
// WRITE_ZEROES as well).
func (p *Proxy) WriteZeroes(off, length int64, fua bool) error {
	return p.do(opWrite, func(ctx context.Context, be Backend) error {
		return be.WriteZeroes(ctx, off, length, fuaFlag(fua))
	})
}

// Flush makes every write answered before it durable on the primary that
// answers the flush.
func (p *Proxy) Flush() error {
	return p.do(opFlush, func(ctx context.Context, be Backend) error { return be.Flush(ctx) })
}

func fuaFlag(fua bool) nbdproto.CmdFlags {
	if fua {
		return nbdproto.CmdFlagFUA
	}
	return 0
}

type opKind int

const (
	opRead opKind = iota
	opWrite
	opFlush
)

// do runs op against the current session until a primary answers it, or the
// hold timeout passes.
func (p *Proxy) do(kind opKind, op func(context.Context, Backend) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.HoldTimeout)
	defer cancel()
	p.stats.requests.Add(1)
	var (
		attempts int
		refused  *session // the session that last answered with a node error
		lastErr  error
	)
	for {
		s, err := p.session(ctx)
		if err == nil && ctx.Err() != nil {
			s, err = nil, ctx.Err()
		}
		if err != nil {
			p.stats.expired.Add(1)
			if lastErr == nil {
				lastErr = err
			}
			return fmt.Errorf("%w within %v (last: %v): %w", ErrNoPrimary, p.opts.HoldTimeout, lastErr, syscall.EIO)
		}
		if attempts > 0 {
			p.stats.resent.Add(1)
			if plantFlushBug && kind == opWrite {
				// Planted bug (build tag grbd_plantbug_flush): writes go
				// again only after the flushes held with them were answered.
				time.Sleep(500 * time.Millisecond)
			}
		}
		err = op(ctx, s.be)
		if err == nil {
			return nil
		}
		var errno nbdclient.Errno
		if errors.As(err, &errno) {
			if errno != nbdclient.EIO && errno != nbdclient.EPERM && errno != nbdclient.ESHUTDOWN {
				return err // about the request itself: the client's answer
			}
			if refused != nil && refused.prim.Name == s.prim.Name && refused.prim.Epoch == s.prim.Epoch {
				return err // the same serving primary said it twice: it is real
			}
			refused = s
		} else if ctx.Err() != nil {
			continue // the hold timeout passed in flight: session() ends it
		}
		lastErr = err
		if attempts == 0 {
			p.stats.held.Add(1)
		}
		attempts++
		p.drop(s, fmt.Errorf("%s: %w", s.prim.Name, err))
	}
}

// session returns the current session, waiting for one until ctx ends.
func (p *Proxy) session(ctx context.Context) (*session, error) {
	for {
		p.mu.Lock()
		s, ch := p.cur, p.changed
		p.mu.Unlock()
		if s != nil {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// drop ends s (once) and wakes Run to find the primary again.
func (p *Proxy) drop(s *session, why error) {
	if !s.dropped.CompareAndSwap(false, true) {
		return
	}
	p.mu.Lock()
	if p.cur == s {
		p.cur = nil
		p.lost = time.Now()
	}
	p.mu.Unlock()
	s.be.Abort()
	p.opts.Logger.Warn("proxy: lost the primary", "primary", s.prim.Name, "epoch", s.prim.Epoch,
		"followed_for", time.Since(s.since).Round(time.Millisecond), "err", why)
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// install makes s the current session and releases the requests held.
// The failover is counted first: a released request may complete, and its
// caller read the status, at once.
func (p *Proxy) install(s *session) {
	p.mu.Lock()
	lost := p.lost
	var gap time.Duration
	if !lost.IsZero() {
		gap = s.since.Sub(lost)
		p.stats.failovers.Add(1)
		p.stats.noPrimaryNanos.Add(int64(gap))
		p.stats.maxGap(gap)
	}
	p.cur, p.lost = s, time.Time{}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	p.opts.Logger.Info("proxy: following primary", "primary", s.prim.Name, "epoch", s.prim.Epoch,
		"nbd", s.prim.Addr, "size", s.prim.Size, "without_primary", gap.Round(time.Millisecond))
}

// Connect finds the primary and connects once, waiting up to the hold
// timeout: a server can then learn the device size before it listens.
func (p *Proxy) Connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.HoldTimeout)
	defer cancel()
	var last error
	for {
		s, err := p.connect(ctx)
		if err == nil {
			p.install(s)
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNoPrimary, last)
		case <-time.After(p.opts.Retry):
		}
	}
}

// connect locates the primary and opens a session to it. The dial has a
// timeout of its own: a member that accepts and never answers (a node hung
// in its disk, a host that drops packets) makes Locate use all of its
// time, and the new primary it found must still be reached.
func (p *Proxy) connect(ctx context.Context) (*session, error) {
	lctx, cancel := context.WithTimeout(ctx, p.opts.LocateTimeout)
	prim, err := p.loc.Locate(lctx)
	cancel()
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, p.opts.LocateTimeout)
	defer cancel()
	be, err := p.dial.Dial(dctx, prim)
	if err != nil {
		return nil, fmt.Errorf("proxy: connect to %s at %s: %w", prim.Name, prim.Addr, err)
	}
	info := be.Info()
	if info.Flags.Has(nbdproto.FlagReadOnly) {
		be.Abort()
		return nil, fmt.Errorf("%w: %s exports read-only", ErrNotPrimary, prim.Name)
	}
	if prim.Size < info.Size {
		prim.Size = info.Size
	}
	p.growTo(prim.Size)
	return &session{prim: prim, be: be, since: time.Now()}, nil
}

// growTo raises the advertised size (grbd devices only grow).
func (p *Proxy) growTo(size int64) {
	for {
		old := p.size.Load()
		if size <= old || p.size.CompareAndSwap(old, size) {
			return
		}
	}
}

// Run finds the primary, connects, and follows it until ctx ends: it
// reconnects when a request dropped the session, and drops the session
// itself when another node serves (a primary cut off from the proxy and
// replaced). It returns ctx's error.
func (p *Proxy) Run(ctx context.Context) error {
	var lastErr string
	defer func() {
		p.mu.Lock()
		s := p.cur
		p.mu.Unlock()
		if s != nil {
			p.drop(s, ctx.Err())
		}
	}()
	for ctx.Err() == nil {
		p.mu.Lock()
		s := p.cur
		p.mu.Unlock()
		if s == nil {
			ns, err := p.connect(ctx)
			if err != nil {
				if msg := err.Error(); msg != lastErr {
					p.opts.Logger.Info("proxy: no primary to follow yet", "err", err)
					lastErr = msg
				}
				sleep(ctx, p.opts.Retry)
				continue
			}
			lastErr = ""
			p.install(ns)
			continue
		}
		select {
		case <-ctx.Done():
			continue
		case <-p.kick:
			continue
		case <-time.After(p.opts.Poll):
		}
		p.check(ctx, s)
	}
	return ctx.Err()
}

// check asks who serves now and drops s when another node or epoch does.
func (p *Proxy) check(ctx context.Context, s *session) {
	lctx, cancel := context.WithTimeout(ctx, p.opts.LocateTimeout)
	defer cancel()
	prim, err := p.loc.Locate(lctx)
	if err != nil {
		return // nobody serves, or the members are slow: requests decide
	}
	if prim.Name != s.prim.Name || prim.Epoch != s.prim.Epoch {
		p.drop(s, fmt.Errorf("%s serves in epoch %d now", prim.Name, prim.Epoch))
		return
	}
	p.growTo(prim.Size)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

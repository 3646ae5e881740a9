package blockdev

import (
	"errors"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Device is what an export serves. Implementations must be safe for
// concurrent use.
//
// Errors that wrap a syscall.Errno (EPERM, EIO, ENOSPC, ...) are sent to the
// client as that NBD error; others as EIO.
type Device interface {
	Size() int64
	ReadAt(p []byte, off int64) error
	// WriteAt must not retain p after returning. With fua the data is
	// durable when it returns.
	WriteAt(p []byte, off int64, fua bool) error
	// WriteZeroes serves NBD_CMD_WRITE_ZEROES and NBD_CMD_TRIM (trim is
	// made deterministic: the range reads back as zeroes).
	WriteZeroes(off, length int64, fua bool) error
	// Flush makes every write completed before the call durable on return.
	Flush() error
}

// OwnedWriter is an optional Device capability: WriteOwned is WriteAt for a
// payload buffer from internal/bufpool that the server hands over, so that
// the device may keep the bytes past its return (a replicating device ships
// them to its peers) instead of copying them. The device returns the buffer
// with bufpool.Put once nothing uses it, also when WriteOwned fails; the
// server never touches it again.
type OwnedWriter interface {
	WriteOwned(p *[]byte, off int64, fua bool) error
}

// ReadOnlyChecker is an optional Device capability. When ReadOnly returns
// true at the handshake, the export is advertised NBD_FLAG_READ_ONLY and
// writes are refused with EPERM.
type ReadOnlyChecker interface {
	ReadOnly() bool
}

// Server serves one Device as one NBD export over any number of connections.
type Server struct {
	dev   Device
	owned OwnedWriter // dev's, when it takes payloads over; nil otherwise
	opts  Options
	stats counters

	mu          sync.Mutex
	closed      bool
	listeners   map[net.Listener]struct{}
	conns       map[*conn]struct{}
	handshaking int            // connections of conns still negotiating
	wg          sync.WaitGroup // ServeConn calls in progress
}

// NewServer returns a server for dev. It fills in option defaults and rejects
// options that violate the NBD size constraints with ErrInvalidOptions.
func NewServer(dev Device, opts Options) (*Server, error) {
	if dev == nil {
		return nil, fmt.Errorf("%w: nil device", ErrInvalidOptions)
	}
	o, err := opts.withDefaults(dev.Size())
	if err != nil {
		return nil, err
	}
	owned, _ := dev.(OwnedWriter)
	return &Server{
		dev:       dev,
		owned:     owned,
		opts:      o,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}, nil
}

// Serve accepts connections on l and serves each in its own goroutine until
// Close; it then returns ErrServerClosed. Other accept errors are returned
// (temporary ones are retried with backoff). Serve does not close l on
// error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.opts.Logger.Warn("nbd accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("blockdev: accept: %w", err)
		}
		backoff = 0
		go func() {
			err := s.ServeConn(nc)
			switch {
			case err == nil || errors.Is(err, ErrServerClosed):
			case errors.Is(err, ErrTooManyConnections):
				s.opts.Logger.Debug("nbd connection refused", "remote", nc.RemoteAddr().String(), "err", err)
			default:
				s.opts.Logger.Info("nbd connection ended", "remote", nc.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM)
}

// ServeConn runs the handshake and transmission phases on nc and closes it.
// It returns nil when the client disconnects cleanly (NBD_CMD_DISC,
// NBD_OPT_ABORT or EOF between requests), ErrServerClosed if Close ended
// it, ErrTooManyConnections if the limits refused it, and otherwise the
// error that ended the connection.
func (s *Server) ServeConn(nc net.Conn) error {
	c := newConn(s, nc)
	defer func() { c.conn().Close() }() // the TLS connection, once there is one
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if len(s.conns) >= s.opts.MaxConnections || s.handshaking >= s.opts.MaxHandshakes {
		n, h := len(s.conns), s.handshaking
		s.mu.Unlock()
		s.stats.refused.Add(1)
		return fmt.Errorf("%w: %d open, %d negotiating", ErrTooManyConnections, n, h)
	}
	s.conns[c] = struct{}{}
	s.handshaking++
	s.wg.Add(1)
	s.mu.Unlock()
	s.stats.connections.Add(1)
	s.stats.active.Add(1)
	negotiating := true
	handshakeDone := func() {
		s.mu.Lock()
		if negotiating {
			negotiating = false
			s.handshaking--
		}
		s.mu.Unlock()
	}
	defer func() {
		handshakeDone()
		s.stats.active.Add(^uint64(0))
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()

	if s.opts.HandshakeTimeout > 0 {
		c.setDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	}
	x, err := c.negotiate()
	handshakeDone()
	if err != nil {
		if errors.Is(err, errAborted) {
			return nil
		}
		s.stats.handshakeFailures.Add(1)
		return s.closedOr(fmt.Errorf("blockdev: handshake: %w", err))
	}
	c.setDeadline(time.Time{})
	c.x = x
	c.enterTransmission()
	c.log.Debug("nbd transmission started", "size", x.size, "flags", x.flags, "align", x.align)
	if err := c.transmit(); err != nil {
		return s.closedOr(err)
	}
	return nil
}

// closedOr returns ErrServerClosed for errors caused by Close interrupting a
// connection, else err.
func (s *Server) closedOr(err error) error {
	if s.isClosed() && errors.Is(err, os.ErrDeadlineExceeded) {
		return ErrServerClosed
	}
	return err
}

// Close stops accepting, makes every connection stop reading, waits until
// the requests already read are answered (or their client stops reading for
// closeGrace), and closes the connections. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	var errs []error
	if !s.closed {
		s.closed = true
		for l := range s.listeners {
			if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		for c := range s.conns {
			c.interrupt()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// knownExport reports whether name selects this server's export.
func (s *Server) knownExport(name []byte) bool {
	return len(name) == 0 || string(name) == s.opts.ExportName
}

// export describes the export for a connection entering transmission now.
func (s *Server) export(enforceBlockSize bool) export {
	x := export{
		size:     s.dev.Size(),
		maxBlock: s.opts.MaxBlockSize,
		align:    1,
		flags: nbdproto.FlagHasFlags | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA |
			nbdproto.FlagCanMultiConn,
	}
	if ro, ok := s.dev.(ReadOnlyChecker); ok && ro.ReadOnly() {
		x.readOnly = true
		x.flags |= nbdproto.FlagReadOnly
	} else {
		x.flags |= nbdproto.FlagSendTrim | nbdproto.FlagSendWriteZeroes
	}
	if enforceBlockSize {
		x.align = s.opts.MinBlockSize
	}
	return x
}

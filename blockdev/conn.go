package blockdev

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/bufpool"
	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Buffer sizes of one connection. Large buffers let one read syscall bring
// in many pipelined requests and one write syscall carry many replies.
const (
	readBufferSize  = 256 << 10
	writeBufferSize = 256 << 10
)

// request is one NBD request from header to reply. It is owned by exactly one
// goroutine at a time: reader → worker → writer → pool.
type request struct {
	hdr   protocol.TransmissionRequestHeader
	errno uint32          // reply error; set by check or by the device
	bufp  *[]byte         // WRITE payload or READ result, pooled; nil otherwise
	cost  int64           // payload bytes held in the connection budget
	epoch *epoch          // write commands: flush epoch to end on completion
	wait  <-chan struct{} // FLUSH: closed when earlier writes completed
	// With Options.OrderOverlapping: this request's range entry and the
	// earlier overlapping ones it runs after.
	rng    *rangeEntry
	before []*rangeEntry
	start  int64 // monoNow() when its header was read (latency)
}

var requestPool = sync.Pool{New: func() any { return new(request) }}

// conn is one client connection.
//
// Goroutines: the reader (ServeConn's own goroutine) decodes requests in wire
// order; up to MaxInFlight workers run them against the device concurrently;
// one writer sends replies, in completion order, through a buffered writer
// that it flushes whenever its queue is empty (after one yield, if requests
// are still executing, so that their replies can share the write).
type conn struct {
	srv *Server
	nc  net.Conn // the TLS connection after STARTTLS; guarded by mu while it changes
	br  *bufio.Reader
	bw  *bufio.Writer
	log *slog.Logger
	x   export
	tls bool // STARTTLS succeeded

	mu          sync.Mutex // guards interrupted, nc changes and deadline changes
	interrupted bool

	budget  budget
	flushes flushTracker
	ranges  rangeOrder    // used with Options.OrderOverlapping
	work    chan *request // reader → idle workers
	idle    atomic.Int32  // idle workers not yet claimed by the reader
	workers sync.WaitGroup
	replies chan *request // workers (and reader, for refused requests) → writer
	// inflight counts requests read but not yet finished by the writer; the
	// writer uses it to batch replies.
	inflight atomic.Int32

	// Writer-only state.
	hdr      [nbdproto.ReplyHeaderSize]byte
	writeErr error
}

// newConn starts a connection with small buffers: the handshake exchanges a
// few hundred bytes, and a client that never gets further (half open,
// stalled, hostile) then costs little; enterTransmission switches to the
// large ones.
func newConn(s *Server, nc net.Conn) *conn {
	return &conn{
		srv: s,
		nc:  nc,
		br:  bufio.NewReaderSize(nc, handshakeBufferSize),
		bw:  bufio.NewWriterSize(nc, handshakeBufferSize),
		log: s.opts.Logger.With("remote", nc.RemoteAddr().String()),
	}
}

// conn returns the connection to close: the TLS one once there is one.
func (c *conn) conn() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nc
}

// enterTransmission replaces the handshake's buffers with the large ones of
// the transmission phase, keeping any request bytes already buffered (a
// client may pipeline its first requests behind NBD_OPT_GO's reply).
func (c *conn) enterTransmission() {
	var src io.Reader = c.nc
	if n := c.br.Buffered(); n > 0 {
		pending, _ := c.br.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(pending)), c.nc)
	}
	c.br = bufio.NewReaderSize(src, readBufferSize)
	c.bw = bufio.NewWriterSize(c.nc, writeBufferSize)
}

// interrupt makes a blocked read fail now and bounds blocked writes, so that
// the connection winds down; used by Server.Close.
func (c *conn) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.interrupted = true
	_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	_ = c.nc.SetWriteDeadline(time.Now().Add(closeGrace))
}

// setDeadline sets the read and write deadline unless interrupt was called.
func (c *conn) setDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.interrupted {
		_ = c.nc.SetDeadline(t)
	}
}

// transmit runs the transmission phase until the client disconnects, the
// stream breaks or the server closes. Every request read is answered (if the
// socket still works) before it returns.
func (c *conn) transmit() error {
	n := c.srv.opts.MaxInFlight
	c.budget.init(n, c.srv.opts.MaxInFlightBytes)
	c.flushes.init()
	c.work = make(chan *request, n)
	c.replies = make(chan *request, n)

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	err := c.readLoop()
	close(c.work) // the reader was the only sender
	c.workers.Wait()
	close(c.replies)
	<-writerDone
	if err == nil {
		err = c.writeErr
	}
	return err
}

// readLoop reads and dispatches requests until DISC (nil), EOF (nil) or an
// error.
func (c *conn) readLoop() error {
	dl := c.srv.opts.drainLimit()
	for {
		b, err := c.br.Peek(nbdproto.RequestHeaderSize)
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) == 0 {
				return nil // client went away between requests
			}
			return fmt.Errorf("blockdev: read request: %w", err)
		}
		var h protocol.TransmissionRequestHeader
		if err := decodeRequest(b, &h); err != nil {
			c.srv.stats.protocolErrors.Add(1)
			return err
		}
		_, _ = c.br.Discard(nbdproto.RequestHeaderSize) // cannot fail after Peek
		if h.Type == protocol.TRANSMISSION_TYPE_REQUEST_DISC {
			return nil
		}

		req := requestPool.Get().(*request)
		*req = request{hdr: h, errno: c.x.check(&h), start: monoNow()}
		if req.errno == 0 && (h.Type == protocol.TRANSMISSION_TYPE_REQUEST_READ || h.Type == protocol.TRANSMISSION_TYPE_REQUEST_WRITE) {
			req.cost = int64(h.Length)
		}
		if h.Type == protocol.TRANSMISSION_TYPE_REQUEST_WRITE && req.errno != 0 {
			// Refused write: its payload must still be consumed to keep the
			// stream in sync, unless it is too large to be worth it.
			if h.Length > dl {
				// Answer it (the client learns why) and close: the payload
				// is not worth reading.
				c.budget.acquire(0)
				c.inflight.Add(1)
				c.replies <- req
				c.srv.stats.protocolErrors.Add(1)
				return fmt.Errorf("%w: %d bytes (limit %d)", ErrPayloadTooLarge, h.Length, dl)
			}
			if _, err := c.br.Discard(int(h.Length)); err != nil {
				requestPool.Put(req)
				return fmt.Errorf("blockdev: drain refused write payload: %w", err)
			}
		}

		c.budget.acquire(req.cost)
		c.inflight.Add(1)
		if req.errno != 0 {
			c.replies <- req // refused: no device work, straight to the writer
			continue
		}
		switch {
		case h.Type == protocol.TRANSMISSION_TYPE_REQUEST_WRITE:
			req.bufp = bufpool.Get(int(h.Length))
			if _, err := io.ReadFull(c.br, *req.bufp); err != nil {
				bufpool.Put(req.bufp)
				c.budget.release(req.cost)
				c.inflight.Add(-1)
				requestPool.Put(req)
				return fmt.Errorf("blockdev: read write payload: %w", err)
			}
			req.epoch = c.flushes.begin()
		case isWrite(h.Type):
			req.epoch = c.flushes.begin()
		case h.Type == nbdproto.CmdFlush:
			req.wait = c.flushes.seal()
		}
		if c.srv.opts.OrderOverlapping && h.Type != nbdproto.CmdFlush {
			req.rng, req.before = c.ranges.add(int64(h.Offset), int64(h.Length), isWrite(h.Type))
		}
		c.dispatch(req)
	}
}

// dispatch hands req to an idle worker, or starts a worker if none is idle.
// A request never waits for a busy worker, so requests cannot block each
// other (a read held by the device never delays an independent one).
//
// Invariant: requests queued in c.work <= workers that announced themselves
// idle and will receive, so no queued request is stranded; workers <=
// MaxInFlight because a busy worker holds an in-flight request.
func (c *conn) dispatch(req *request) {
	if c.idle.Add(-1) >= 0 {
		c.work <- req // never blocks: cap(c.work) == MaxInFlight
		return
	}
	c.idle.Add(1)
	c.workers.Add(1)
	go c.worker(req)
}

func (c *conn) worker(req *request) {
	defer c.workers.Done()
	for {
		c.execute(req)
		// Announce idleness before handing the reply over: once the writer
		// releases the budget the reader may claim this worker, and the
		// claimed request waits in c.work for the receive below.
		c.idle.Add(1)
		// A write ends its flush epoch only after its reply is queued, so a
		// FLUSH that covers it is answered after it, never before.
		ep, rng := req.epoch, req.rng
		c.replies <- req
		if ep != nil {
			c.flushes.end(ep)
		}
		if rng != nil {
			c.ranges.end(rng)
		}
		var ok bool
		if req, ok = <-c.work; !ok {
			return
		}
	}
}

// execute runs a valid request against the device and records the outcome.
func (c *conn) execute(req *request) {
	dev := c.srv.dev
	h := &req.hdr
	off, n := int64(h.Offset), int64(h.Length)
	fua := nbdproto.CmdFlags(h.CommandFlags)&nbdproto.CmdFlagFUA != 0
	waitEntries(req.before)
	req.before = nil
	var err error
	switch h.Type {
	case protocol.TRANSMISSION_TYPE_REQUEST_READ:
		req.bufp = bufpool.Get(int(n))
		if err = dev.ReadAt(*req.bufp, off); err != nil {
			bufpool.Put(req.bufp) // a failed READ sends no payload
			req.bufp = nil
		}
	case protocol.TRANSMISSION_TYPE_REQUEST_WRITE:
		if ow := c.srv.owned; ow != nil {
			err = ow.WriteOwned(req.bufp, off, fua) // the device puts it
		} else {
			err = dev.WriteAt(*req.bufp, off, fua)
			bufpool.Put(req.bufp) // the device does not retain p
		}
		req.bufp = nil
	case nbdproto.CmdTrim, nbdproto.CmdWriteZeroes:
		err = dev.WriteZeroes(off, n, fua)
	case nbdproto.CmdFlush:
		if req.wait != nil {
			<-req.wait
		}
		err = dev.Flush()
	}
	if err != nil {
		req.errno = errnoOf(err)
		c.srv.stats.deviceErrors.Add(1)
		c.log.Debug("device error", "cmd", h.Type, "offset", off, "length", n, "err", err)
	}
}

// writeLoop sends replies until c.replies is closed. After a socket error it
// keeps draining (to release buffers and budget) without writing.
func (c *conn) writeLoop() {
	yields := 0 // since the last flush
	for req := range c.replies {
		if c.writeErr == nil {
			c.writeReply(req)
		}
		c.finish(req)
		if c.writeErr != nil {
			continue
		}
		for len(c.replies) == 0 && yields < writerYields && c.inflight.Load() > 0 {
			// Other requests are being executed: let their goroutines run
			// so their replies can share this write. Bounded per flush, so
			// a reply is never held back for more than a few yields.
			yields++
			runtime.Gosched()
		}
		if len(c.replies) > 0 {
			continue
		}
		yields = 0
		if err := c.bw.Flush(); err != nil {
			c.failWrite(err)
		}
	}
	if c.writeErr == nil {
		if err := c.bw.Flush(); err != nil {
			c.failWrite(err)
		}
	}
}

// writerYields bounds the yields of the writer between two flushes. One
// yield lets requests finishing on other goroutines join the next write
// (fewer syscalls under load) and costs well under a microsecond otherwise.
const writerYields = 1

func (c *conn) writeReply(req *request) {
	putReplyHeader(c.hdr[:], req.errno, req.hdr.Handle)
	if _, err := c.bw.Write(c.hdr[:]); err != nil {
		c.failWrite(err)
		return
	}
	if req.bufp != nil && req.errno == 0 {
		if _, err := c.bw.Write(*req.bufp); err != nil {
			c.failWrite(err)
		}
	}
}

// failWrite records a broken socket and closes it so the reader stops too.
func (c *conn) failWrite(err error) {
	c.writeErr = fmt.Errorf("blockdev: write reply: %w", err)
	_ = c.nc.Close()
}

// finish accounts for a sent reply and recycles the request.
func (c *conn) finish(req *request) {
	c.srv.stats.count(req)
	if req.bufp != nil {
		bufpool.Put(req.bufp)
	}
	c.budget.release(req.cost)
	c.inflight.Add(-1)
	*req = request{}
	requestPool.Put(req)
}

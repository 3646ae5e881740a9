// Package nbdclient is a small NBD client for tests and tools: the fixed
// newstyle handshake (NBD_OPT_GO with NBD_OPT_EXPORT_NAME as fallback), then
// the transmission phase with simple replies. Many requests may be in flight
// on one connection: each carries a cookie and replies are matched to it in
// whatever order the server sends them.
//
// Concurrency: a Client is safe for concurrent use. Requests are written whole
// and in order under one mutex; one reader goroutine delivers replies. A
// request's context bounds both sending (as a write deadline) and waiting for
// the reply; a request abandoned by its context keeps its cookie until the
// reply arrives, which is then read and dropped, so the stream stays in sync.
//
// Outcomes: a nil error or an Errno is the server's definite answer. Any other
// error (ErrConnLost, ErrClosed after Close began, the context's error) leaves
// the outcome unknown: the server may have executed the request.
package nbdclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"io"
	"math"
	"net"
	"sync"
	"time"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Options configure a connection. The zero value asks for the default export.
type Options struct {
	// ExportName is the export to open; "" is the server's default export.
	ExportName string
	// BlockSizes asks the server for NBD_INFO_BLOCK_SIZE. A server that
	// answers may then refuse requests not aligned to the minimum block size.
	BlockSizes bool
	// HandshakeTimeout bounds the negotiation when the context has no earlier
	// deadline. Default 10 s.
	HandshakeTimeout time.Duration
	// CloseTimeout bounds how long Close waits for the server to answer the
	// requests in flight after NBD_CMD_DISC. Default 5 s.
	CloseTimeout time.Duration
	// TLS, when set, upgrades the connection with NBD_OPT_STARTTLS before
	// any other option; a server that refuses it fails the handshake.
	TLS *tls.Config
}

// Client is one NBD connection in the transmission phase.
type Client struct {
	conn         net.Conn
	info         ExportInfo
	closeTimeout time.Duration

	wmu  sync.Mutex // serialises request writes
	wbuf []byte     // request header scratch, under wmu

	mu      sync.Mutex
	pending map[uint64]*call
	cookie  uint64
	err     error // first fatal error; set once
	closing bool

	readerDone chan struct{}
}

// call is one request waiting for its reply.
type call struct {
	typ       uint16
	dest      []byte // READ destination; written only under Client.mu
	length    uint32
	done      chan error // buffered: the reader never blocks on it
	abandoned bool       // the waiter gave up; under Client.mu
}

// Dial connects to addr ("host:port") over TCP and runs the handshake.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("nbdclient: dial %s: %w", addr, err)
	}
	c, err := NewClient(ctx, conn, opts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// DialURI connects to an nbd://host:port[/export] URI; the export in the URI
// overrides opts.ExportName.
func DialURI(ctx context.Context, uri string, opts Options) (*Client, error) {
	addr, export, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	opts.ExportName = export
	return Dial(ctx, addr, opts)
}

// NewClient runs the handshake on conn and starts the transmission phase. On
// error the caller still owns conn.
func NewClient(ctx context.Context, conn net.Conn, opts Options) (*Client, error) {
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = 5 * time.Second
	}
	deadline := time.Now().Add(opts.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	br := bufio.NewReaderSize(conn, 64<<10)
	conn, br, info, err := handshake(conn, br, opts)
	stopped := stop()
	if err == nil && !stopped {
		err = ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c := &Client{
		conn: conn, info: info, closeTimeout: opts.CloseTimeout,
		wbuf:       make([]byte, nbdproto.RequestHeaderSize),
		pending:    map[uint64]*call{},
		readerDone: make(chan struct{}),
	}
	go c.readLoop(br)
	return c, nil
}

// Info returns what the handshake learned about the export.
func (c *Client) Info() ExportInfo { return c.info }

// Size is the export size in bytes.
func (c *Client) Size() int64 { return c.info.Size }

// Err returns the error that broke the connection, or nil while it works.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(ctx context.Context, p []byte, off int64) error {
	return c.do(ctx, protocol.TRANSMISSION_TYPE_REQUEST_READ, 0, off, int64(len(p)), nil, p)
}

// WriteAt writes p at off; flags may carry nbdproto.CmdFlagFUA.
func (c *Client) WriteAt(ctx context.Context, p []byte, off int64, flags CmdFlags) error {
	if err := c.checkFlags(flags, 0); err != nil {
		return err
	}
	return c.do(ctx, protocol.TRANSMISSION_TYPE_REQUEST_WRITE, flags, off, int64(len(p)), p, nil)
}

// Flush asks the server to make every completed write durable.
func (c *Client) Flush(ctx context.Context) error {
	if !c.info.Flags.Has(nbdproto.FlagSendFlush) {
		return fmt.Errorf("%w: FLUSH (export flags %#x)", ErrUnsupported, uint16(c.info.Flags))
	}
	return c.do(ctx, nbdproto.CmdFlush, 0, 0, 0, nil, nil)
}

// Trim discards [off, off+length).
func (c *Client) Trim(ctx context.Context, off, length int64, flags CmdFlags) error {
	if err := c.checkFlags(flags, nbdproto.FlagSendTrim); err != nil {
		return err
	}
	return c.do(ctx, nbdproto.CmdTrim, flags, off, length, nil, nil)
}

// WriteZeroes zeroes [off, off+length); flags may carry nbdproto.CmdFlagFUA and
// nbdproto.CmdFlagNoHole.
func (c *Client) WriteZeroes(ctx context.Context, off, length int64, flags CmdFlags) error {
	if err := c.checkFlags(flags, nbdproto.FlagSendWriteZeroes); err != nil {
		return err
	}
	return c.do(ctx, nbdproto.CmdWriteZeroes, flags, off, length, nil, nil)
}

func (c *Client) checkFlags(flags CmdFlags, need Flags) error {
	if need != 0 && !c.info.Flags.Has(need) {
		return fmt.Errorf("%w: command needs export flag %#x (export flags %#x)", ErrUnsupported, uint16(need), uint16(c.info.Flags))
	}
	if flags&nbdproto.CmdFlagFUA != 0 && !c.info.Flags.Has(nbdproto.FlagSendFUA) {
		return fmt.Errorf("%w: FUA (export flags %#x)", ErrUnsupported, uint16(c.info.Flags))
	}
	return nil
}

// do sends one request and waits for its reply.
func (c *Client) do(ctx context.Context, typ uint16, flags CmdFlags, off, length int64, payload, dest []byte) error {
	if off < 0 || length < 0 || length > math.MaxUint32 {
		return fmt.Errorf("%w: offset %d length %d", ErrInvalid, off, length)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nbdclient: %s: %w", cmdName(typ), err)
	}
	cl := &call{typ: typ, dest: dest, length: uint32(length), done: make(chan error, 1)}
	c.mu.Lock()
	if c.closing || c.err != nil {
		err := c.err
		if c.closing {
			err = ErrClosed
		}
		c.mu.Unlock()
		return err
	}
	c.cookie++
	cookie := c.cookie
	c.pending[cookie] = cl
	c.mu.Unlock()

	if err := c.send(ctx, typ, flags, cookie, off, uint32(length), payload); err != nil {
		// A request only partly sent desynchronises the stream: the
		// connection is over for everyone.
		c.fail(err)
		return c.Err()
	}
	select {
	case err := <-cl.done:
		return err
	case <-ctx.Done():
	}
	c.mu.Lock()
	cl.abandoned = true
	c.mu.Unlock()
	select {
	case err := <-cl.done: // the reply won the race: its answer is definite
		return err
	default:
		return fmt.Errorf("nbdclient: %s %d+%d: %w", cmdName(typ), off, length, ctx.Err())
	}
}

// send writes one request under wmu; the context's deadline bounds it.
func (c *Client) send(ctx context.Context, typ uint16, flags CmdFlags, cookie uint64, off int64, length uint32, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := c.wbuf[:0]
	h = binary.BigEndian.AppendUint32(h, protocol.TRANSMISSION_MAGIC_REQUEST)
	h = binary.BigEndian.AppendUint16(h, uint16(flags))
	h = binary.BigEndian.AppendUint16(h, typ)
	h = binary.BigEndian.AppendUint64(h, cookie)
	h = binary.BigEndian.AppendUint64(h, uint64(off))
	h = binary.BigEndian.AppendUint32(h, length)
	d, _ := ctx.Deadline()
	_ = c.conn.SetWriteDeadline(d)
	bufs := net.Buffers{h}
	if len(payload) > 0 {
		bufs = append(bufs, payload)
	}
	_, err := bufs.WriteTo(c.conn)
	if err != nil {
		return fmt.Errorf("%w: send %s: %w", ErrConnLost, cmdName(typ), err)
	}
	return nil
}

// readLoop delivers replies until the connection ends.
func (c *Client) readLoop(br *bufio.Reader) {
	defer close(c.readerDone)
	var hdr [nbdproto.ReplyHeaderSize]byte
	var scratch []byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			c.fail(fmt.Errorf("%w: read reply: %w", ErrConnLost, err))
			return
		}
		magic := binary.BigEndian.Uint32(hdr[:])
		errno := binary.BigEndian.Uint32(hdr[4:])
		cookie := binary.BigEndian.Uint64(hdr[8:])
		if magic != protocol.TRANSMISSION_MAGIC_REPLY {
			what := "bad reply magic"
			if magic == nbdproto.StructuredReplyMagic {
				what = "structured reply (never negotiated)"
			}
			c.fail(fmt.Errorf("%w: %s %#x", ErrProtocol, what, magic))
			return
		}
		c.mu.Lock()
		cl, ok := c.pending[cookie]
		delete(c.pending, cookie)
		c.mu.Unlock()
		if !ok {
			c.fail(fmt.Errorf("%w: reply for unknown cookie %d", ErrProtocol, cookie))
			return
		}
		var result error
		if errno != 0 {
			result = Errno(errno)
		} else if cl.typ == protocol.TRANSMISSION_TYPE_REQUEST_READ {
			// Read into scratch, then copy under mu unless abandoned: the
			// caller may reuse dest as soon as it gave up.
			if cap(scratch) < int(cl.length) {
				scratch = make([]byte, cl.length)
			}
			data := scratch[:cl.length]
			if _, err := io.ReadFull(br, data); err != nil {
				cl.done <- fmt.Errorf("%w: read data: %w", ErrConnLost, err)
				c.fail(fmt.Errorf("%w: read data: %w", ErrConnLost, err))
				return
			}
			c.mu.Lock()
			if !cl.abandoned {
				copy(cl.dest, data)
			}
			c.mu.Unlock()
		}
		cl.done <- result
	}
}

// fail records the first fatal error, closes the connection and fails every
// request in flight with it.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	err = c.err
	pending := c.pending
	c.pending = map[uint64]*call{}
	c.mu.Unlock()
	_ = c.conn.Close()
	for _, cl := range pending {
		cl.done <- err
	}
}

// Close sends NBD_CMD_DISC, waits (up to Options.CloseTimeout) for the
// answers to the requests in flight, and closes the connection. Requests
// issued after Close began fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		<-c.readerDone
		return nil
	}
	c.closing = true
	broken := c.err != nil
	c.mu.Unlock()
	if !broken {
		ctx, cancel := context.WithTimeout(context.Background(), c.closeTimeout)
		defer cancel()
		if err := c.send(ctx, protocol.TRANSMISSION_TYPE_REQUEST_DISC, 0, 0, 0, 0, nil); err == nil {
			// The server answers what it already read, then closes.
			select {
			case <-c.readerDone:
			case <-ctx.Done():
			}
		}
	}
	c.fail(ErrClosed)
	<-c.readerDone
	return nil
}

func cmdName(typ uint16) string {
	switch typ {
	case protocol.TRANSMISSION_TYPE_REQUEST_READ:
		return "READ"
	case protocol.TRANSMISSION_TYPE_REQUEST_WRITE:
		return "WRITE"
	case protocol.TRANSMISSION_TYPE_REQUEST_DISC:
		return "DISC"
	case nbdproto.CmdFlush:
		return "FLUSH"
	case nbdproto.CmdTrim:
		return "TRIM"
	case nbdproto.CmdWriteZeroes:
		return "WRITE_ZEROES"
	}
	return fmt.Sprintf("command %d", typ)
}

// IsUnknownOutcome reports whether err leaves a request's outcome unknown:
// anything but success or a server Errno.
func IsUnknownOutcome(err error) bool {
	if err == nil {
		return false
	}
	var e Errno
	return !errors.As(err, &e)
}

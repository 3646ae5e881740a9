package bench

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// nbdConn is a minimal NBD client: fixed newstyle handshake with NBD_OPT_GO
// on the default export, then one request at a time with simple replies.
// The failover measurement needs a writer it can point at whichever node is
// primary; fio cannot switch servers mid-run.
type nbdConn struct {
	conn   net.Conn
	r      *bufio.Reader
	size   uint64
	handle uint64
}

// Client handshake flags (NBD protocol, "Client flags").
const (
	nbdFlagCFixedNewstyle = 1 << 0
	nbdFlagCNoZeroes      = 1 << 1
	nbdFlagNoZeroes       = 1 << 1 // server handshake flag
)

// dialNBD connects to uri (nbd://host:port) and negotiates the default export.
func dialNBD(uri string, timeout time.Duration) (*nbdConn, error) {
	addr, ok := strings.CutPrefix(uri, "nbd://")
	if !ok {
		return nil, fmt.Errorf("%w: %q is not an nbd://host:port URI", ErrNBD, uri)
	}
	addr, _, _ = strings.Cut(addr, "/")
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w", ErrNBD, addr, err)
	}
	c := &nbdConn{conn: conn, r: bufio.NewReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if err := c.handshake(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: handshake with %s: %w", ErrNBD, addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

func (c *nbdConn) handshake() error {
	var hs protocol.NegotiationNewstyleHeader
	if err := binary.Read(c.r, binary.BigEndian, &hs); err != nil {
		return err
	}
	if hs.OldstyleMagic != protocol.NEGOTIATION_MAGIC_OLDSTYLE || hs.OptionMagic != protocol.NEGOTIATION_MAGIC_OPTION {
		return fmt.Errorf("not a newstyle NBD server")
	}
	if hs.HandshakeFlags&protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE == 0 {
		return fmt.Errorf("server is not fixed newstyle")
	}
	flags := uint32(nbdFlagCFixedNewstyle)
	if hs.HandshakeFlags&nbdFlagNoZeroes != 0 {
		flags |= nbdFlagCNoZeroes
	}
	// NBD_OPT_GO, export "" and no information requests.
	opt := make([]byte, 0, 16+4+2)
	opt = binary.BigEndian.AppendUint32(opt, flags)
	opt = binary.BigEndian.AppendUint64(opt, protocol.NEGOTIATION_MAGIC_OPTION)
	opt = binary.BigEndian.AppendUint32(opt, protocol.NEGOTIATION_ID_OPTION_GO)
	opt = binary.BigEndian.AppendUint32(opt, 4+2)
	opt = binary.BigEndian.AppendUint32(opt, 0) // export name length
	opt = binary.BigEndian.AppendUint16(opt, 0) // information requests
	if _, err := c.conn.Write(opt); err != nil {
		return err
	}
	for {
		var h protocol.NegotiationReplyHeader
		if err := binary.Read(c.r, binary.BigEndian, &h); err != nil {
			return err
		}
		if h.ReplyMagic != protocol.NEGOTIATION_MAGIC_REPLY || h.Length > 1<<16 {
			return fmt.Errorf("bad option reply")
		}
		body := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, body); err != nil {
			return err
		}
		switch {
		case h.Type == protocol.NEGOTIATION_TYPE_REPLY_ACK:
			if c.size == 0 {
				return fmt.Errorf("server sent no export size")
			}
			return nil
		case h.Type == protocol.NEGOTIATION_TYPE_REPLY_INFO:
			if len(body) >= 12 && binary.BigEndian.Uint16(body) == protocol.NEGOTIATION_TYPE_INFO_EXPORT {
				c.size = binary.BigEndian.Uint64(body[2:])
			}
		case h.Type&(1<<31) != 0:
			return fmt.Errorf("NBD_OPT_GO refused (reply type %#x): %s", h.Type, body)
		}
	}
}

// write writes data at off and waits for the server's reply.
func (c *nbdConn) write(off uint64, data []byte, timeout time.Duration) error {
	c.handle++
	req := make([]byte, 0, 28+len(data))
	req = binary.BigEndian.AppendUint32(req, protocol.TRANSMISSION_MAGIC_REQUEST)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, protocol.TRANSMISSION_TYPE_REQUEST_WRITE)
	req = binary.BigEndian.AppendUint64(req, c.handle)
	req = binary.BigEndian.AppendUint64(req, off)
	req = binary.BigEndian.AppendUint32(req, uint32(len(data)))
	req = append(req, data...)
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = c.conn.SetDeadline(time.Time{}) }()
	if _, err := c.conn.Write(req); err != nil {
		return fmt.Errorf("%w: write request: %w", ErrNBD, err)
	}
	var rep protocol.TransmissionReplyHeader
	if err := binary.Read(c.r, binary.BigEndian, &rep); err != nil {
		return fmt.Errorf("%w: write reply: %w", ErrNBD, err)
	}
	switch {
	case rep.ReplyMagic != protocol.TRANSMISSION_MAGIC_REPLY || rep.Handle != c.handle:
		return fmt.Errorf("%w: bad reply (magic %#x, handle %d)", ErrNBD, rep.ReplyMagic, rep.Handle)
	case rep.Error != 0:
		return fmt.Errorf("%w: write refused with error %d", ErrNBD, rep.Error)
	}
	return nil
}

func (c *nbdConn) Close() error { return c.conn.Close() }

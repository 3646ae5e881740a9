package mesh

import "net"

// coalesceConn joins each yamux data frame's header and body into one
// write. yamux's send loop writes a 12-byte header and then, for a data
// frame with a payload, the payload: two system calls per frame. A data
// header announcing a payload is held back and sent with the payload that
// the send loop writes next (writev); every other write goes straight
// through, so no frame is ever delayed.
//
// Not safe for concurrent Writes (yamux has one writer: its send loop).
type coalesceConn struct {
	net.Conn
	hdr  [yamuxHeaderSize]byte
	held bool
	buf  []byte // joins header and payload where writev is not available (TLS)
}

const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

func (c *coalesceConn) Write(p []byte) (int, error) {
	if c.held {
		c.held = false
		if _, tcp := c.Conn.(*net.TCPConn); tcp {
			bufs := net.Buffers{c.hdr[:], p}
			n, err := bufs.WriteTo(c.Conn)
			return max(0, int(n)-yamuxHeaderSize), err
		}
		c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
		n, err := c.Conn.Write(c.buf)
		if cap(c.buf) > 1<<20 {
			c.buf = nil
		}
		return max(0, n-yamuxHeaderSize), err
	}
	// version u8 | type u8 | flags u16 | stream u32 | length u32 (big-endian)
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && (p[8]|p[9]|p[10]|p[11]) != 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	return c.Conn.Write(p)
}

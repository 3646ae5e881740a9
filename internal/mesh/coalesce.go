package mesh

import "net"

// coalesceConn joins each yamux data frame's header and body into one
// write. yamux's send loop writes a 12-byte header and then, for a data
// frame with a payload, the payload: two system calls per frame. A data
// header announcing a payload is held back and sent with the payload that
// the send loop writes next (writev on TCP); every other write goes
// straight through, so no frame is ever delayed.
//
// Not safe for concurrent Writes (yamux has one writer: its send loop).
type coalesceConn struct {
	net.Conn
	tcp  *net.TCPConn // the TCP connection under Conn, for writev; nil under TLS
	hdr  [yamuxHeaderSize]byte
	held bool
	buf  []byte // joins header and a small payload where writev is not available (TLS)
}

const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// maxJoinCopy is the largest payload joined to its header by a copy
	// when writev is not available: a larger one costs more to copy (a
	// 1 MiB copy per frame was 13% of a primary's CPU) than a second write.
	maxJoinCopy = 64 << 10
)

// newCoalesceConn wraps conn, the connection yamux runs on.
func newCoalesceConn(conn net.Conn) *coalesceConn {
	c := &coalesceConn{Conn: conn}
	under := conn
	if b, ok := conn.(*bufConn); ok {
		under = b.Conn // bufConn changes only how the handshake reads
	}
	c.tcp, _ = under.(*net.TCPConn)
	return c
}

func (c *coalesceConn) Write(p []byte) (int, error) {
	if c.held {
		c.held = false
		if c.tcp != nil {
			bufs := net.Buffers{c.hdr[:], p}
			n, err := bufs.WriteTo(c.tcp)
			return max(0, int(n)-yamuxHeaderSize), err
		}
		if len(p) > maxJoinCopy {
			if n, err := c.Conn.Write(c.hdr[:]); err != nil {
				return max(0, n-yamuxHeaderSize), err
			}
			return c.Conn.Write(p)
		}
		c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
		n, err := c.Conn.Write(c.buf)
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

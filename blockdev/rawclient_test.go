package blockdev

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/pojntfx/go-nbd/pkg/protocol"
	"github.com/stretchr/testify/require"
)

// The raw client speaks the NBD wire protocol byte by byte so tests can send
// whatever they like, including requests no real client would send.

const (
	testTimeout = 5 * time.Second
	tick        = 5 * time.Millisecond
)

func timeout() <-chan time.Time { return time.After(testTimeout) }

func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

// startServer serves dev on a loopback listener. The cleanup closes the
// server and checks that Serve returned ErrServerClosed and that no
// connection is left open.
func startServer(t testing.TB, dev Device, opts Options) (*Server, string) {
	t.Helper()
	s, err := NewServer(dev, opts)
	require.NoError(t, err)
	l := listen(t)
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		select {
		case err := <-closed:
			require.NoError(t, err)
		case <-timeout():
			// Requests stuck in a test device: report instead of hanging;
			// later cleanups (gate) release them.
			t.Error("Close did not return")
			return
		}
		select {
		case err := <-served:
			require.ErrorIs(t, err, ErrServerClosed)
		case <-timeout():
			t.Error("Serve did not return after Close")
		}
		require.Zero(t, s.Stats().ActiveConnections, "connections left open after Close")
	})
	return s, l.Addr().String()
}

type rawClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

// dialRaw connects and completes the greeting with the given client flags.
func dialRaw(t testing.TB, addr string, clientFlags uint32) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(4*testTimeout)))
	c := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	var g protocol.NegotiationNewstyleHeader
	require.NoError(t, binary.Read(c.br, binary.BigEndian, &g))
	require.Equal(t, protocol.NEGOTIATION_MAGIC_OLDSTYLE, g.OldstyleMagic)
	require.Equal(t, protocol.NEGOTIATION_MAGIC_OPTION, g.OptionMagic)
	require.Equal(t, protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE|nbdproto.FlagNoZeroes, g.HandshakeFlags)
	c.write(binary.BigEndian.AppendUint32(nil, clientFlags))
	return c
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	_, err := c.nc.Write(b)
	require.NoError(c.t, err)
}

func (c *rawClient) option(id uint32, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, protocol.NEGOTIATION_MAGIC_OPTION)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *rawClient) optReply() optReply {
	c.t.Helper()
	var h protocol.NegotiationReplyHeader
	require.NoError(c.t, binary.Read(c.br, binary.BigEndian, &h))
	require.Equal(c.t, protocol.NEGOTIATION_MAGIC_REPLY, h.ReplyMagic)
	r := optReply{opt: h.ID, typ: h.Type, data: make([]byte, h.Length)}
	_, err := io.ReadFull(c.br, r.data)
	require.NoError(c.t, err)
	return r
}

func infoRequest(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// exportInfo is what NBD_OPT_INFO/GO told the client.
type exportInfo struct {
	size                    uint64
	flags                   uint16
	name, desc              string
	minBS, prefBS, maxBS    uint32
	hasName, hasDesc, hasBS bool
}

// infoOrGo sends NBD_OPT_INFO or NBD_OPT_GO and collects replies until the
// final one, which it returns.
func (c *rawClient) infoOrGo(opt uint32, name string, infos ...uint16) (exportInfo, optReply) {
	c.t.Helper()
	c.option(opt, infoRequest(name, infos...))
	var x exportInfo
	for {
		r := c.optReply()
		require.Equal(c.t, opt, r.opt)
		if r.typ != protocol.NEGOTIATION_TYPE_REPLY_INFO {
			return x, r
		}
		require.GreaterOrEqual(c.t, len(r.data), 2)
		switch binary.BigEndian.Uint16(r.data) {
		case protocol.NEGOTIATION_TYPE_INFO_EXPORT:
			require.Len(c.t, r.data, 12)
			x.size = binary.BigEndian.Uint64(r.data[2:])
			x.flags = binary.BigEndian.Uint16(r.data[10:])
		case protocol.NEGOTIATION_TYPE_INFO_NAME:
			x.name, x.hasName = string(r.data[2:]), true
		case protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION:
			x.desc, x.hasDesc = string(r.data[2:]), true
		case protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE:
			require.Len(c.t, r.data, 14)
			x.minBS = binary.BigEndian.Uint32(r.data[2:])
			x.prefBS = binary.BigEndian.Uint32(r.data[6:])
			x.maxBS = binary.BigEndian.Uint32(r.data[10:])
			x.hasBS = true
		}
	}
}

// goExport enters transmission with NBD_OPT_GO and requires success.
func (c *rawClient) goExport(name string, infos ...uint16) exportInfo {
	c.t.Helper()
	x, r := c.infoOrGo(protocol.NEGOTIATION_ID_OPTION_GO, name, infos...)
	require.Equal(c.t, protocol.NEGOTIATION_TYPE_REPLY_ACK, r.typ, "GO failed: %q", r.data)
	return x
}

// dialGo connects with NO_ZEROES and enters transmission with NBD_OPT_GO,
// requesting block sizes (so alignment is enforced) when blockSizes is set.
func dialGo(t testing.TB, addr string, blockSizes bool) (*rawClient, exportInfo) {
	t.Helper()
	c := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle|nbdproto.FlagCNoZeroes)
	if blockSizes {
		return c, c.goExport("", protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE)
	}
	return c, c.goExport("")
}

// request sends one transmission request (payload only for WRITE).
func (c *rawClient) request(typ uint16, flags nbdproto.CmdFlags, cookie, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	c.write(encodeRequest(typ, flags, cookie, off, length, payload))
}

func encodeRequest(typ uint16, flags nbdproto.CmdFlags, cookie, off uint64, length uint32, payload []byte) []byte {
	b := make([]byte, nbdproto.RequestHeaderSize, nbdproto.RequestHeaderSize+len(payload))
	binary.BigEndian.PutUint32(b[0:], protocol.TRANSMISSION_MAGIC_REQUEST)
	binary.BigEndian.PutUint16(b[4:], uint16(flags))
	binary.BigEndian.PutUint16(b[6:], typ)
	binary.BigEndian.PutUint64(b[8:], cookie)
	binary.BigEndian.PutUint64(b[16:], off)
	binary.BigEndian.PutUint32(b[24:], length)
	return append(b, payload...)
}

// reply reads one simple reply. readLen maps the cookies of outstanding
// READs to their length: a successful READ reply carries that much data.
func (c *rawClient) reply(readLen map[uint64]int) (cookie uint64, errno uint32, data []byte) {
	c.t.Helper()
	var h protocol.TransmissionReplyHeader
	require.NoError(c.t, binary.Read(c.br, binary.BigEndian, &h))
	require.Equal(c.t, protocol.TRANSMISSION_MAGIC_REPLY, h.ReplyMagic)
	if n, ok := readLen[h.Handle]; ok && h.Error == 0 {
		data = make([]byte, n)
		_, err := io.ReadFull(c.br, data)
		require.NoError(c.t, err)
	}
	return h.Handle, h.Error, data
}

// replyOK reads one reply and requires it to answer cookie without error;
// it returns the data of a READ reply (readLen as for reply).
func (c *rawClient) replyOK(cookie uint64, readLen map[uint64]int) []byte {
	c.t.Helper()
	got, errno, data := c.reply(readLen)
	require.Equal(c.t, cookie, got)
	require.Zero(c.t, errno)
	return data
}

// replyCookies reads n replies, requires each to succeed and returns their
// cookies in the order they came: the tests that use it check that order.
func (c *rawClient) replyCookies(n int) []uint64 {
	c.t.Helper()
	var order []uint64
	for range n {
		cookie, errno, _ := c.reply(nil)
		require.Zero(c.t, errno)
		order = append(order, cookie)
	}
	return order
}

// do sends one request and waits for its reply.
func (c *rawClient) do(typ uint16, flags nbdproto.CmdFlags, off uint64, length uint32, payload []byte) (uint32, []byte) {
	c.t.Helper()
	const cookie = 0x1234_5678_9abc_def0
	c.request(typ, flags, cookie, off, length, payload)
	readLen := map[uint64]int{}
	if typ == protocol.TRANSMISSION_TYPE_REQUEST_READ {
		readLen[cookie] = int(length)
	}
	got, errno, data := c.reply(readLen)
	require.Equal(c.t, uint64(cookie), got)
	return errno, data
}

// expectClosed requires the server to close the connection without sending
// anything more.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	require.NoError(c.t, c.nc.SetReadDeadline(time.Now().Add(testTimeout)))
	n, err := io.Copy(io.Discard, c.br)
	require.Zero(c.t, n, "server sent data before closing")
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("server did not close the connection")
	}
}

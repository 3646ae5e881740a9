package blockdev

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"testing"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/pojntfx/go-nbd/pkg/protocol"
	"github.com/stretchr/testify/require"
)

const (
	cmdRead  = protocol.TRANSMISSION_TYPE_REQUEST_READ
	cmdWrite = protocol.TRANSMISSION_TYPE_REQUEST_WRITE
	cmdDisc  = protocol.TRANSMISSION_TYPE_REQUEST_DISC
)

// badReq is a request the server must refuse with errno while leaving the
// device and the connection intact.
type badReq struct {
	name    string
	typ     uint16
	flags   nbdproto.CmdFlags
	off     uint64
	length  uint32
	payload int // bytes of payload actually sent (WRITE)
	errno   uint32
}

// checkRefused sends r on a fresh connection and checks: the reply carries
// r.errno, the device is unchanged, and valid requests on the same
// connection still work (a READ that returns the device's bytes, then a
// WRITE read back).
func checkRefused(t *testing.T, addr string, dev *memDev, blockSizes bool, r badReq) {
	t.Helper()
	c, _ := dialGo(t, addr, blockSizes)
	before := dev.sum()

	payload := bytes.Repeat([]byte{0xA5}, r.payload)
	errno, data := c.do(r.typ, r.flags, r.off, r.length, payload)
	require.Equal(t, r.errno, errno, "error value")
	require.Nil(t, data, "a refused request carries no payload")
	require.Equal(t, before, dev.sum(), "device changed by a refused request")

	errno, data = c.do(cmdRead, 0, 4096, 4096, nil)
	require.Zero(t, errno)
	require.Equal(t, dev.bytesAt(4096, 4096), data)

	want := bytes.Repeat([]byte{0x5A}, 512)
	errno, _ = c.do(cmdWrite, 0, 8192, 512, want)
	require.Zero(t, errno)
	require.Equal(t, want, dev.bytesAt(8192, 512))
	c.request(cmdDisc, 0, 0, 0, 0, nil)
	c.expectClosed()
}

func TestBadRequests(t *testing.T) {
	const size = 1 << 20
	const maxBS = 64 << 10
	dev := newRandDev(size)
	_, addr := startServer(t, dev, Options{MinBlockSize: 512, PreferredBlockSize: 4096, MaxBlockSize: maxBS})

	for _, r := range []badReq{
		{name: "read past end", typ: cmdRead, off: size - 512, length: 1024, errno: nbdproto.EINVAL},
		{name: "read offset past end", typ: cmdRead, off: size + 512, length: 512, errno: nbdproto.EINVAL},
		{name: "read offset wraps", typ: cmdRead, off: math.MaxUint64 - 511, length: 1024, errno: nbdproto.EINVAL},
		{name: "write past end", typ: cmdWrite, off: size - 512, length: 1024, payload: 1024, errno: nbdproto.ENOSPC},
		{name: "write offset wraps", typ: cmdWrite, off: math.MaxUint64 - 511, length: 1024, payload: 1024, errno: nbdproto.ENOSPC},
		{name: "write zeroes past end", typ: nbdproto.CmdWriteZeroes, off: size - 512, length: 1024, errno: nbdproto.ENOSPC},
		{name: "trim past end", typ: nbdproto.CmdTrim, off: size - 512, length: 1024, errno: nbdproto.EINVAL},
		{name: "read longer than max block", typ: cmdRead, off: 0, length: maxBS + 512, errno: nbdproto.EINVAL},
		{name: "write longer than max block is drained", typ: cmdWrite, off: 0, length: 2 * maxBS, payload: 2 * maxBS, errno: nbdproto.EINVAL},
		{name: "read length 0", typ: cmdRead, off: 0, length: 0, errno: nbdproto.EINVAL},
		{name: "write length 0", typ: cmdWrite, off: 0, length: 0, errno: nbdproto.EINVAL},
		{name: "trim length 0", typ: nbdproto.CmdTrim, off: 0, length: 0, errno: nbdproto.EINVAL},
		{name: "write zeroes length 0", typ: nbdproto.CmdWriteZeroes, off: 0, length: 0, errno: nbdproto.EINVAL},
		{name: "flush with length", typ: nbdproto.CmdFlush, off: 0, length: 512, errno: nbdproto.EINVAL},
		{name: "flush with offset", typ: nbdproto.CmdFlush, off: 512, length: 0, errno: nbdproto.EINVAL},
		{name: "unknown command", typ: 99, off: 0, length: 512, errno: nbdproto.EINVAL},
		{name: "cache command", typ: nbdproto.CmdCache, off: 0, length: 512, errno: nbdproto.EINVAL},
		{name: "block status command", typ: nbdproto.CmdBlockStatus, off: 0, length: 512, errno: nbdproto.EINVAL},
		{name: "read with DF flag", typ: cmdRead, flags: nbdproto.CmdFlagDF, off: 0, length: 512, errno: nbdproto.EINVAL},
		{name: "write with NO_HOLE flag", typ: cmdWrite, flags: nbdproto.CmdFlagNoHole, off: 0, length: 512, payload: 512, errno: nbdproto.EINVAL},
		{name: "write zeroes with FAST_ZERO", typ: nbdproto.CmdWriteZeroes, flags: nbdproto.CmdFlagFastZero, off: 0, length: 512, errno: nbdproto.EINVAL},
		{name: "trim with REQ_ONE", typ: nbdproto.CmdTrim, flags: nbdproto.CmdFlagReqOne, off: 0, length: 512, errno: nbdproto.EINVAL},
		{name: "write with unknown flag", typ: cmdWrite, flags: 1 << 15, off: 0, length: 512, payload: 512, errno: nbdproto.EINVAL},
		{name: "misaligned read offset", typ: cmdRead, off: 100, length: 512, errno: nbdproto.EINVAL},
		{name: "misaligned read length", typ: cmdRead, off: 0, length: 100, errno: nbdproto.EINVAL},
		{name: "misaligned write offset", typ: cmdWrite, off: 100, length: 512, payload: 512, errno: nbdproto.EINVAL},
		{name: "misaligned write length", typ: cmdWrite, off: 0, length: 100, payload: 100, errno: nbdproto.EINVAL},
		{name: "misaligned trim", typ: nbdproto.CmdTrim, off: 256, length: 512, errno: nbdproto.EINVAL},
		{name: "misaligned write zeroes", typ: nbdproto.CmdWriteZeroes, off: 0, length: 700, errno: nbdproto.EINVAL},
	} {
		t.Run(r.name, func(t *testing.T) { checkRefused(t, addr, dev, true, r) })
	}
}

func TestReadOnlyExportRefusesWrites(t *testing.T) {
	dev := newRandDev(1 << 20)
	_, addr := startServer(t, roDev{dev}, Options{})

	c, x := dialGo(t, addr, true)
	require.NotZero(t, nbdproto.Flags(x.flags)&nbdproto.FlagReadOnly, "READ_ONLY not advertised")
	require.Zero(t, nbdproto.Flags(x.flags)&(nbdproto.FlagSendTrim|nbdproto.FlagSendWriteZeroes), "trim/zeroes advertised on a read-only export")

	before := dev.sum()
	for _, r := range []badReq{
		{name: "write", typ: cmdWrite, off: 0, length: 4096, payload: 4096},
		{name: "write fua", typ: cmdWrite, flags: nbdproto.CmdFlagFUA, off: 0, length: 4096, payload: 4096},
		{name: "trim", typ: nbdproto.CmdTrim, off: 0, length: 4096},
		{name: "write zeroes", typ: nbdproto.CmdWriteZeroes, off: 0, length: 4096},
	} {
		t.Run(r.name, func(t *testing.T) {
			errno, _ := c.do(r.typ, r.flags, r.off, r.length, bytes.Repeat([]byte{1}, r.payload))
			require.Equal(t, nbdproto.EPERM, errno)
			require.Equal(t, before, dev.sum())
			errno, data := c.do(cmdRead, 0, 0, 4096, nil)
			require.Zero(t, errno)
			require.Equal(t, dev.bytesAt(0, 4096), data)
		})
	}
	errno, _ := c.do(nbdproto.CmdFlush, 0, 0, 0, nil)
	require.Zero(t, errno, "FLUSH is harmless on a read-only export")
}

// Without NBD_INFO_BLOCK_SIZE in NBD_OPT_GO the client never agreed to the
// minimum block size, so byte-granular requests must work (spec: default
// minimum block size 1).
func TestUnalignedRequestsWithoutBlockSizeNegotiation(t *testing.T) {
	dev := newRandDev(1 << 20)
	_, addr := startServer(t, dev, Options{})
	for _, tc := range []struct {
		name string
		dial func(t *testing.T) *rawClient
	}{
		{"go without block size", func(t *testing.T) *rawClient { c, _ := dialGo(t, addr, false); return c }},
		{"export name", func(t *testing.T) *rawClient {
			c := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle|nbdproto.FlagCNoZeroes)
			c.option(nbdproto.OptExportName, nil)
			var hdr [10]byte
			_, err := io.ReadFull(c.br, hdr[:])
			require.NoError(t, err)
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.dial(t)
			errno, _ := c.do(cmdWrite, 0, 1001, 3, []byte{7, 8, 9})
			require.Zero(t, errno)
			require.Equal(t, []byte{7, 8, 9}, dev.bytesAt(1001, 3))
			errno, data := c.do(cmdRead, 0, 1000, 5, nil)
			require.Zero(t, errno)
			require.Equal(t, dev.bytesAt(1000, 5), data)
		})
	}
}

// A WRITE too large to drain is answered EINVAL and closes only its own
// connection.
func TestUndrainableWriteClosesOnlyItsConnection(t *testing.T) {
	dev := newRandDev(1 << 20)
	s, addr := startServer(t, dev, Options{MaxBlockSize: 64 << 10})
	other, _ := dialGo(t, addr, true)
	before := dev.sum()

	c, _ := dialGo(t, addr, true)
	c.request(cmdWrite, 0, 1, 0, spec25+4096, make([]byte, 4096))
	cookie, errno, _ := c.reply(nil)
	require.Equal(t, uint64(1), cookie)
	require.Equal(t, nbdproto.EINVAL, errno, "the refused write is answered before the connection closes")
	c.expectClosed()
	require.Equal(t, before, dev.sum())
	require.Eventually(t, func() bool { return s.Stats().ProtocolErrors == 1 }, testTimeout, tick)

	errno, data := other.do(cmdRead, 0, 0, 4096, nil)
	require.Zero(t, errno)
	require.Equal(t, dev.bytesAt(0, 4096), data)
}

// A bad request magic desynchronises the stream: the server answers what it
// already read, then closes that connection; others keep being served.
func TestBadMagicClosesOnlyItsConnection(t *testing.T) {
	dev := newRandDev(1 << 20)
	g := newGate(t)
	dev.beforeRead = func(off int64, _ int) error {
		if off == 0 {
			g.wait(off)
		}
		return nil
	}
	s, addr := startServer(t, dev, Options{})
	other, _ := dialGo(t, addr, true)
	before := dev.sum()

	c, _ := dialGo(t, addr, true)
	c.request(cmdRead, 0, 7, 0, 4096, nil) // held in the device
	g.awaitEntered(t, 0)
	bad := encodeRequest(cmdWrite, 0, 8, 4096, 4, []byte{1, 2, 3, 4})
	binary.BigEndian.PutUint32(bad, 0xdeadbeef)
	c.write(bad)
	g.open(0)
	require.Equal(t, dev.bytesAt(0, 4096), c.replyOK(7, map[uint64]int{7: 4096}))
	c.expectClosed()
	require.Equal(t, before, dev.sum())
	require.Equal(t, uint64(1), s.Stats().ProtocolErrors)

	errno, data := other.do(cmdRead, 0, 4096, 4096, nil)
	require.Zero(t, errno)
	require.Equal(t, dev.bytesAt(4096, 4096), data)
}

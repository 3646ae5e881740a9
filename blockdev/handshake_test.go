package blockdev

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/pojntfx/go-nbd/pkg/protocol"
	"github.com/stretchr/testify/require"
)

const (
	optInfo  = protocol.NEGOTIATION_ID_OPTION_INFO
	optGo    = protocol.NEGOTIATION_ID_OPTION_GO
	optList  = protocol.NEGOTIATION_ID_OPTION_LIST
	optAbort = protocol.NEGOTIATION_ID_OPTION_ABORT
	repAck   = protocol.NEGOTIATION_TYPE_REPLY_ACK
	repUnsup = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED
	repUnkn  = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN
)

var testOpts = Options{ExportName: "vol0", Description: "grbd test volume",
	MinBlockSize: 512, PreferredBlockSize: 4096, MaxBlockSize: 1 << 20}

// Every option gets its reply, and the negotiation goes on afterwards: each
// case ends with a GO and a READ on the same connection.
func TestHandshakeOptions(t *testing.T) {
	dev := newRandDev(1 << 20)
	_, addr := startServer(t, dev, testOpts)
	for _, tc := range []struct {
		name  string
		opt   uint32
		data  []byte
		types []uint32 // reply types expected, last one final
	}{
		{"list", optList, nil, []uint32{protocol.NEGOTIATION_TYPE_REPLY_SERVER, repAck}},
		{"list with data", optList, []byte{1}, []uint32{nbdproto.RepErrInvalid}},
		{"info unknown export", optInfo, infoRequest("nope"), []uint32{repUnkn}},
		{"go unknown export", optGo, infoRequest("nope"), []uint32{repUnkn}},
		{"info name length past data", optInfo, []byte{0, 0, 1, 0, 'v', 0, 0}, []uint32{nbdproto.RepErrInvalid}},
		{"info too short", optInfo, []byte{0, 0, 0}, []uint32{nbdproto.RepErrInvalid}},
		{"info trailing bytes", optInfo, append(infoRequest("vol0"), 0), []uint32{nbdproto.RepErrInvalid}},
		{"info count past data", optInfo, []byte{0, 0, 0, 4, 'v', 'o', 'l', '0', 0, 1}, []uint32{nbdproto.RepErrInvalid}},
		{"structured reply", nbdproto.OptStructuredReply, nil, []uint32{repUnsup}},
		{"starttls", nbdproto.OptStartTLS, nil, []uint32{repUnsup}},
		{"unknown option with data", 0x7777, bytes.Repeat([]byte{1}, 1000), []uint32{repUnsup}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle|nbdproto.FlagCNoZeroes)
			c.option(tc.opt, tc.data)
			var last optReply
			for _, want := range tc.types {
				last = c.optReply()
				require.Equal(t, tc.opt, last.opt)
				require.Equal(t, want, last.typ, "reply %q", last.data)
			}
			c.goExport("vol0")
			errno, data := c.do(cmdRead, 0, 0, 512, nil)
			require.Zero(t, errno)
			require.Equal(t, dev.bytesAt(0, 512), data)
		})
	}
}

func TestHandshakeListNamesExport(t *testing.T) {
	_, addr := startServer(t, newMemDev(1<<20), testOpts)
	c := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle)
	c.option(optList, nil)
	r := c.optReply()
	require.Equal(t, protocol.NEGOTIATION_TYPE_REPLY_SERVER, r.typ)
	require.Equal(t, append([]byte{0, 0, 0, 4}, "vol0"...), r.data)
	require.Equal(t, repAck, c.optReply().typ)
}

func TestHandshakeInfoAndGo(t *testing.T) {
	_, addr := startServer(t, newMemDev(1<<20), testOpts)
	all := []uint16{protocol.NEGOTIATION_TYPE_INFO_NAME, protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION,
		protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE, 0x4242 /* unknown: ignored */}
	wantFlags := uint16(0x1 | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA | nbdproto.FlagSendTrim | nbdproto.FlagSendWriteZeroes | 0x100)
	for _, tc := range []struct {
		name   string
		export string
		infos  []uint16
		want   exportInfo
	}{
		{"named, all infos", "vol0", all, exportInfo{size: 1 << 20, flags: wantFlags, name: "vol0", desc: "grbd test volume",
			minBS: 512, prefBS: 4096, maxBS: 1 << 20, hasName: true, hasDesc: true, hasBS: true}},
		{"default export, no infos", "", nil, exportInfo{size: 1 << 20, flags: wantFlags,
			minBS: 512, prefBS: 4096, maxBS: 1 << 20, hasBS: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle|nbdproto.FlagCNoZeroes)
			x, r := c.infoOrGo(optInfo, tc.export, tc.infos...)
			require.Equal(t, repAck, r.typ)
			require.Equal(t, tc.want, x)
			x = c.goExport(tc.export, tc.infos...)
			require.Equal(t, tc.want, x, "GO must repeat what INFO said")
			errno, _ := c.do(cmdWrite, 0, 0, 512, make([]byte, 512))
			require.Zero(t, errno)
		})
	}
}

// NBD_OPT_EXPORT_NAME: 124 zero bytes follow the export info unless the
// client set NBD_FLAG_C_NO_ZEROES.
func TestHandshakeExportName(t *testing.T) {
	dev := newRandDev(1 << 20)
	_, addr := startServer(t, dev, testOpts)
	for _, tc := range []struct {
		name     string
		flags    uint32
		export   string
		trailing int
	}{
		{"zeroes", nbdproto.FlagCFixedNewstyle, "vol0", nbdproto.ExportNameZeroes},
		{"no zeroes", nbdproto.FlagCFixedNewstyle | nbdproto.FlagCNoZeroes, "vol0", 0},
		{"default export, not fixed newstyle", 0, "", nbdproto.ExportNameZeroes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr, tc.flags)
			c.option(nbdproto.OptExportName, []byte(tc.export))
			b := make([]byte, 10+tc.trailing)
			_, err := io.ReadFull(c.br, b)
			require.NoError(t, err)
			require.Equal(t, uint64(1<<20), binary.BigEndian.Uint64(b))
			require.Equal(t, uint16(0x1|nbdproto.FlagSendFlush|nbdproto.FlagSendFUA|nbdproto.FlagSendTrim|nbdproto.FlagSendWriteZeroes|0x100),
				binary.BigEndian.Uint16(b[8:]))
			require.Equal(t, make([]byte, tc.trailing), b[10:])
			// The next bytes must be the reply to our request, proving the
			// zero count was exact.
			errno, data := c.do(cmdRead, 0, 512, 512, nil)
			require.Zero(t, errno)
			require.Equal(t, dev.bytesAt(512, 512), data)
		})
	}
}

// Violations that end the handshake: ServeConn returns the sentinel and
// closes the connection.
func TestHandshakeFatal(t *testing.T) {
	opt := func(id uint32, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, protocol.NEGOTIATION_MAGIC_OPTION)
		b = binary.BigEndian.AppendUint32(b, id)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	flags := binary.BigEndian.AppendUint32(nil, nbdproto.FlagCFixedNewstyle)
	manyOpts := bytes.Clone(flags)
	for range maxOptions {
		manyOpts = append(manyOpts, opt(0x7777, nil)...)
	}
	for _, tc := range []struct {
		name   string
		client []byte
		err    error
	}{
		{"unknown client flag", binary.BigEndian.AppendUint32(nil, 1<<5), ErrBadClientFlags},
		{"bad option magic", append(bytes.Clone(flags), bytes.Repeat([]byte{0xff}, 16)...), ErrBadOptionMagic},
		{"option too large", binary.BigEndian.AppendUint32(append(bytes.Clone(flags), opt(0x7777, nil)[:12]...),
			maxOptionLength+1), ErrOptionTooLarge},
		{"unknown export via EXPORT_NAME", append(bytes.Clone(flags), opt(nbdproto.OptExportName, []byte("nope"))...), ErrUnknownExport},
		{"too many options", manyOpts, ErrTooManyOptions},
		{"eof mid option", append(bytes.Clone(flags), opt(optList, nil)[:10]...), io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewServer(newMemDev(1<<20), testOpts)
			require.NoError(t, err)
			srv, cli := net.Pipe()
			done := make(chan error, 1)
			go func() { done <- s.ServeConn(srv) }()
			go func() { _, _ = io.Copy(io.Discard, cli) }()
			_, _ = cli.Write(tc.client)
			if tc.err == io.ErrUnexpectedEOF {
				cli.Close()
			}
			select {
			case err := <-done:
				require.ErrorIs(t, err, tc.err)
			case <-timeout():
				t.Fatal("ServeConn did not end")
			}
			cli.Close()
			require.Equal(t, uint64(1), s.Stats().HandshakeFailures)
		})
	}
}

func TestHandshakeAbort(t *testing.T) {
	s, err := NewServer(newMemDev(1<<20), testOpts)
	require.NoError(t, err)
	l := listen(t)
	done := make(chan error, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		done <- s.ServeConn(nc)
	}()
	c := dialRaw(t, l.Addr().String(), nbdproto.FlagCFixedNewstyle)
	c.option(optAbort, []byte("ignored"))
	require.Equal(t, repAck, c.optReply().typ)
	c.expectClosed()
	require.NoError(t, <-done, "abort is a clean end")
	require.Zero(t, s.Stats().HandshakeFailures)
}

func TestHandshakeTimeout(t *testing.T) {
	_, addr := startServer(t, newMemDev(1<<20), Options{HandshakeTimeout: 100 * time.Millisecond})
	c := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle)
	start := time.Now()
	c.expectClosed() // the client never sends an option
	require.Less(t, time.Since(start), 2*time.Second)
}

// The handshake deadline must not leak into the transmission phase.
func TestNoDeadlineAfterHandshake(t *testing.T) {
	dev := newRandDev(1 << 20)
	_, addr := startServer(t, dev, Options{HandshakeTimeout: 100 * time.Millisecond})
	c, _ := dialGo(t, addr, true)
	time.Sleep(300 * time.Millisecond)
	errno, data := c.do(cmdRead, 0, 0, 512, nil)
	require.Zero(t, errno)
	require.Equal(t, dev.bytesAt(0, 512), data)
}

package blockdev

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/grbd/grbd/internal/pki"
	"github.com/pojntfx/go-nbd/pkg/protocol"
	"github.com/stretchr/testify/require"
)

// TestHostileRequestsDoNotDisturbOthers: while one client does verified I/O,
// others send a READ and a WRITE of 2^32-1 bytes, requests past the end, a
// truncated header and garbage. Each gets an error (an error reply, or for
// the undrainable WRITE an error reply and a closed connection), the device
// is unchanged by them, and the good client never sees a failure.
func TestHostileRequestsDoNotDisturbOthers(t *testing.T) {
	const size = 4 << 20
	dev := newRandDev(size)
	s, addr := startServer(t, dev, Options{})

	// The good client writes and reads back its own 64 KiB region.
	stop := make(chan struct{})
	var goodOps atomic.Int64
	goodErr := make(chan error, 1)
	good, _ := dialGo(t, addr, true)
	go func() {
		defer close(goodErr)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			want := bytes.Repeat([]byte{byte(i)}, 4096)
			off := uint64(1<<20 + (i%16)*4096)
			if errno, _ := good.do(cmdWrite, 0, off, 4096, want); errno != 0 {
				goodErr <- fmt.Errorf("write: NBD error %d", errno)
				return
			}
			errno, got := good.do(cmdRead, 0, off, 4096, nil)
			if errno != 0 || !bytes.Equal(got, want) {
				goodErr <- fmt.Errorf("read back: NBD error %d, data equal %v", errno, bytes.Equal(got, want))
				return
			}
			goodOps.Add(1)
		}
	}()
	before := dev.bytesAt(0, 1<<20)

	// Refused with an error reply; the connection goes on. (No block size
	// negotiation: lengths are judged against the bounds, not alignment.)
	c, _ := dialGo(t, addr, false)
	for _, r := range []badReq{
		{name: "read 2^32-1", typ: cmdRead, off: 0, length: math.MaxUint32, errno: nbdproto.EINVAL},
		{name: "read offset past end", typ: cmdRead, off: size + 4096, length: 4096, errno: nbdproto.EINVAL},
		{name: "read offset 2^64-512", typ: cmdRead, off: math.MaxUint64 - 511, length: 512, errno: nbdproto.EINVAL},
		{name: "write offset past end", typ: cmdWrite, off: size, length: 512, payload: 512, errno: nbdproto.ENOSPC},
		{name: "trim 2^32-1 past end", typ: nbdproto.CmdTrim, off: 0, length: math.MaxUint32, errno: nbdproto.EINVAL},
		{name: "write zeroes 2^32-1 past end", typ: nbdproto.CmdWriteZeroes, off: 0, length: math.MaxUint32, errno: nbdproto.ENOSPC},
	} {
		errno, data := c.do(r.typ, r.flags, r.off, r.length, bytes.Repeat([]byte{0xEE}, r.payload))
		require.Equal(t, r.errno, errno, r.name)
		require.Nil(t, data, r.name)
	}

	// A WRITE of 2^32-1 bytes cannot be drained: answered EINVAL, closed.
	w, _ := dialGo(t, addr, true)
	w.request(cmdWrite, 0, 42, 0, math.MaxUint32, bytes.Repeat([]byte{0xEE}, 4096))
	cookie, errno, _ := w.reply(nil)
	require.Equal(t, uint64(42), cookie)
	require.Equal(t, nbdproto.EINVAL, errno)
	w.expectClosed()

	// A truncated header, then the client goes away.
	tr, _ := dialGo(t, addr, true)
	tr.write(encodeRequest(cmdWrite, 0, 1, 0, 512, nil)[:17])
	require.NoError(t, tr.nc.(*net.TCPConn).CloseWrite())
	tr.expectClosed()

	// Garbage instead of a request.
	g, _ := dialGo(t, addr, true)
	g.write(bytes.Repeat([]byte{0xFF}, 64))
	g.expectClosed()

	// A truncated header that stays: it holds its connection, nothing else.
	stalled, _ := dialGo(t, addr, true)
	stalled.write(encodeRequest(cmdRead, 0, 1, 0, 512, nil)[:5])

	n := goodOps.Load()
	require.Eventually(t, func() bool { return goodOps.Load() > n+20 }, testTimeout, tick, "the good client stalled")
	close(stop)
	require.NoError(t, <-goodErr)
	require.Equal(t, before, dev.bytesAt(0, 1<<20), "hostile requests changed the device")
	require.Equal(t, uint64(2), s.Stats().ProtocolErrors, "undrainable write and garbage (a truncated header is a broken stream)")
	require.Zero(t, c.expectReadWorks(dev))
}

// expectReadWorks checks that the connection still serves a READ and
// returns its error value.
func (c *rawClient) expectReadWorks(dev *memDev) uint32 {
	c.t.Helper()
	errno, data := c.do(cmdRead, 0, 0, 4096, nil)
	require.Equal(c.t, dev.bytesAt(0, 4096), data)
	return errno
}

// testTLS writes a CA, a server certificate for 127.0.0.1 and a client
// certificate in libnbd's tls-certificates layout (ca-cert.pem,
// client-cert.pem, client-key.pem) and returns the server's configuration
// (with client certificates required when clientAuth) and the directory.
func testTLS(t *testing.T, clientAuth bool) (*tls.Config, string) {
	t.Helper()
	ca, err := pki.NewAuthority("t", time.Now(), time.Hour)
	require.NoError(t, err)
	dir := t.TempDir()
	sc, sk, err := ca.Issue(pki.Request{CommonName: "nbd", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		Usage: pki.UsageServer, Validity: time.Hour}, time.Now())
	require.NoError(t, err)
	cc, ck, err := ca.Issue(pki.Request{CommonName: "client", Usage: pki.UsageClient, Validity: time.Hour}, time.Now())
	require.NoError(t, err)
	for name, b := range map[string][]byte{"ca-cert.pem": ca.CertPEM(), "client-cert.pem": cc, "client-key.pem": ck} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
	pair, err := tls.X509KeyPair(sc, sk)
	require.NoError(t, err)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if clientAuth {
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	return cfg, dir
}

// startTLS sends NBD_OPT_STARTTLS, requires the ACK and upgrades the raw
// client to TLS trusting dir's CA.
func (c *rawClient) startTLS(dir string) {
	c.t.Helper()
	c.option(nbdproto.OptStartTLS, nil)
	r := c.optReply()
	require.Equal(c.t, protocol.NEGOTIATION_TYPE_REPLY_ACK, r.typ, "%q", r.data)
	pool := x509.NewCertPool()
	b, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
	require.NoError(c.t, err)
	require.True(c.t, pool.AppendCertsFromPEM(b))
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem"))
	require.NoError(c.t, err)
	tc := tls.Client(c.nc, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}})
	require.NoError(c.t, tc.Handshake())
	c.nc, c.br = tc, bufio.NewReader(tc)
}

func TestStartTLS(t *testing.T) {
	cfg, dir := testTLS(t, true)
	dev := newRandDev(1 << 20)
	s, addr := startServer(t, dev, Options{TLS: cfg})

	// Plain text stays possible (TLS is optional here).
	plain, _ := dialGo(t, addr, true)
	require.Zero(t, plain.expectReadWorks(dev))

	c := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle|nbdproto.FlagCNoZeroes)
	c.option(nbdproto.OptStartTLS, []byte("x"))
	require.Equal(t, nbdproto.RepErrInvalid, c.optReply().typ, "STARTTLS carries no data")
	c.startTLS(dir)
	c.option(nbdproto.OptStartTLS, nil)
	require.Equal(t, nbdproto.RepErrInvalid, c.optReply().typ, "a second STARTTLS is invalid")
	c.goExport("", protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE)
	want := bytes.Repeat([]byte{7}, 4096)
	errno, _ := c.do(cmdWrite, 0, 8192, 4096, want)
	require.Zero(t, errno)
	errno, got := c.do(cmdRead, 0, 8192, 4096, nil)
	require.Zero(t, errno)
	require.Equal(t, want, got)
	require.Equal(t, uint64(1), s.Stats().TLSConnections)

	// Bytes pipelined behind STARTTLS would be plain text: refused.
	p := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle)
	b := encodeOption(nbdproto.OptStartTLS, nil)
	p.write(append(b, encodeOption(protocol.NEGOTIATION_ID_OPTION_LIST, nil)...))
	p.expectClosed()
}

func encodeOption(id uint32, data []byte) []byte {
	b := make([]byte, 16, 16+len(data))
	putU64(b[0:], protocol.NEGOTIATION_MAGIC_OPTION)
	putU32(b[8:], id)
	putU32(b[12:], uint32(len(data)))
	return append(b, data...)
}

func putU64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

func putU32(b []byte, v uint32) {
	for i := range 4 {
		b[i] = byte(v >> (24 - 8*i))
	}
}

func TestStartTLSUnconfigured(t *testing.T) {
	_, addr := startServer(t, newMemDev(1<<20), Options{})
	c := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle)
	c.option(nbdproto.OptStartTLS, nil)
	require.Equal(t, protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED, c.optReply().typ)
	c.goExport("") // and the session goes on in plain text
}

// TestTLSRequired: the FORCEDTLS mode refuses every option but STARTTLS and
// ABORT before TLS, and closes on NBD_OPT_EXPORT_NAME.
func TestTLSRequired(t *testing.T) {
	cfg, dir := testTLS(t, false)
	dev := newRandDev(1 << 20)
	_, addr := startServer(t, dev, Options{TLS: cfg, TLSRequired: true})

	c := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle|nbdproto.FlagCNoZeroes)
	for _, opt := range []uint32{protocol.NEGOTIATION_ID_OPTION_LIST, protocol.NEGOTIATION_ID_OPTION_INFO, protocol.NEGOTIATION_ID_OPTION_GO, nbdproto.OptStructuredReply, 999} {
		data := []byte(nil)
		if opt == protocol.NEGOTIATION_ID_OPTION_INFO || opt == protocol.NEGOTIATION_ID_OPTION_GO {
			data = infoRequest("")
		}
		c.option(opt, data)
		r := c.optReply()
		require.Equal(t, opt, r.opt)
		require.Equal(t, nbdproto.RepErrTLSReqd, r.typ, "option %d before STARTTLS", opt)
	}
	c.startTLS(dir)
	c.goExport("")
	require.Zero(t, c.expectReadWorks(dev))

	e := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle)
	e.option(nbdproto.OptExportName, nil)
	e.expectClosed()

	a := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle)
	a.option(protocol.NEGOTIATION_ID_OPTION_ABORT, nil)
	require.Equal(t, protocol.NEGOTIATION_TYPE_REPLY_ACK, a.optReply().typ)
}

// TestInteropNbdinfoTLS: libnbd connects with nbds:// and the
// tls-certificates directory; with tls-required a plain nbd:// fails, and a
// client without a certificate is refused where one is required.
func TestInteropNbdinfoTLS(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	for _, clientAuth := range []bool{false, true} {
		t.Run(map[bool]string{false: "server certificate", true: "client certificates"}[clientAuth], func(t *testing.T) {
			cfg, dir := testTLS(t, clientAuth)
			s, addr := startServer(t, newMemDev(8<<20), Options{ExportName: "vol0", TLS: cfg, TLSRequired: true})
			out := run(t, nil, nbdinfo, "--json", "nbds://"+addr+"/vol0?tls-certificates="+dir)
			var info struct {
				Exports []map[string]any `json:"exports"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &info), out)
			require.Equal(t, float64(8<<20), info.Exports[0]["export-size"])
			require.Equal(t, uint64(1), s.Stats().TLSConnections)

			err := exec.Command(nbdinfo, "nbd://"+addr+"/vol0").Run()
			require.Error(t, err, "plain text accepted although TLS is required")
			if clientAuth {
				bare := t.TempDir()
				b, _ := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
				require.NoError(t, os.WriteFile(filepath.Join(bare, "ca-cert.pem"), b, 0o600))
				err := exec.Command(nbdinfo, "nbds://"+addr+"/vol0?tls-certificates="+bare).Run()
				require.Error(t, err, "a client without a certificate was served")
			}
		})
	}
}

// TestConnectionLimits: connections beyond MaxConnections or MaxHandshakes
// are closed at once; slots come back when connections end.
func TestConnectionLimits(t *testing.T) {
	dev := newRandDev(1 << 20)
	s, addr := startServer(t, dev, Options{MaxConnections: 3, MaxHandshakes: 2, HandshakeTimeout: time.Second})
	// Two clients negotiating (greeted, silent) fill the handshake slots.
	h1, h2 := dialRaw(t, addr, nbdproto.FlagCFixedNewstyle), dialRaw(t, addr, nbdproto.FlagCFixedNewstyle)
	require.Eventually(t, func() bool { return s.Stats().ActiveConnections == 2 }, testTimeout, tick)
	refusedFast(t, addr)
	require.Equal(t, uint64(1), s.Stats().Refused)

	// One of them completes: a handshake slot is free, a third client gets
	// in, and then the connection limit (3) refuses a fourth.
	h1.goExport("")
	waitSlots(t, s, 2, 1) // the server frees the slot just after its reply
	c3, _ := dialGo(t, addr, true)
	require.Zero(t, c3.expectReadWorks(dev))
	refusedFast(t, addr)
	require.Zero(t, h1.expectReadWorks(dev))

	// The silent one times out; its slot is free again.
	h2.expectClosed()
	waitSlots(t, s, 2, 0) // and h2's just after it closed it
	c4, _ := dialGo(t, addr, true)
	require.Zero(t, c4.expectReadWorks(dev))
}

// waitSlots waits until conns connections are open, negotiating of them.
func waitSlots(t *testing.T, s *Server, conns, negotiating int) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == conns && s.handshaking == negotiating
	}, testTimeout, tick)
}

// refusedFast requires a new connection to be closed without a greeting,
// well before any handshake timeout.
func refusedFast(t *testing.T, addr string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer nc.Close()
	start := time.Now()
	c := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.expectClosed()
	require.Less(t, time.Since(start), 500*time.Millisecond)
}

// TestHandshakeStallsTimeOut: a client that sends nothing, stops inside its
// flags, inside an option header or inside option data is closed after
// HandshakeTimeout.
func TestHandshakeStallsTimeOut(t *testing.T) {
	_, addr := startServer(t, newMemDev(1<<20), Options{HandshakeTimeout: 200 * time.Millisecond})
	opt := encodeOption(protocol.NEGOTIATION_ID_OPTION_GO, infoRequest("", 1, 2, 3))
	var wg sync.WaitGroup
	for name, send := range map[string][]byte{
		"nothing":          nil,
		"half the flags":   {0, 0},
		"half an option":   append([]byte{0, 0, 0, 1}, opt[:9]...),
		"option data cut":  append([]byte{0, 0, 0, 1}, opt[:len(opt)-2]...),
		"option data only": append([]byte{0, 0, 0, 1}, opt[:16]...),
	} {
		wg.Go(func() {
			nc, err := net.Dial("tcp", addr)
			require.NoError(t, err, name)
			defer nc.Close()
			if send != nil {
				_, err = nc.Write(send)
				require.NoError(t, err, name)
			}
			start := time.Now()
			_ = nc.SetReadDeadline(time.Now().Add(testTimeout))
			_, err = bufio.NewReader(nc).Discard(1 << 20) // greeting, then EOF
			require.Error(t, err, name)
			require.Less(t, time.Since(start), 2*time.Second, "%s: handshake outlived its timeout", name)
		})
	}
	wg.Wait()
}

package blockdev

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/grbd/grbd/internal/pki"
	"github.com/pojntfx/go-nbd/pkg/protocol"
	"github.com/stretchr/testify/require"
)

// FuzzDecodeRequest feeds arbitrary bytes to the request decoder and the
// validator and checks their contract: a header decodes iff it has 28 bytes
// and the request magic, it re-encodes to the same bytes, and a request the
// validator accepts lies inside the export, is aligned and within the size
// limit.
// Seed corpus: testdata/fuzz/FuzzDecodeRequest.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(encodeRequest(cmdRead, 0, 1, 0, 4096, nil), uint32(512), false)
	f.Add(encodeRequest(cmdWrite, nbdproto.CmdFlagFUA, 2, 1<<20-512, 512, nil), uint32(1), true)
	f.Add(encodeRequest(nbdproto.CmdWriteZeroes, nbdproto.CmdFlagNoHole, 3, 0, 1<<30, nil), uint32(4096), false)
	f.Add(encodeRequest(nbdproto.CmdFlush, 0, 4, 0, 0, nil), uint32(512), false)
	f.Fuzz(func(t *testing.T, b []byte, align uint32, readOnly bool) {
		var h protocol.TransmissionRequestHeader
		err := decodeRequest(b, &h)
		if len(b) < nbdproto.RequestHeaderSize {
			require.ErrorIs(t, err, ErrShortHeader)
			return
		}
		if binary.BigEndian.Uint32(b) != protocol.TRANSMISSION_MAGIC_REQUEST {
			require.ErrorIs(t, err, ErrBadRequestMagic)
			return
		}
		require.NoError(t, err)
		require.Equal(t, b[:nbdproto.RequestHeaderSize], encodeRequest(h.Type, nbdproto.CmdFlags(h.CommandFlags), h.Handle, h.Offset, h.Length, nil))

		align = 1 << (align % 17) // a power of two, 1..65536
		const size = 1 << 20
		x := export{size: size, align: align, readOnly: readOnly, maxBlock: 64 << 10}
		errno := x.check(&h)
		switch errno {
		case 0:
		case nbdproto.EINVAL, nbdproto.ENOSPC, nbdproto.EPERM:
			return
		default:
			t.Fatalf("check returned %d", errno)
		}
		switch h.Type {
		case nbdproto.CmdFlush:
			require.Zero(t, h.Offset)
			require.Zero(t, h.Length)
			return
		case cmdRead, cmdWrite:
			require.LessOrEqual(t, h.Length, x.maxBlock)
		case nbdproto.CmdTrim, nbdproto.CmdWriteZeroes:
		default:
			t.Fatalf("accepted command %d", h.Type)
		}
		require.False(t, readOnly && h.Type != cmdRead, "write accepted on read-only export")
		require.NotZero(t, h.Length)
		require.LessOrEqual(t, h.Offset+uint64(h.Length), uint64(size))
		require.GreaterOrEqual(t, h.Offset+uint64(h.Length), h.Offset, "wrapped")
		require.Zero(t, h.Offset%uint64(align))
		require.Zero(t, h.Length%align)
		require.Zero(t, nbdproto.CmdFlags(h.CommandFlags)&^(nbdproto.CmdFlagFUA|nbdproto.CmdFlagNoHole))
	})
}

// FuzzServeConn feeds arbitrary client bytes to a server connection over a
// net.Pipe: the handshake and, when the bytes negotiate an export, the
// transmission phase. The server must never panic and must always end the
// connection once the client's bytes run out.
// Seed corpus: testdata/fuzz/FuzzServeConn.
func FuzzServeConn(f *testing.F) {
	for _, seed := range handshakeSeeds() {
		f.Add(seed)
	}
	dev := newRandDev(1 << 20)
	opts := Options{ExportName: "vol0", MaxBlockSize: 64 << 10, MaxInFlight: 8, HandshakeTimeout: 2 * time.Second}
	plain, err := NewServer(dev, opts)
	require.NoError(f, err)
	// The same bytes against a server that requires TLS: the FORCEDTLS
	// option filter, and STARTTLS followed by whatever the input holds.
	opts.TLS, opts.TLSRequired = fuzzTLS(f), true
	forced, err := NewServer(dev, opts)
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, s := range []*Server{plain, forced} {
			srv, cli := net.Pipe()
			done := make(chan error, 1)
			go func() { done <- s.ServeConn(srv) }()
			go func() { _, _ = io.Copy(io.Discard, cli) }()
			go func() {
				_, _ = cli.Write(in)
				// Half-close is not possible on a pipe; closing ends both
				// directions, which is what a vanishing client does.
				cli.Close()
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("ServeConn hung on %q", in)
			}
		}
	})
}

// fuzzTLS is a server TLS configuration with a fresh self-signed CA.
func fuzzTLS(f *testing.F) *tls.Config {
	ca, err := pki.NewAuthority("fuzz", time.Now(), time.Hour)
	require.NoError(f, err)
	c, k, err := ca.Issue(pki.Request{CommonName: "nbd", Usage: pki.UsageServer, Validity: time.Hour}, time.Now())
	require.NoError(f, err)
	pair, err := tls.X509KeyPair(c, k)
	require.NoError(f, err)
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
}

// handshakeSeeds are client byte streams covering each option and a short
// transmission phase.
func handshakeSeeds() [][]byte {
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	opt := func(id uint32, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, protocol.NEGOTIATION_MAGIC_OPTION)
		b = binary.BigEndian.AppendUint32(b, id)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	flags := u32(nbdproto.FlagCFixedNewstyle | nbdproto.FlagCNoZeroes)
	goBS := opt(optGo, infoRequest("vol0", protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE))
	reqs := cat(
		encodeRequest(cmdWrite, nbdproto.CmdFlagFUA, 1, 0, 512, make([]byte, 512)),
		encodeRequest(cmdRead, 0, 2, 0, 4096, nil),
		encodeRequest(nbdproto.CmdTrim, 0, 3, 4096, 4096, nil),
		encodeRequest(nbdproto.CmdWriteZeroes, nbdproto.CmdFlagNoHole, 4, 8192, 4096, nil),
		encodeRequest(nbdproto.CmdFlush, 0, 5, 0, 0, nil),
		encodeRequest(cmdRead, 0, 6, 1<<20, 4096, nil),
		encodeRequest(cmdWrite, 0, 7, 100, 100, make([]byte, 100)),
	)
	return [][]byte{
		cat(flags, goBS, reqs, encodeRequest(cmdDisc, 0, 8, 0, 0, nil)),
		cat(flags, opt(optList, nil), opt(optInfo, infoRequest("", 1, 2, 3)), opt(optAbort, nil)),
		cat(u32(0), opt(nbdproto.OptExportName, []byte("vol0")), reqs),
		cat(flags, opt(nbdproto.OptStructuredReply, nil), opt(nbdproto.OptStartTLS, nil), opt(optGo, infoRequest("nope")), goBS, reqs),
		cat(flags, opt(optInfo, []byte{0, 0, 1, 0}), opt(0xffffffff, []byte("x")), goBS,
			encodeRequest(cmdWrite, 0, 9, 0, 1<<30, nil)),
		cat(flags, goBS, []byte{0x25, 0x60, 0x95, 0x14}),
		cat(flags, opt(nbdproto.OptStartTLS, nil), []byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0}),
		cat(flags, opt(nbdproto.OptStartTLS, []byte("x")), opt(optList, nil), opt(nbdproto.OptExportName, nil)),
	}
}

// decodeSeeds are the seeds of FuzzDecodeRequest beyond its f.Add calls.
func decodeSeeds() [][]byte {
	bad := encodeRequest(cmdRead, 0, 1, 0, 512, nil)
	bad[0] ^= 0xff
	return [][]byte{
		encodeRequest(cmdRead, 0, 1, 1<<20-4096, 4096, nil),
		encodeRequest(cmdWrite, 0, 2, 1<<63, 512, nil),
		encodeRequest(nbdproto.CmdTrim, nbdproto.CmdFlagFUA, 3, 512, 1<<31, nil),
		encodeRequest(99, 1<<15, 4, 0, 0, nil),
		bad,
		encodeRequest(cmdRead, 0, 5, 0, 512, nil)[:27],
	}
}

// TestFuzzSeedCorpus checks that the committed seed corpora exist and hold
// the seeds above; GRBD_WRITE_FUZZ_SEEDS=1 rewrites them.
func TestFuzzSeedCorpus(t *testing.T) {
	corpora := map[string][]string{}
	for _, b := range handshakeSeeds() {
		corpora["FuzzServeConn"] = append(corpora["FuzzServeConn"], fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b))
	}
	for i, b := range decodeSeeds() {
		corpora["FuzzDecodeRequest"] = append(corpora["FuzzDecodeRequest"],
			fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nuint32(%d)\nbool(%t)\n", b, 1<<(9+i%4), i%2 == 1))
	}
	for name, files := range corpora {
		dir := filepath.Join("testdata", "fuzz", name)
		for i, want := range files {
			path := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			if os.Getenv("GRBD_WRITE_FUZZ_SEEDS") == "1" {
				require.NoError(t, os.MkdirAll(dir, 0o755))
				require.NoError(t, os.WriteFile(path, []byte(want), 0o644))
			}
			got, err := os.ReadFile(path)
			require.NoError(t, err, "seed corpus missing: run with GRBD_WRITE_FUZZ_SEEDS=1")
			require.Equal(t, want, string(got))
		}
	}
}

package nbdclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"io"
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/pojntfx/go-nbd/pkg/protocol"
	"github.com/stretchr/testify/require"
)

// TestInteropNbdkitMemory runs the client against nbdkit's memory plugin.
func TestInteropNbdkitMemory(t *testing.T) {
	nbdkit, err := exec.LookPath("nbdkit")
	if err != nil {
		t.Skip("nbdkit not installed (apt-get install nbdkit, or run `make deps` as root)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(nbdkit, "-f", "--exit-with-parent", "-i", "127.0.0.1", "-p", fmt.Sprint(port), "memory", "8M")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var c *Client
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err = Dial(ctx, addr, Options{BlockSizes: true})
		return err == nil
	}, testTimeout, 20*time.Millisecond, "nbdkit never answered: %v\n%s", err, &stderr)
	defer c.Close()

	ctx := ctxT(t)
	require.Equal(t, int64(8<<20), c.Size())
	require.True(t, c.Info().Flags.Has(nbdproto.FlagSendFlush|nbdproto.FlagSendTrim|nbdproto.FlagSendWriteZeroes))
	data := bytes.Repeat([]byte("grbd"), 16<<10)
	require.NoError(t, c.WriteAt(ctx, data, 1<<20, nbdproto.CmdFlagFUA))
	require.NoError(t, c.Flush(ctx))
	got := make([]byte, len(data))
	require.NoError(t, c.ReadAt(ctx, got, 1<<20))
	require.Equal(t, data, got)
	require.NoError(t, c.Trim(ctx, 1<<20, 4096, 0))
	require.NoError(t, c.WriteZeroes(ctx, 1<<20+4096, 4096, 0))
	require.NoError(t, c.ReadAt(ctx, got[:8192], 1<<20))
	require.Equal(t, make([]byte, 8192), got[:8192])
	err = c.WriteAt(ctx, data[:4096], 8<<20, 0)
	require.ErrorIs(t, err, syscall.ENOSPC, "nbdkit answers a write past the end with ENOSPC")
	// Many requests in flight on the one connection.
	errs := make(chan error, 64)
	for i := range 64 {
		go func() { errs <- c.WriteAt(ctx, data[:4096], int64(i)*4096, 0) }()
	}
	for range 64 {
		require.NoError(t, <-errs)
	}
	require.NoError(t, c.Close())
}

// TestExportNameFallback: a server that does not know NBD_OPT_GO is asked
// with NBD_OPT_EXPORT_NAME instead.
func TestExportNameFallback(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	done := make(chan error, 1)
	go func() { done <- oldServer(server, 12345<<9) }()
	c, err := NewClient(ctxT(t), client, Options{ExportName: "x"})
	require.NoError(t, err)
	require.Equal(t, int64(12345<<9), c.Size())
	require.NoError(t, <-done)
	require.ErrorIs(t, c.Flush(ctxT(t)), ErrUnsupported, "the export did not advertise FLUSH")
}

// oldServer answers NBD_OPT_GO with NBD_REP_ERR_UNSUP and
// NBD_OPT_EXPORT_NAME with the size and 124 zeroes.
func oldServer(conn net.Conn, size uint64) error {
	hello := protocol.NegotiationNewstyleHeader{
		OldstyleMagic: protocol.NEGOTIATION_MAGIC_OLDSTYLE, OptionMagic: protocol.NEGOTIATION_MAGIC_OPTION,
		HandshakeFlags: protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE,
	}
	if err := binary.Write(conn, binary.BigEndian, hello); err != nil {
		return err
	}
	var flags uint32
	if err := binary.Read(conn, binary.BigEndian, &flags); err != nil {
		return err
	}
	for {
		var h protocol.NegotiationOptionHeader
		if err := binary.Read(conn, binary.BigEndian, &h); err != nil {
			return err
		}
		if _, err := io.CopyN(io.Discard, conn, int64(h.Length)); err != nil {
			return err
		}
		if h.ID == nbdproto.OptExportName {
			ans := binary.BigEndian.AppendUint64(nil, size)
			ans = binary.BigEndian.AppendUint16(ans, uint16(nbdproto.FlagHasFlags))
			_, err := conn.Write(append(ans, make([]byte, nbdproto.ExportNameZeroes)...))
			return err
		}
		rep := protocol.NegotiationReplyHeader{ReplyMagic: protocol.NEGOTIATION_MAGIC_REPLY, ID: h.ID,
			Type: protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED}
		if err := binary.Write(conn, binary.BigEndian, rep); err != nil {
			return err
		}
	}
}

// TestProtocolViolations: replies that break the protocol end the connection
// with ErrProtocol, failing the requests in flight.
func TestProtocolViolations(t *testing.T) {
	cases := []struct {
		name  string
		reply func(cookie uint64) []byte
	}{
		{name: "bad magic", reply: func(cookie uint64) []byte {
			return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 0xdeadbeef), cookie)
		}},
		{name: "structured reply never negotiated", reply: func(cookie uint64) []byte {
			b := binary.BigEndian.AppendUint32(nil, nbdproto.StructuredReplyMagic)
			return binary.BigEndian.AppendUint64(append(b, 0, 0, 0, 0), cookie)
		}},
		{name: "unknown cookie", reply: func(cookie uint64) []byte {
			b := binary.BigEndian.AppendUint32(nil, protocol.TRANSMISSION_MAGIC_REPLY)
			return binary.BigEndian.AppendUint64(append(b, 0, 0, 0, 0), cookie+1000)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go func() { _ = oldServer(server, 1<<20) }()
			c, err := NewClient(ctxT(t), client, Options{})
			require.NoError(t, err)
			go func() {
				hdr := make([]byte, nbdproto.RequestHeaderSize)
				if _, err := io.ReadFull(server, hdr); err == nil {
					_, _ = server.Write(tc.reply(binary.BigEndian.Uint64(hdr[8:])))
				}
			}()
			err = c.ReadAt(ctxT(t), make([]byte, 512), 0)
			require.ErrorIs(t, err, ErrProtocol)
			require.ErrorIs(t, c.Err(), ErrProtocol)
			require.True(t, IsUnknownOutcome(err))
		})
	}
}

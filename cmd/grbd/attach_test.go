package main

import (
	"bytes"
	"encoding/binary"
	"github.com/grbd/grbd/internal/nbdproto"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/auth"

	"github.com/grbd/grbd/internal/nbdkernel"
	"github.com/stretchr/testify/require"
)

// TestAttachWithoutModule is the path this machine takes: no nbd module,
// so attach and detach say so, name the fix, and touch nothing.
func TestAttachWithoutModule(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/sys/module/nbd"); err == nil {
		t.Skip("this host has the nbd module")
	}
	cfg := writeConfig(t, "../../examples/single-node.yaml")
	_, _, err := runCLI(t.Context(), "attach", "--device", "/dev/nbd0", "--config", cfg)
	require.ErrorIs(t, err, nbdkernel.ErrNoModule)
	require.ErrorContains(t, err, "modprobe nbd")
	_, _, err = runCLI(t.Context(), "detach", "--device", "/dev/nbd0")
	require.ErrorIs(t, err, nbdkernel.ErrNoModule)
}

func TestAttachFlagErrors(t *testing.T) {
	t.Parallel()
	_, _, err := runCLI(t.Context(), "attach", "--config", "x.yaml")
	require.ErrorContains(t, err, "--device is required")
	_, _, err = runCLI(t.Context(), "attach", "--device", "/dev/nbd0")
	require.ErrorContains(t, err, "--config is required")
	_, _, err = runCLI(t.Context(), "detach")
	require.ErrorContains(t, err, "--device is required")
}

// TestAttachFindsServingPrimary checks the part of attach that needs no
// kernel: it finds the serving primary and negotiates a writable export
// whose flags the kernel is then given (FLUSH, FUA, TRIM); a secondary's
// export is read-only and would be refused.
func TestAttachFindsServingPrimary(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, true, "4MiB", "")
	pn, sn := c.roles()
	cli, err := auth.NewClient(c.cfg, "", "")
	require.NoError(t, err)
	prim, err := servingPrimary(t.Context(), cli, c.cfg, 3*time.Second)
	require.NoError(t, err)
	require.Equal(t, pn, prim.Name)
	conn, x, err := dialExport(t.Context(), prim.NBD, c.cfg.NBD.Export, 3*time.Second)
	require.NoError(t, err)
	conn.Close()
	require.Equal(t, uint64(4<<20), x.Size)
	require.Equal(t, "FLUSH FUA TRIM WRITE_ZEROES MULTI_CONN", flagNames(x.Flags))
	want := uint64(nbdproto.FlagHasFlags | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA | nbdproto.FlagSendTrim |
		nbdproto.FlagSendWriteZeroes | nbdproto.FlagCanMultiConn)
	require.Equal(t, want, nbdkernel.KernelFlags(x.Flags))

	sec, _, err := c.cfg.Member(sn)
	require.NoError(t, err)
	conn, x, err = dialExport(t.Context(), sec.NBD, c.cfg.NBD.Export, 3*time.Second)
	require.NoError(t, err)
	conn.Close()
	require.Contains(t, flagNames(x.Flags), "READ_ONLY")

	c.stop(pn)
	c.stop(sn)
	_, err = servingPrimary(t.Context(), cli, c.cfg, 300*time.Millisecond)
	require.ErrorContains(t, err, "no data node serves as primary")
	require.ErrorContains(t, err, "unreachable")
}

// writeConfig copies an example config into a temporary directory.
func writeConfig(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	p := t.TempDir() + "/grbd.yaml"
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// TestAttachLocalExportFollowsPrimary checks the connection attach hands to
// the kernel, with raw NBD requests in the kernel's place: it is negotiated
// writable with the cluster's flags, and a write answered on it before the
// primary stops is read back through the same connection from the new
// primary after the failover.
func TestAttachLocalExportFollowsPrimary(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, true, "4MiB", "")
	pn, sn := c.roles()
	o := followOptions{holdTimeout: 30 * time.Second, poll: 100 * time.Millisecond}
	p, srv, stopRun, err := o.start(t.Context(), c.cfg, slog.New(slog.DiscardHandler), "attach")
	require.NoError(t, err)
	defer stopRun()
	defer srv.Close()
	conn, x, err := localExport(srv, c.cfg.NBD.Export, 3*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.Equal(t, uint64(4<<20), x.Size)
	require.Equal(t, "FLUSH FUA TRIM WRITE_ZEROES MULTI_CONN", flagNames(x.Flags), "the flags of the primary's own export")
	require.Equal(t, pn, p.Status().Primary)

	data := bytes.Repeat([]byte("grbd-attach-follow"), 4096/16)[:4096]
	require.Equal(t, uint32(0), kernelRequest(t, conn, 1, 1, 8192, data, nil), "write")
	require.Equal(t, uint32(0), kernelRequest(t, conn, 3, 2, 0, nil, nil), "flush")
	c.stop(pn)
	got := make([]byte, 4096)
	require.Equal(t, uint32(0), kernelRequest(t, conn, 0, 3, 8192, nil, got), "read after the failover")
	require.Equal(t, data, got)
	require.Equal(t, sn, p.Status().Primary)
}

// kernelRequest sends one NBD request (typ: 0 read, 1 write, 3 flush) the
// way the kernel does on an attached socket and returns the reply's error.
func kernelRequest(t *testing.T, conn net.Conn, typ uint16, cookie, off uint64, payload, dest []byte) uint32 {
	t.Helper()
	length := uint32(len(payload) + len(dest))
	hdr := binary.BigEndian.AppendUint32(nil, 0x25609513)
	hdr = binary.BigEndian.AppendUint16(hdr, 0)
	hdr = binary.BigEndian.AppendUint16(hdr, typ)
	hdr = binary.BigEndian.AppendUint64(hdr, cookie)
	hdr = binary.BigEndian.AppendUint64(hdr, off)
	hdr = binary.BigEndian.AppendUint32(hdr, length)
	require.NoError(t, conn.SetDeadline(time.Now().Add(time.Minute)))
	_, err := conn.Write(append(hdr, payload...))
	require.NoError(t, err)
	reply := make([]byte, 16)
	_, err = io.ReadFull(conn, reply)
	require.NoError(t, err)
	require.Equal(t, uint32(0x67446698), binary.BigEndian.Uint32(reply), "simple reply magic")
	require.Equal(t, cookie, binary.BigEndian.Uint64(reply[8:]))
	errno := binary.BigEndian.Uint32(reply[4:])
	if errno == 0 && dest != nil {
		_, err = io.ReadFull(conn, dest)
		require.NoError(t, err)
	}
	return errno
}

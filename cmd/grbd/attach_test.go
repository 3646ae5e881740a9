package main

import (
	"github.com/grbd/grbd/internal/auth"
	"os"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/nbdkernel"
	"github.com/stretchr/testify/require"
)

// TestAttachWithoutModule is the path this machine takes: no nbd module,
// so attach and detach say so, name the fix, and touch nothing.
func TestAttachWithoutModule(t *testing.T) {
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
	want := uint64(nbdkernel.FlagHasFlags | nbdkernel.FlagSendFlush | nbdkernel.FlagSendFUA | nbdkernel.FlagSendTrim |
		nbdkernel.FlagSendWriteZeroes | nbdkernel.FlagCanMultiConn)
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

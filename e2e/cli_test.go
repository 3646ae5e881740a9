package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLocalQuickstart runs the README's first command and checks what a
// newcomer sees: a ready line, an export of the configured size, a status
// report, and the same cluster again on restart.
func TestLocalQuickstart(t *testing.T) {
	requireTools(t, "nbdinfo")
	dir := t.TempDir()
	cdir := filepath.Join(dir, "cluster")
	nbdPort, base, proxyPort := localPorts(t)
	args := []string{"local", "--dir", cdir, "--size", "64MiB", "--nbd-port", strconv.Itoa(nbdPort), "--base-port", strconv.Itoa(base),
		"--proxy-port", strconv.Itoa(proxyPort)}
	p := startGrbd(t, dir, "local", args...)
	require.Equal(t, fmt.Sprintf("nbd://127.0.0.1:%d", nbdPort), p.uri())
	proxyURI := fmt.Sprintf("nbd://127.0.0.1:%d", proxyPort)
	require.Eventually(t, func() bool { return slices.Contains(p.stdout(), "proxy "+proxyURI) }, 30*time.Second, 20*time.Millisecond,
		"no %q line: %v", "proxy "+proxyURI, p.stdout())
	require.Contains(t, run(t, 30*time.Second, "nbdinfo", "--json", proxyURI), `"export-size": 67108864`, "the proxy advertises the cluster's size")

	var info struct {
		Exports []struct {
			Size     int64 `json:"export-size"`
			CanFlush bool  `json:"can_flush"`
			CanFUA   bool  `json:"can_fua"`
			CanTrim  bool  `json:"can_trim"`
			CanZero  bool  `json:"can_zero"`
			ReadOnly bool  `json:"is_read_only"`
		} `json:"exports"`
	}
	out := run(t, 30*time.Second, "nbdinfo", "--json", p.uri())
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	require.Len(t, info.Exports, 1)
	e := info.Exports[0]
	require.Equal(t, int64(64<<20), e.Size)
	require.True(t, e.CanFlush && e.CanFUA && e.CanTrim && e.CanZero, out)
	require.False(t, e.ReadOnly)

	cfg := filepath.Join(cdir, "grbd.yaml")
	var rows []map[string]any
	out = run(t, 30*time.Second, grbdBin, "status", "--config", cfg, "--json")
	require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
	require.Len(t, rows, 3, "alpha, beta and the witness")
	for _, k := range []string{"member", "reachable", "role", "disk", "device_size", "nbd", "journal", "io", "quorum"} {
		require.Contains(t, rows[0], k, "status --json lacks %q: %s", k, out)
	}
	require.Equal(t, true, rows[0]["reachable"])
	require.Equal(t, "Primary", rows[0]["role"])
	require.Equal(t, float64(64<<20), rows[0]["device_size"])
	p.stop()

	// A second run reuses the config it wrote (flags for creation are
	// ignored): the ports are the first run's, and either data node may win
	// the election this time.
	p = startGrbd(t, dir, "local-again", "local", "--dir", cdir, "--size", "1GiB", "--proxy-port", "0")
	require.Contains(t, []string{fmt.Sprintf("nbd://127.0.0.1:%d", nbdPort), fmt.Sprintf("nbd://127.0.0.1:%d", nbdPort+1)}, p.uri())
	p.stop()

	// With the members gone, status says so and fails.
	out, err := runErr(30*time.Second, grbdBin, "status", "--config", cfg)
	require.Error(t, err)
	require.Contains(t, out, "unreachable")
}

// TestCLIErrors checks that bad invocations fail with a message that says
// what is wrong, and touch nothing.
func TestCLIErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := clusterConfig(t, dir, 1, "64MiB", "")
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("cluster: x\ndevice:\n  size: 1000\nnodes: []\n"), 0o644))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"node without flags", []string{"node"}, "--config is required"},
		{"node without name", []string{"node", "--config", good}, "--name is required"},
		{"unknown member", []string{"node", "--config", good, "--name", "zz"}, `unknown member "zz"`},
		{"missing config", []string{"node", "--config", filepath.Join(dir, "nope.yaml"), "--name", "n0"}, "no such file"},
		{"bad config", []string{"node", "--config", bad, "--name", "n0"}, "bad.yaml:3: device.size: 1000 is not a multiple of 4096"},
		{"bad log level", []string{"node", "--config", good, "--name", "n0", "--log-level", "loud"}, `--log-level "loud"`},
		{"unknown flag", []string{"status", "--colour"}, "unknown flag: --colour"},
		{"bad local size", []string{"local", "--dir", filepath.Join(dir, "l"), "--size", "lots"}, "--size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runErr(30*time.Second, grbdBin, tc.args...)
			require.Error(t, err, out)
			require.Contains(t, out, tc.want)
		})
	}
	_, err := os.Stat(filepath.Join(dir, "l", "grbd.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist, "a rejected `grbd local` must not leave a config behind")
	_, err = os.Stat(filepath.Join(dir, "n0"))
	require.ErrorIs(t, err, os.ErrNotExist, "a rejected node must not create its data dir")
}

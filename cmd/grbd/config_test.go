package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConfigCheckExamples: every example config passes `config check`,
// with the warnings its comments announce.
func TestConfigCheckExamples(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file     string
		summary  string
		warnings []string
	}{
		{"two-nodes-witness.yaml", "ok: cluster prod, 2 data nodes (alpha, beta) + witness (witness), device 100GiB, protocol C, 3 warnings",
			[]string{"nodes[0].admin: warning: admin endpoint", "nodes[1].admin: warning", "witness.admin: warning"}},
		{"three-nodes.yaml", "ok: cluster triple, 3 data nodes (alpha, beta, gamma), device 500GiB, protocol C, 3 warnings",
			[]string{"nodes[0].admin", "nodes[1].admin", "nodes[2].admin"}},
		{"single-node.yaml", "ok: cluster solo, 1 data node (alpha), device 10GiB, protocol C, 1 warning",
			[]string{"nodes: warning: a single data node: no replication"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("..", "..", "examples", tc.file)
			out, _, err := runCLI(t.Context(), "config", "check", "--config", path)
			require.NoError(t, err, out)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			require.Equal(t, path+": "+tc.summary, lines[0])
			require.Len(t, lines[1:], len(tc.warnings), out)
			for i, w := range tc.warnings {
				require.Contains(t, lines[1+i], w)
				require.True(t, strings.HasPrefix(lines[1+i], path+":"), "located: %s", lines[1+i])
			}
			_, _, err = runCLI(t.Context(), "config", "check", "--config", path, "--strict")
			require.ErrorIs(t, err, errConfigInvalid, "--strict fails on warnings")
		})
	}
}

// TestConfigCheckErrors: an invalid file gives every error, each naming
// the file, the line and the field, and exits non-zero.
func TestConfigCheckErrors(t *testing.T) {
	t.Parallel()
	bad := `cluster: Demo
device:
  size: 1GB
  colour: red
journal:
  sync: sometimes
quorum:
  lease: soon
nodes:
  - name: a
    address: 127.0.0.1:1
    admin: 127.0.0.1:1
    data-dir: a
`
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o644))
	out, _, err := runCLI(t.Context(), "config", "check", "--config", path)
	require.ErrorIs(t, err, errConfigInvalid)
	require.ErrorContains(t, err, "3 errors in "+path)
	require.Equal(t, []string{
		path + `:3: device.size: size "1GB": want a non-negative integer with an optional KiB/MiB/GiB/TiB suffix`,
		path + `:4: device.colour: unknown field "colour"; known fields here: size, disk-timeout`,
		path + `:8: quorum.lease: duration "soon": want e.g. 500ms or 2s`,
	}, strings.Split(strings.TrimSpace(out), "\n"), "decode errors first: every one of them")

	// Once it decodes, every validation error.
	fixed := strings.NewReplacer("1GB", "1GiB", "  colour: red\n", "", "soon", "1s").Replace(bad)
	require.NoError(t, os.WriteFile(path, []byte(fixed), 0o644))
	out, _, err = runCLI(t.Context(), "config", "check", "--config", path)
	require.ErrorContains(t, err, "4 errors")
	for _, want := range []string{
		path + ":1: cluster: required: lower-case letters",
		path + `:5: journal.sync: "sometimes": want "flush" or "always"`,
		path + ":11: nodes[0].admin: 127.0.0.1:1 is already used by a.address",
		path + ":9: nodes[0].nbd: required: host:port",
	} {
		require.Contains(t, out, want+"")
	}

	_, _, err = runCLI(t.Context(), "config", "check", "--config", filepath.Join(t.TempDir(), "none.yaml"))
	require.ErrorContains(t, err, "no such file")
	_, _, err = runCLI(t.Context(), "config", "check")
	require.ErrorContains(t, err, "--config is required")
}

// TestSystemdUnits: the example units run commands this grbd accepts,
// restart on failure, drop privileges, and pass systemd-analyze verify
// where it is installed.
func TestSystemdUnits(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "examples", "systemd")
	units, err := filepath.Glob(filepath.Join(dir, "*.service"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(units), 2)
	self, err := os.Executable()
	require.NoError(t, err)
	tmp := t.TempDir()
	var verify []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		require.NoError(t, err)
		text := string(b)
		for _, want := range []string{"Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "User=grbd", "ExecStart="} {
			require.Contains(t, text, want, u)
		}
		sc := bufio.NewScanner(strings.NewReader(text))
		for sc.Scan() {
			line := sc.Text()
			_, cmdline, ok := strings.Cut(line, "=")
			if !ok || !strings.HasPrefix(line, "ExecStart") {
				continue
			}
			cmdline = strings.NewReplacer("%i", "alpha", "${GRBD_WITNESS}", "witness").Replace(cmdline)
			args := strings.Fields(cmdline)
			require.Equal(t, "/usr/local/bin/grbd", args[0], line)
			cmd, rest, err := newRootCommand().Find(args[1:])
			require.NoError(t, err, line)
			require.NoError(t, cmd.ParseFlags(rest), line)
		}
		name := filepath.Base(u)
		if strings.HasSuffix(name, "@.service") {
			name = strings.Replace(name, "@.service", "@alpha.service", 1)
		}
		p := filepath.Join(tmp, name)
		require.NoError(t, os.WriteFile(p, []byte(strings.ReplaceAll(text, "/usr/local/bin/grbd", self)), 0o644))
		verify = append(verify, p)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: unit syntax not verified")
		return
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, verify...)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Empty(t, strings.TrimSpace(string(out)))
}

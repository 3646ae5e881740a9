package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

// localOptionsFor parses args over grbd local's flag defaults.
func localOptionsFor(t *testing.T, args ...string) *localOptions {
	t.Helper()
	o := &localOptions{}
	fs := pflag.NewFlagSet("local", pflag.ContinueOnError)
	o.AddFlags(fs)
	require.NoError(t, fs.Parse(args))
	return o
}

// The README's first command, `grbd local` with its defaults, must not give
// a member the proxy's port: beta's NBD export once took 10810, and the
// proxy failed to start on a fresh machine.
func TestLocalPortsAreDistinct(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"--nodes", "1"}, {"--nodes", "5"}, {"--nodes", "3", "--proxy-port", "10811"}, {"--proxy-port", "0"}} {
		o := localOptionsFor(t, append([]string{"--dir", t.TempDir()}, args...)...)
		cfg, created, err := o.loadOrCreate()
		require.NoError(t, err, "%v", args)
		require.True(t, created)
		seen := map[string]string{}
		if o.proxy != 0 {
			seen[strconv.Itoa(o.proxy)] = "proxy"
		}
		members := cfg.Nodes
		if cfg.Witness != nil {
			members = append(members, *cfg.Witness)
		}
		for _, m := range members {
			for _, hp := range []string{m.NBD, m.Address, m.Admin} {
				if hp == "" {
					continue
				}
				_, port, err := net.SplitHostPort(hp)
				require.NoError(t, err)
				require.NotContains(t, seen, port, "%v: %s's %s is taken by %s", args, m.Name, hp, seen[port])
				seen[port] = m.Name
			}
		}
		require.NoError(t, checkProxyPort(cfg, o.proxy, o.dir))
		if args == nil {
			require.Equal(t, "127.0.0.1:10809", cfg.Nodes[0].NBD, "the README's primary export")
		}
	}
}

// A cluster created before the fix has beta on 10810: grbd local says so
// instead of failing in the proxy's bind.
func TestLocalRefusesAProxyPortInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o := localOptionsFor(t, "--dir", dir, "--proxy-port", "0")
	_, _, err := o.loadOrCreate()
	require.NoError(t, err)
	path := filepath.Join(dir, localConfigName)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(b), "127.0.0.1:10810", "beta took the port next to alpha's")
	o = localOptionsFor(t, "--dir", dir)
	cfg, created, err := o.loadOrCreate()
	require.NoError(t, err)
	require.False(t, created)
	err = checkProxyPort(cfg, o.proxy, o.dir)
	require.ErrorContains(t, err, "--proxy-port 10810 is beta's NBD port in "+path)
}

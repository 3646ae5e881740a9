package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// grbd resize: bad input is refused with a clear error and changes nothing;
// a good one grows every data node and status shows it.
func TestResizeCommand(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, true, "4MiB", "")
	prim, sec := c.roles()
	sizes := func() map[string]int64 {
		out := map[string]int64{}
		for name, n := range c.nodes {
			out[name] = n.Status().DeviceSize
		}
		return out
	}
	before := sizes()
	bad := []struct {
		name string
		args []string
		want string
	}{
		{"smaller", []string{"--size", "2MiB"}, "only grows"},
		{"same", []string{"--size", "4MiB"}, "only grows"},
		{"bad size string", []string{"--size", "12abc"}, `--size "12abc"`},
		{"unaligned", []string{"--size", "5000000"}, "multiple of 4096"},
		{"no size", nil, "--size is required"},
		{"on a secondary", []string{sec, "--size", "8MiB"}, "not primary"},
		{"on the witness", []string{"w", "--size", "8MiB"}, "witness"},
		{"unknown node", []string{"nope", "--size", "8MiB"}, "nope"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runCLI(t.Context(), append([]string{"resize", "--config", c.path}, tc.args...)...)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, before, sizes(), "nothing changed")
		})
	}

	out, _, err := runCLI(t.Context(), "resize", prim, "--config", c.path, "--size", "8MiB")
	require.NoError(t, err)
	require.Contains(t, out, prim+": device grown to 8MiB (8388608 bytes)")
	require.Eventually(t, func() bool {
		for _, s := range sizes() {
			if s != 8<<20 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "every data node grows: %v", sizes())
	st, _, err := runCLI(t.Context(), "status", "--config", c.path)
	require.NoError(t, err)
	require.Contains(t, st, "device 8MiB (config device.size 4MiB)")
	require.Regexp(t, `d0\s+\S+\s+\S+\s+\S+\s+8MiB`, st)
	require.Regexp(t, `d1\s+\S+\s+\S+\s+\S+\s+8MiB`, st)
}

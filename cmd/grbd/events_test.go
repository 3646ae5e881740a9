package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// hasEvent reports whether one of lines has every key/value of want.
func hasEvent(lines []map[string]any, want map[string]any) bool {
	return slices.ContainsFunc(lines, func(l map[string]any) bool {
		for k, v := range want {
			if l[k] != v {
				return false
			}
		}
		return true
	})
}

func TestEventsNowShape(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, true, "4MiB", "")
	pn, sn := c.roles()
	ctx := t.Context()
	var lines []map[string]any
	require.Eventually(t, func() bool {
		out, _, err := runCLI(ctx, "events", "--config", c.path, "--now")
		require.NoError(t, err)
		lines = jsonLines(t, out)
		return hasEvent(lines, map[string]any{"member": "w", "type": "role", "primary": pn}) &&
			hasEvent(lines, map[string]any{"member": pn, "type": "role", "role": "Primary"}) &&
			hasEvent(lines, map[string]any{"member": sn, "type": "role", "role": "Secondary", "primary": pn}) &&
			hasEvent(lines, map[string]any{"member": pn, "type": "peer", "peer": sn, "state": "Connected"})
	}, 10*time.Second, 50*time.Millisecond, "%v", lines)
	for _, l := range lines {
		for _, k := range []string{"seq", "time", "member", "type"} {
			require.Contains(t, l, k, "%v", l)
		}
	}
	require.True(t, slices.IsSortedFunc(lines, func(a, b map[string]any) int {
		return strings.Compare(a["time"].(string), b["time"].(string))
	}), "oldest first")

	out, _, err := runCLI(ctx, "events", "--config", c.path, "--now", "--name", "w")
	require.NoError(t, err)
	for _, l := range jsonLines(t, out) {
		require.Equal(t, "w", l["member"])
	}

	c.stop(sn)
	out, _, err = runCLI(ctx, "events", "--config", c.path, "--now", "--timeout", "500ms")
	require.NoError(t, err, "the other members answered")
	lines = jsonLines(t, out)
	require.True(t, hasEvent(lines, map[string]any{"member": sn, "type": "unreachable"}), out)

	_, _, err = runCLI(ctx, "events", "--config", c.path, "--now", "--name", sn, "--timeout", "500ms")
	require.ErrorContains(t, err, "no member answered")
}

// TestEventsStream follows the stream while the operator disconnects a
// secondary and the secondary goes away.
func TestEventsStream(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, true, "4MiB", "")
	pn, sn := c.roles()
	ctx, cancel := context.WithCancel(t.Context())
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() { done <- runCLITo(ctx, &out, &errb, "events", "--config", c.path, "--timeout", "500ms") }()
	waitLines := func(want map[string]any) {
		t.Helper()
		require.Eventually(t, func() bool { return hasEvent(jsonLines(t, out.String()), want) }, 15*time.Second, 20*time.Millisecond,
			"no event %v in:\n%s", want, out.String())
	}
	waitLines(map[string]any{"member": pn, "type": "role", "role": "Primary"})
	c.post(pn, "/disconnect?peer="+sn)
	waitLines(map[string]any{"member": pn, "type": "connection", "peer": sn, "state": "Disconnected"})
	waitLines(map[string]any{"member": "w", "type": "outdated", "peer": sn})
	c.stop(sn)
	waitLines(map[string]any{"member": sn, "type": "unreachable"})
	waitLines(map[string]any{"member": "w", "type": "member", "peer": sn, "state": "Disconnected"})
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("events did not stop when cancelled")
	}
	// Every member's events once: no seq repeats per member.
	seen := map[string]bool{}
	for _, l := range jsonLines(t, out.String()) {
		if seq, ok := l["seq"].(float64); ok && seq > 0 {
			key := fmt.Sprint(l["member"], "/", seq)
			require.False(t, seen[key], "event repeated: %v", l)
			seen[key] = true
		}
	}
}

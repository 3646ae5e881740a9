package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/child"
	"github.com/grbd/grbd/internal/metrics"
	"github.com/stretchr/testify/require"
)

// eventStream is a running `grbd events` and the JSON lines it printed.
type eventStream struct {
	*child.Process
	mu    sync.Mutex
	lines []map[string]any
}

func startEvents(t *testing.T, cfg string) *eventStream {
	t.Helper()
	e := &eventStream{}
	p, err := child.Start(child.Spec{
		Name: "events", Path: grbdBin, Args: []string{"events", "--config", cfg, "--timeout", "500ms"},
		OnLine: func(line string) {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil {
				e.mu.Lock()
				e.lines = append(e.lines, m)
				e.mu.Unlock()
			}
		},
	})
	require.NoError(t, err)
	e.Process = p
	t.Cleanup(p.Kill)
	return e
}

// wait waits for a line with every key/value of want.
func (e *eventStream) wait(t *testing.T, want map[string]any) {
	t.Helper()
	require.Eventually(t, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
	next:
		for _, l := range e.lines {
			for k, v := range want {
				if l[k] != v {
					continue next
				}
			}
			return true
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "no event %v", want)
}

// TestOperatorWalkthrough is the README's walkthrough with real processes:
// check the config, wait for sync, read status, events and metrics, kill -9
// the primary and watch the cluster fail over and the old primary resync.
func TestOperatorWalkthrough(t *testing.T) {
	t.Parallel()
	c := newReplCluster(t, "C", "64MiB")
	n0 := c.start("n0", "n0")
	c.start("n1", "n1")

	out := run(t, 30*time.Second, grbdBin, "config", "check", "--config", c.cfgPath)
	require.Contains(t, out, ": ok: cluster e2e, 2 data nodes (n0, n1) + witness (w), device 256MiB, protocol C")
	out = run(t, 90*time.Second, grbdBin, "wait-sync", "--config", c.cfgPath, "--max-wait", "60s")
	require.Contains(t, out, "in sync: every peer is UpToDate")
	out = run(t, 30*time.Second, grbdBin, "status", "--config", c.cfgPath)
	require.Contains(t, out, "primary n0 (serving)")
	require.Contains(t, out, "quorum: majority reachable (3 of 3 members linked, 2 needed)")

	resp, err := http.Get("http://" + c.cfg.Nodes[0].Admin + "/metrics")
	require.NoError(t, err)
	fams, err := metrics.Parse(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 1.0, fams["grbd_quorum_serving"].Samples[0].Value)
	require.Contains(t, fams, "grbd_nbd_request_duration_seconds")

	ev := startEvents(t, c.cfgPath)
	ev.wait(t, map[string]any{"member": "n0", "type": "role", "role": "Primary"})
	n0.kill9()
	ev.wait(t, map[string]any{"member": "n0", "type": "unreachable"})
	ev.wait(t, map[string]any{"member": "n1", "type": "role", "role": "Primary"})
	ev.wait(t, map[string]any{"member": "w", "type": "member", "peer": "n0", "state": "Disconnected"})
	require.Equal(t, "n1", c.servingPrimary(30*time.Second))
	require.Eventually(t, func() bool {
		out, _ = runErr(30*time.Second, grbdBin, "status", "--config", c.cfgPath, "--timeout", "1s")
		return strings.Contains(out, "primary n1 (serving)") && strings.Contains(out, "unreachable") && strings.Contains(out, "outdated n0")
	}, 30*time.Second, 100*time.Millisecond, "%s", out)

	// The old primary comes back as a secondary and catches up.
	startMember(t, c.dir, "n0-again", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	ev.wait(t, map[string]any{"member": "n0", "type": "reachable"})
	out = run(t, 90*time.Second, grbdBin, "wait-sync", "--config", c.cfgPath, "--max-wait", "60s")
	require.Contains(t, out, "in sync")
	ev.wait(t, map[string]any{"member": "n1", "type": "cleared", "peer": "n0"})

	require.NoError(t, ev.Signal(syscall.SIGINT))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, ev.Wait(ctx), "grbd events ends cleanly on SIGINT")
}

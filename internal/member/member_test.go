package member

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/mesh"
	"github.com/grbd/grbd/internal/metrics"
	"github.com/grbd/grbd/quorum"
	"github.com/stretchr/testify/require"
)

func testConfig(t *testing.T, witness bool) *config.Config {
	t.Helper()
	src := "cluster: t\ndevice: {size: 4MiB}\nnodes:\n" +
		"  - {name: a, address: '127.0.0.1:1', nbd: '127.0.0.1:2', admin: '127.0.0.1:3', data-dir: a}\n" +
		"  - {name: b, address: '127.0.0.1:4', nbd: '127.0.0.1:5', admin: '127.0.0.1:6', data-dir: b}\n"
	if witness {
		src += "witness: {name: w, address: '127.0.0.1:7', admin: '127.0.0.1:8', data-dir: w}\n"
	}
	cfg, err := config.Parse("c.yaml", []byte(src))
	require.NoError(t, err)
	return cfg
}

func TestNoteOutdated(t *testing.T) {
	l := events.NewLog("a", 0)
	prev := NoteOutdated(l, true, nil, quorum.Status{State: quorum.State{Epoch: 2, Primary: "a", Outdated: []string{"b"}}})
	require.Equal(t, []string{"b"}, prev)
	prev = NoteOutdated(l, false, prev, quorum.Status{State: quorum.State{Epoch: 2, Primary: "a", Outdated: []string{"b"}}})
	prev = NoteOutdated(l, false, prev, quorum.Status{State: quorum.State{Epoch: 2, Primary: "a"}})
	require.Empty(t, prev)
	got := l.Recent(0)
	require.Len(t, got, 2, "one event per change, none for no change")
	require.Equal(t, events.TypeOutdated, got[0].Type)
	require.Equal(t, "b", got[0].Peer)
	require.Contains(t, got[0].Cause, "when this member started")
	require.Equal(t, events.TypeCleared, got[1].Type)
	require.Equal(t, "it caught up with the primary", got[1].Cause)
}

func TestLinksAndQuorumMetrics(t *testing.T) {
	tests := []struct {
		name     string
		witness  bool
		up       map[string]bool
		reach    float64
		majority float64
	}{
		{"all up", true, map[string]bool{"b": true, "w": true}, 3, 1},
		{"witness down", true, map[string]bool{"b": true}, 2, 1},
		{"alone of three", true, map[string]bool{}, 1, 0},
		{"two nodes, peer down", false, map[string]bool{}, 1, 0},
		{"two nodes up", false, map[string]bool{"b": true}, 2, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, tc.witness)
			links := Links(cfg, "a", func(n string) bool { return tc.up[n] })
			var buf bytes.Buffer
			w := metrics.NewWriter(&buf)
			WriteQuorumMetrics(w, cfg, QuorumStatus{Epoch: 3, Primary: "a", Outdated: []string{}, Serving: true}, links)
			WriteEventMetrics(w, map[string]uint64{"role": 2, "fenced": 1})
			fams, err := metrics.Parse(&buf)
			require.NoError(t, err, buf.String())
			require.Equal(t, tc.reach, fams["grbd_quorum_members_reachable"].Samples[0].Value)
			require.Equal(t, tc.majority, fams["grbd_quorum_majority_reachable"].Samples[0].Value)
			require.Len(t, fams["grbd_member_link_up"].Samples, len(links))
			require.Equal(t, "fenced", fams["grbd_events_total"].Samples[0].Labels["type"], "sorted")
		})
	}
}

func TestWatchLinks(t *testing.T) {
	cfg := testConfig(t, true)
	var bUp atomic.Bool
	l := events.NewLog("a", 0)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		WatchLinks(ctx, cfg, "a", func(n string) bool { return n == "b" && bUp.Load() }, l)
		close(done)
	}()
	bUp.Store(true)
	require.Eventually(t, func() bool { return len(l.Recent(0)) == 1 }, 5*time.Second, 10*time.Millisecond)
	bUp.Store(false)
	require.Eventually(t, func() bool { return len(l.Recent(0)) == 2 }, 5*time.Second, 10*time.Millisecond)
	cancel()
	<-done
	got := l.Recent(0)
	require.Equal(t, "Connected", got[0].State)
	require.Equal(t, "b", got[0].Peer)
	require.Equal(t, "Disconnected", got[1].State)
}

func TestCheckDialOverrides(t *testing.T) {
	cfg := testConfig(t, true)
	for _, tc := range []struct {
		name string
		dial map[string]string
		ok   bool
	}{
		{"none", nil, true},
		{"a peer and the witness", map[string]string{"b": "127.0.0.1:9", "w": "[::1]:9"}, true},
		{"itself", map[string]string{"a": "127.0.0.1:9"}, false},
		{"unknown member", map[string]string{"x": "127.0.0.1:9"}, false},
		{"no port", map[string]string{"b": "127.0.0.1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDialOverrides(cfg, "a", tc.dial)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ErrDialOverride)
			}
		})
	}
	mc := MeshConfig(cfg, "a", map[string]string{"b": "127.0.0.1:9"}, nil, nil, nil)
	require.Equal(t, map[string]string{"b": "127.0.0.1:9", "w": "127.0.0.1:7"}, mc.Peers)
	require.Equal(t, uint32(cfg.Replication.StreamWindow), mc.StreamWindow, "the configured window reaches the links")
	require.NotZero(t, mc.StreamWindow)
	require.EqualValues(t, mesh.DefaultStreamWindow, config.DefaultStreamWindow, "one default for the links, whichever way they are built")
}

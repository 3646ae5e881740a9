package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

// requireKeys checks that m has every key (JSON shape: fields are only
// ever added).
func requireKeys(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		require.Contains(t, m, k, "missing %q in %v", k, m)
	}
}

func TestStatusJSONShape(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, true, "4MiB", "")
	pn, sn := c.roles()
	out, _, err := runCLI(t.Context(), "status", "--config", c.path, "--json")
	require.NoError(t, err)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
	require.Len(t, rows, 3)
	byName := map[string]map[string]any{}
	for _, r := range rows {
		requireKeys(t, r, "member", "admin", "reachable", "cluster", "name", "version", "role", "quorum", "uptime_seconds", "peers", "members")
		require.Equal(t, true, r["reachable"])
		requireKeys(t, r["quorum"].(map[string]any), "epoch", "primary", "outdated", "serving", "raft_leader", "raft_term", "applied_index")
		for _, l := range r["members"].([]any) {
			requireKeys(t, l.(map[string]any), "name", "connected")
		}
		byName[r["member"].(string)] = r
	}
	p := byName[pn]
	require.Equal(t, "Primary", p["role"])
	require.Equal(t, "UpToDate", p["disk"])
	requireKeys(t, p, "device_size", "nbd", "journal", "io", "protocol", "disk", "checksums")
	requireKeys(t, p["checksums"].(map[string]any), "errors", "repaired", "unrepaired")
	requireKeys(t, p["journal"].(map[string]any), "last_seq", "durable_seq", "checkpoint_seq", "first_retained_seq", "bytes", "segments", "syncs", "suspect_bytes")
	requireKeys(t, p["io"].(map[string]any), "connections", "reads", "writes", "flushes", "bytes_read", "bytes_written", "errors")
	peers := p["peers"].([]any)
	require.Len(t, peers, 1)
	requireKeys(t, peers[0].(map[string]any), "name", "connection", "disk", "acked_seq", "behind", "catchup_bytes",
		"resync_bytes_total", "resync_bytes_done")
	require.Equal(t, sn, peers[0].(map[string]any)["name"])
	require.Equal(t, "Secondary", byName[sn]["role"])
	require.Equal(t, "Witness", byName["w"]["role"])
	require.NotContains(t, p, "verify", "only while a verify runs")

	// A member that is down: a row that says so.
	c.stop(sn)
	out, _, err = runCLI(t.Context(), "status", "--config", c.path, "--json", "--timeout", "500ms")
	require.NoError(t, err)
	var after []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &after))
	for _, r := range after {
		if r["member"] == sn {
			require.Equal(t, false, r["reachable"])
			requireKeys(t, r, "admin", "error")
			require.NotContains(t, r, "role")
		}
	}
	_, _, err = runCLI(t.Context(), "status", "--config", c.path, "--name", sn, "--timeout", "500ms")
	require.ErrorIs(t, err, errNoMember)
}

func TestStatusHumanAtAGlance(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, true, "4MiB", "")
	pn, sn := c.roles()
	// Right after the first promotion the raft lead may be moving to the
	// primary (status then says "no raft leader", truthfully).
	var out string
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _, err = runCLI(t.Context(), "status", "--config", c.path)
		if err == nil && strings.Contains(out, "raft leader ") && !strings.Contains(out, "no raft leader") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed a raft leader: %v\n%s", err, out)
		}
	}
	for _, want := range []string{
		"cluster t  device 4MiB  protocol C",
		"primary " + pn + " (serving)  outdated none",
		"quorum: majority reachable (3 of 3 members linked, 2 needed); raft leader ",
		"MEMBER", "LINKS", "2/2 up", "Witness",
		"replication from " + pn + ":",
		"in sync",
	} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, out, "\x1b[", "no terminal codes off a terminal")

	c.stop(sn)
	require.Eventually(t, func() bool {
		out, _, err = runCLI(t.Context(), "status", "--config", c.path, "--timeout", "500ms")
		return err == nil && strings.Contains(out, "outdated "+sn) && strings.Contains(out, "2 of 3 members linked") &&
			strings.Contains(out, "("+sn+" down)") && strings.Contains(out, "unreachable")
	}, 10*time.Second, 50*time.Millisecond, "%s", out)
}

func TestStatusWatch(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 1, false, "4MiB", "")
	c.roles()
	ctx, cancel := context.WithTimeout(t.Context(), 1200*time.Millisecond)
	defer cancel()
	out, _, err := runCLI(ctx, "status", "--config", c.path, "--watch", "--interval", "200ms")
	require.NoError(t, err, "interrupting --watch is a normal end")
	require.GreaterOrEqual(t, strings.Count(out, "\n--- "), 2, out)
	require.Contains(t, out, "cluster t")

	master, tty := openPTY(t)
	screen, _ := capture(master)
	ctx, cancel = context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	require.NoError(t, runCLITo(ctx, tty, tty, "status", "--config", c.path, "--watch", "--interval", "200ms"))
	require.Eventually(t, func() bool { return strings.Count(screen.String(), "\x1b[H\x1b[2J") >= 2 }, 5*time.Second, 10*time.Millisecond,
		"redrawn on a terminal: %q", screen.String())

	ctx, cancel = context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	out, _, err = runCLI(ctx, "status", "--config", c.path, "--watch", "--json", "--interval", "200ms")
	require.NoError(t, err)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var rows []map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rows), "one JSON array per line: %s", l)
	}
}

func TestStatusPerShardHealth(t *testing.T) {
	t.Parallel()
	shard := func(i int) *int { return &i }
	r := memberStatus{Member: "n0", Status: &node.Status{Peers: []node.PeerStatus{
		{Name: "n1", Connection: node.ConnConnected, Disk: node.DiskUpToDate, AckedSeq: 9, Shard: shard(0)},
		{Name: "n2", Connection: node.ConnDisconnected, Disk: node.DiskOutdated, AckedSeq: 4, Shard: shard(1)},
		{Name: "n3", Connection: node.ConnConnected, Disk: node.DiskInconsistent, ResyncTotal: 100, ResyncDone: 50, Shard: shard(2)},
	}}}
	var b strings.Builder
	printPeers(&b, r, statusView{})
	out := b.String()
	require.Regexp(t, `PEER\s+SHARD\s+CONNECTION\s+DISK`, out)
	require.Regexp(t, `n1\s+0\s+Connected\s+UpToDate\s+9`, out)
	require.Regexp(t, `n2\s+1\s+Disconnected\s+Outdated\s+4`, out)
	require.Regexp(t, `n3\s+2\s+Connected\s+Inconsistent`, out)

	b.Reset()
	r.Peers = r.Peers[:1]
	r.Peers[0].Shard = nil
	printPeers(&b, r, statusView{})
	require.NotContains(t, b.String(), "SHARD", "mirrors have no shard column")
}

// A member whose disk does not answer gets a line below the table; an
// unreachable one (no status at all) is printed without it.
func TestStatusNamesADiskThatHangs(t *testing.T) {
	cfg := &config.Config{Cluster: "c", Device: config.Device{Size: 1 << 20},
		Nodes: []config.Member{{Name: "a"}, {Name: "b"}}}
	rows := []memberStatus{
		{Member: "a", Reachable: true, Status: &node.Status{Role: node.RolePrimary, Disk: node.DiskUpToDate,
			DiskStall: &node.DiskStall{Op: "sync", File: "/data/a/journal/00000003.seg", Seconds: 42}}},
		{Member: "b", Reachable: false, Error: "connection refused"},
	}
	var out strings.Builder
	printStatus(&out, cfg, rows, statusView{})
	require.Contains(t, out.String(), "a: DISK NOT ANSWERING: a sync of /data/a/journal/00000003.seg has not returned for 42 s")
	require.NotContains(t, out.String(), "b: DISK")
}

package node

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/metrics"
	"github.com/stretchr/testify/require"
)

// scrape reads and parses GET /metrics of an admin address.
func scrape(t *testing.T, admin string) map[string]*metrics.Family {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, metrics.ContentType, resp.Header.Get("Content-Type"))
	fams, err := metrics.Parse(resp.Body)
	require.NoError(t, err)
	return fams
}

// value returns the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*metrics.Family, name string, want ...string) float64 {
	t.Helper()
	fam := name
	for _, suffix := range []string{"_count", "_sum", "_bucket"} {
		if f, ok := fams[strings.TrimSuffix(name, suffix)]; ok && f.Type == "histogram" {
			fam = f.Name
		}
	}
	f, ok := fams[fam]
	require.True(t, ok, "no metric %s", name)
next:
	for _, s := range f.Samples {
		if s.Name != name {
			continue
		}
		for i := 0; i+1 < len(want); i += 2 {
			if s.Labels[want[i]] != want[i+1] {
				continue next
			}
		}
		return s.Value
	}
	t.Fatalf("no sample of %s with %v", name, want)
	return 0
}

// TestMetricsExposeNames scrapes /metrics of a primary, a secondary and the
// witness, checks the format and that every documented family is there.
func TestMetricsExposeNames(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, true, "")
	p := c.primary()
	writeBlocks(t, p, 0, 50)
	require.NoError(t, p.dev.Flush())
	c.waitUpToDate(p)

	pn, sn := p.me.Name, c.other(p)
	fams := scrape(t, p.me.Admin)
	for _, name := range []string{
		"grbd_info", "grbd_uptime_seconds", "grbd_device_size_bytes", "grbd_is_primary", "grbd_disk_state",
		"grbd_nbd_requests_total", "grbd_nbd_bytes_total", "grbd_nbd_errors_total", "grbd_nbd_connections_total",
		"grbd_nbd_connections_active", "grbd_nbd_request_duration_seconds",
		"grbd_journal_last_seq", "grbd_journal_durable_seq", "grbd_journal_checkpoint_seq", "grbd_journal_first_retained_seq",
		"grbd_journal_depth_records", "grbd_journal_bytes", "grbd_journal_segments", "grbd_journal_syncs_total",
		"grbd_activity_log_commits_total", "grbd_journal_extent_records_total", "grbd_journal_segments_reused_total", "grbd_suspect_bytes",
		"grbd_peer_connected", "grbd_peer_up_to_date", "grbd_replication_acked_seq", "grbd_replication_behind_writes",
		"grbd_replication_catchup_bytes_total", "grbd_peer_sent_bytes", "grbd_resync_size_bytes", "grbd_resync_done_bytes", "grbd_resync_remaining_seconds",
		"grbd_quorum_epoch", "grbd_quorum_has_primary", "grbd_quorum_serving", "grbd_quorum_outdated_nodes",
		"grbd_quorum_members", "grbd_quorum_members_reachable", "grbd_quorum_majority_reachable", "grbd_member_link_up",
		"grbd_raft_term", "grbd_raft_has_leader", "grbd_raft_applied_index",
		"grbd_fencing_events_total", "grbd_events_total",
	} {
		require.Contains(t, fams, name)
	}
	require.Equal(t, "histogram", fams["grbd_nbd_request_duration_seconds"].Type)
	for _, op := range []string{"read", "write", "flush"} {
		value(t, fams, "grbd_nbd_request_duration_seconds_count", "op", op)
	}
	require.Equal(t, 1.0, value(t, fams, "grbd_info", "member", pn, "kind", "node"))
	require.Equal(t, 1.0, value(t, fams, "grbd_is_primary"))
	require.Equal(t, 1.0, value(t, fams, "grbd_quorum_serving"))
	require.Equal(t, 1.0, value(t, fams, "grbd_disk_state", "state", DiskUpToDate))
	require.Equal(t, 0.0, value(t, fams, "grbd_disk_state", "state", DiskOutdated))
	require.Equal(t, 1.0, value(t, fams, "grbd_peer_up_to_date", "peer", sn))
	require.Equal(t, 0.0, value(t, fams, "grbd_replication_behind_writes", "peer", sn))
	require.GreaterOrEqual(t, value(t, fams, "grbd_journal_last_seq"), 50.0)
	require.Equal(t, value(t, fams, "grbd_journal_last_seq"), value(t, fams, "grbd_replication_acked_seq", "peer", sn))
	require.Equal(t, 3.0, value(t, fams, "grbd_quorum_members_reachable"))
	require.Equal(t, 1.0, value(t, fams, "grbd_quorum_majority_reachable"))
	require.Equal(t, 0.0, value(t, fams, "grbd_fencing_events_total"))
	require.Positive(t, value(t, fams, "grbd_events_total", "type", "role"))

	sec := scrape(t, c.nodes[sn].me.Admin)
	require.Equal(t, 0.0, value(t, sec, "grbd_is_primary"))
	require.Equal(t, 0.0, value(t, sec, "grbd_quorum_serving"))
	require.Equal(t, value(t, fams, "grbd_quorum_epoch"), value(t, sec, "grbd_quorum_epoch"))

	wit := scrape(t, c.cfg.Witness.Admin)
	require.Equal(t, 1.0, value(t, wit, "grbd_info", "kind", "witness", "member", "w"))
	require.Equal(t, 1.0, value(t, wit, "grbd_member_link_up", "member", pn))
	require.Equal(t, 1.0, value(t, wit, "grbd_quorum_has_primary"))
	require.Contains(t, wit, "grbd_raft_term")

	// Lose the secondary: the primary's view changes.
	c.stop(sn)
	writeBlocks(t, p, 50, 60)
	require.Eventually(t, func() bool {
		f := scrape(t, p.me.Admin)
		return value(t, f, "grbd_quorum_outdated_nodes") == 1 && value(t, f, "grbd_quorum_outdated", "node", sn) == 1 &&
			value(t, f, "grbd_peer_connected", "peer", sn) == 0 && value(t, f, "grbd_member_link_up", "member", sn) == 0 &&
			value(t, f, "grbd_quorum_members_reachable") == 2
	}, 10*time.Second, 20*time.Millisecond)
}

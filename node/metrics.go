package node

import (
	"bytes"
	"net/http"

	"github.com/grbd/grbd/blockdev"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/member"
	"github.com/grbd/grbd/internal/metrics"
)

// diskStates are the values of grbd_disk_state's state label.
var diskStates = []string{DiskUpToDate, DiskConsistent, DiskOutdated, DiskInconsistent, DiskSplitBrain, DiskFailed}

// serveMetrics answers GET /metrics: Prometheus text format, names
// prefixed grbd_ (docs/cli.md lists them). Part of the admin API: add
// metrics, never rename them.
func (n *Node) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	var buf bytes.Buffer
	mw := metrics.NewWriter(&buf)
	st := n.Status()
	n.writeMetrics(mw, st, n.nbd.Stats())
	w.Header().Set("Content-Type", metrics.ContentType)
	_, _ = w.Write(buf.Bytes())
}

func (n *Node) writeMetrics(w *metrics.Writer, st Status, ns blockdev.Stats) {
	w.Gauge("grbd_info", "Constant 1; the labels describe the member.", 1,
		"cluster", st.Cluster, "member", st.Name, "version", st.Version, "kind", "node", "protocol", st.Protocol)
	w.Gauge("grbd_uptime_seconds", "Seconds since the member started.", st.Uptime)
	w.Gauge("grbd_device_size_bytes", "Size of the exported device.", float64(st.DeviceSize))
	w.Bool("grbd_is_primary", "1 while this node is the primary (serving or fenced).", st.Role == RolePrimary)
	for _, d := range diskStates {
		w.Bool("grbd_disk_state", "1 for this node's disk state.", st.Disk == d, "state", d)
	}
	w.Counter("grbd_disk_failures_total", "Disk failures (I/O error, full or read-only file system) that detached this node's disk.", float64(n.diskErrors.Load()))
	var stall float64
	if s, ok := n.disk.Stalled(); ok {
		stall = s.For.Seconds()
	}
	w.Gauge("grbd_disk_stall_seconds", "How long the oldest operation on this node's store has been in flight (0: none); a disk that hangs makes it grow.", stall)

	// NBD traffic.
	for _, c := range []struct {
		op string
		v  uint64
	}{{"read", ns.Reads}, {"write", ns.Writes}, {"flush", ns.Flushes}, {"trim", ns.Trims}, {"write_zeroes", ns.WriteZeroes}} {
		w.Counter("grbd_nbd_requests_total", "Successful NBD requests by operation.", float64(c.v), "op", c.op)
	}
	w.Counter("grbd_nbd_bytes_total", "Payload bytes of successful READs and WRITEs.", float64(ns.BytesRead), "op", "read")
	w.Counter("grbd_nbd_bytes_total", "Payload bytes of successful READs and WRITEs.", float64(ns.BytesWritten), "op", "write")
	e := ns.ErrorsByKind
	for _, c := range []struct {
		errno string
		v     uint64
	}{{"EPERM", e.Perm}, {"EIO", e.IO}, {"ENOMEM", e.NoMem}, {"EINVAL", e.Invalid}, {"ENOSPC", e.NoSpace},
		{"EOVERFLOW", e.Overflow}, {"ESHUTDOWN", e.Shutdown}, {"other", e.Other}} {
		w.Counter("grbd_nbd_errors_total", "NBD error replies by error value.", float64(c.v), "errno", c.errno)
	}
	w.Counter("grbd_nbd_connections_total", "NBD connections accepted.", float64(ns.Connections))
	w.Gauge("grbd_nbd_connections_active", "NBD connections open now.", float64(ns.ActiveConnections))
	for _, h := range []struct {
		op string
		s  metrics.HistogramSnapshot
	}{{"read", ns.ReadLatency}, {"write", ns.WriteLatency}, {"flush", ns.FlushLatency}} {
		w.Histogram("grbd_nbd_request_duration_seconds", "Latency of successful NBD requests, request read to reply sent.", h.s, "op", h.op)
	}

	// Journal.
	j := st.Journal
	w.Gauge("grbd_journal_last_seq", "Sequence number of the newest journaled write.", float64(j.LastSeq))
	w.Gauge("grbd_journal_durable_seq", "Newest sequence number known durable (synced).", float64(j.DurableSeq))
	w.Gauge("grbd_journal_checkpoint_seq", "Sequence number of the last checkpoint.", float64(j.CheckpointSeq))
	w.Gauge("grbd_journal_first_retained_seq", "Oldest sequence number the journal still holds.", float64(j.FirstRetainedSeq))
	w.Gauge("grbd_journal_depth_records", "Journaled writes not yet covered by a checkpoint (replayed after a crash).",
		float64(j.LastSeq-min(j.CheckpointSeq, j.LastSeq)))
	w.Gauge("grbd_journal_bytes", "Bytes of journal on disk.", float64(j.Bytes))
	w.Gauge("grbd_journal_segments", "Journal segment files.", float64(j.Segments))
	w.Counter("grbd_journal_syncs_total", "Journal syncs (fdatasync).", float64(j.Syncs))
	w.Counter("grbd_journal_extent_records_total", "Large writes logged as extent records: their data written once, in place.", float64(j.ExtentRecords))
	w.Counter("grbd_journal_segments_reused_total", "Journal segments made in the file of a freed one (no new pages or blocks).", float64(j.SegmentsReused))
	w.Counter("grbd_activity_log_commits_total", "Activity log transactions (a write entered an extent not logged hot).", float64(j.ActivityCommits))
	w.Gauge("grbd_suspect_bytes", "Bytes an unclean stop (a power loss, or a crash that cut a large write) left in doubt on this node, not yet made equal to the peers.", float64(j.SuspectBytes))
	w.Counter("grbd_checksum_errors_total", "Reads of a block whose bytes failed its checksum, its block ID (each one is retried after a repair).", float64(st.Checksums.Errors))
	w.Counter("grbd_blocks_repaired_total", "Corrupt blocks rewritten from an UpToDate peer.", float64(n.repairedBlocks.Load()))
	w.Counter("grbd_blocks_unrepaired_total", "Corrupt blocks no peer could repair: their reads failed with EIO.", float64(n.unrepairedBlocks.Load()))

	// Replication, per peer.
	n.writePeerMetrics(w, st.Peers)

	// Control plane and events.
	member.WriteQuorumMetrics(w, n.cfg, st.Quorum, st.Members)
	counts := n.events.Counts()
	w.Counter("grbd_fencing_events_total", "Times this node, as primary, lost its lease and stopped I/O.", float64(counts[events.TypeFenced]))
	member.WriteEventMetrics(w, counts)
}

// peerGauges are the per-peer replication gauges.
var peerGauges = []struct {
	name, help string
	value      func(PeerStatus) float64
}{
	{"grbd_peer_connected", "1 while the data path to the peer is up.", func(p PeerStatus) float64 { return b2f(p.Connection == ConnConnected) }},
	{"grbd_peer_up_to_date", "1 while the peer is UpToDate.", func(p PeerStatus) float64 { return b2f(p.Disk == DiskUpToDate) }},
	{"grbd_replication_acked_seq", "Newest sequence number the peer journaled.", func(p PeerStatus) float64 { return float64(p.AckedSeq) }},
	{"grbd_replication_behind_writes", "Writes the peer has not journaled yet (replication lag).", func(p PeerStatus) float64 { return float64(p.Behind) }},
	{"grbd_resync_size_bytes", "Bytes of the current (or last) region resync of the peer.", func(p PeerStatus) float64 { return float64(p.ResyncTotal) }},
	{"grbd_resync_done_bytes", "Bytes of it copied so far.", func(p PeerStatus) float64 { return float64(p.ResyncDone) }},
	{"grbd_peer_sent_bytes", "Bytes sent on the data streams to the peer since this node became primary.", func(p PeerStatus) float64 { return float64(p.SentBytes) }},
	{"grbd_resync_remaining_seconds", "Estimated seconds until the resync of the peer finishes (0: none running).", func(p PeerStatus) float64 { return p.SyncETA }},
}

func (n *Node) writePeerMetrics(w *metrics.Writer, peers []PeerStatus) {
	for _, g := range peerGauges {
		for _, p := range peers {
			w.Gauge(g.name, g.help, g.value(p), "peer", p.Name)
		}
	}
	for _, p := range peers {
		w.Counter("grbd_replication_catchup_bytes_total", "Bytes sent to the peer by catch-up and resync.", float64(p.CatchupBytes), "peer", p.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

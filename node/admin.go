package node

import (
	"encoding/json"
	"net/http"
	"time"
)

// Status is what `grbd status` shows and what GET /status returns as JSON.
// Field names are part of the admin API: add fields, never rename them.
type Status struct {
	Cluster    string        `json:"cluster"`
	Name       string        `json:"name"`
	Version    string        `json:"version"`
	Role       string        `json:"role"` // Primary or Secondary
	Disk       string        `json:"disk"` // UpToDate, Outdated, Inconsistent
	DeviceSize int64         `json:"device_size"`
	NBD        string        `json:"nbd"`
	Uptime     float64       `json:"uptime_seconds"`
	Journal    JournalStatus `json:"journal"`
	IO         IOStatus      `json:"io"`
	Protocol   string        `json:"protocol"`
	// Peers: on the primary, one entry per other data node; on a secondary,
	// the primary once it connected.
	Peers []PeerStatus `json:"peers"`
}

// PeerStatus is one replication peer as this node sees it.
type PeerStatus struct {
	Name         string `json:"name"`
	Connection   string `json:"connection"` // Connected, Connecting, Disconnected
	Disk         string `json:"disk"`       // UpToDate, Inconsistent, Outdated, Unknown
	AckedSeq     uint64 `json:"acked_seq"`  // highest seq the peer journaled
	Behind       uint64 `json:"behind"`     // writes the peer has not journaled yet
	CatchupBytes uint64 `json:"catchup_bytes"`
}

// JournalStatus is the journal position of the node.
type JournalStatus struct {
	LastSeq          uint64 `json:"last_seq"`
	DurableSeq       uint64 `json:"durable_seq"`
	CheckpointSeq    uint64 `json:"checkpoint_seq"`
	FirstRetainedSeq uint64 `json:"first_retained_seq"`
	Bytes            int64  `json:"bytes"`
	Segments         int    `json:"segments"`
	Syncs            uint64 `json:"syncs"`
}

// IOStatus counts NBD traffic since start.
type IOStatus struct {
	Connections  uint64 `json:"connections"`
	Reads        uint64 `json:"reads"`
	Writes       uint64 `json:"writes"`
	Flushes      uint64 `json:"flushes"`
	BytesRead    uint64 `json:"bytes_read"`
	BytesWritten uint64 `json:"bytes_written"`
	Errors       uint64 `json:"errors"`
}

// Status reports the node's current state.
func (n *Node) Status() Status {
	js := n.store.Stats()
	ns := n.nbd.Stats()
	disk, peers := DiskUpToDate, []PeerStatus{}
	if n.prim != nil {
		peers = n.prim.peerStatuses()
	} else {
		disk, peers = n.sec.disk(), n.sec.peerStatuses()
	}
	return Status{
		Cluster:    n.cfg.Cluster,
		Name:       n.me.Name,
		Version:    Version,
		Role:       n.role(),
		Disk:       disk,
		Protocol:   n.cfg.Replication.Protocol,
		Peers:      peers,
		DeviceSize: n.store.Size(),
		NBD:        "nbd://" + n.NBDAddr().String(),
		Uptime:     time.Since(n.started).Seconds(),
		Journal: JournalStatus{
			LastSeq: js.LastSeq, DurableSeq: js.DurableSeq, CheckpointSeq: js.CheckpointSeq,
			FirstRetainedSeq: js.FirstRetainedSeq, Bytes: js.JournalBytes, Segments: js.Segments, Syncs: js.Syncs,
		},
		IO: IOStatus{
			Connections: ns.Connections, Reads: ns.Reads, Writes: ns.Writes, Flushes: ns.Flushes,
			BytesRead: ns.BytesRead, BytesWritten: ns.BytesWritten, Errors: ns.Errors,
		},
	}
}

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(n.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

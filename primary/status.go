package primary

import (
	"io"
	"sync/atomic"
)

// Connection and disk states shown in status.
const (
	ConnDisconnected = "Disconnected"
	ConnConnecting   = "Connecting"
	ConnConnected    = "Connected"

	DiskUpToDate     = "UpToDate"
	DiskConsistent   = "Consistent" // not Outdated, but not (yet) connected and caught up
	DiskInconsistent = "Inconsistent"
	DiskOutdated     = "Outdated"
	DiskUnknown      = "Unknown"
	DiskSplitBrain   = "SplitBrain"
)

// PeerStatus is one replication peer as this node sees it.
type PeerStatus struct {
	Name         string `json:"name"`
	Connection   string `json:"connection"` // Connected, Connecting, Disconnected
	Disk         string `json:"disk"`       // UpToDate, Inconsistent, Outdated, SplitBrain, Unknown
	AckedSeq     uint64 `json:"acked_seq"`  // highest seq the peer journaled
	Behind       uint64 `json:"behind"`     // writes the peer has not journaled yet
	CatchupBytes uint64 `json:"catchup_bytes"`
	// Region resync progress (primary side), while the peer is Inconsistent.
	ResyncTotal int64 `json:"resync_bytes_total"`
	ResyncDone  int64 `json:"resync_bytes_done"`
	// ResyncKept: bytes of the resync's target that a resumed resync did
	// not copy again (the peer reported them copied; docs/replication.md).
	ResyncKept   int64   `json:"resync_kept_bytes,omitempty"`
	SyncPercent  float64 `json:"sync_percent,omitempty"`
	SyncETA      float64 `json:"sync_eta_seconds,omitempty"`
	Disconnected bool    `json:"disconnected,omitempty"` // grbd disconnect is in force
	// SentBytes counts the bytes this primary sent on the peer's data
	// streams (wire frames), since this node became primary.
	SentBytes uint64 `json:"sent_bytes"`
	// Shard is the peer's erasure-code shard index (EC resources only).
	Shard *int `json:"shard,omitempty"`
}

// countingWriter counts the bytes written through it (network traffic per
// peer, for status and the benchmark's bytes-per-MiB column).
type countingWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"time"

	"github.com/grbd/grbd/internal/member"
	"github.com/grbd/grbd/primary"
	"github.com/grbd/grbd/quorum"
)

// Status is what `grbd status` shows and what GET /status returns as JSON.
// Field names are part of the admin API: add fields, never rename them.
type Status struct {
	Cluster string `json:"cluster"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Role    string `json:"role"` // Primary or Secondary
	// AwaitingPeers: a primary that took its role back after a restart
	// serves no I/O until its peers showed their positions (docs/quorum.md,
	// "A copy taken while the node was the primary").
	AwaitingPeers bool   `json:"awaiting_peers,omitempty"`
	Disk          string `json:"disk"` // UpToDate, Consistent, Outdated, Inconsistent, SplitBrain, Failed
	// DiskError is the error that failed the disk (Disk Failed);
	// ControlPlaneError the one that stopped the control plane (the
	// member then neither votes nor serves).
	DiskError         string `json:"disk_error,omitempty"`
	ControlPlaneError string `json:"control_plane_error,omitempty"`
	// DiskStall is the oldest operation on the store that has not returned
	// for a second or more (a disk that may hang); Journal then shows the
	// figures read before it.
	DiskStall  *DiskStall          `json:"disk_stall,omitempty"`
	Quorum     member.QuorumStatus `json:"quorum"`
	DeviceSize int64               `json:"device_size"`
	NBD        string              `json:"nbd"`
	Uptime     float64             `json:"uptime_seconds"`
	Journal    JournalStatus       `json:"journal"`
	IO         IOStatus            `json:"io"`
	Checksums  ChecksumStatus      `json:"checksums"`
	Protocol   string              `json:"protocol"`
	// Redundancy is "ec K+M" for an erasure-coded resource, else empty;
	// Shard is then this node's shard (absent on the full-copy node).
	Redundancy string `json:"redundancy,omitempty"`
	Shard      *int   `json:"shard,omitempty"`
	// Peers: on the primary, one entry per other data node; on a secondary,
	// the primary once it connected.
	Peers []PeerStatus `json:"peers"`
	// Members: the member links (control plane) to every other member.
	Members []member.LinkStatus `json:"members"`
	// Verify: the online verify running on this primary, if any.
	Verify *VerifyProgress `json:"verify,omitempty"`
	// Identity: which disk holds the node's data, of which generation, and
	// whether the node may be promoted (docs/quorum.md, "Data identity").
	Identity *Identity `json:"identity,omitempty"`
}

// PeerStatus is one replication peer as this node sees it.
type PeerStatus = primary.PeerStatus

// JournalStatus is the journal position of the node.
type JournalStatus struct {
	LastSeq          uint64 `json:"last_seq"`
	DurableSeq       uint64 `json:"durable_seq"`
	CheckpointSeq    uint64 `json:"checkpoint_seq"`
	FirstRetainedSeq uint64 `json:"first_retained_seq"`
	Bytes            int64  `json:"bytes"`
	Segments         int    `json:"segments"`
	Syncs            uint64 `json:"syncs"`
	// SuspectBytes: what a power loss left in doubt on this node and is
	// not yet made equal to the peers (docs/replication.md, "A power loss").
	SuspectBytes uint64 `json:"suspect_bytes"`
	// ActivityCommits: activity log transactions since start.
	ActivityCommits uint64 `json:"activity_commits"`
	// ExtentRecords: large writes logged as extent records, their data
	// written once, in place (docs/journal.md), since start.
	ExtentRecords uint64 `json:"extent_records"`
	// SegmentsReused: journal segments made in a freed segment's file
	// (docs/journal.md, "Reused segment files"), since start.
	SegmentsReused uint64 `json:"segments_reused"`
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

// ChecksumStatus counts block checksum failures since start: blocks found
// corrupt on read, repaired from a peer, and left unrepaired (their reads
// failed with EIO).
type ChecksumStatus struct {
	Errors     uint64 `json:"errors"`
	Repaired   uint64 `json:"repaired"`
	Unrepaired uint64 `json:"unrepaired"`
}

// Status reports the node's current state.
func (n *Node) Status() Status {
	js := n.journalStatus()
	ns := n.nbd.Stats()
	qs := n.ctl.Status()
	role, disk, peers := RoleSecondary, "", []PeerStatus{}
	awaiting := false
	if p := n.currentPrimary(); p != nil {
		role, disk, peers = RolePrimary, DiskUpToDate, p.PeerStatuses()
		awaiting = !p.Verified()
		if n.diskFailure() != nil {
			disk = DiskFailed
		}
	} else {
		disk, peers = n.secondaryDisk(qs.IsOutdated(n.me.Name)), n.secondaryPeers()
	}
	st := Status{
		Cluster:       n.cfg.Cluster,
		Name:          n.me.Name,
		Version:       Version,
		Role:          role,
		AwaitingPeers: awaiting,
		Disk:          disk,
		Quorum:        member.StatusOf(qs),
		Members:       member.Links(n.cfg, n.me.Name, n.mesh.Connected),
		Verify:        n.verifyProgress(),
		Protocol:      n.cfg.Replication.Protocol,
		Peers:         peers,
		DeviceSize:    n.store.Size(),
		NBD:           "nbd://" + n.NBDAddr().String(),
		Uptime:        time.Since(n.started).Seconds(),
		Journal:       js.journal,
		DiskStall:     n.diskStall(),
		IO: IOStatus{
			Connections: ns.Connections, Reads: ns.Reads, Writes: ns.Writes, Flushes: ns.Flushes,
			BytesRead: ns.BytesRead, BytesWritten: ns.BytesWritten, Errors: ns.Errors,
		},
		Checksums: ChecksumStatus{Errors: js.checksumErrors, Repaired: n.repairedBlocks.Load(), Unrepaired: n.unrepairedBlocks.Load()},
	}
	id := n.identity(qs.State)
	st.Identity = &id
	if err := n.diskFailure(); err != nil {
		st.DiskError = err.Error()
	}
	if err := n.ctl.Err(); err != nil {
		st.ControlPlaneError = err.Error()
	}
	if n.ec != nil {
		st.Redundancy = n.cfg.Replication.Redundancy
		if n.shardPeer() {
			st.Shard = new(int)
			*st.Shard = n.ec.Shard()
			st.DeviceSize = n.ec.Coder().G.Size // the store is the shard image
		}
	}
	return st
}

// roleTimeout bounds how long POST /primary and /secondary wait for the
// change to take effect.
const roleTimeout = 10 * time.Second

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	if os.Getenv("GRBD_PPROF") == "1" {
		// Profiling for performance work; off unless asked for.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /events", n.events)
	mux.HandleFunc("GET /metrics", n.serveMetrics)
	mux.HandleFunc("POST /primary", n.servePrimary)
	mux.HandleFunc("POST /secondary", n.serveSecondary)
	mux.HandleFunc("POST /verify", func(w http.ResponseWriter, r *http.Request) {
		res, err := n.Verify(r.Context(), r.URL.Query().Get("resync") == "1")
		if err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	for _, path := range []string{"connect", "disconnect"} {
		mux.HandleFunc("POST /"+path, func(w http.ResponseWriter, r *http.Request) {
			peer := r.URL.Query().Get("peer")
			if peer == "" {
				peer = "*"
			}
			n.answerStatus(w, n.SetDisconnected(peer, path == "disconnect"), http.StatusBadRequest)
		})
	}
	mux.HandleFunc("POST /invalidate", func(w http.ResponseWriter, _ *http.Request) {
		n.answerStatus(w, n.Invalidate(), http.StatusConflict)
	})
	mux.HandleFunc("POST /resize", n.serveResize)
	mux.HandleFunc("POST /member/replace", func(w http.ResponseWriter, r *http.Request) {
		member.ServeReplace(n.ctl, w, r)
	})
	mux.HandleFunc("POST /resolve", func(w http.ResponseWriter, _ *http.Request) {
		n.sec.AllowDiscard()
		n.log.Warn("split brain: this node will discard its divergent writes at the next connect")
		writeJSON(w, http.StatusOK, n.Status())
	})
	return mux
}

// answerStatus answers err with code, or no error with the node's status.
func (n *Node) answerStatus(w http.ResponseWriter, err error, code int) {
	if err != nil {
		writeError(w, code, err)
		return
	}
	writeJSON(w, http.StatusOK, n.Status())
}

// servePrimary promotes this node (force=1: even if Outdated) and answers
// once it serves, or why not.
func (n *Node) servePrimary(w http.ResponseWriter, r *http.Request) {
	force := r.URL.Query().Get("force") == "1"
	ctx, cancel := context.WithTimeout(r.Context(), roleTimeout)
	defer cancel()
	if !force {
		if err := n.awaitConsistent(ctx); err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
	}
	if err := n.awaitControlPlane(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	if err := n.ctl.RequestPromote(force); err != nil {
		writeError(w, http.StatusConflict, err)
		return
	}
	if force {
		n.log.Warn("forced promotion requested: writes this node missed are lost", "node", n.me.Name)
	}
	// The node may learn only now (catching up with the log) that it is
	// Outdated: its promotion is then refused.
	err := n.ctl.WaitState(ctx, func(s quorum.Status) bool {
		return (s.Role == quorum.RolePrimary && s.Serving) || (!force && s.IsOutdated(n.me.Name))
	})
	if err == nil && !force && n.ctl.Status().IsOutdated(n.me.Name) {
		writeError(w, http.StatusConflict, fmt.Errorf("%w: %s (grbd primary --force promotes it anyway, losing the writes it missed)", quorum.ErrOutdated, n.me.Name))
		return
	}
	if err != nil {
		err = fmt.Errorf("not primary after %v: %w", roleTimeout, err)
	}
	n.answerStatus(w, err, http.StatusGatewayTimeout)
}

// awaitConsistent waits, until ctx ends, for this node's disk to be
// Consistent. The primary counts a resynced peer (UpToDate, Cleared) once
// it acked the last copy, a moment before the peer takes the ResyncDone
// behind it; a promotion in that moment would depose the primary, and the
// peer would then refuse the role (role.go): no primary until another
// election. So it waits out the end of a resync, and otherwise refuses
// before it asks the control plane for anything.
func (n *Node) awaitConsistent(ctx context.Context) error {
	if n.sec.Consistent() {
		return nil
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !n.sec.Consistent() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: its disk is %s (an Inconsistent disk becomes Consistent when its resync finishes; grbd status)",
				errNotConsistent, n.me.Name, n.secondaryDisk(false))
		case <-tick.C:
		}
	}
	return nil
}

// awaitControlPlane waits, until ctx ends, for this member to know a raft
// leader and to have applied every entry its log committed before this run.
// A promotion asked for earlier names the epoch of a state the member is
// still replaying (a node started a moment ago); the member drops it as moot
// once the replay moves the epoch, and the operator's request is lost.
func (n *Node) awaitControlPlane(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st := n.ctl.Status()
		if st.Replayed && st.RaftLeader != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s has not caught up with the control plane (leader %q, replayed %v): retry once it has",
				errNoControlPlane, n.me.Name, st.RaftLeader, st.Replayed)
		case <-tick.C:
		}
	}
}

// errNoControlPlane refuses a promotion while the member has no leader or
// is still replaying its log.
var errNoControlPlane = errors.New("node: control plane not caught up")

// errNotConsistent refuses a promotion of a node whose disk is not
// Consistent.
var errNotConsistent = errors.New("node: not Consistent")

// serveSecondary demotes this node and answers once another node (or none)
// is primary.
func (n *Node) serveSecondary(w http.ResponseWriter, r *http.Request) {
	if err := n.ctl.RequestDemote(); err != nil {
		writeError(w, http.StatusConflict, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), roleTimeout)
	defer cancel()
	if err := n.ctl.WaitState(ctx, func(s quorum.Status) bool { return s.Primary != n.me.Name }); err != nil {
		writeError(w, http.StatusGatewayTimeout, fmt.Errorf("still primary after %v: %w", roleTimeout, err))
		return
	}
	writeJSON(w, http.StatusOK, n.Status())
}

// serveResize grows the device to size=BYTES.
func (n *Node) serveResize(w http.ResponseWriter, r *http.Request) {
	size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: size=%q: want a byte count", ErrResizeSize, r.URL.Query().Get("size")))
		return
	}
	code := http.StatusConflict
	err = n.Resize(size)
	if errors.Is(err, ErrResizeSize) {
		code = http.StatusBadRequest
	}
	n.answerStatus(w, err, code)
}

// writeJSON answers with v as indented JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError answers {"error": "..."}.
func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

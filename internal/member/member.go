// Package member holds what data nodes and the witness share in joining a
// cluster: the control-plane and member-link configuration derived from the
// cluster config, and the test-only dial overrides.
package member

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/ctlplane"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/mesh"
	"github.com/grbd/grbd/internal/metrics"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/quorum"
)

// ControlConfig is the control-plane configuration of member self.
func ControlConfig(cfg *config.Config, self, dir string, log *slog.Logger, onChange func()) ctlplane.Config {
	var members []quorum.MemberInfo
	for _, m := range cfg.Nodes {
		members = append(members, quorum.MemberInfo{Name: m.Name, Data: true})
	}
	if cfg.Witness != nil {
		members = append(members, quorum.MemberInfo{Name: cfg.Witness.Name})
	}
	tick := cfg.Quorum.Tick.D()
	ticks := func(d time.Duration) int { return max(1, int((d+tick-1)/tick)) }
	timing := quorum.DefaultTiming()
	timing.Lease = ticks(cfg.Quorum.Lease.D())
	// Ten renewals per lease: a renewal may be late or lost nine times in a
	// row (a busy host) before the lease lapses (docs/quorum.md, "Margins").
	timing.Heartbeat = max(1, timing.Lease/10)
	timing.Failover = ticks(cfg.Quorum.FailoverTimeout.D())
	// Raft elections follow the failover timeout, not the lease: a killed
	// primary that led raft is replaced without waiting a lease for it.
	timing.Election = max(timing.RaftHeartbeat+1, timing.Failover*3/5)
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	return ctlplane.Config{
		Self: self, Members: members, Dir: dir, FS: vfs.Default, Tick: tick, Timing: timing,
		AutoFailover: cfg.Quorum.AutoFailoverOn(), Seed: binary.LittleEndian.Uint64(seed[:]),
		Logger: log, OnChange: onChange,
	}
}

// MeshConfig is the member-link configuration of member self; dial, when
// not empty, names other addresses to dial some peers at (see
// CheckDialOverrides).
func MeshConfig(cfg *config.Config, self string, dial map[string]string, log *slog.Logger, onControl func(string, *wire.Control), handler func(string, uint8, net.Conn)) mesh.Config {
	peers := map[string]string{}
	var bind string
	all := append([]config.Member(nil), cfg.Nodes...)
	if cfg.Witness != nil {
		all = append(all, *cfg.Witness)
	}
	for _, m := range all {
		if m.Name == self {
			bind, _, _ = net.SplitHostPort(m.Address)
			continue
		}
		peers[m.Name] = m.Address
	}
	for peer, addr := range dial {
		if _, ok := peers[peer]; ok {
			peers[peer] = addr
		}
	}
	return mesh.Config{
		Cluster: cfg.Cluster, Self: self, Peers: peers, BindHost: bind, Logger: log,
		PeerTimeout: cfg.Replication.PeerTimeout.D(), StreamWindow: uint32(cfg.Replication.StreamWindow),
		OnControl: onControl, Handler: handler,
		DirectKinds: []uint8{wire.StreamData, wire.StreamResync},
	}
}

// ErrDialOverride: a dial override names no peer of the member or no
// host:port.
var ErrDialOverride = errors.New("member: bad dial override")

// CheckDialOverrides validates dial overrides (peer name -> host:port to
// dial instead of the peer's configured address) for member self:
// fault-injection proxies sit there in the chaos harness (grbd node
// --dial-override). Every name must be another member of cfg.
func CheckDialOverrides(cfg *config.Config, self string, dial map[string]string) error {
	for peer, addr := range dial {
		if _, _, err := cfg.Member(peer); err != nil || peer == self {
			return fmt.Errorf("%w: %q is not another member of the cluster", ErrDialOverride, peer)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%w: %s=%s: %w", ErrDialOverride, peer, addr, err)
		}
	}
	return nil
}

// QuorumStatus is the control-plane part of a member's status (GET
// /status). Field names are part of the admin API.
type QuorumStatus struct {
	Epoch      uint64   `json:"epoch"`
	Primary    string   `json:"primary"`
	Forced     bool     `json:"forced,omitempty"`
	Outdated   []string `json:"outdated"`
	Serving    bool     `json:"serving"` // this member may complete I/O as primary
	RaftLeader string   `json:"raft_leader"`
	RaftTerm   uint64   `json:"raft_term"`
	Applied    uint64   `json:"applied_index"`
	// Durable is the durable watermark: every node that is not Outdated
	// holds every write up to this journal sequence (docs/quorum.md).
	Durable uint64 `json:"durable_seq,omitempty"`
	// Membership (docs/quorum.md, "Membership and replaced members").
	// Phase is "member" for a member taking part; otherwise why not, e.g.
	// "awaiting replace (control-plane state lost)".
	Phase       string   `json:"phase"`
	PhaseReason string   `json:"phase_reason,omitempty"`
	RaftID      string   `json:"raft_id,omitempty"` // hex
	JoinID      string   `json:"join_id,omitempty"` // hex: the identity it announces while awaiting a replace
	Learners    []string `json:"learners,omitempty"`
	LostState   []string `json:"lost_state,omitempty"` // members that lost their state: grbd member replace
}

// StatusOf converts the control plane's view for the admin API.
func StatusOf(s quorum.Status) QuorumStatus {
	out := QuorumStatus{Epoch: s.Epoch, Primary: s.Primary, Forced: s.Forced, Outdated: s.Outdated,
		Serving: s.Serving, RaftLeader: s.RaftLeader, RaftTerm: s.RaftTerm, Applied: s.Applied, Durable: s.Durable}
	if out.Outdated == nil {
		out.Outdated = []string{}
	}
	out.Phase, out.PhaseReason, out.Learners, out.LostState = s.Phase.String(), s.PhaseReason, s.Learners, s.LostState
	if s.ID != 0 {
		out.RaftID = fmt.Sprintf("%#x", s.ID)
	}
	if s.JoinID != 0 {
		out.JoinID = fmt.Sprintf("%#x", s.JoinID)
	}
	return out
}

// NoteLostState logs a member event for each member that newly announced
// it lost its control-plane state (with the command that fixes it), and
// one when it joined again. It returns the set to pass as prev next time.
func NoteLostState(log *events.Log, prev []string, st quorum.Status) []string {
	for _, name := range st.LostState {
		if !slices.Contains(prev, name) {
			log.Add(events.Event{Type: events.TypeMember, Peer: name, State: "LostState",
				Cause:  fmt.Sprintf("member %s connected with lost control-plane state: it takes no part until it is replaced", name),
				Detail: fmt.Sprintf(`run "grbd member replace %s --config FILE" on any host`, name)})
		}
	}
	for _, name := range prev {
		if !slices.Contains(st.LostState, name) {
			log.Add(events.Event{Type: events.TypeMember, Peer: name, State: "Replaced",
				Cause: fmt.Sprintf("member %s was replaced or reconnected with its state", name)})
		}
	}
	return slices.Clone(st.LostState)
}

// ReplaceResult is the answer of POST /member/replace. Field names are
// part of the admin API.
type ReplaceResult struct {
	Name  string `json:"name"`
	ID    string `json:"raft_id"` // hex: the identity it joins under
	Voter bool   `json:"voter"`   // promoted from learner already
}

// replaceTimeout bounds how long POST /member/replace waits for the joiner
// to become a voter after the change committed.
const replaceTimeout = 15 * time.Second

// ServeReplace answers POST /member/replace?name=NAME on a member's admin
// endpoint (behind the same authentication as every admin endpoint): it
// replaces NAME, a member that lost its control-plane state, through ctl.
func ServeReplace(ctl *ctlplane.Driver, w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		writeError(w, http.StatusBadRequest, errors.New("name=NAME is required"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), replaceTimeout)
	defer cancel()
	id, voter, err := ctl.Replace(ctx, name)
	if err != nil {
		// 503: this member cannot act (no state itself, no majority):
		// another may. 409/400: a refusal any member would give.
		code := http.StatusConflict
		switch {
		case errors.Is(err, quorum.ErrUnknownMember):
			code = http.StatusBadRequest
		case errors.Is(err, quorum.ErrNoLeader), errors.Is(err, quorum.ErrNotMember):
			code = http.StatusServiceUnavailable
		}
		writeError(w, code, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ReplaceResult{Name: name, ID: fmt.Sprintf("%#x", id), Voter: voter})
}

// adminReadHeaderTimeout bounds how long an admin client may take to send
// its request headers: an idle or slow connection cannot pin the server.
const adminReadHeaderTimeout = 5 * time.Second

// AdminServer is the HTTP server of a member's admin endpoint, serving h.
// Shutting it down lets the followers of GET /events (on ev) go, which
// would otherwise hold the shutdown until its deadline.
func AdminServer(h http.Handler, ev *events.Log) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: adminReadHeaderTimeout}
	srv.RegisterOnShutdown(ev.Close)
	return srv
}

// ServeAdmin serves srv on ln until srv shuts down; any other end is
// logged, as the member goes on without its admin endpoint.
func ServeAdmin(srv *http.Server, ln net.Listener, log *slog.Logger) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("admin server stopped", "err", err)
	}
}

// ControlPlaneError is why ctl, the control plane of the member who (such
// as "node n0"), stopped for good: nil until then.
func ControlPlaneError(who string, ctl *ctlplane.Driver) error {
	if err := ctl.Err(); err != nil {
		return fmt.Errorf("%s: %w", who, err)
	}
	return nil
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// linkPoll is how often WatchLinks looks at the member links.
const linkPoll = 100 * time.Millisecond

// WatchLinks logs a member event in log each time the member link from
// self to another member comes up or goes down, until ctx ends. connected
// is the mesh's view (mesh.Mesh.Connected).
func WatchLinks(ctx context.Context, cfg *config.Config, self string, connected func(string) bool, log *events.Log) {
	var peers []string
	for _, m := range cfg.Nodes {
		if m.Name != self {
			peers = append(peers, m.Name)
		}
	}
	if cfg.Witness != nil && cfg.Witness.Name != self {
		peers = append(peers, cfg.Witness.Name)
	}
	up := make(map[string]bool, len(peers))
	t := time.NewTicker(linkPoll)
	defer t.Stop()
	for {
		for _, p := range peers {
			now := connected(p)
			if now == up[p] {
				continue
			}
			up[p] = now
			e := events.Event{Type: events.TypeMember, Peer: p, State: "Connected", Cause: "member link established"}
			if !now {
				e.State, e.Cause = "Disconnected", "member link lost: the member is down or unreachable"
			}
			log.Add(e)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// NoteOutdated logs an outdated event for each data node in st.Outdated
// that is not in prev, and a cleared event for each that left it; first
// marks the member's first look at the state (at start). It returns the
// set to pass as prev next time.
func NoteOutdated(log *events.Log, first bool, prev []string, st quorum.Status) []string {
	for _, name := range st.Outdated {
		if !slices.Contains(prev, name) {
			cause := fmt.Sprintf("the primary %s lost its data path to it: writes go on without it", st.Primary)
			if first {
				cause = "recorded in the control plane when this member started"
			}
			log.Add(events.Event{Type: events.TypeOutdated, Peer: name, Epoch: st.Epoch, Primary: st.Primary, State: "Outdated", Cause: cause})
		}
	}
	for _, name := range prev {
		if !slices.Contains(st.Outdated, name) {
			cause := "it caught up with the primary"
			if st.Primary == name {
				cause = "promoted"
			}
			log.Add(events.Event{Type: events.TypeCleared, Peer: name, Epoch: st.Epoch, Primary: st.Primary, Cause: cause})
		}
	}
	return slices.Clone(st.Outdated)
}

// LinkStatus is one member link as a member's status shows it. Field names
// are part of the admin API.
type LinkStatus struct {
	Name      string `json:"name"`
	Witness   bool   `json:"witness,omitempty"`
	Connected bool   `json:"connected"`
}

// Links reports the member links from self to every other member.
func Links(cfg *config.Config, self string, connected func(string) bool) []LinkStatus {
	out := []LinkStatus{}
	for _, m := range cfg.Nodes {
		if m.Name != self {
			out = append(out, LinkStatus{Name: m.Name, Connected: connected(m.Name)})
		}
	}
	if cfg.Witness != nil && cfg.Witness.Name != self {
		out = append(out, LinkStatus{Name: cfg.Witness.Name, Witness: true, Connected: connected(cfg.Witness.Name)})
	}
	return out
}

// WriteQuorumMetrics writes the control-plane metrics every member
// exports: its view of the epoch, the primary, the Outdated set and raft,
// and how many members it reaches.
func WriteQuorumMetrics(w *metrics.Writer, cfg *config.Config, q QuorumStatus, links []LinkStatus) {
	voters := len(cfg.Nodes)
	if cfg.Witness != nil {
		voters++
	}
	reach := 1 // itself
	for _, l := range links {
		if l.Connected {
			reach++
		}
	}
	w.Gauge("grbd_quorum_epoch", "Current epoch: increases with every promotion.", float64(q.Epoch))
	w.Bool("grbd_quorum_has_primary", "1 while the control plane names a primary.", q.Primary != "")
	w.Bool("grbd_quorum_serving", "1 while this member is the primary and holds its lease (may complete I/O).", q.Serving)
	w.Gauge("grbd_quorum_outdated_nodes", "Data nodes marked Outdated (may lack acknowledged writes).", float64(len(q.Outdated)))
	for _, name := range q.Outdated {
		w.Gauge("grbd_quorum_outdated", "1 for each Outdated data node.", 1, "node", name)
	}
	w.Gauge("grbd_quorum_members", "Voting members in the config.", float64(voters))
	w.Gauge("grbd_quorum_members_reachable", "Members this one has a link to, itself included.", float64(reach))
	w.Bool("grbd_quorum_majority_reachable", "1 while this member reaches a majority of the voting members.", reach > voters/2)
	for _, l := range links {
		w.Bool("grbd_member_link_up", "1 while the member link to the member is up.", l.Connected, "member", l.Name)
	}
	w.Gauge("grbd_raft_term", "Raft term of the control plane.", float64(q.RaftTerm))
	w.Bool("grbd_raft_has_leader", "1 while this member knows a raft leader.", q.RaftLeader != "")
	w.Gauge("grbd_raft_applied_index", "Last control-plane log index applied.", float64(q.Applied))
}

// WriteEventMetrics writes grbd_events_total by type, in a stable order.
func WriteEventMetrics(w *metrics.Writer, counts map[string]uint64) {
	types := make([]string, 0, len(counts))
	for t := range counts {
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		w.Counter("grbd_events_total", "State-change events logged, by type (grbd events).", float64(counts[t]), "type", t)
	}
}

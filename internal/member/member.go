// Package member holds what data nodes and the witness share in joining a
// cluster: the control-plane and member-link configuration derived from the
// cluster config, and the test-only dial overrides.
package member

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/ctlplane"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/mesh"
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
	timing.Heartbeat = max(1, timing.Lease/5)
	timing.Failover = ticks(cfg.Quorum.FailoverTimeout.D())
	timing.Election = max(timing.RaftHeartbeat+1, timing.Lease*3/5)
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	return ctlplane.Config{
		Self: self, Members: members, Dir: dir, FS: vfs.Default, Tick: tick, Timing: timing,
		AutoFailover: cfg.Quorum.AutoFailoverOn(), Seed: binary.LittleEndian.Uint64(seed[:]),
		Logger: log, OnChange: onChange,
	}
}

// MeshConfig is the member-link configuration of member self.
func MeshConfig(cfg *config.Config, self string, log *slog.Logger, onControl func(string, *wire.Control), handler func(string, uint8, net.Conn)) mesh.Config {
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
	for peer, addr := range DialOverrides() {
		if _, ok := peers[peer]; ok {
			peers[peer] = addr
		}
	}
	return mesh.Config{
		Cluster: cfg.Cluster, Self: self, Peers: peers, BindHost: bind, Logger: log,
		OnControl: onControl, Handler: handler,
	}
}

// DialOverrideEnv names the environment variable that makes a member dial
// given peers at other addresses ("peer=host:port,..."): fault-injection
// proxies in tests sit there. Not for production use.
const DialOverrideEnv = "GRBD_DIAL_OVERRIDES"

// DialOverrides parses DialOverrideEnv; malformed items are ignored.
func DialOverrides() map[string]string {
	out := map[string]string{}
	for _, item := range strings.Split(os.Getenv(DialOverrideEnv), ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		if ok && name != "" && addr != "" {
			out[name] = addr
		}
	}
	return out
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
}

// StatusOf converts the control plane's view for the admin API.
func StatusOf(s quorum.Status) QuorumStatus {
	out := QuorumStatus{Epoch: s.Epoch, Primary: s.Primary, Forced: s.Forced, Outdated: s.Outdated,
		Serving: s.Serving, RaftLeader: s.RaftLeader, RaftTerm: s.RaftTerm, Applied: s.Applied}
	if out.Outdated == nil {
		out.Outdated = []string{}
	}
	return out
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

package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/freeport"
)

// How long a fresh cluster may take to elect or name a primary and bring
// every peer UpToDate.
const clusterReadyTimeout = 90 * time.Second

// GrbdCluster is a grbd cluster run as real processes: one
// `grbd node --config F --name N` per data node and, with Witness,
// `grbd witness --config F --name W`. The primary is found through the
// members' admin endpoints (role Primary), never assumed, so the harness
// keeps working when roles become dynamic.
type GrbdCluster struct {
	Label     string // system name in the report
	Binary    string // the grbd executable
	DataNodes int
	Witness   bool
	Protocol  string // replication protocol: A, B or C
	// Redundancy is replication.redundancy ("" for mirrors, "ec 2+2").
	Redundancy string
	Journal    config.Journal // zero fields: grbd's defaults
	// ExtraYAML is appended to the generated cluster config (top-level
	// keys, e.g. quorum settings once grbd has them).
	ExtraYAML string
	LogLevel  string // grbd --log-level; default warn

	cfgPath string
	members []*member
}

// member is one process of the cluster.
type member struct {
	name    string
	admin   string
	nbd     string // data nodes only
	witness bool
	c       *serverProc
}

func (g *GrbdCluster) Name() string { return g.Label }

// witnessAvailable reports whether binary has a `witness` command.
func witnessAvailable(binary string) bool {
	return exec.Command(binary, "witness", "--help").Run() == nil
}

// Start writes the cluster config under dir, starts every member and waits
// until a data node reports role Primary with every other data node
// connected and UpToDate; it returns that primary's NBD URI.
func (g *GrbdCluster) Start(ctx context.Context, dir string, size int64) (string, error) {
	if g.Witness && !witnessAvailable(g.Binary) {
		return "", fmt.Errorf("%w: grbd witness not available", ErrSkip)
	}
	if err := g.writeConfig(dir, size); err != nil {
		return "", err
	}
	for _, m := range g.members {
		if err := g.startMember(ctx, m); err != nil {
			_ = g.Stop()
			return "", err
		}
	}
	st, err := g.waitInSync(ctx, clusterReadyTimeout)
	if err != nil {
		_ = g.Stop()
		return "", err
	}
	return st.NBD, nil
}

// writeConfig renders, validates and writes DIR/grbd.yaml.
func (g *GrbdCluster) writeConfig(dir string, size int64) error {
	if g.DataNodes < 1 {
		return fmt.Errorf("bench: %s: at least one data node", g.Label)
	}
	cfg := &config.Config{
		Cluster:     "bench",
		Device:      config.Device{Size: config.Size(size)},
		Journal:     g.Journal,
		Replication: config.Replication{Protocol: g.Protocol, Redundancy: g.Redundancy},
	}
	g.members = nil
	newMember := func(name string, data bool) (config.Member, error) {
		m := config.Member{Name: name, DataDir: name}
		addrs := []*string{&m.Address, &m.Admin}
		if data {
			addrs = append(addrs, &m.NBD)
		}
		for _, a := range addrs {
			var err error
			if *a, err = freeport.Addr(); err != nil {
				return m, err
			}
		}
		g.members = append(g.members, &member{name: name, admin: m.Admin, nbd: m.NBD, witness: !data})
		return m, nil
	}
	for i := range g.DataNodes {
		m, err := newMember(fmt.Sprintf("n%d", i), true)
		if err != nil {
			return err
		}
		cfg.Nodes = append(cfg.Nodes, m)
	}
	if g.Witness {
		m, err := newMember("w", false)
		if err != nil {
			return err
		}
		cfg.Witness = &m
	}
	b, err := cfg.Marshal()
	if err != nil {
		return fmt.Errorf("bench: %s: config: %w", g.Label, err)
	}
	if extra := strings.TrimSpace(g.ExtraYAML); extra != "" {
		b = append(b, extra+"\n"...)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	g.cfgPath = filepath.Join(dir, "grbd.yaml")
	if _, err := config.Parse(g.cfgPath, b); err != nil {
		return fmt.Errorf("bench: %s: generated config: %w", g.Label, err)
	}
	if err := os.WriteFile(g.cfgPath, b, 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// startMember runs one member and waits for its listening line (data
// nodes; which one becomes primary is found through the admin endpoints) or
// its admin listener (witness).
func (g *GrbdCluster) startMember(ctx context.Context, m *member) error {
	cmd := "node"
	ready := readiness{Line: "listening "}
	if m.witness {
		cmd, ready = "witness", readiness{Line: "ready ", Addr: m.admin}
	}
	level := g.LogLevel
	if level == "" {
		level = "warn"
	}
	argv := []string{g.Binary, cmd, "--config", g.cfgPath, "--name", m.name, "--log-level", level}
	c, _, err := startChild(ctx, filepath.Dir(g.cfgPath), m.name, argv, ready)
	if err != nil {
		return fmt.Errorf("bench: %s: %w", g.Label, err)
	}
	m.c = c
	return nil
}

func (g *GrbdCluster) Stop() error {
	var errs []error
	for _, m := range g.members {
		if m.c != nil {
			errs = append(errs, m.c.stop())
			m.c = nil
		}
	}
	return errors.Join(errs...)
}

func (g *GrbdCluster) Processes() []Process {
	var ps []Process
	for _, m := range g.members {
		if m.c != nil {
			ps = append(ps, Process{Name: m.name, PID: m.c.PID()})
		}
	}
	return ps
}

// dataNodes are the data members, in config order.
func (g *GrbdCluster) dataNodes() []*member {
	var ms []*member
	for _, m := range g.members {
		if !m.witness {
			ms = append(ms, m)
		}
	}
	return ms
}

// member returns the member called name.
func (g *GrbdCluster) member(name string) (*member, error) {
	for _, m := range g.members {
		if m.name == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: %s has no member %q", ErrCluster, g.Label, name)
}

// primary asks every running data node except skip for its status and
// returns the one that reports role Primary.
func (g *GrbdCluster) primary(ctx context.Context, skip string) (*member, nodeStatus, bool) {
	for _, m := range g.dataNodes() {
		if m.name == skip || m.c == nil {
			continue
		}
		if st, err := fetchStatus(ctx, m.admin); err == nil && st.Role == rolePrimary {
			return m, st, true
		}
	}
	return nil, nodeStatus{}, false
}

// waitInSync waits until a data node is Primary and sees every other running
// data node connected, UpToDate and with nothing behind.
func (g *GrbdCluster) waitInSync(ctx context.Context, timeout time.Duration) (nodeStatus, error) {
	var st nodeStatus
	err := poll(ctx, timeout, 50*time.Millisecond, g.Label+": a primary with every peer UpToDate", func() (bool, error) {
		var p *member
		var ok bool
		if p, st, ok = g.primary(ctx, ""); !ok {
			return false, nil
		}
		var peers []string
		for _, m := range g.dataNodes() {
			if m != p && m.c != nil {
				peers = append(peers, m.name)
			}
		}
		return st.inSync(peers), nil
	})
	return st, err
}

// kill9 kills a member with SIGKILL (a crash) and waits for it to exit.
func (g *GrbdCluster) kill9(name string) error {
	m, err := g.member(name)
	if err != nil {
		return err
	}
	if m.c != nil {
		m.c.Kill()
		m.c = nil
	}
	return nil
}

// restart starts a killed member again on its existing data.
func (g *GrbdCluster) restart(ctx context.Context, name string) error {
	m, err := g.member(name)
	if err != nil {
		return err
	}
	if m.c != nil {
		return fmt.Errorf("%w: %s: %s is still running", ErrCluster, g.Label, name)
	}
	return g.startMember(ctx, m)
}

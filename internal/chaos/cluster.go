package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/grbd/grbd/internal/freeport"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ClusterConfig describes the cluster to run. Zero fields take defaults.
type ClusterConfig struct {
	Bin       string // the grbd binary
	Dir       string // config, data directories and logs
	DataNodes int    // default 1
	Witness   bool   // add a witness member
	Protocol  string // A, B or C (default C)
	// Replication holds more settings of the replication section, one
	// "key: value" a line (e.g. "congestion-fill: 1MiB").
	Replication string

	DeviceSize         string // default 64MiB
	JournalMaxSize     string // default 32MiB
	JournalSegmentSize string // default 4MiB
	JournalSync        string // flush (default) or always
	// ExtraYAML is appended to the generated config at top level (settings
	// of features this harness does not know, e.g. the quorum's).
	ExtraYAML string
	// DataDir places a data node's directory (e.g. on a small tmpfs);
	// default Dir/NAME.
	DataDir func(name string) string
	// LogLevel of the members (default info).
	LogLevel string
	// Proxies routes every member-to-member link through an embedded
	// toxiproxy proxy, by --dial-override (see proxy.go).
	Proxies bool
	// Env is added to every member's environment.
	Env    []string
	Events *Events
}

// Member is one member of the cluster, data node or witness.
type Member struct {
	Name    string
	Witness bool
	IP      string // the member's own loopback address, 127.77.S.N
	Address string // peer listener
	NBD     string // data nodes only
	Admin   string
	DataDir string

	proc   *Process
	starts int
}

// PeerPort is the port of the member's peer listener.
func (m *Member) PeerPort() int {
	_, p, _ := net.SplitHostPort(m.Address)
	n, _ := strconv.Atoi(p)
	return n
}

// Cluster is a set of grbd member processes on per-member loopback
// addresses, sharing one generated config file.
type Cluster struct {
	cfg     ClusterConfig
	ev      *Events
	path    string
	subnet  int
	lock    net.Listener // holds the subnet while the cluster lives
	members []*Member
	proxies *Proxies

	mu      sync.Mutex
	fw      *Firewall
	crashes map[string]string // see Crashes
}

// subnetLockPort is bound on 127.77.S.254 to claim subnet S: two clusters
// (two test processes) never share member addresses, so their faults cannot
// touch each other.
const subnetLockPort = 47701

// NewCluster allocates addresses and ports and writes the config file. It
// starts nothing.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.DataNodes <= 0 {
		cfg.DataNodes = 1
	}
	if cfg.Protocol == "" {
		cfg.Protocol = "C"
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&cfg.DeviceSize, "64MiB")
	def(&cfg.JournalMaxSize, "32MiB")
	def(&cfg.JournalSegmentSize, "4MiB")
	def(&cfg.JournalSync, "flush")
	def(&cfg.LogLevel, "info")
	if cfg.Events == nil {
		cfg.Events = NewEvents(RealClock, nil)
	}
	if cfg.DataDir == nil {
		cfg.DataDir = func(name string) string { return filepath.Join(cfg.Dir, name) }
	}
	c := &Cluster{cfg: cfg, ev: cfg.Events, path: filepath.Join(cfg.Dir, "grbd.yaml"), crashes: map[string]string{}}
	if err := c.leaseSubnet(); err != nil {
		return nil, err
	}
	n := cfg.DataNodes
	if cfg.Witness {
		n++
	}
	for i := range n {
		m := &Member{Name: fmt.Sprintf("n%d", i), IP: fmt.Sprintf("127.77.%d.%d", c.subnet, i+1)}
		if cfg.Witness && i == n-1 {
			m.Name, m.Witness = "w", true
		}
		ports, err := freeport.Ports(m.IP, 3)
		if err != nil {
			c.Close()
			return nil, err
		}
		m.Address = net.JoinHostPort(m.IP, strconv.Itoa(ports[0]))
		m.Admin = net.JoinHostPort(m.IP, strconv.Itoa(ports[1]))
		if !m.Witness {
			m.NBD = net.JoinHostPort(m.IP, strconv.Itoa(ports[2]))
			m.DataDir = cfg.DataDir(m.Name)
		} else {
			m.DataDir = filepath.Join(cfg.Dir, m.Name)
		}
		c.members = append(c.members, m)
	}
	if cfg.Proxies {
		p, err := newLinkProxies(c)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.proxies = p
	}
	if err := os.WriteFile(c.path, []byte(c.render(c.members, true)), 0o644); err != nil {
		c.Close()
		return nil, fmt.Errorf("chaos: write config: %w", err)
	}
	return c, nil
}

func (c *Cluster) leaseSubnet() error {
	first := 16 + os.Getpid()%200
	for i := range 200 {
		s := 16 + (first-16+i)%200
		l, err := net.Listen("tcp", fmt.Sprintf("127.77.%d.254:%d", s, subnetLockPort))
		if err == nil {
			c.subnet, c.lock = s, l
			return nil
		}
	}
	return fmt.Errorf("chaos: no free 127.77.S.0/24 subnet")
}

// render writes a config naming members; withWitness adds the witness.
func (c *Cluster) render(members []*Member, withWitness bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: chaos\ndevice:\n  size: %s\njournal:\n  max-size: %s\n  segment-size: %s\n  sync: %s\n",
		c.cfg.DeviceSize, c.cfg.JournalMaxSize, c.cfg.JournalSegmentSize, c.cfg.JournalSync)
	fmt.Fprintf(&b, "replication:\n  protocol: %s\n", c.cfg.Protocol)
	for line := range strings.Lines(c.cfg.Replication) {
		fmt.Fprintf(&b, "  %s\n", strings.TrimSpace(line))
	}
	b.WriteString("nodes:\n")
	var witness *Member
	for _, m := range members {
		if m.Witness {
			witness = m
			continue
		}
		fmt.Fprintf(&b, "  - name: %s\n    address: %s\n    nbd: %s\n    admin: %s\n    data-dir: %s\n", m.Name, m.Address, m.NBD, m.Admin, m.DataDir)
	}
	if witness != nil && withWitness {
		fmt.Fprintf(&b, "witness:\n  name: %s\n  address: %s\n  admin: %s\n  data-dir: %s\n", witness.Name, witness.Address, witness.Admin, witness.DataDir)
	}
	if c.cfg.ExtraYAML != "" {
		b.WriteString(strings.TrimRight(c.cfg.ExtraYAML, "\n") + "\n")
	}
	return b.String()
}

// ConfigPath is the shared config file.
func (c *Cluster) ConfigPath() string { return c.path }

// Events is the cluster's event log.
func (c *Cluster) Events() *Events { return c.ev }

// Members lists every member, data nodes first.
func (c *Cluster) Members() []*Member { return c.members }

// DataNodes lists the data nodes.
func (c *Cluster) DataNodes() []*Member {
	var out []*Member
	for _, m := range c.members {
		if !m.Witness {
			out = append(out, m)
		}
	}
	return out
}

// Member returns the member called name; it panics on an unknown name (a
// broken scenario).
func (c *Cluster) Member(name string) *Member {
	for _, m := range c.members {
		if m.Name == name {
			return m
		}
	}
	panic(fmt.Sprintf("chaos: no member %q", name))
}

// Running reports whether the member's process is alive.
func (c *Cluster) Running(name string) bool {
	m := c.Member(name)
	if m.proc == nil {
		return false
	}
	done, _ := m.proc.Exited()
	return !done
}

// Process is the member's current (or last) process; nil before its start.
func (c *Cluster) Process(name string) *Process { return c.Member(name).proc }

// StartAll starts every member (a witness only if the binary has the
// `witness` command) and waits until each is ready.
func (c *Cluster) StartAll(ctx context.Context) error {
	for _, m := range c.members {
		if m.Witness && !SupportsWitness(c.cfg.Bin) {
			c.ev.Logf("binary has no witness command: %s not started", m.Name)
			continue
		}
		if err := c.Start(ctx, m.Name); err != nil {
			return err
		}
	}
	return nil
}

// Start starts a member from the shared config and waits until it is ready.
func (c *Cluster) Start(ctx context.Context, name string) error {
	return c.startWith(ctx, c.Member(name), c.path)
}

// StartAlone starts a data node with a config naming only itself (same
// addresses and data directory): it becomes the primary of a one-node
// cluster. Today's way to promote a secondary by hand; the other members
// must be down.
func (c *Cluster) StartAlone(ctx context.Context, name string) error {
	m := c.Member(name)
	p := filepath.Join(c.cfg.Dir, "alone-"+name+".yaml")
	if err := os.WriteFile(p, []byte(c.render([]*Member{m}, false)), 0o644); err != nil {
		return fmt.Errorf("chaos: write config: %w", err)
	}
	c.ev.Add("promote-alone", name, "config with %s alone", name)
	return c.startWith(ctx, m, p)
}

func (c *Cluster) startWith(ctx context.Context, m *Member, cfgPath string) error {
	c.noteCrash(m)
	if c.Running(m.Name) {
		return fmt.Errorf("chaos: %s is already running", m.Name)
	}
	cmd := "node"
	if m.Witness {
		cmd = "witness"
	}
	// --new-cluster: members are started one after the other, each waited
	// for (docs/quorum.md, "Membership and replaced members").
	args := []string{cmd, "--config", cfgPath, "--name", m.Name, "--log-level", c.cfg.LogLevel, "--new-cluster"}
	env := append([]string(nil), c.cfg.Env...)
	if c.proxies != nil {
		if o := c.proxies.overrides(m.Name); o != "" {
			args = append(args, "--dial-override", o)
		}
	}
	m.starts++
	p, err := startProcess(m.Name, c.cfg.Bin, args, env, filepath.Join(c.cfg.Dir, fmt.Sprintf("%s.%d.log", m.Name, m.starts)))
	if err != nil {
		return err
	}
	m.proc = p
	c.ev.Add("start", m.Name, "pid %d", p.PID())
	health := ""
	if m.Witness {
		health = "http://" + m.Admin + "/healthz"
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return p.WaitReady(rctx, health)
}

// Crashes lists the member processes that died without the harness asking
// (see Process.Crashed), as "NAME pid N" with the end of each log.
func (c *Cluster) Crashes() map[string]string {
	for _, m := range c.members {
		c.noteCrash(m)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.crashes)
}

// noteCrash records a crash of m's current process, once, before the
// harness touches the member again (a restart would hide it).
func (c *Cluster) noteCrash(m *Member) {
	if m.proc == nil {
		return
	}
	if crashed, tail := m.proc.Crashed(); crashed {
		c.mu.Lock()
		c.crashes[fmt.Sprintf("%s pid %d", m.Name, m.proc.PID())] = tail
		c.mu.Unlock()
	}
}

// Kill sends SIGKILL to a member and waits until it is gone.
func (c *Cluster) Kill(name string) {
	c.noteCrash(c.Member(name))
	if !c.Running(name) {
		return
	}
	p := c.Member(name).proc
	p.Kill()
	c.ev.Add(EvKill, name, "pid %d", p.PID())
}

// Pause sends SIGSTOP: the process keeps its sockets but does nothing.
func (c *Cluster) Pause(name string) error { return c.signal(name, syscall.SIGSTOP, EvStop) }

// Resume sends SIGCONT.
func (c *Cluster) Resume(name string) error { return c.signal(name, syscall.SIGCONT, EvCont) }

// signal sends sig to member name's process and records event kind.
func (c *Cluster) signal(name string, sig syscall.Signal, kind string) error {
	p := c.Member(name).proc
	if p == nil {
		return fmt.Errorf("chaos: %s never started", name)
	}
	if err := p.Signal(sig); err != nil {
		return err
	}
	c.ev.Add(kind, name, "pid %d", p.PID())
	return nil
}

// Stop shuts a member down cleanly (SIGTERM) and requires exit status 0.
func (c *Cluster) Stop(ctx context.Context, name string) error {
	c.noteCrash(c.Member(name))
	p := c.Member(name).proc
	if p == nil || !c.Running(name) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := p.Terminate(ctx)
	c.ev.Add("stop", name, "exit %v", err)
	if err != nil {
		return fmt.Errorf("chaos: clean stop of %s: %w\n%s", name, err, p.LogTail(4096))
	}
	return nil
}

// StopAll stops every running member cleanly, data nodes last.
func (c *Cluster) StopAll(ctx context.Context) error {
	var errs []error
	for i := len(c.members) - 1; i >= 0; i-- {
		if err := c.Stop(ctx, c.members[i].Name); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("chaos: stop: %v", errs)
	}
	return nil
}

// Restart kills (if running) and starts a member.
func (c *Cluster) Restart(ctx context.Context, name string) error {
	c.Kill(name)
	return c.Start(ctx, name)
}

// ImageSum hashes a stopped data node's data.img.
func (c *Cluster) ImageSum(name string) (string, error) {
	f, err := os.Open(filepath.Join(c.Member(name).DataDir, "data.img"))
	if err != nil {
		return "", fmt.Errorf("chaos: image of %s: %w", name, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("chaos: image of %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// RemoveData deletes the data directories of stopped members (logs, config
// and reports stay).
func (c *Cluster) RemoveData() {
	for _, m := range c.members {
		if !c.Running(m.Name) {
			_ = os.RemoveAll(m.DataDir)
		}
	}
}

// Firewall returns the cluster's nftables firewall, creating it on first use
// (ErrSkip when nft or root is missing).
func (c *Cluster) Firewall(ctx context.Context) (*Firewall, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fw == nil {
		fw, err := NewFirewall(ctx, c.ev)
		if err != nil {
			return nil, err
		}
		fw.UnboundDials = c.unboundDials()
		c.fw = fw
	}
	return c.fw, nil
}

// unboundDials reports whether members dial each other from 127.0.0.1
// rather than from their own address (see Firewall.UnboundDials); with no
// member connection to look at it assumes they do.
func (c *Cluster) unboundDials() bool {
	var peers []string
	for _, m := range c.members {
		peers = append(peers, m.Address)
	}
	src, err := dialSources(peers)
	unbound := err != nil || len(src) == 0 || src["127.0.0.1"]
	c.ev.Logf("member links come from %v: unbound dials %t", src, unbound)
	return unbound
}

// Proxies returns the link proxies (nil unless ClusterConfig.Proxies).
func (c *Cluster) Proxies() *Proxies { return c.proxies }

// Close kills every member, removes the firewall table, stops the proxies
// and releases the subnet. It leaves the files for inspection.
func (c *Cluster) Close() {
	for _, m := range c.members {
		if m.proc != nil {
			m.proc.Kill()
		}
	}
	c.mu.Lock()
	if c.fw != nil {
		if err := c.fw.Close(); err != nil {
			c.ev.Logf("firewall close: %v", err)
		}
		c.fw = nil
	}
	c.mu.Unlock()
	if c.proxies != nil {
		c.proxies.Close()
	}
	if c.lock != nil {
		c.lock.Close()
	}
}

// SupportsWitness reports whether bin has the `witness` command (the quorum
// and failover of issue 4).
func SupportsWitness(bin string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, bin, "witness", "--help").Run() == nil
}

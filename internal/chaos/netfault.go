package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Endpoint is a member as the firewall sees it: its own address and its peer
// listener's port.
type Endpoint struct {
	Name string
	IP   string
	Port int
}

// Endpoint returns the firewall view of a member.
func (m *Member) Endpoint() Endpoint { return Endpoint{Name: m.Name, IP: m.IP, Port: m.PeerPort()} }

// Firewall drops packets between member addresses through an nftables table
// of its own ("inet grbdchaos_PID_N"), replaced atomically on every change
// and deleted by Close. Tables left by a crashed run (dead PID) are deleted
// when a new Firewall starts.
//
// Unbound dialers: a member that dials without binding its source address
// sends from 127.0.0.1, so "A to B" cannot be told apart from "anyone to B".
// While UnboundDials is set (the default, until the member mesh binds the
// dialing socket to the member's address), blocking A->B also drops
// 127.0.0.1 -> B's peer port (A dialing B) and A's peer port -> 127.0.0.1
// (A answering B's dial). That is exact for two data nodes and
// over-approximates with more members: every unbound dialer to B's peer port
// is cut along with A.
type Firewall struct {
	table string
	ev    *Events
	run   func(ctx context.Context, script string) error

	mu     sync.Mutex
	blocks []link
	closed bool
	// UnboundDials: see the type comment.
	UnboundDials bool
}

// link is one blocked direction.
type link struct{ from, to Endpoint }

var fwSeq atomic.Int64

// nftTablePrefix names every table this package creates.
const nftTablePrefix = "grbdchaos_"

// NewFirewall creates an empty table. It returns ErrSkip when not root or
// when nft is missing.
func NewFirewall(ctx context.Context, ev *Events) (*Firewall, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: network partitions need root (nftables)", ErrSkip)
	}
	nft, err := lookNft()
	if err != nil {
		return nil, fmt.Errorf("%w: network partitions need nft (apt-get install nftables, or run `make deps` as root)", ErrSkip)
	}
	f := &Firewall{
		table:        fmt.Sprintf("%s%d_%d", nftTablePrefix, os.Getpid(), fwSeq.Add(1)),
		ev:           ev,
		run:          func(ctx context.Context, script string) error { return runNft(ctx, nft, script) },
		UnboundDials: true,
	}
	removeStaleTables(ctx, nft, ev)
	if err := f.apply(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

func lookNft() (string, error) {
	if p, err := exec.LookPath("nft"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/nft", "/sbin/nft"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("nft not found")
}

func runNft(ctx context.Context, nft, script string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nft, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("chaos: nft: %w: %s\nscript:\n%s", err, out.String(), script)
	}
	return nil
}

var staleTableRE = regexp.MustCompile(`table inet (` + nftTablePrefix + `(\d+)_\d+)`)

// removeStaleTables deletes tables of this package whose process is gone.
func removeStaleTables(ctx context.Context, nft string, ev *Events) {
	out, err := exec.CommandContext(ctx, nft, "list", "tables").Output()
	if err != nil {
		return
	}
	for _, m := range staleTableRE.FindAllStringSubmatch(string(out), -1) {
		pid, _ := strconv.Atoi(m[2])
		if pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		if err := runNft(ctx, nft, "delete table inet "+m[1]+"\n"); err == nil {
			ev.Logf("removed stale nft table %s of dead process %d", m[1], pid)
		}
	}
}

// Table is the nftables table name.
func (f *Firewall) Table() string { return f.table }

// Block drops packets from one member to another (a one-way partition).
func (f *Firewall) Block(ctx context.Context, from, to Endpoint) error {
	return f.block(ctx, EvOneWay, from.Name+"->"+to.Name, link{from, to})
}

// Partition drops packets both ways between a and b.
func (f *Firewall) Partition(ctx context.Context, a, b Endpoint) error {
	return f.block(ctx, EvPartition, a.Name+"<->"+b.Name, link{a, b}, link{b, a})
}

// block adds the links not yet blocked, applies the rules and records the
// event kind on what.
func (f *Firewall) block(ctx context.Context, kind, what string, links ...link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range links {
		if !slices.Contains(f.blocks, l) {
			f.blocks = append(f.blocks, l)
		}
	}
	if err := f.apply(ctx); err != nil {
		return err
	}
	f.ev.Add(kind, what, "")
	return nil
}

// Heal removes every rule.
func (f *Firewall) Heal(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocks = nil
	if err := f.apply(ctx); err != nil {
		return err
	}
	f.ev.Add(EvHeal, "network", "")
	return nil
}

// Close deletes the table. Always call it (Cluster.Close does).
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.run(ctx, "delete table inet "+f.table+"\n")
}

// apply replaces the table with the current rules in one transaction.
// Caller holds mu.
func (f *Firewall) apply(ctx context.Context) error {
	if f.closed {
		return errors.New("chaos: firewall closed")
	}
	return f.run(ctx, renderTable(f.table, f.blocks, f.UnboundDials))
}

// renderTable is the nft script that (re)creates the table with one drop
// rule set per blocked direction. Packets between loopback addresses pass
// the output hook once, which is where they are dropped.
func renderTable(table string, blocks []link, unbound bool) string {
	var b strings.Builder
	// "add" then "delete" makes the delete succeed whether or not the table
	// exists; the final definition recreates it. nft -f applies the whole
	// script atomically.
	fmt.Fprintf(&b, "add table inet %s\ndelete table inet %s\n", table, table)
	fmt.Fprintf(&b, "table inet %s {\n\tchain out {\n\t\ttype filter hook output priority 0; policy accept;\n", table)
	for _, l := range blocks {
		fmt.Fprintf(&b, "\t\tip saddr %s ip daddr %s drop\n", l.from.IP, l.to.IP)
		if unbound {
			fmt.Fprintf(&b, "\t\tip saddr 127.0.0.1 ip daddr %s tcp dport %d drop\n", l.to.IP, l.to.Port)
			fmt.Fprintf(&b, "\t\tip saddr %s tcp sport %d ip daddr 127.0.0.1 drop\n", l.from.IP, l.from.Port)
		}
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// dialSources returns the local IPs of the established TCP connections to
// any of addrs (host:port), read from /proc/net/tcp: it tells whether
// members bind their dialing sockets to their own address.
func dialSources(addrs []string) (map[string]bool, error) {
	want := map[string]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" { // 01: ESTABLISHED
			continue
		}
		local, lok := parseProcAddr(f[1])
		remote, rok := parseProcAddr(f[2])
		if lok && rok && want[remote] {
			host, _, _ := strings.Cut(local, ":")
			out[host] = true
		}
	}
	return out, nil
}

// parseProcAddr decodes /proc/net/tcp's "0100007F:1F90" (IPv4 in host byte
// order, little-endian here; port big-endian) into "127.0.0.1:8080".
func parseProcAddr(s string) (string, bool) {
	ipHex, portHex, ok := strings.Cut(s, ":")
	if !ok || len(ipHex) != 8 {
		return "", false
	}
	ip, err1 := strconv.ParseUint(ipHex, 16, 32)
	port, err2 := strconv.ParseUint(portHex, 16, 16)
	if err1 != nil || err2 != nil {
		return "", false
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", ip&0xff, ip>>8&0xff, ip>>16&0xff, ip>>24, port), true
}

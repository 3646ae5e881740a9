package config

import (
	"fmt"
	"net"
	"strings"
)

// Warning is a valid setting that an operator should think twice about,
// located in the file like a FieldError.
type Warning struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (w Warning) String() string {
	return fmt.Sprintf("%s:%d: %s: warning: %s", w.File, w.Line, w.Field, w.Msg)
}

// Warnings returns what `grbd config check` warns about in a valid config:
// layouts that lose availability or data when one member fails, endpoints
// reachable from the network without authentication, and settings that
// trade safety for speed.
func (c *Config) Warnings() []Warning {
	var out []Warning
	warn := func(msg string, path ...any) {
		line := 0
		if c.root != nil {
			line = lineOf(c.root, path...)
		}
		out = append(out, Warning{File: c.Path, Line: line, Field: fieldName(path), Msg: msg})
	}
	data, voters := len(c.Nodes), len(c.Nodes)
	if c.Witness != nil {
		voters++
	}
	switch {
	case data == 1 && c.Witness != nil:
		warn("a single data node: no replication, and the witness adds nothing: losing the node stops the service", "nodes")
	case data == 1:
		warn("a single data node: no replication: losing the node or its disk stops the service (or loses the data)", "nodes")
	case data == 2 && c.Witness == nil:
		warn("2 data nodes and no witness: losing either node stops writes (add a witness on a third host)", "nodes")
	case voters%2 == 0:
		warn(fmt.Sprintf("%d voting members: a majority needs %d, so the cluster survives no more failures than with %d; add or remove a witness",
			voters, voters/2+1, voters-1), "nodes")
	}
	c.warnHosts(warn)
	if p := c.Replication.Protocol; p == ProtocolA || p == ProtocolB {
		warn(fmt.Sprintf("protocol %s acknowledges a write before every peer journaled it: a failover can lose acknowledged writes (protocol C cannot)", p),
			"replication", "protocol")
	}
	if c.Replication.OnCongestion == CongestionDisconnect && data > 1 {
		warn(fmt.Sprintf("a peer %v behind is cut off: under writes it cannot follow it is cut off again and again and has no current copy (block holds the writes instead)",
			c.Replication.CongestionFill), "replication", "on-congestion")
	}
	if c.Replication.AfterSplitBrain == SplitBrainDiscardSecondary {
		warn("a split brain is resolved automatically by discarding the secondary's divergent writes", "replication", "after-split-brain")
	}
	if !c.Quorum.AutoFailoverOn() && data > 1 {
		warn("automatic failover is off: after the primary fails, writes stop until an operator runs grbd primary", "quorum", "auto-failover")
	}
	if c.Quorum.OnNoQuorum == OnNoQuorumSuspend {
		warn(fmt.Sprintf("I/O hangs for up to %v while the primary has no quorum (io-error fails it at once)", c.Quorum.SuspendTimeout.D()),
			"quorum", "on-no-quorum")
	}
	if c.NBD.SecondaryReads {
		warn("reads from a secondary may return data older than acknowledged writes", "nbd", "secondary-reads")
	}
	return out
}

// warnHosts warns about listeners open to every interface, admin endpoints
// off loopback, and data nodes sharing a host.
func (c *Config) warnHosts(warn func(string, ...any)) {
	byHost := map[string]string{}
	check := func(m Member, path ...any) {
		at := func(f string) []any { return append(append([]any{}, path...), f) }
		for _, a := range []struct{ field, val string }{{"address", m.Address}, {"nbd", m.NBD}, {"admin", m.Admin}} {
			if host, _, err := net.SplitHostPort(a.val); err == nil && isWildcard(host) {
				warn(fmt.Sprintf("%s listens on every interface: bind the address of one network", a.val), at(a.field)...)
			}
		}
		if host, _, err := net.SplitHostPort(m.Admin); err == nil && !isLoopback(host) && !isWildcard(host) {
			warn(fmt.Sprintf("admin endpoint %s is reachable from the network: it has no authentication and can promote, demote and invalidate nodes; bind 127.0.0.1 or firewall it",
				m.Admin), at("admin")...)
		}
		host, _, err := net.SplitHostPort(m.Address)
		if err != nil || isLoopback(host) {
			return
		}
		if other, ok := byHost[host]; ok {
			warn(fmt.Sprintf("%s and %s are on the same host %s: losing that host loses both", other, m.Name, host), at("address")...)
		}
		byHost[host] = m.Name
	}
	for i, m := range c.Nodes {
		check(m, "nodes", i)
	}
	if c.Witness != nil {
		check(*c.Witness, "witness")
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isWildcard(host string) bool {
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsUnspecified()
}

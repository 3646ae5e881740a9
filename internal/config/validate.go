package config

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxMembers bounds the cluster: quorum traffic and full-mesh replication
// grow with the square of the member count.
const maxMembers = 16

// validate checks every field, fills defaults and returns all problems found,
// each located in the file.
func (c *Config) validate(root *yaml.Node) []error {
	var errs []error
	bad := func(msg string, path ...any) {
		errs = append(errs, &FieldError{File: c.Path, Line: lineOf(root, path...), Field: fieldName(path), Msg: msg})
	}
	if !nameRE.MatchString(c.Cluster) {
		bad("required: lower-case letters, digits, '-' or '_', at most 63 characters", "cluster")
	}
	c.validateStorage(bad)
	if c.NBD.MaxInFlight == 0 {
		c.NBD.MaxInFlight = DefaultMaxInFlight
	}
	if c.NBD.MaxInFlight < 1 || c.NBD.MaxInFlight > 4096 {
		bad("must be between 1 and 4096", "nbd", "max-in-flight")
	}
	c.validateNBDLimits(bad)
	c.validateSecurity(bad)
	c.validateReplication(bad)
	c.validateQuorum(bad)
	c.validateEC(bad)
	c.validateMembers(bad)
	return errs
}

// validateStorage fills and checks the device and journal fields.
func (c *Config) validateStorage(bad func(string, ...any)) {
	switch {
	case c.Device.Size <= 0:
		bad("required: the device size, e.g. 1GiB", "device", "size")
	case c.Device.Size%4096 != 0:
		bad(fmt.Sprintf("%d is not a multiple of 4096", c.Device.Size), "device", "size")
	}
	if c.Journal.SegmentSize == 0 {
		c.Journal.SegmentSize = DefaultJournalSegment
	}
	if c.Journal.MaxSize == 0 {
		c.Journal.MaxSize = DefaultJournalMax
	}
	if c.Journal.SegmentSize < 1<<20 {
		bad("must be at least 1MiB", "journal", "segment-size")
	}
	if c.Journal.MaxSize < 4*c.Journal.SegmentSize {
		bad(fmt.Sprintf("must be at least 4 segments (%s)", 4*c.Journal.SegmentSize), "journal", "max-size")
	}
	if c.Journal.ActivityExtents == 0 {
		c.Journal.ActivityExtents = DefaultActivityExtents
	}
	if n := c.Journal.ActivityExtents; n < 1 || n > MaxActivityExtents {
		bad(fmt.Sprintf("%d: must be between 1 and %d", n, MaxActivityExtents), "journal", "activity-extents")
	}
	if c.Journal.InPlaceMin == 0 {
		c.Journal.InPlaceMin = DefaultInPlaceMin
	}
	if m := c.Journal.InPlaceMin; m%4096 != 0 || m > MaxInPlaceMin {
		bad(fmt.Sprintf("%d: must be a multiple of 4096 up to %s", m, MaxInPlaceMin), "journal", "in-place-min")
	}
	if !defaultOrOneOf(&c.Journal.InPlace, InPlaceOn, InPlaceOn, InPlaceOff) {
		bad(fmt.Sprintf("%q: want %q or %q", c.Journal.InPlace, InPlaceOn, InPlaceOff), "journal", "in-place")
	}
	if !defaultOrOneOf(&c.Journal.Sync, SyncOnFlush, SyncOnFlush, SyncAlways) {
		bad(fmt.Sprintf("%q: want %q or %q", c.Journal.Sync, SyncOnFlush, SyncAlways), "journal", "sync")
	}
}

// validateReplication fills and checks the replication protocol and the
// split-brain and congestion policies.
func (c *Config) validateReplication(bad func(string, ...any)) {
	if !defaultOrOneOf(&c.Replication.Protocol, ProtocolC, ProtocolA, ProtocolB, ProtocolC) {
		bad(fmt.Sprintf("%q: want A, B or C", c.Replication.Protocol), "replication", "protocol")
	}
	if !defaultOrOneOf(&c.Replication.AfterSplitBrain, SplitBrainDisconnect, SplitBrainDisconnect, SplitBrainDiscardSecondary) {
		bad(fmt.Sprintf("%q: want %q or %q", c.Replication.AfterSplitBrain, SplitBrainDisconnect, SplitBrainDiscardSecondary), "replication", "after-split-brain")
	}
	if !defaultOrOneOf(&c.Replication.OnCongestion, CongestionBlock, CongestionBlock, CongestionDisconnect) {
		bad(fmt.Sprintf("%q: want %q or %q", c.Replication.OnCongestion, CongestionBlock, CongestionDisconnect), "replication", "on-congestion")
	}
	if c.Replication.CongestionFill == 0 {
		c.Replication.CongestionFill = DefaultCongestionFill
	}
	if f := c.Replication.CongestionFill; f < MinCongestionFill || f > MaxCongestionFill {
		bad(fmt.Sprintf("%v: must be between %v and %v", f, MinCongestionFill, MaxCongestionFill), "replication", "congestion-fill")
	}
	if c.Replication.StreamWindow == 0 {
		c.Replication.StreamWindow = DefaultStreamWindow
	}
	if w := c.Replication.StreamWindow; w < MinStreamWindow || w > MaxStreamWindow {
		bad(fmt.Sprintf("%v: must be between %v and %v", w, MinStreamWindow, MaxStreamWindow), "replication", "stream-window")
	}
}

// defaultOrOneOf fills an empty enum field with def and reports whether the
// field then holds one of the allowed values; the caller words the error,
// since each field names its choices differently.
func defaultOrOneOf(v *string, def string, allowed ...string) bool {
	if *v == "" {
		*v = def
	}
	return slices.Contains(allowed, *v)
}

// memberCheck checks members one after the other for what must be unique
// across them: names, listen addresses, data directories per host.
type memberCheck struct {
	c         *Config
	bad       func(string, ...any)
	names     map[string]bool
	listeners map[string]string // address -> member.field
	dirs      map[string]string // host and data dir -> member
}

// validateMembers checks the data nodes and the witness.
func (c *Config) validateMembers(bad func(string, ...any)) {
	switch {
	case len(c.Nodes) == 0:
		bad("at least one data node is required", "nodes")
	case len(c.Nodes) > maxMembers:
		bad(fmt.Sprintf("at most %d data nodes", maxMembers), "nodes")
	}
	mc := &memberCheck{c: c, bad: bad, names: map[string]bool{}, listeners: map[string]string{}, dirs: map[string]string{}}
	for i := range c.Nodes {
		mc.check(&c.Nodes[i], true, "nodes", i)
	}
	if c.Witness != nil {
		mc.check(c.Witness, false, "witness")
	}
}

// check validates member m (a data node when data) found at path.
func (mc *memberCheck) check(m *Member, data bool, path ...any) {
	bad := mc.bad
	at := func(field string) []any { return append(append([]any{}, path...), field) }
	if !nameRE.MatchString(m.Name) {
		bad("required: lower-case letters, digits, '-' or '_', at most 63 characters", at("name")...)
	} else if mc.names[m.Name] {
		bad(fmt.Sprintf("duplicate member name %q", m.Name), at("name")...)
	}
	mc.names[m.Name] = true
	mc.checkAddresses(m, data, at)
	if !data && m.NBD != "" {
		bad("a witness holds no data and exports no device", at("nbd")...)
	}
	if m.DataDir == "" {
		if data {
			bad("required: the directory for the journal and the image", at("data-dir")...)
		} else {
			bad("required: the directory for the control-plane log", at("data-dir")...)
		}
	}
	m.DataDir = mc.c.resolveDir(m.DataDir)
	if host, _, err := net.SplitHostPort(m.Address); err == nil && m.DataDir != "" {
		if isLoopback(host) {
			host = "loopback"
		}
		key := host + "\x00" + filepath.Clean(m.DataDir)
		if other, dup := mc.dirs[key]; dup {
			bad(fmt.Sprintf("%s is also the data-dir of %s on the same host: each member needs its own", m.DataDir, other), at("data-dir")...)
		}
		mc.dirs[key] = m.Name
	}
}

// checkAddresses validates m's listen addresses, each used once in the
// cluster.
func (mc *memberCheck) checkAddresses(m *Member, data bool, at func(string) []any) {
	addrs := []struct {
		field, val string
		need       bool
	}{{"address", m.Address, true}, {"admin", m.Admin, true}, {"nbd", m.NBD, data}}
	for _, a := range addrs {
		if a.val == "" {
			if a.need {
				mc.bad("required: host:port", at(a.field)...)
			}
			continue
		}
		if !data && a.field == "nbd" {
			continue
		}
		if err := checkHostPort(a.val); err != nil {
			mc.bad(err.Error(), at(a.field)...)
			continue
		}
		if other, dup := mc.listeners[a.val]; dup && !isPortZero(a.val) {
			mc.bad(fmt.Sprintf("%s is already used by %s", a.val, other), at(a.field)...)
		}
		mc.listeners[a.val] = fmt.Sprintf("%s.%s", m.Name, a.field)
	}
}

// validateQuorum fills and checks the quorum and timing fields.
func (c *Config) validateQuorum(bad func(string, ...any)) {
	q := &c.Quorum
	fill := func(d *Duration, def Duration) {
		if *d == 0 {
			*d = def
		}
	}
	fill(&q.Tick, DefaultTick)
	fill(&q.Lease, DefaultLease)
	fill(&q.FailoverTimeout, DefaultFailoverTimeout)
	fill(&q.SuspendTimeout, DefaultSuspendTimeout)
	fill(&c.Replication.PeerTimeout, DefaultPeerTimeout)
	fill(&c.Replication.FlushTimeout, max(DefaultFlushTimeout, c.Replication.PeerTimeout))
	switch {
	case q.Tick.D() < time.Millisecond || q.Tick.D() > time.Second:
		bad("must be between 1ms and 1s", "quorum", "tick")
	case q.Lease.D() < 5*q.Tick.D():
		bad(fmt.Sprintf("must be at least 5 ticks (%v)", 5*q.Tick.D()), "quorum", "lease")
	case q.FailoverTimeout.D() < q.Tick.D():
		bad("must be at least one tick", "quorum", "failover-timeout")
	}
	if !defaultOrOneOf(&q.OnNoQuorum, OnNoQuorumIOError, OnNoQuorumIOError, OnNoQuorumSuspend) {
		bad(fmt.Sprintf("%q: want %q or %q", q.OnNoQuorum, OnNoQuorumIOError, OnNoQuorumSuspend), "quorum", "on-no-quorum")
	}
	if q.SuspendTimeout.D() < 0 {
		bad("must not be negative", "quorum", "suspend-timeout")
	}
	if c.Replication.PeerTimeout.D() < q.Tick.D() {
		bad("must be at least one quorum tick", "replication", "peer-timeout")
	}
	if c.Replication.FlushTimeout.D() < c.Replication.PeerTimeout.D() {
		bad("must be at least replication.peer-timeout", "replication", "flush-timeout")
	}
	if d := c.Device.DiskTimeoutOrDefault(); d != 0 && d < MinDiskTimeout.D() {
		bad(fmt.Sprintf("must be 0s (off) or at least %v", MinDiskTimeout.D()), "device", "disk-timeout")
	}
}

// validateNBDLimits fills and checks the export's connection limits and TLS.
func (c *Config) validateNBDLimits(bad func(string, ...any)) {
	n := &c.NBD
	if n.MaxConnections == 0 {
		n.MaxConnections = DefaultMaxConnections
	}
	if n.MaxHandshakes == 0 {
		n.MaxHandshakes = min(DefaultMaxHandshakes, n.MaxConnections)
	}
	if n.MaxConnections < 1 || n.MaxConnections > 65536 {
		bad("must be between 1 and 65536", "nbd", "max-connections")
	}
	if n.MaxHandshakes < 1 || n.MaxHandshakes > n.MaxConnections {
		bad("must be between 1 and max-connections", "nbd", "max-handshakes")
	}
	if n.TLS == nil {
		if n.TLSRequired {
			bad("needs nbd.tls (a certificate and key)", "nbd", "tls-required")
		}
		return
	}
	n.TLS.Cert = c.checkPath(bad, n.TLS.Cert, true, either, "nbd", "tls", "cert")
	n.TLS.Key = c.checkPath(bad, n.TLS.Key, true, either, "nbd", "tls", "key")
	n.TLS.CA = c.checkPath(bad, n.TLS.CA, false, shared, "nbd", "tls", "ca")
}

// validateSecurity checks the security section.
func (c *Config) validateSecurity(bad func(string, ...any)) {
	s := c.Security
	if s == nil {
		return
	}
	if s.TLS == nil && s.SharedSecretFile == "" {
		bad("needs tls, shared-secret-file or both", "security")
	}
	if t := s.TLS; t != nil {
		t.CA = c.checkPath(bad, t.CA, true, shared, "security", "tls", "ca")
		t.Cert = c.checkPath(bad, t.Cert, true, perMember, "security", "tls", "cert")
		t.Key = c.checkPath(bad, t.Key, true, perMember, "security", "tls", "key")
	}
	if s.SharedSecretFile != "" {
		s.SharedSecretFile = c.checkPath(bad, s.SharedSecretFile, true, shared, "security", "shared-secret-file")
	}
	if !defaultOrOneOf(&s.AdminAuth, AdminAuthMutating, AdminAuthMutating, AdminAuthAll) {
		bad(fmt.Sprintf("%q: want %q or %q", s.AdminAuth, AdminAuthMutating, AdminAuthAll), "security", "admin-auth")
	}
}

// How a file path of the config may use {name}.
type placeholder int

const (
	shared    placeholder = iota // one file for the cluster: no {name}
	perMember                    // one file per member: {name} required
	either                       // {name} allowed
)

// checkPath validates a file path of the config and returns it resolved
// against the config file.
func (c *Config) checkPath(bad func(string, ...any), p string, required bool, ph placeholder, path ...any) string {
	if p == "" {
		if required {
			bad("required: a file path", path...)
		}
		return p
	}
	rest := strings.ReplaceAll(p, NamePlaceholder, "")
	switch {
	case strings.ContainsAny(rest, "{}"):
		bad(fmt.Sprintf("%q: the only placeholder is %s", p, NamePlaceholder), path...)
	case ph == perMember && rest == p:
		bad(fmt.Sprintf("%q must contain %s: every member has its own certificate", p, NamePlaceholder), path...)
	case ph == shared && rest != p:
		bad(fmt.Sprintf("%q: one file for the whole cluster, %s does not apply", p, NamePlaceholder), path...)
	case strings.ContainsRune(p, 0):
		bad("contains a NUL byte", path...)
	}
	return c.resolveDir(p)
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if host == "" {
		return fmt.Errorf("%q has no host: bind an explicit address (e.g. 127.0.0.1:%s), never all interfaces by accident", s, port)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port must be 0-65535", s)
	}
	return nil
}

func isPortZero(s string) bool {
	_, port, _ := net.SplitHostPort(s)
	return port == "0"
}

func fieldName(path []any) string {
	s := ""
	for _, p := range path {
		switch k := p.(type) {
		case string:
			if s != "" {
				s += "."
			}
			s += k
		case int:
			s += fmt.Sprintf("[%d]", k)
		}
	}
	return s
}

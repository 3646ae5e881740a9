package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Erasure coding limits (docs/erasure.md); internal/ec has the same.
const (
	MaxECData   = 16
	MaxECParity = 8
	// ECChunk is the chunk size C of every EC resource.
	ECChunk = 64 << 10
)

// RedundancyMirror is the default: every data node holds a full copy.
const RedundancyMirror = "mirror"

// EC is the erasure-coding layout of a resource.
type EC struct {
	K, M int
}

// EC returns the resource's erasure-coding layout; ok is false for a
// mirrored resource. Node 0 in config order holds the full copy; node h+1
// holds shard h.
func (c *Config) EC() (ec EC, ok bool) {
	k, m, err := ParseRedundancy(c.Replication.Redundancy)
	if err != nil || k == 0 {
		return EC{}, false
	}
	return EC{K: k, M: m}, true
}

// ShardOf returns the shard index of data node name in an EC resource, or
// -1 for the full-copy node, a mirror or an unknown name.
func (c *Config) ShardOf(name string) int {
	if _, ok := c.EC(); !ok {
		return -1
	}
	for i, n := range c.Nodes {
		if n.Name == name {
			return i - 1
		}
	}
	return -1
}

// ParseRedundancy parses replication.redundancy: "" or "mirror" (k = 0),
// or "ec K+M".
func ParseRedundancy(s string) (k, m int, err error) {
	s = strings.TrimSpace(s)
	if s == "" || s == RedundancyMirror {
		return 0, 0, nil
	}
	rest, found := strings.CutPrefix(s, "ec ")
	ks, ms, plus := strings.Cut(strings.TrimSpace(rest), "+")
	if !found || !plus {
		return 0, 0, fmt.Errorf("%q: want %q or \"ec K+M\" (e.g. \"ec 2+2\")", s, RedundancyMirror)
	}
	if k, err = strconv.Atoi(strings.TrimSpace(ks)); err != nil || k < 1 || k > MaxECData {
		return 0, 0, fmt.Errorf("%q: k must be between 1 and %d", s, MaxECData)
	}
	if m, err = strconv.Atoi(strings.TrimSpace(ms)); err != nil || m < 1 || m > MaxECParity {
		return 0, 0, fmt.Errorf("%q: m must be between 1 and %d", s, MaxECParity)
	}
	return k, m, nil
}

// validateEC checks an EC resource against the rest of the config.
func (c *Config) validateEC(bad func(string, ...any)) {
	k, m, err := ParseRedundancy(c.Replication.Redundancy)
	if err != nil {
		bad(err.Error(), "replication", "redundancy")
		return
	}
	if k == 0 {
		return
	}
	if len(c.Nodes) != k+m+1 {
		bad(fmt.Sprintf("ec %d+%d needs exactly %d data nodes (the full-copy node first, then %d shard peers), have %d",
			k, m, k+m+1, k+m, len(c.Nodes)), "replication", "redundancy")
	}
	if c.Replication.Protocol != ProtocolC {
		bad(fmt.Sprintf("erasure coding supports protocol C only, not %q", c.Replication.Protocol), "replication", "protocol")
	}
	if c.NBD.SecondaryReads {
		bad("a shard peer holds no readable copy: secondary-reads is not possible with erasure coding", "nbd", "secondary-reads")
	}
}

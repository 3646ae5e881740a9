package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// ecConfig is a valid config with n data nodes and the given replication
// section.
func ecConfig(n int, replication string) string {
	var b strings.Builder
	b.WriteString("cluster: demo\ndevice:\n  size: 64MiB\njournal:\n  max-size: 64MiB\n  segment-size: 8MiB\n")
	b.WriteString(replication)
	b.WriteString("nodes:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: n%d\n    address: 127.0.0.1:%d\n    nbd: 127.0.0.1:%d\n    admin: 127.0.0.1:%d\n    data-dir: d%d\n",
			i, 7700+i, 10800+i, 7800+i, i)
	}
	return b.String()
}

func TestParseRedundancy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		k, m int
		err  string
	}{
		{"", 0, 0, ""},
		{"mirror", 0, 0, ""},
		{"ec 2+2", 2, 2, ""},
		{"ec 4+1", 4, 1, ""},
		{"ec 16+8", 16, 8, ""},
		{"ec 0+2", 0, 0, "k must be between 1 and 16"},
		{"ec 17+1", 0, 0, "k must be between 1 and 16"},
		{"ec 2+0", 0, 0, "m must be between 1 and 8"},
		{"ec 2+9", 0, 0, "m must be between 1 and 8"},
		{"ec 2", 0, 0, `want "mirror" or "ec K+M"`},
		{"raid5", 0, 0, `want "mirror" or "ec K+M"`},
		{"ec a+b", 0, 0, "k must be"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			k, m, err := ParseRedundancy(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, [2]int{tc.k, tc.m}, [2]int{k, m})
		})
	}
}

func TestParseEC(t *testing.T) {
	c, err := Parse("c.yaml", []byte(ecConfig(5, "replication:\n  redundancy: ec 2+2\n")))
	require.NoError(t, err)
	ec, ok := c.EC()
	require.True(t, ok)
	require.Equal(t, EC{K: 2, M: 2}, ec)
	require.Equal(t, []int{-1, 0, 1, 2, 3, -1}, []int{c.ShardOf("n0"), c.ShardOf("n1"), c.ShardOf("n2"), c.ShardOf("n3"), c.ShardOf("n4"), c.ShardOf("nx")})

	m, err := Parse("c.yaml", []byte(ecConfig(3, "")))
	require.NoError(t, err)
	_, ok = m.EC()
	require.False(t, ok)
	require.Equal(t, -1, m.ShardOf("n1"))
}

func TestParseECErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes int
		repl  string
		want  string
	}{
		{"too few nodes", 4, "replication:\n  redundancy: ec 2+2\n", "c.yaml:8: replication.redundancy: ec 2+2 needs exactly 5 data nodes (the full-copy node first, then 4 shard peers), have 4"},
		{"too many nodes", 6, "replication:\n  redundancy: ec 2+2\n", "needs exactly 5 data nodes"},
		{"k out of range", 5, "replication:\n  redundancy: ec 0+4\n", "c.yaml:8: replication.redundancy: \"ec 0+4\": k must be between 1 and 16"},
		{"m out of range", 5, "replication:\n  redundancy: ec 4+0\n", "m must be between 1 and 8"},
		{"garbage", 5, "replication:\n  redundancy: raid6\n", `"raid6": want "mirror" or "ec K+M"`},
		{"protocol A", 5, "replication:\n  protocol: A\n  redundancy: ec 2+2\n", "c.yaml:8: replication.protocol: erasure coding supports protocol C only"},
		{"secondary reads", 5, "nbd:\n  secondary-reads: true\nreplication:\n  redundancy: ec 2+2\n", "nbd.secondary-reads: a shard peer holds no readable copy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(ecConfig(tc.nodes, tc.repl)))
			require.ErrorIs(t, err, ErrInvalid)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWarnings(t *testing.T) {
	noWitness := func(s string) string { return s[:strings.Index(s, "witness:")] }
	tests := []struct {
		name string
		edit func(string) string
		want []string // each a substring of one warning line
	}{
		{"loopback with witness is quiet", func(s string) string { return s }, nil},
		{"two nodes no witness", noWitness, []string{"c.yaml:7: nodes: warning: 2 data nodes and no witness: losing either node stops writes"}},
		{"single node", func(s string) string { return noWitness(s)[:strings.Index(s, "  - name: beta")] },
			[]string{"c.yaml:7: nodes: warning: a single data node: no replication"}},
		{"four voters", func(s string) string {
			return strings.Replace(s, "witness:", "  - {name: gamma, address: '127.0.0.1:7703', nbd: '127.0.0.1:10811', admin: '127.0.0.1:7803', data-dir: g}\nwitness:", 1)
		}, []string{"4 voting members: a majority needs 3"}},
		{"protocol A", func(s string) string { return s + "replication:\n  protocol: A\n" },
			[]string{"c.yaml:23: replication.protocol: warning: protocol A acknowledges a write before every peer journaled it"}},
		{"congestion disconnect", func(s string) string { return s + "replication:\n  on-congestion: disconnect\n" },
			[]string{"c.yaml:23: replication.on-congestion: warning: a peer 64MiB behind is cut off"}},
		{"manual failover", func(s string) string { return s + "quorum:\n  auto-failover: false\n" }, []string{"quorum.auto-failover: warning: automatic failover is off"}},
		{"suspend-io", func(s string) string { return s + "quorum:\n  on-no-quorum: suspend-io\n" }, []string{"I/O hangs for up to 30s"}},
		{"admin on the network", func(s string) string { return strings.Replace(s, "admin: 127.0.0.1:7800", "admin: 10.0.0.1:7800", 1) },
			[]string{"c.yaml:10: nodes[0].admin: warning: admin endpoint 10.0.0.1:7800 is reachable from the network"}},
		{"wildcard nbd", func(s string) string { return strings.Replace(s, "nbd: 127.0.0.1:10809", "nbd: 0.0.0.0:10809", 1) },
			[]string{"nodes[0].nbd: warning: 0.0.0.0:10809 listens on every interface"}},
		{"shared host", func(s string) string {
			s = strings.Replace(s, "address: 127.0.0.1:7700", "address: 10.0.0.1:7700", 1)
			return strings.Replace(s, "address: 127.0.0.1:7701", "address: 10.0.0.1:7701", 1)
		}, []string{"c.yaml:13: nodes[1].address: warning: alpha and beta are on the same host 10.0.0.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("c.yaml", []byte(tc.edit(good)))
			require.NoError(t, err)
			var got []string
			for _, w := range c.Warnings() {
				got = append(got, w.String())
			}
			require.Len(t, got, len(tc.want), "%q", got)
			for i, want := range tc.want {
				require.Contains(t, got[i], want)
			}
		})
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/grbd/grbd/internal/freeport"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
	"github.com/grbd/grbd/witness"
	"github.com/stretchr/testify/require"
)

// runCLI runs grbd with args in this process and returns its stdout and
// stderr.
func runCLI(ctx context.Context, args ...string) (string, string, error) {
	var out, errb syncBuffer
	err := runCLITo(ctx, &out, &errb, args...)
	return out.String(), errb.String(), err
}

// runCLITo runs grbd with args in this process, writing to out and errw.
func runCLITo(ctx context.Context, out, errw io.Writer, args ...string) error {
	cmd := newRootCommand()
	cmd.SetOut(out)
	cmd.SetErr(errw)
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cluster is data nodes (d0, d1, ...) and a witness w run in this process.
type cluster struct {
	t     *testing.T
	path  string
	cfg   *config.Config
	nodes map[string]*node.Node
	wit   *witness.Witness
}

// startCluster runs n data nodes and, with wit, a witness; extra is YAML
// appended at the top level of the config.
func startCluster(t *testing.T, n int, wit bool, size, extra string) *cluster {
	t.Helper()
	var b strings.Builder
	if !strings.Contains(extra, "quorum:") {
		// These tests are about the CLI: generous timing keeps a loaded
		// machine from failing the primary over (or dropping a peer)
		// under them.
		extra += "quorum:\n  lease: 2s\n  failover-timeout: 3s\n"
		if strings.Contains(extra, "replication:") {
			extra = strings.Replace(extra, "replication:\n", "replication:\n  peer-timeout: 10s\n", 1)
		} else {
			extra += "replication:\n  peer-timeout: 10s\n"
		}
	}
	fmt.Fprintf(&b, "cluster: t\ndevice:\n  size: %s\njournal:\n  max-size: 8MiB\n  segment-size: 1MiB\n%s", size, extra)
	b.WriteString("nodes:\n")
	used := map[string]bool{}
	addr := func() string {
		for {
			if a := freeport.Loopback(t); !used[a] {
				used[a] = true
				return a
			}
		}
	}
	for i := range n {
		fmt.Fprintf(&b, "  - {name: d%d, address: '%s', nbd: '%s', admin: '%s', data-dir: d%d}\n", i, addr(), addr(), addr(), i)
	}
	if wit {
		fmt.Fprintf(&b, "witness: {name: w, address: '%s', admin: '%s', data-dir: w}\n", addr(), addr())
	}
	c := &cluster{t: t, path: filepath.Join(t.TempDir(), "c.yaml"), nodes: map[string]*node.Node{}}
	require.NoError(t, os.WriteFile(c.path, []byte(b.String()), 0o644))
	cfg, err := config.Load(c.path)
	require.NoError(t, err)
	c.cfg = cfg
	log := slog.New(slog.DiscardHandler)
	for i := range n {
		nd, err := node.Start(cfg, fmt.Sprintf("d%d", i), node.Options{Logger: log})
		require.NoError(t, err)
		c.nodes[fmt.Sprintf("d%d", i)] = nd
	}
	if wit {
		c.wit, err = witness.Start(cfg, "w", log)
		require.NoError(t, err)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			_ = nd.Close()
		}
		if c.wit != nil {
			_ = c.wit.Close()
		}
	})
	return c
}

// stop closes a data node.
func (c *cluster) stop(name string) {
	require.NoError(c.t, c.nodes[name].Close())
	delete(c.nodes, name)
}

// primary waits for a serving primary with every other running node
// UpToDate, and returns it.
func (c *cluster) primary() *node.Node {
	c.t.Helper()
	var p *node.Node
	require.Eventually(c.t, func() bool {
		for _, n := range c.nodes {
			st := n.Status()
			if st.Role != node.RolePrimary || !st.Quorum.Serving {
				continue
			}
			for _, ps := range st.Peers {
				if ps.Disk != node.DiskUpToDate {
					return false
				}
			}
			p = n
			return true
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "no serving primary with UpToDate peers")
	return p
}

// roles waits for the primary and returns its name and another data
// node's (under load the second node may win the first election).
func (c *cluster) roles() (primary, secondary string) {
	p := c.primary().Status().Name
	for name := range c.nodes {
		if name != p {
			return p, name
		}
	}
	return p, ""
}

// post sends an admin POST to member name.
func (c *cluster) post(name, path string) {
	c.t.Helper()
	m, _, err := c.cfg.Member(name)
	require.NoError(c.t, err)
	resp, err := http.Post("http://"+m.Admin+path, "", nil)
	require.NoError(c.t, err)
	resp.Body.Close()
	require.Equal(c.t, http.StatusOK, resp.StatusCode)
}

// jsonLines decodes JSON lines into maps.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/nbdclient"
	"github.com/grbd/grbd/internal/pki"
	"github.com/grbd/grbd/node"
)

// ClusterLocator finds the primary by asking every data node's admin
// endpoint (GET /status), authenticated as the CLI is.
type ClusterLocator struct {
	Config *config.Config
	Client *auth.Client
}

// Locate asks every data node at once and returns the one that reports
// itself primary and serving (holding its lease); with several (an old
// primary that has not noticed yet), the newest epoch.
func (l *ClusterLocator) Locate(ctx context.Context) (Primary, error) {
	nodes := l.Config.Nodes
	answers := make([]statusAnswer, len(nodes))
	var wg sync.WaitGroup
	for i, m := range nodes {
		wg.Go(func() {
			st, err := l.status(ctx, m)
			answers[i] = statusAnswer{st, err}
		})
	}
	wg.Wait()
	return pickPrimary(nodes, answers)
}

// statusAnswer is one data node's answer to GET /status.
type statusAnswer struct {
	st  *node.Status
	err error
}

// pickPrimary chooses from the answers of nodes (same order) the node to
// follow: primary, serving, and not detached; the newest epoch of those.
// A primary whose disk failed (an I/O error, or a disk that hangs past
// device.disk-timeout) still holds its lease until the control plane
// takes the role back, and answers every request with an error meanwhile:
// following it would hand those errors to the client.
func pickPrimary(nodes []config.Member, answers []statusAnswer) (Primary, error) {
	var (
		best  Primary
		found bool
		why   []string
	)
	for i, a := range answers {
		m := nodes[i]
		switch {
		case a.err != nil:
			why = append(why, fmt.Sprintf("%s: %v", m.Name, a.err))
		case a.st.Role != node.RolePrimary || !a.st.Quorum.Serving:
			why = append(why, fmt.Sprintf("%s: %s, serving %v", m.Name, a.st.Role, a.st.Quorum.Serving))
		case a.st.Disk == node.DiskFailed:
			why = append(why, fmt.Sprintf("%s: primary, its disk failed", m.Name))
		case !found || a.st.Quorum.Epoch > best.Epoch:
			found, best = true, Primary{Name: m.Name, Addr: m.NBD, Epoch: a.st.Quorum.Epoch, Size: a.st.DeviceSize}
		}
	}
	if !found {
		return Primary{}, fmt.Errorf("%w: no data node serves (%s)", ErrNotPrimary, strings.Join(why, "; "))
	}
	return best, nil
}

func (l *ClusterLocator) status(ctx context.Context, m config.Member) (*node.Status, error) {
	resp, err := l.Client.Do(ctx, m, http.MethodGet, "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin endpoint answered %s", resp.Status)
	}
	var st node.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("bad status reply: %w", err)
	}
	return &st, nil
}

// NBDDialer connects to a primary's export with nbdclient.
type NBDDialer struct {
	Export string // the cluster's nbd.export
	// TLS, when set, upgrades every connection (NBD_OPT_STARTTLS); the
	// server's certificate must name the host of the node's nbd address.
	TLS *tls.Config
}

// LoadClientTLS reads a certificate directory in libnbd's layout (what
// `grbd certs init` writes as nbd-client/): ca-cert.pem, and
// client-cert.pem with client-key.pem when present.
func LoadClientTLS(dir string) (*tls.Config, error) {
	roots, err := pki.LoadPool(filepath.Join(dir, "ca-cert.pem"))
	if err != nil {
		return nil, fmt.Errorf("proxy: NBD TLS: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	pair, err := pki.LoadKeyPair(filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem"))
	switch {
	case err == nil:
		cfg.Certificates = []tls.Certificate{pair}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("proxy: NBD TLS client certificate: %w", err)
	}
	return cfg, nil
}

// Dial connects over TCP and negotiates the export.
func (d NBDDialer) Dial(ctx context.Context, p Primary) (Backend, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "tcp", p.Addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	opts := nbdclient.Options{ExportName: d.Export}
	if d.TLS != nil {
		opts.TLS = d.TLS.Clone()
		if opts.TLS.ServerName == "" {
			opts.TLS.ServerName, _, _ = net.SplitHostPort(p.Addr)
		}
	}
	c, err := nbdclient.NewClient(ctx, conn, opts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &nbdBackend{Client: c, conn: conn}, nil
}

// nbdBackend adds Abort to an nbdclient.Client.
type nbdBackend struct {
	*nbdclient.Client
	conn net.Conn
}

// Abort closes the socket first, so that Close does not wait for answers.
func (b *nbdBackend) Abort() {
	_ = b.conn.Close()
	_ = b.Client.Close()
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/proxy"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type proxyOptions struct {
	configPath string
	listen     string
	socket     string
	admin      string
	follow     followOptions
}

func (o *proxyOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:10810", "TCP address of the proxy's NBD export")
	fs.StringVar(&o.socket, "socket", "", "serve on this Unix socket instead of --listen")
	fs.StringVar(&o.admin, "admin", "", "address of the proxy's status endpoint (GET /status, /metrics); empty: none")
	o.follow.AddFlags(fs)
}

// followOptions are the settings of a client endpoint that follows the
// primary across failovers: grbd proxy and grbd attach share them.
type followOptions struct {
	holdTimeout time.Duration
	poll        time.Duration
	nbdCerts    string
	creds       adminOptions
}

func (o *followOptions) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.holdTimeout, "hold-timeout", 30*time.Second, "how long a request waits for a serving primary before it fails with EIO")
	fs.DurationVar(&o.poll, "poll", 500*time.Millisecond, "how often to ask the members who serves while following a primary")
	fs.StringVar(&o.nbdCerts, "nbd-certs", "", "certificate directory for NBD over TLS to the nodes (libnbd layout: ca-cert.pem, client-cert.pem, client-key.pem; `grbd certs init` writes nbd-client/); needed when the config sets nbd.tls-required")
	o.creds.AddFlags(fs)
}

// start connects a proxy to the serving primary and runs it (following
// the primary) until stop is called, and returns the NBD server that serves
// it to a client. stop lets Run outlive the caller's signal: requests
// already read are answered (by a primary) while the server drains.
func (o *followOptions) start(ctx context.Context, cfg *config.Config, log *slog.Logger, who string) (p *proxy.Proxy, srv *blockdev.Server, stop func(), err error) {
	dialer := proxy.NBDDialer{Export: cfg.NBD.Export}
	switch {
	case o.nbdCerts != "":
		if dialer.TLS, err = proxy.LoadClientTLS(o.nbdCerts); err != nil {
			return nil, nil, nil, err
		}
	case cfg.NBD.TLSRequired:
		return nil, nil, nil, fmt.Errorf("%s: the cluster requires TLS on NBD (nbd.tls-required): give --nbd-certs DIR", who)
	}
	cli, err := o.creds.client(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	p = proxy.New(&proxy.ClusterLocator{Config: cfg, Client: cli}, dialer,
		proxy.Options{HoldTimeout: o.holdTimeout, Poll: o.poll, Logger: log})
	if err := p.Connect(ctx); err != nil {
		return nil, nil, nil, err
	}
	srv, err = blockdev.NewServer(p, blockdev.Options{ExportName: cfg.NBD.Export, OrderOverlapping: true,
		Description: "grbd " + who + " for cluster " + cfg.Cluster, Logger: log})
	if err != nil {
		return nil, nil, nil, err
	}
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(runCtx) })
	return p, srv, func() { stopRun(); wg.Wait() }, nil
}

func newProxyCommand(g *globalOptions) *cobra.Command {
	o := &proxyOptions{}
	cmd := &cobra.Command{
		Use:   "proxy --config FILE [--listen ADDR | --socket PATH] [--hold-timeout 30s]",
		Short: "Serve the cluster's device over NBD on the client host, following the primary across failovers",
		Long: `Runs an NBD server for a client on this host (nbdfuse, qemu, fio, nbd-client)
that forwards every request to the data node serving as primary, found
through the members' admin endpoints (authenticated as grbd status is). When
the primary goes away (killed, fenced, demoted, cut off) the proxy finds the
new one and sends again every request that was not answered: writes with the
same data, reads again, a FLUSH after the writes sent before it. Requests
wait while no primary serves, up to --hold-timeout, then fail with EIO. The
client sees a pause, not an error, and its mount stays.

Prints "proxy nbd://ADDR" (or "proxy nbd+unix:///?socket=PATH") once the
export accepts connections. The export has the cluster's size (new
connections see a grown device after grbd resize) and flags. Logs every
switch of primary; --admin serves GET /status (JSON: the node followed,
requests held and re-sent, time without a primary) and GET /metrics.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := loadConfig(o.configPath)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			p, srv, stopRun, err := o.follow.start(ctx, cfg, log, "proxy")
			if err != nil {
				return err
			}
			defer stopRun()
			l, uri, err := o.listener()
			if err != nil {
				return err
			}
			if o.admin != "" {
				al, err := net.Listen("tcp", o.admin)
				if err != nil {
					return fmt.Errorf("proxy: admin endpoint: %w", err)
				}
				hs := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 5 * time.Second}
				go func() { _ = hs.Serve(al) }()
				defer hs.Close()
			}
			serveErr := make(chan error, 1)
			go func() { serveErr <- srv.Serve(l) }()
			fmt.Fprintf(cmd.OutOrStdout(), "proxy %s\n", uri)
			select {
			case <-ctx.Done():
			case err = <-serveErr:
			}
			_ = srv.Close()
			_ = l.Close()
			if err != nil && !errors.Is(err, blockdev.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// listener opens --socket or --listen and returns the URI clients use.
func (o *proxyOptions) listener() (net.Listener, string, error) {
	if o.socket != "" {
		if st, err := os.Lstat(o.socket); err == nil && st.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(o.socket) // left by a killed proxy
		}
		l, err := net.Listen("unix", o.socket)
		if err != nil {
			return nil, "", fmt.Errorf("proxy: %w", err)
		}
		return l, "nbd+unix:///?socket=" + o.socket, nil
	}
	l, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, "", fmt.Errorf("proxy: %w", err)
	}
	return l, "nbd://" + l.Addr().String(), nil
}

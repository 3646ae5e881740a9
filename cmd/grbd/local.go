package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// localConfigName is the file `grbd local` writes into its directory.
const localConfigName = "grbd.yaml"

type localOptions struct {
	dir      string
	size     string
	nbdPort  int
	basePort int
	nodes    int
	witness  bool
	protocol string
	proxy    int
}

func (o *localOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.dir, "dir", "grbd-local", "directory for the cluster config and every member's data")
	fs.StringVar(&o.size, "size", "1GiB", "device size when creating the cluster")
	fs.IntVar(&o.nbdPort, "nbd-port", 10809, "NBD port of the first data node on 127.0.0.1 (the others follow, skipping --proxy-port)")
	fs.IntVar(&o.basePort, "base-port", 7700, "first peer port; admin ports start at base-port+100")
	fs.IntVar(&o.nodes, "nodes", 2, "data nodes when creating the cluster")
	fs.BoolVar(&o.witness, "witness", true, "add a witness when creating the cluster")
	fs.StringVar(&o.protocol, "protocol", "C", "replication protocol when creating the cluster: A, B or C")
	fs.IntVar(&o.proxy, "proxy-port", 10810, "run grbd proxy on this port of 127.0.0.1, the URI that survives failovers (0: none)")
}

func newLocalCommand(g *globalOptions) *cobra.Command {
	o := &localOptions{}
	cmd := &cobra.Command{
		Use:   "local [--dir DIR]",
		Short: "Run a local cluster on loopback with sane defaults (2 data nodes + witness)",
		Long: `Creates DIR/grbd.yaml on first use (an existing one is reused as it is) and runs
every member of that cluster on 127.0.0.1 as its own process (grbd node, grbd
witness) until SIGINT or SIGTERM. Defaults: 2 data nodes and a witness,
protocol C, automatic failover.

Prints "member NAME pid PID role ROLE nbd://..." for each member at start and
whenever a role changes, "ready nbd://HOST:PORT" each time a primary starts
serving, and "proxy nbd://127.0.0.1:PROXY-PORT" once grbd proxy serves: that
is the URI to use, it follows the primary across failovers. Kill the primary
(kill -9 PID) to watch the other data node take over within about a second
while clients of the proxy only pause.
Member links and admin requests are authenticated with a shared secret
generated into DIR/secret (mode 0600) when the cluster is created.
Inspect it with: grbd status --config DIR/grbd.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg, created, err := o.loadOrCreate()
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("nodes") && len(cfg.Nodes) != o.nodes {
				return fmt.Errorf("local: %s has %d data nodes, not --nodes %d: remove %s to recreate it", cfg.Path, len(cfg.Nodes), o.nodes, o.dir)
			}
			if err := checkProxyPort(cfg, o.proxy, o.dir); err != nil {
				return err
			}
			if created {
				log.Info("created cluster config", "path", cfg.Path)
			} else {
				log.Info("using existing cluster config", "path", cfg.Path)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("local: %w", err)
			}
			return superviseLocal(ctx, cmd.OutOrStdout(), self, cfg, g, log, o.proxy)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// localNames are the data nodes of a local cluster, in order.
var localNames = []string{"alpha", "beta", "gamma", "delta", "epsilon"}

// loadOrCreate reuses DIR/grbd.yaml or writes a fresh config.
func (o *localOptions) loadOrCreate() (*config.Config, bool, error) {
	path := filepath.Join(o.dir, localConfigName)
	if _, err := os.Stat(path); err == nil {
		cfg, err := config.Load(path)
		return cfg, false, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("local: %w", err)
	}
	size, err := config.ParseSize(o.size)
	if err != nil {
		return nil, false, fmt.Errorf("--size: %w", err)
	}
	if o.nodes < 1 || o.nodes > len(localNames) {
		return nil, false, fmt.Errorf("--nodes must be between 1 and %d", len(localNames))
	}
	if o.nbdPort < 1 || o.nbdPort > 65535-o.nodes-1 || o.basePort < 1 || o.basePort > 65535-200 {
		return nil, false, fmt.Errorf("--nbd-port and --base-port must be valid TCP ports")
	}
	cfg := &config.Config{
		Cluster:     "local",
		Device:      config.Device{Size: size},
		Replication: config.Replication{Protocol: o.protocol},
		// Loopback is shared by every local user: the members and the CLI
		// authenticate with a secret generated for this cluster.
		Security: &config.Security{SharedSecretFile: auth.SecretFile},
	}
	nbd := o.nbdPort
	for i, name := range localNames[:o.nodes] {
		if nbd == o.proxy {
			nbd++ // the proxy's port (10810 by default) follows the first node's
		}
		cfg.Nodes = append(cfg.Nodes, config.Member{
			Name:    name,
			Address: fmt.Sprintf("127.0.0.1:%d", o.basePort+i),
			NBD:     fmt.Sprintf("127.0.0.1:%d", nbd),
			Admin:   fmt.Sprintf("127.0.0.1:%d", o.basePort+100+i),
			DataDir: name,
		})
		nbd++
	}
	if o.witness {
		cfg.Witness = &config.Member{
			Name:    "witness",
			Address: fmt.Sprintf("127.0.0.1:%d", o.basePort+len(localNames)),
			Admin:   fmt.Sprintf("127.0.0.1:%d", o.basePort+100+len(localNames)),
			DataDir: "witness",
		}
	}
	b, err := cfg.Marshal()
	if err != nil {
		return nil, false, err
	}
	b = append([]byte("# grbd local cluster, written by `grbd local`; edit and restart to change it.\n"), b...)
	// Validate before writing so a bad flag never leaves a bad file behind.
	if _, err := config.Parse(path, b); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("local: %w", err)
	}
	if err := auth.NewSecretFile(filepath.Join(o.dir, auth.SecretFile)); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, false, fmt.Errorf("local: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, false, fmt.Errorf("local: %w", err)
	}
	cfg, err = config.Load(path)
	return cfg, true, err
}

// checkProxyPort refuses a proxy port that a member of cfg listens on
// (a cluster created before the node ports skipped it gave beta 10810).
func checkProxyPort(cfg *config.Config, port int, dir string) error {
	if port == 0 {
		return nil
	}
	members := cfg.Nodes
	if cfg.Witness != nil {
		members = append(slices.Clip(members), *cfg.Witness)
	}
	for _, m := range members {
		for _, addr := range []struct{ what, hostPort string }{{"NBD", m.NBD}, {"peer", m.Address}, {"admin", m.Admin}} {
			if _, p, err := net.SplitHostPort(addr.hostPort); err == nil && p == strconv.Itoa(port) {
				return fmt.Errorf("local: --proxy-port %d is %s's %s port in %s: pass another --proxy-port (0: no proxy), or remove %s to recreate the cluster",
					port, m.Name, addr.what, cfg.Path, dir)
			}
		}
	}
	return nil
}

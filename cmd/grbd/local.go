package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

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
}

func (o *localOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.dir, "dir", "grbd-local", "directory for the cluster config and every member's data")
	fs.StringVar(&o.size, "size", "1GiB", "device size when creating the cluster")
	fs.IntVar(&o.nbdPort, "nbd-port", 10809, "NBD port of the first data node on 127.0.0.1")
	fs.IntVar(&o.basePort, "base-port", 7700, "first peer port; admin ports start at base-port+100")
}

func newLocalCommand(g *globalOptions) *cobra.Command {
	o := &localOptions{}
	cmd := &cobra.Command{
		Use:   "local [--dir DIR]",
		Short: "Run a local cluster on loopback with sane defaults",
		Long: `Creates DIR/grbd.yaml on first use (an existing one is reused as it is) and runs
the cluster's members on 127.0.0.1 until SIGINT or SIGTERM. Prints
"ready nbd://127.0.0.1:PORT" when the export accepts connections.
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
			if created {
				log.Info("created cluster config", "path", cfg.Path)
			} else {
				log.Info("using existing cluster config", "path", cfg.Path)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			names := make([]string, len(cfg.Nodes))
			for i, n := range cfg.Nodes {
				names[i] = n.Name
			}
			return runNodes(ctx, cmd, cfg, names, log)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// loadOrCreate reuses DIR/grbd.yaml or writes a fresh single-node config.
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
	if o.nbdPort < 1 || o.nbdPort > 65535 || o.basePort < 1 || o.basePort > 65535-200 {
		return nil, false, fmt.Errorf("--nbd-port and --base-port must be valid TCP ports")
	}
	cfg := &config.Config{
		Cluster: "local",
		Device:  config.Device{Size: size},
		Nodes: []config.Member{{
			Name:    "alpha",
			Address: fmt.Sprintf("127.0.0.1:%d", o.basePort),
			NBD:     fmt.Sprintf("127.0.0.1:%d", o.nbdPort),
			Admin:   fmt.Sprintf("127.0.0.1:%d", o.basePort+100),
			DataDir: "alpha",
		}},
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
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, false, fmt.Errorf("local: %w", err)
	}
	cfg, err = config.Load(path)
	return cfg, true, err
}

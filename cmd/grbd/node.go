package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"sync"
	"syscall"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/member"
	"github.com/grbd/grbd/node"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type nodeOptions struct {
	configPath string
	name       string
	newCluster bool
	// dial: --dial-override, for fault-injection proxies (the chaos
	// harness); hidden from help.
	dial map[string]string
	// bootID: --boot-id, the machine's boot as the journal sees it.
	bootID string
}

func (o *nodeOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.StringVar(&o.name, "name", "", "this node's name in the config (required)")
	fs.BoolVar(&o.newCluster, "new-cluster", false, "create a brand-new cluster without waiting for every member to answer that it is empty (members that are missing join later with grbd member replace); DANGEROUS on a cluster that exists")
	fs.StringToStringVar(&o.dial, "dial-override", nil, "dial these peers at other addresses (PEER=HOST:PORT,...): for fault-injection proxies in tests")
	_ = fs.MarkHidden("dial-override")
	fs.StringVar(&o.bootID, "boot-id", "", "this boot of the machine, as the journal's activity log records it (default: the kernel's boot_id); a value other than the last run's makes an unclean stop count as a power loss (docs/journal.md, \"Activity log\")")
	_ = fs.MarkHidden("boot-id")
}

func (o *nodeOptions) validate() error {
	var errs []error
	if o.configPath == "" {
		errs = append(errs, errors.New("--config is required"))
	}
	if o.name == "" {
		errs = append(errs, errors.New("--name is required"))
	}
	return errors.Join(errs...)
}

// load validates the flags, reads the logger and the config, and checks
// the dial overrides against it.
func (o *nodeOptions) load(g *globalOptions) (*slog.Logger, *config.Config, error) {
	if err := o.validate(); err != nil {
		return nil, nil, err
	}
	log, err := g.logger()
	if err != nil {
		return nil, nil, err
	}
	cfg, err := config.Load(o.configPath)
	if err != nil {
		return nil, nil, err
	}
	if err := member.CheckDialOverrides(cfg, o.name, o.dial); err != nil {
		return nil, nil, err
	}
	return log, cfg, nil
}

// daemonCommand completes cmd into one that runs a member of the cluster
// (node or witness): run gets the loaded flags and config and a ctx that
// SIGINT or SIGTERM ends.
func daemonCommand(g *globalOptions, cmd *cobra.Command, run func(ctx context.Context, cmd *cobra.Command, o *nodeOptions, log *slog.Logger, cfg *config.Config) error) *cobra.Command {
	o := &nodeOptions{}
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, cfg, err := o.load(g)
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return run(ctx, cmd, o, log, cfg)
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func newNodeCommand(g *globalOptions) *cobra.Command {
	return daemonCommand(g, &cobra.Command{
		Use:   "node --config FILE --name NAME",
		Short: "Run a data node: journal, NBD export, replication and control plane",
		Long: `Runs one data node of the cluster described by --config until SIGINT or SIGTERM.
Prints "listening nbd://HOST:PORT" once the export accepts connections,
"role ROLE epoch N serving|fenced|standby nbd://HOST:PORT" whenever the node's
role changes, and "ready nbd://HOST:PORT" whenever it starts serving as primary:
only the serving primary completes I/O; a secondary refuses it with EPERM.`,
	}, func(ctx context.Context, cmd *cobra.Command, o *nodeOptions, log *slog.Logger, cfg *config.Config) error {
		return runNodes(ctx, cmd, cfg, []string{o.name}, node.Options{Logger: log, NewCluster: o.newCluster, DialOverrides: o.dial, BootID: o.bootID})
	})
}

// runNodes starts the named data nodes in this process with opts (OnRole
// aside), prints a ready line for each, and stops them when ctx ends.
func runNodes(ctx context.Context, cmd *cobra.Command, cfg *config.Config, names []string, opts node.Options) error {
	log := opts.Logger
	var nodes []*node.Node
	defer func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	}()
	out := &lockedWriter{w: cmd.OutOrStdout()}
	for _, name := range names {
		o := opts
		o.OnRole = func(ev node.RoleEvent) {
			state := "standby"
			if ev.Role == node.RolePrimary {
				state = "fenced"
				if ev.Serving {
					state = "serving"
				}
			}
			out.printf("role %s epoch %d %s %s\n", ev.Role, ev.Epoch, state, ev.NBD)
			if state == "serving" {
				out.printf("ready %s\n", ev.NBD)
			}
		}
		n, err := node.Start(cfg, name, o)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		out.printf("listening nbd://%s\n", n.NBDAddr())
	}
	// A node whose control plane cannot persist stops the process with an
	// error (exit 1; systemd restarts it, or leaves it down after its
	// start limit), instead of running on as a healthy-looking zombie.
	failed := make(chan *node.Node, len(nodes))
	for _, n := range nodes {
		go func() {
			select {
			case <-n.Stopped():
				failed <- n
			case <-ctx.Done():
			}
		}()
	}
	var errs []error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "cause", context.Cause(ctx))
	case n := <-failed:
		log.Error("stopping: the control plane cannot persist", "err", n.Err())
		errs = append(errs, n.Err())
	}
	for _, n := range nodes {
		errs = append(errs, n.Close())
	}
	nodes = nil
	return errors.Join(errs...)
}

// lockedWriter serialises lines written from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

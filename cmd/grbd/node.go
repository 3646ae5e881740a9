package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type nodeOptions struct {
	configPath string
	name       string
}

func (o *nodeOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.StringVar(&o.name, "name", "", "this node's name in the config (required)")
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

func newNodeCommand(g *globalOptions) *cobra.Command {
	o := &nodeOptions{}
	cmd := &cobra.Command{
		Use:   "node --config FILE --name NAME",
		Short: "Run a data node: journal, NBD export and admin endpoint",
		Long: `Runs one data node of the cluster described by --config until SIGINT or SIGTERM.
Prints "ready nbd://HOST:PORT" on stdout once the export accepts connections.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := config.Load(o.configPath)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runNodes(ctx, cmd, cfg, []string{o.name}, log)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// runNodes starts the named data nodes in this process, prints a ready line for
// each, and stops them when ctx ends.
func runNodes(ctx context.Context, cmd *cobra.Command, cfg *config.Config, names []string, log *slog.Logger) error {
	var nodes []*node.Node
	defer func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	}()
	for _, name := range names {
		n, err := node.Start(cfg, name, log)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		fmt.Fprintf(cmd.OutOrStdout(), "ready nbd://%s\n", n.NBDAddr())
	}
	<-ctx.Done()
	log.Info("shutting down", "cause", context.Cause(ctx))
	var errs []error
	for _, n := range nodes {
		errs = append(errs, n.Close())
	}
	nodes = nil
	return errors.Join(errs...)
}

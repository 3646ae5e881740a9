package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/grbd/grbd/witness"
	"github.com/spf13/cobra"
)

func newWitnessCommand(g *globalOptions) *cobra.Command {
	o := &nodeOptions{}
	cmd := &cobra.Command{
		Use:   "witness --config FILE --name NAME",
		Short: "Run the witness: a dataless voter of the control plane",
		Long: `Runs the cluster's witness until SIGINT or SIGTERM. The witness holds no block
data, only the control-plane log in its data-dir; with two data nodes it makes
the third vote, so that either data node may fail and the other one stays (or
becomes) primary. Prints "ready witness NAME" once it listens.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, cfg, err := o.load(g)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			w, err := witness.StartWith(cfg, o.name, log, witness.Options{NewCluster: o.newCluster, DialOverrides: o.dial})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ready witness %s\n", o.name)
			select {
			case <-ctx.Done():
				log.Info("shutting down", "cause", context.Cause(ctx))
				return errors.Join(w.Close())
			case <-w.Stopped():
				// Never a zombie that looks healthy: exit non-zero.
				log.Error("stopping: the control plane cannot persist", "err", w.Err())
				return errors.Join(w.Err(), w.Close())
			}
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/witness"
	"github.com/spf13/cobra"
)

func newWitnessCommand(g *globalOptions) *cobra.Command {
	return daemonCommand(g, &cobra.Command{
		Use:   "witness --config FILE --name NAME",
		Short: "Run the witness: a dataless voter of the control plane",
		Long: `Runs the cluster's witness until SIGINT or SIGTERM. The witness holds no block
data, only the control-plane log in its data-dir; with two data nodes it makes
the third vote, so that either data node may fail and the other one stays (or
becomes) primary. Prints "ready witness NAME" once it listens.`,
	}, func(ctx context.Context, cmd *cobra.Command, o *nodeOptions, log *slog.Logger, cfg *config.Config) error {
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
	})
}

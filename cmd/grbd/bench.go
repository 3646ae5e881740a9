package main

import (
	"fmt"
	"os"
	"time"

	"github.com/grbd/grbd/bench"
	"github.com/grbd/grbd/internal/config"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type benchOptions struct {
	dir      string
	size     string
	duration time.Duration
	rounds   int
	jsonPath string
	short    bool
}

func (o *benchOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.dir, "dir", "", "scratch directory (default: a new temporary directory, removed afterwards)")
	fs.StringVar(&o.size, "size", "1GiB", "device size of every system under test")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "run time of each fio job")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds; each runs every job on every system, interleaved")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results to this JSON file")
	fs.BoolVar(&o.short, "short", false, "smoke run: 1 round, 1 s jobs, small device (checks the harness, not the speed)")
}

func newBenchCommand(_ *globalOptions) *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run the fio benchmarks: grbd next to peer NBD servers, same run",
		Long: `Starts nbdkit's file plugin (the baseline) and grbd, runs the same fio jobs
(ioengine=nbd) against each, interleaved, and prints IOPS, bandwidth, latency
percentiles and the ratio to the baseline. Needs fio and nbdkit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			size, err := config.ParseSize(o.size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			if o.short {
				o.rounds, o.duration, size = 1, time.Second, 64<<20
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			dir := o.dir
			if dir == "" {
				if dir, err = os.MkdirTemp("", "grbd-bench-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			cfg := bench.Config{
				Dir: dir, Size: int64(size), Duration: o.duration, Rounds: o.rounds,
				Systems:   []bench.System{bench.NBDKitFile(), bench.GrbdLocal("grbd-1node", self)},
				Workloads: bench.DefaultWorkloads(),
				Baseline:  "nbdkit-file",
				Progress:  cmd.ErrOrStderr(),
			}
			results, err := bench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if err := bench.WriteTable(cmd.OutOrStdout(), results, cfg.Baseline); err != nil {
				return err
			}
			if o.jsonPath != "" {
				return bench.WriteJSON(o.jsonPath, results)
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

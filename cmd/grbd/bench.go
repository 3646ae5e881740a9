package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/grbd/grbd/bench"
	"github.com/grbd/grbd/internal/config"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type benchOptions struct {
	dir         string
	size        string
	duration    time.Duration
	ramp        time.Duration
	rounds      int
	jsonPath    string
	pngPath     string
	short       bool
	systems     []string
	jobs        []string
	clusterYAML string
	resyncWrite time.Duration
	extras      bool
	compare     string
	sustained   time.Duration
}

func (o *benchOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.dir, "dir", "", "scratch directory (default: a new temporary directory, removed afterwards)")
	fs.StringVar(&o.size, "size", "1GiB", "device size of every system under test")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "run time of each fio job (whole seconds)")
	fs.DurationVar(&o.ramp, "ramp", time.Second, "fio ramp time of each job, not measured")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds; each runs every job on every system, interleaved")
	fs.StringVar(&o.jsonPath, "json", "", "also write the report to this JSON file")
	fs.StringVar(&o.pngPath, "png", "", "also draw IOPS and p99 latency into this PNG file")
	fs.BoolVar(&o.short, "short", false, "smoke run: 1 round of 1 s jobs, 3 jobs, 64 MiB devices (checks the harness, not the speed)")
	fs.StringSliceVar(&o.systems, "systems", nil, "only these systems (default: all; names as in the table)")
	fs.StringSliceVar(&o.jobs, "jobs", nil, "only these jobs, in this order (default: all of bench/jobs)")
	fs.StringVar(&o.clusterYAML, "cluster-yaml", "", "YAML appended to every generated grbd cluster config")
	fs.BoolVar(&o.extras, "extras", true, "also measure resync and failover on clusters of their own")
	fs.StringVar(&o.compare, "compare", "", "also run every selected grbd system with this other grbd executable (labelled @base), interleaved")
	fs.DurationVar(&o.sustained, "sustained", 0, "also write 1 MiB blocks for this long (at least 1s) on every system, throughput per 5 s window (alone unless --jobs names jobs)")
	fs.DurationVar(&o.resyncWrite, "resync-write", 5*time.Second, "how long the primary writes while a peer is away (resync measurement)")
}

func newBenchCommand(_ *globalOptions) *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run the fio benchmark suite: grbd next to peer NBD servers, same run",
		Long: `Starts nbdkit's file plugin (the baseline), qemu-nbd's quorum driver over two
nbdkit, and grbd clusters of 1, 2 (+ witness) and 3 data nodes as real
processes; runs the job files of bench/jobs (fio, ioengine=nbd) against each,
interleaved round by round; then measures resync and failover. Prints IOPS,
MB/s, p50/p99/p99.9 latency, the ratio to the baseline, process RSS and CPU,
and the performance goals of issues 2, 3 and 17, each pass or fail.
Needs fio, nbdkit and qemu-nbd (make deps installs them).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			cfg := bench.Suite(self, o.clusterYAML)
			if o.short {
				cfg.Short()
			}
			if err := o.apply(cmd.Flags(), &cfg); err != nil {
				return err
			}
			if cfg.Dir == "" {
				if cfg.Dir, err = os.MkdirTemp("", "grbd-bench-"); err != nil {
					return err
				}
				defer os.RemoveAll(cfg.Dir)
			}
			cfg.Progress = cmd.ErrOrStderr()
			rep, runErr := bench.Run(cmd.Context(), cfg)
			if rep == nil {
				return runErr
			}
			errs := []error{runErr, rep.WriteText(cmd.OutOrStdout())}
			if o.jsonPath != "" {
				errs = append(errs, rep.WriteJSON(o.jsonPath))
			}
			if o.pngPath != "" {
				errs = append(errs, bench.WritePNG(o.pngPath, rep.Results, rep.Title()))
			}
			return errors.Join(errs...)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// apply copies the flags the user set onto cfg (unset flags keep the
// suite's or --short's values).
func (o *benchOptions) apply(fs *pflag.FlagSet, cfg *bench.Config) error {
	cfg.Dir = o.dir
	if fs.Changed("size") {
		size, err := config.ParseSize(o.size)
		if err != nil {
			return fmt.Errorf("--size: %w", err)
		}
		cfg.Size = int64(size)
	}
	if fs.Changed("duration") {
		cfg.Duration = o.duration
	}
	if fs.Changed("ramp") {
		cfg.Ramp = o.ramp
	}
	if fs.Changed("rounds") {
		cfg.Rounds = o.rounds
	}
	if fs.Changed("resync-write") {
		cfg.ResyncWrite = o.resyncWrite
	}
	if !o.extras {
		cfg.Resync, cfg.Failover = nil, nil
	}
	if fs.Changed("sustained") {
		if err := bench.CheckSustained(o.sustained); err != nil {
			return fmt.Errorf("--sustained: %w", err)
		}
		cfg.Sustained = o.sustained
		if !fs.Changed("jobs") {
			cfg.Jobs = nil
		}
	}
	if len(o.jobs) > 0 {
		cfg.Jobs = o.jobs
	}
	if len(o.systems) > 0 {
		if err := cfg.SelectSystems(o.systems); err != nil {
			return fmt.Errorf("--systems %s: %w", strings.Join(o.systems, ","), err)
		}
	}
	if o.compare != "" {
		if _, err := os.Stat(o.compare); err != nil {
			return fmt.Errorf("--compare: %w", err)
		}
		cfg.CompareWith(o.compare, "@base")
	}
	return nil
}

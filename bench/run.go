package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"
)

// Config is one benchmark run.
type Config struct {
	Dir       string        // scratch space for images and logs
	Size      int64         // device size of every system
	Duration  time.Duration // per fio job
	Rounds    int           // each round runs every workload on every system
	Systems   []System
	Workloads []Workload
	Baseline  string    // system name ratios are against
	Progress  io.Writer // one line per job; nil for silence
}

// DefaultWorkloads are the jobs `make bench` runs. The sequential write comes
// first so the read jobs find written data on every system.
func DefaultWorkloads() []Workload {
	return []Workload{SeqWrite1M, RandWrite32, RandRead32, RandWrite1, Mixed7030}
}

// Run starts every system, runs rounds of interleaved jobs, stops the systems
// and returns one Result per system and workload, averaged over rounds.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Rounds < 1 {
		cfg.Rounds = 1
	}
	uris := make([]string, len(cfg.Systems))
	defer func() {
		for _, s := range cfg.Systems {
			_ = s.Stop()
		}
	}()
	for i, s := range cfg.Systems {
		uri, err := s.Start(ctx, filepath.Join(cfg.Dir, s.Name()), cfg.Size)
		if err != nil {
			return nil, err
		}
		uris[i] = uri
		cfg.progress("started %s at %s", s.Name(), uri)
	}
	sums := map[[2]string]*Result{}
	var order [][2]string
	for round := 0; round < cfg.Rounds; round++ {
		for _, w := range cfg.Workloads {
			for i, s := range cfg.Systems {
				r, err := runFio(ctx, w, uris[i], cfg.Size, cfg.Duration)
				if err != nil {
					return nil, err
				}
				cfg.progress("round %d %-24s %-16s %10.0f IOPS %8.1f MB/s p99 %7.0f us", round+1, w.Name, s.Name(), r.IOPS, r.BW/1e6, r.P99)
				k := [2]string{w.Name, s.Name()}
				acc, ok := sums[k]
				if !ok {
					acc = &Result{System: s.Name(), Workload: w.Name}
					sums[k] = acc
					order = append(order, k)
				}
				acc.IOPS += r.IOPS / float64(cfg.Rounds)
				acc.BW += r.BW / float64(cfg.Rounds)
				acc.P50 += r.P50 / float64(cfg.Rounds)
				acc.P99 += r.P99 / float64(cfg.Rounds)
				acc.P999 += r.P999 / float64(cfg.Rounds)
			}
		}
	}
	out := make([]Result, 0, len(order))
	for _, k := range order {
		out = append(out, *sums[k])
	}
	return out, nil
}

func (c Config) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format+"\n", args...)
	}
}

// Ratio is a result's IOPS relative to the baseline system on the same
// workload (0 when the baseline did not run it).
func Ratio(results []Result, r Result, baseline string) float64 {
	for _, b := range results {
		if b.System == baseline && b.Workload == r.Workload && b.IOPS > 0 {
			return r.IOPS / b.IOPS
		}
	}
	return 0
}

// WriteTable prints results grouped by workload with ratios to baseline.
func WriteTable(w io.Writer, results []Result, baseline string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tsystem\tIOPS\tMB/s\tp50 us\tp99 us\tp99.9 us\tvs "+baseline+"\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t%.0f\t%.0f\t%.0f\t%.2fx\t\n",
			r.Workload, r.System, r.IOPS, r.BW/1e6, r.P50, r.P99, r.P999, Ratio(results, r, baseline))
	}
	return tw.Flush()
}

// WriteJSON stores results for later comparison.
func WriteJSON(path string, results []Result) error {
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/config"
)

// Config is one benchmark run.
type Config struct {
	Dir      string        // scratch space for images, data, logs and rendered jobs
	Size     int64         // device size of every system
	Duration time.Duration // fio runtime of each job
	Ramp     time.Duration // fio ramp_time of each job
	Rounds   int           // each round runs every job on every system
	Systems  []System
	Jobs     []string // job names (bench/jobs), in run order
	Baseline string   // the system ratios are against
	Goals    []Goal

	// Resync, when set, is a cluster of at least two data nodes started
	// after the rounds to measure a secondary's resync: it is killed,
	// ResyncJob runs on the primary for ResyncWrite, then it is restarted.
	Resync      *GrbdCluster
	ResyncJob   string
	ResyncWrite time.Duration
	// Failover, when set, is a cluster started after the rounds to measure
	// the time from a SIGKILL of the primary to a write acknowledged by the
	// next one.
	Failover *GrbdCluster
	// Sustained, when set, runs SustainedJob this long on every system
	// after the rounds, its throughput logged per SustainedWindow; it must
	// be at least MinSustained.
	Sustained       time.Duration
	SustainedWindow time.Duration

	Progress io.Writer // one line per step; nil for silence
}

// Suite returns the standard suite: every system of issue 6, every job,
// the goals of issues 2, 3 and 17, resync and failover, with full-run timings
// (2 rounds of 5 s jobs on a 1 GiB device). binary is the grbd executable;
// extraYAML is appended to every grbd cluster config. When binary has no
// `witness` command the 2-node cluster with a witness is reported skipped
// and a 2-node cluster without one runs in its place, so the replication
// goals are still judged.
func Suite(binary, extraYAML string) Config {
	grbd := func(label string, nodes int, witness bool, protocol string) *GrbdCluster {
		return &GrbdCluster{Label: label, Binary: binary, DataNodes: nodes, Witness: witness,
			Protocol: protocol, ExtraYAML: extraYAML}
	}
	systems := []System{
		NBDKitFile(),
		QemuQuorum(),
		grbd(SysGrbd1, 1, false, config.ProtocolC),
		grbd(SysGrbd2Witness, 2, true, config.ProtocolC),
	}
	witness := witnessAvailable(binary)
	if !witness {
		systems = append(systems, grbd(SysGrbd2C, 2, false, config.ProtocolC))
	}
	ec := grbd(SysGrbdEC22, 5, false, config.ProtocolC)
	ec.Redundancy = "ec 2+2"
	systems = append(systems, grbd(SysGrbd3C, 3, false, config.ProtocolC), grbd(SysGrbd2A, 2, false, config.ProtocolA), ec)
	failover := grbd("failover-2n+w-C", 2, true, config.ProtocolC)
	if !witness {
		failover = grbd("failover-3n-C", 3, false, config.ProtocolC)
	}
	return Config{
		Size:        1 << 30,
		Duration:    5 * time.Second,
		Ramp:        time.Second,
		Rounds:      2,
		Systems:     systems,
		Jobs:        JobOrder,
		Baseline:    SysNBDKit,
		Goals:       DefaultGoals(),
		Resync:      grbd("resync-2n+w-C", 2, true, config.ProtocolC),
		ResyncJob:   "seqwrite-1m-qd8",
		ResyncWrite: 5 * time.Second,
		Failover:    failover,
	}
}

// Short turns c into the smoke run of `grbd bench --short`: it checks that
// the harness works end to end (every system, resync, failover, report),
// not the speed, in well under two minutes on two cores.
func (c *Config) Short() {
	c.Size, c.Duration, c.Ramp, c.Rounds = 64<<20, time.Second, 0, 1
	c.Jobs = ShortJobs
	c.ResyncWrite = time.Second
	small := config.Journal{MaxSize: 64 << 20, SegmentSize: 4 << 20}
	for _, s := range c.Systems {
		if g, ok := s.(*GrbdCluster); ok {
			g.Journal = small
		}
	}
	for _, g := range []*GrbdCluster{c.Resync, c.Failover} {
		if g != nil {
			g.Journal = small
		}
	}
}

// CompareWith adds, after each grbd system of c, the same cluster run by
// another grbd executable, labelled with suffix: an older build measured in
// the same run, interleaved round by round (before/after comparisons).
func (c *Config) CompareWith(binary, suffix string) {
	var out []System
	for _, s := range c.Systems {
		out = append(out, s)
		if g, ok := s.(*GrbdCluster); ok {
			other := *g
			other.Label, other.Binary = g.Label+suffix, binary
			out = append(out, &other)
		}
	}
	c.Systems = out
}

// SelectSystems keeps only the named systems, in the suite's order.
func (c *Config) SelectSystems(names []string) error {
	var kept []System
	var all []string
	for _, s := range c.Systems {
		all = append(all, s.Name())
		if slices.Contains(names, s.Name()) {
			kept = append(kept, s)
		}
	}
	for _, n := range names {
		if !slices.Contains(all, n) {
			return fmt.Errorf("%w: %q (have %s)", ErrUnknownSystem, n, strings.Join(all, ", "))
		}
	}
	c.Systems = kept
	return nil
}

// Run starts every system, runs the rounds of interleaved jobs, reads each
// process's peak RSS and CPU time, stops the systems, then measures resync
// and failover on their own clusters. It returns the report even when a
// measurement failed; the error then says which (skips are not errors).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Rounds < 1 {
		cfg.Rounds = 1
	}
	if cfg.Sustained != 0 {
		if err := CheckSustained(cfg.Sustained); err != nil {
			return nil, err
		}
	}
	for _, j := range cfg.Jobs {
		if _, err := LookupJob(j); err != nil {
			return nil, err
		}
	}
	if err := requireTool("fio"); err != nil {
		return nil, err
	}
	rep := newReport(cfg)
	jobsDir, err := WriteJobs(filepath.Join(cfg.Dir, "jobs"), cfg.Duration, cfg.Ramp)
	if err != nil {
		return nil, err
	}

	var running []System
	defer func() {
		for _, s := range running {
			_ = s.Stop()
		}
	}()
	uris, err := startSystems(ctx, cfg, rep, &running)
	if err != nil {
		return nil, err
	}
	errs, err := runRounds(ctx, cfg, rep, jobsDir, running, uris)
	if err != nil {
		return nil, err
	}
	rep.Results = average(rep.Runs)
	if cfg.Sustained > 0 {
		for i, s := range running {
			syscall.Sync()
			r := sustained(ctx, jobsDir, s.Name(), uris[i], cfg.Sustained, cmp.Or(cfg.SustainedWindow, 5*time.Second))
			rep.Sustained = append(rep.Sustained, r)
			if r.Error != "" {
				errs = append(errs, fmt.Errorf("bench: sustained %s: %s", s.Name(), r.Error))
			}
			cfg.progress("sustained %-16s mean %.0f MB/s over %d windows", s.Name(), r.Mean/1e6, len(r.Windows))
		}
	}
	errs = append(errs, collectStats(ctx, cfg, rep, running)...)
	for _, s := range running {
		errs = append(errs, s.Stop())
	}
	running = nil
	rep.LoadEnd = loadAverage()

	if cfg.Resync != nil {
		rep.Resync, err = cfg.resync(ctx)
		errs = append(errs, failure(err))
	}
	if cfg.Failover != nil {
		rep.Failover, err = cfg.failover(ctx)
		errs = append(errs, failure(err))
	}
	if len(cfg.Jobs) > 0 || cfg.Resync != nil { // not for a sustained run alone
		rep.Goals = EvaluateGoals(cfg.Goals, rep.Results, rep.Resync)
	}
	return rep, errors.Join(errs...)
}

// startSystems starts every system (a skipped one is reported) and appends
// those running to *running, so that the caller stops what was started even
// after an error; it returns their URIs.
func startSystems(ctx context.Context, cfg Config, rep *Report, running *[]System) ([]string, error) {
	var uris []string
	for _, s := range cfg.Systems {
		uri, err := s.Start(ctx, filepath.Join(cfg.Dir, s.Name()), cfg.Size)
		switch {
		case errors.Is(err, ErrSkip):
			rep.Skipped = append(rep.Skipped, Skip{System: s.Name(), Reason: skipReason(err)})
			cfg.progress("skipped %s: %v", s.Name(), err)
			continue
		case err != nil:
			_ = s.Stop()
			return nil, fmt.Errorf("bench: start %s: %w", s.Name(), err)
		}
		*running, uris = append(*running, s), append(uris, uri)
		cfg.progress("started %s at %s", s.Name(), uri)
	}
	return uris, nil
}

// runRounds runs every job on every running system, round after round,
// interleaved. A failed job is reported and returned among errs (it must
// not throw away the rest of a long run); err is the end of ctx.
func runRounds(ctx context.Context, cfg Config, rep *Report, jobsDir string, running []System, uris []string) (errs []error, err error) {
	for round := range cfg.Rounds {
		for _, job := range cfg.Jobs {
			// Rotate the system order every round so no system always runs
			// right after the same neighbour.
			for k := range running {
				i := (k + round) % len(running)
				// Start every job from a clean page cache: without this the
				// writeback of the gigabytes a sequential-write job left dirty
				// slows whichever system runs next (measured: nbdkit's
				// randwrite QD32 fell from ~100k to 17k IOPS right after it).
				syscall.Sync()
				cpu := cpuTimes(running[i])
				r, err := runFio(ctx, jobsDir, job, uris[i])
				r.CPU = cpuSpent(running[i], cpu, cpuTimes(running[i]))
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if err != nil {
					f := Failure{System: running[i].Name(), Job: job, Round: round + 1, Error: err.Error()}
					rep.Failures = append(rep.Failures, f)
					errs = append(errs, fmt.Errorf("bench: %s: %w", f.System, err))
					cfg.progress("round %d %-24s %-16s FAILED: %v", round+1, job, f.System, err)
					continue
				}
				r.System, r.Round = running[i].Name(), round+1
				rep.Runs = append(rep.Runs, r)
				cfg.progress("round %d %-24s %-16s %9.0f IOPS %8.1f MB/s p99 %7.0f us",
					round+1, job, r.System, r.IOPS, r.BW/1e6, r.P99)
			}
		}
	}
	return errs, nil
}

// collectStats adds the resource use and the storage footprint of every
// running system to rep.
func collectStats(ctx context.Context, cfg Config, rep *Report, running []System) []error {
	var errs []error
	for _, s := range running {
		errs = append(errs, rep.addProcStats(s))
		if f, ok := s.(footprinter); ok {
			fp, err := f.footprint(ctx, cfg.Size)
			errs = append(errs, err)
			if err == nil && len(fp.System) > 0 {
				rep.Footprints = append(rep.Footprints, fp)
			}
		}
	}
	return errs
}

// failure drops skips: only real failures make Run fail.
func failure(err error) error {
	if errors.Is(err, ErrSkip) {
		return nil
	}
	return err
}

// withCluster starts g under Dir/NAME, runs f on it and stops it.
func (c Config) withCluster(ctx context.Context, g *GrbdCluster, f func() error) error {
	c.progress("starting %s", g.Name())
	if _, err := g.Start(ctx, filepath.Join(c.Dir, g.Name()), c.Size); err != nil {
		return err
	}
	err := f()
	return errors.Join(err, g.Stop())
}

func (c Config) resync(ctx context.Context) (*ResyncResult, error) {
	r := &ResyncResult{System: c.Resync.Name(), Job: c.ResyncJob}
	err := c.withCluster(ctx, c.Resync, func() error {
		dir, err := WriteJobs(filepath.Join(c.Dir, "jobs-resync"), c.ResyncWrite, 0)
		if err != nil {
			return err
		}
		*r, err = measureResync(ctx, c.Resync, dir, c.ResyncJob)
		return err
	})
	r.Outcome = outcome(err)
	c.progress("resync: %s", r.summary())
	return r, err
}

func (c Config) failover(ctx context.Context) (*FailoverResult, error) {
	r := &FailoverResult{System: c.Failover.Name()}
	err := c.withCluster(ctx, c.Failover, func() (err error) {
		*r, err = measureFailover(ctx, c.Failover, c.Size)
		return err
	})
	r.Outcome = outcome(err)
	c.progress("failover: %s", r.summary())
	return r, err
}

func (c Config) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format+"\n", args...)
	}
}

// average folds the per-round runs into one result per system and job, in
// first-seen order. Latency percentiles are averaged across rounds (an
// approximation; every round has the same length).
func average(runs []Result) []Result {
	var out []Result
	n := map[[2]string]int{}
	for _, r := range runs {
		k := [2]string{r.System, r.Job}
		if _, ok := n[k]; !ok {
			out = append(out, Result{System: r.System, Job: r.Job})
		}
		n[k]++
	}
	for i := range out {
		a := &out[i]
		cnt := float64(n[[2]string{a.System, a.Job}])
		for _, r := range runs {
			if r.System == a.System && r.Job == a.Job {
				a.IOPS += r.IOPS / cnt
				a.BW += r.BW / cnt
				a.P50 += r.P50 / cnt
				a.P99 += r.P99 / cnt
				a.P999 += r.P999 / cnt
				a.FlushP99 += r.FlushP99 / cnt
				averageCPU(a, r, cnt)
			}
		}
	}
	return out
}

// aptPackages names the Debian package of the programs the suite runs
// whose package name differs from the program's.
var aptPackages = map[string]string{"qemu-nbd": "qemu-utils"}

// requireTool checks that a program is on PATH.
func requireTool(name string) error {
	if _, err := exec.LookPath(name); err != nil {
		pkg := cmp.Or(aptPackages[name], name)
		return fmt.Errorf("%w: %s (install it: apt-get install %s, or `make deps` as root)", ErrMissingTool, name, pkg)
	}
	return nil
}

// loadAverage is the 1-minute load average from /proc/loadavg ("" if unknown).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	var one string
	fmt.Sscan(string(b), &one)
	return one
}

package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one run measured. Its JSON form is what --json writes.
type Report struct {
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Size     int64     `json:"device_size"`
	Duration float64   `json:"job_seconds"`
	Ramp     float64   `json:"ramp_seconds"`
	Rounds   int       `json:"rounds"`
	Baseline string    `json:"baseline"`
	LoadEnd  string    `json:"load_average_end"`

	Results  []Result        `json:"results"` // averaged over rounds
	Runs     []Result        `json:"runs"`    // every round
	Skipped  []Skip          `json:"skipped"`
	Failures []Failure       `json:"failures"`
	Procs    []ProcStats     `json:"processes"`
	Resync   *ResyncResult   `json:"resync,omitempty"`
	Failover *FailoverResult `json:"failover,omitempty"`
	// Sustained: the long write run of `--sustained`, per system.
	Sustained []SustainedResult `json:"sustained,omitempty"`
	Goals     []GoalResult      `json:"goals"`
	// Footprints: network and storage of the replicated systems.
	Footprints []Footprint `json:"footprints,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	Kernel    string `json:"kernel"`
	Fio       string `json:"fio"`
	LoadStart string `json:"load_average_start"` // 1-minute load average
}

// Failure is one fio job that failed on one system in one round.
type Failure struct {
	System string `json:"system"`
	Job    string `json:"workload"`
	Round  int    `json:"round"`
	Error  string `json:"error"`
}

// Skip is a system that could not run here.
type Skip struct {
	System string `json:"system"`
	Reason string `json:"reason"`
}

func newReport(cfg Config) *Report {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fio, _ := exec.Command("fio", "--version").Output()
	return &Report{
		Started: time.Now().UTC().Truncate(time.Second),
		Machine: Machine{CPUs: runtime.NumCPU(), Kernel: strings.TrimSpace(string(kernel)),
			Fio: strings.TrimSpace(string(fio)), LoadStart: loadAverage()},
		Size: cfg.Size, Duration: cfg.Duration.Seconds(), Ramp: cfg.Ramp.Seconds(), Rounds: cfg.Rounds,
		Baseline: cfg.Baseline, Skipped: []Skip{}, Failures: []Failure{}, Procs: []ProcStats{},
	}
}

// addProcStats records the resource use of a running system's processes.
func (rep *Report) addProcStats(s System) error {
	pl, ok := s.(ProcessLister)
	if !ok {
		return nil
	}
	for _, p := range pl.Processes() {
		rss, cpu, err := readProcStats(p.PID)
		if err != nil {
			return fmt.Errorf("bench: %s %s: %w", s.Name(), p.Name, err)
		}
		rep.Procs = append(rep.Procs, ProcStats{System: s.Name(), Process: p.Name, PID: p.PID, PeakRSS: rss, CPUSeconds: cpu})
	}
	return nil
}

// Title names the run for the plot: date, CPUs and the load average
// before and after (the machine may be shared).
func (rep *Report) Title() string {
	return fmt.Sprintf("grbd bench %s, %d CPUs, load average %s -> %s",
		rep.Started.Format("2006-01-02"), rep.Machine.CPUs, rep.Machine.LoadStart, rep.LoadEnd)
}

// WriteJSON stores the report.
func (rep *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// WriteText prints the human report: the results table with ratios to the
// baseline, skipped systems, process resources, resync, failover and goals.
func (rep *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "grbd bench %s: %d round(s) x %gs jobs (+%gs ramp), device %d MiB, %d CPUs, kernel %s, %s, load average %s -> %s\n\n",
		rep.Started.Format("2006-01-02 15:04 UTC"), rep.Rounds, rep.Duration, rep.Ramp, rep.Size>>20,
		rep.Machine.CPUs, rep.Machine.Kernel, rep.Machine.Fio, rep.Machine.LoadStart, rep.LoadEnd)
	if err := WriteTable(w, rep.Results, rep.Baseline); err != nil {
		return err
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(w, "%s: skipped: %s\n", s.System, s.Reason)
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(w, "%s %s round %d: FAILED: %s\n", f.System, f.Job, f.Round, f.Error)
	}

	fmt.Fprintln(w, "\nserver processes over the whole run (idle time included)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tprocess\tpeak RSS MiB\tCPU s\t")
	for _, p := range rep.Procs {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t\n", p.System, p.Process, float64(p.PeakRSS)/(1<<20), p.CPUSeconds)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if err := writeCPU(w, rep.Results, rep.Duration+rep.Ramp); err != nil {
		return err
	}
	if err := writeFootprints(w, rep.Footprints); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if rep.Resync != nil {
		fmt.Fprintf(w, "resync (%s): %s\n", rep.Resync.System, rep.Resync.summary())
	}
	if rep.Failover != nil {
		fmt.Fprintf(w, "failover (%s): %s\n", rep.Failover.System, rep.Failover.summary())
	}

	if err := writeSustained(w, rep.Sustained); err != nil {
		return err
	}

	if len(rep.Goals) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\ngoals (issues 2, 3 and 17)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "issue\tgoal\tmeasured\tresult")
	for _, g := range rep.Goals {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", g.Issue, g.Text, g.FormatMeasured(), g.Status)
	}
	return tw.Flush()
}

// WriteTable prints results grouped by job with ratios to baseline.
func WriteTable(w io.Writer, results []Result, baseline string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tsystem\tIOPS\tMB/s\tp50 us\tp99 us\tp99.9 us\tvs "+baseline+"\t")
	for _, job := range jobsOf(results) {
		for _, r := range results {
			if r.Job == job {
				fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t%.0f\t%.0f\t%.0f\t%s\t\n",
					r.Job, r.System, r.IOPS, r.BW/1e6, r.P50, r.P99, r.P999, formatRatio(Ratio(results, r, baseline)))
			}
		}
	}
	return tw.Flush()
}

func formatRatio(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

// jobsOf lists the jobs of results in first-seen order.
func jobsOf(results []Result) []string {
	return distinct(results, func(r Result) string { return r.Job })
}

// systemsOf lists the systems of results in first-seen order.
func systemsOf(results []Result) []string {
	return distinct(results, func(r Result) string { return r.System })
}

// distinct lists key(r) of results in first-seen order, once each.
func distinct(results []Result, key func(Result) string) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range results {
		if k := key(r); !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func (o Outcome) summary() (string, bool) {
	switch {
	case o.Skipped != "":
		return "skipped: " + o.Skipped, true
	case o.Error != "":
		return "FAILED: " + o.Error, true
	}
	return "", false
}

func (r *ResyncResult) summary() string {
	if s, ok := r.Outcome.summary(); ok {
		return s
	}
	return fmt.Sprintf("peer killed, %s ran %.1f s on the primary and wrote %.2f GB; restarted, the peer was ready after %.2f s "+
		"and UpToDate %.2f s later; resync moved %.2f GB = %.2f GB/s, %.2fx the bytes written", r.Job, r.AwaySeconds,
		float64(r.BytesWritten)/1e9, r.StartSeconds, r.Seconds, float64(r.BytesMoved)/1e9, r.BytesPerSecond/1e9, r.Amplification)
}

func (r *FailoverResult) summary() string {
	if s, ok := r.Outcome.summary(); ok {
		return s
	}
	return fmt.Sprintf("primary %s killed under QD1 writes; %s acknowledged a write %.3f s later (%.3f s after the last ack of %s)",
		r.OldPrimary, r.NewPrimary, r.Seconds, r.GapSeconds, r.OldPrimary)
}

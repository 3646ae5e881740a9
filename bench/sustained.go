package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// SustainedJob is the workload of the sustained run: 1 MiB sequential
// writes at queue depth 8 over the whole device, wrapping around, long
// enough to fill the page cache and reach the journal's checkpoints.
const SustainedJob = "seqwrite-1m-qd8"

// SustainedResult is one system's throughput over a sustained run, in
// windows. It holds when every window is within a factor MaxSwing of the
// mean: no collapse once the page cache fills, no stalls behind checkpoints.
type SustainedResult struct {
	System  string    `json:"system"`
	Job     string    `json:"workload"`
	Window  float64   `json:"window_seconds"`
	Windows []float64 `json:"windows_bytes_per_second"`
	Mean    float64   `json:"mean_bytes_per_second"`
	Outcome
}

// MaxSwing bounds each window of a sustained run against the run's mean.
const MaxSwing = 2.0

// Pass reports whether every window is within MaxSwing of the mean.
func (r SustainedResult) Pass() bool {
	if r.Error != "" || r.Skipped != "" || len(r.Windows) == 0 {
		return false
	}
	for _, w := range r.Windows {
		if w*MaxSwing < r.Mean || w > r.Mean*MaxSwing {
			return false
		}
	}
	return true
}

// MinSustained is the shortest sustained run: fio's runtime is whole
// seconds, and a runtime of 0 means no limit at all.
const MinSustained = time.Second

// CheckSustained refuses a sustained run shorter than MinSustained,
// negative ones included.
func CheckSustained(d time.Duration) error {
	if d < MinSustained {
		return fmt.Errorf("%w: a sustained run of %v is shorter than %v", ErrConfig, d, MinSustained)
	}
	return nil
}

// sustained runs SustainedJob on uri for d with fio's bandwidth log
// averaged over window, in dir (the rendered job tree).
func sustained(ctx context.Context, jobsDir, system, uri string, d, window time.Duration) SustainedResult {
	r := SustainedResult{System: system, Job: SustainedJob, Window: window.Seconds()}
	name := "sustained-" + sanitize(system)
	job := fmt.Sprintf("[%s]\ninclude inc/nbd.inc\ninclude inc/common.inc\ninclude inc/%s.inc\nruntime=%d\nwrite_bw_log=%s\nlog_avg_msec=%d\n",
		name, SustainedJob, int(d.Seconds()), name, window.Milliseconds())
	if err := os.WriteFile(filepath.Join(jobsDir, name+".fio"), []byte(job), 0o644); err != nil {
		r.Error = err.Error()
		return r
	}
	if _, err := runFio(ctx, jobsDir, name, uri); err != nil {
		r.Error = err.Error()
		return r
	}
	f, err := os.Open(filepath.Join(jobsDir, name+"_bw.1.log"))
	if err != nil {
		r.Error = fmt.Sprintf("fio left no bandwidth log: %v", err)
		return r
	}
	defer f.Close()
	if r.Windows, err = parseBWLog(f); err != nil {
		r.Error = err.Error()
		return r
	}
	for _, w := range r.Windows {
		r.Mean += w / float64(len(r.Windows))
	}
	return r
}

// parseBWLog reads fio's averaged bandwidth log ("msec, KiB/s, dir, bs,
// offset" per line) into bytes per second per window.
func parseBWLog(rd io.Reader) ([]float64, error) {
	var out []float64
	sc := bufio.NewScanner(rd)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if len(f) < 2 {
			continue
		}
		kib, err := strconv.ParseFloat(strings.TrimSpace(f[1]), 64)
		if err != nil {
			return nil, fmt.Errorf("%w: bad bandwidth log line %q", ErrFio, sc.Text())
		}
		out = append(out, kib*1024)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty bandwidth log", ErrFio)
	}
	return out, sc.Err()
}

// sanitize keeps a system name usable in a fio job and file name.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// writeSustained prints each system's windows and whether it held.
func writeSustained(w io.Writer, rs []SustainedResult) error {
	if len(rs) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nsustained %s: MB/s per %.0f s window; holds when every window is within %.0fx of the mean\n", rs[0].Job, rs[0].Window, MaxSwing)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rs {
		if s, ok := r.Outcome.summary(); ok {
			fmt.Fprintf(tw, "%s\t%s\n", r.System, s)
			continue
		}
		ws := make([]string, len(r.Windows))
		for i, v := range r.Windows {
			ws[i] = fmt.Sprintf("%.0f", v/1e6)
		}
		verdict := "pass"
		if !r.Pass() {
			verdict = "FAIL"
		}
		fmt.Fprintf(tw, "%s\tmean %.0f\t%s\t%s\n", r.System, r.Mean/1e6, strings.Join(ws, " "), verdict)
	}
	return tw.Flush()
}

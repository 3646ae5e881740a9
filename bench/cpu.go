package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// JobCPU is the CPU time (utime + stime, /proc/PID/stat) one server
// process spent while one fio job ran, ramp included.
type JobCPU struct {
	Process string  `json:"process"`
	Seconds float64 `json:"cpu_seconds"`
}

// cpuTimes reads the CPU seconds of every server process of s by name
// (nil when s does not list its processes or one cannot be read: the
// CPU columns are then left out, the job still counts).
func cpuTimes(s System) map[string]float64 {
	l, ok := s.(ProcessLister)
	if !ok {
		return nil
	}
	out := map[string]float64{}
	for _, p := range l.Processes() {
		_, cpu, err := readProcStats(p.PID)
		if err != nil {
			return nil
		}
		out[p.Name] = cpu
	}
	return out
}

// cpuSpent is after - before per process, in the order of s's processes.
func cpuSpent(s System, before, after map[string]float64) []JobCPU {
	l, ok := s.(ProcessLister)
	if !ok || before == nil || after == nil {
		return nil
	}
	var out []JobCPU
	for _, p := range l.Processes() {
		b, okb := before[p.Name]
		a, oka := after[p.Name]
		if okb && oka {
			out = append(out, JobCPU{Process: p.Name, Seconds: a - b})
		}
	}
	return out
}

// averageCPU adds r's CPU to a's, weighted 1/n, by process.
func averageCPU(a *Result, r Result, n float64) {
	for _, c := range r.CPU {
		i := 0
		for i < len(a.CPU) && a.CPU[i].Process != c.Process {
			i++
		}
		if i == len(a.CPU) {
			a.CPU = append(a.CPU, JobCPU{Process: c.Process})
		}
		a.CPU[i].Seconds += c.Seconds / n
	}
}

// writeCPU prints, for the write jobs, each server process's CPU seconds
// per GiB written and per 100k writes. The job's I/O is estimated as its
// measured rate over runtime + ramp, the window the CPU time covers.
func writeCPU(w io.Writer, results []Result, window float64) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := false
	for _, r := range results {
		if job, err := LookupJob(r.Job); err != nil || !job.Writes() || len(r.CPU) == 0 || r.IOPS == 0 || window <= 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nCPU of the server processes per write (from /proc over each write job, ramp included)")
			fmt.Fprintln(tw, "workload\tsystem\tprocess\tCPU s\tCPU s per GiB\tCPU s per 100k writes\t")
			header = true
		}
		gib, writes := r.BW*window/(1<<30), r.IOPS*window
		for _, c := range r.CPU {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t\n", r.Job, r.System, c.Process, c.Seconds, c.Seconds/gib, c.Seconds/writes*1e5)
		}
	}
	return tw.Flush()
}

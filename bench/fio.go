package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Result is one job measured on one system (averaged over rounds).
type Result struct {
	System string  `json:"system"`
	Job    string  `json:"workload"`
	IOPS   float64 `json:"iops"`
	BW     float64 `json:"bytes_per_second"`
	P50    float64 `json:"lat_p50_us"`
	P99    float64 `json:"lat_p99_us"`
	P999   float64 `json:"lat_p999_us"`
	// FlushP99 is the p99 latency of the flushes of an fsync=1 job.
	FlushP99 float64 `json:"flush_p99_us,omitempty"`
	Round    int     `json:"round,omitempty"` // 1.. in Report.Runs; 0 for averages
	// CPU is what each server process spent during the job.
	CPU []JobCPU `json:"cpu,omitempty"`
}

// runFio runs the rendered job file jobsDir/NAME.fio against uri, the way a
// user runs it: NBD_URI in the environment.
func runFio(ctx context.Context, jobsDir, name, uri string) (Result, error) {
	cmd := exec.CommandContext(ctx, "fio", "--output-format=json", filepath.Join(jobsDir, name+".fio"))
	cmd.Env = append(os.Environ(), "NBD_URI="+uri)
	cmd.Dir = jobsDir // fio may leave state files in its working directory
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return Result{}, fmt.Errorf("%w: %s on %s: %v: %s", ErrFio, name, uri, err, tailLines(stderr.String(), 3))
	}
	return parseFio(out.Bytes(), name)
}

type fioOutput struct {
	Jobs []struct {
		Error int     `json:"error"`
		Read  fioStat `json:"read"`
		Write fioStat `json:"write"`
		Sync  struct {
			Lat fioPercentiles `json:"lat_ns"`
		} `json:"sync"`
	} `json:"jobs"`
}

type fioStat struct {
	IOPS float64        `json:"iops"`
	BW   float64        `json:"bw_bytes"`
	Clat fioPercentiles `json:"clat_ns"`
}

type fioPercentiles struct {
	Percentile map[string]float64 `json:"percentile"`
}

// us returns percentile p ("99.000000") in microseconds.
func (f fioPercentiles) us(p string) float64 { return f.Percentile[p] / 1e3 }

// parseFio extracts the summed read+write figures of fio's JSON output.
// Latencies are completion latencies (clat) of the direction that carries
// the writes when a job both reads and writes: the replicated path.
func parseFio(b []byte, name string) (Result, error) {
	// fio may print warnings before the JSON document.
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	var o fioOutput
	if err := json.Unmarshal(b, &o); err != nil {
		return Result{}, fmt.Errorf("%w: %s: bad JSON: %v", ErrFio, name, err)
	}
	if len(o.Jobs) == 0 {
		return Result{}, fmt.Errorf("%w: %s: no jobs in output", ErrFio, name)
	}
	j := o.Jobs[0]
	if j.Error != 0 {
		return Result{}, fmt.Errorf("%w: %s: job error %d", ErrFio, name, j.Error)
	}
	r := Result{Job: name, IOPS: j.Read.IOPS + j.Write.IOPS, BW: j.Read.BW + j.Write.BW}
	lat := j.Write
	if j.Write.IOPS == 0 {
		lat = j.Read
	}
	r.P50, r.P99, r.P999 = lat.Clat.us("50.000000"), lat.Clat.us("99.000000"), lat.Clat.us("99.900000")
	r.FlushP99 = j.Sync.Lat.us("99.000000")
	if r.IOPS == 0 {
		return r, fmt.Errorf("%w: %s: no I/O completed", ErrFio, name)
	}
	return r, nil
}

// tailLines returns the last n lines of s, joined with " | ".
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

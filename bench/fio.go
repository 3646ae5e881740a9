// Package bench runs grbd's fio benchmarks: it starts each system under test
// (grbd and peer NBD servers), runs the same fio jobs against each in one run,
// interleaved so machine drift affects all alike, and reports IOPS, bandwidth
// and latency percentiles with ratios against a baseline system.
//
// Workloads are plain data (Workload); systems are started through the small
// System interface. The cmd layer only binds flags to Config. Nothing here is
// safe for concurrent use: a benchmark owns the machine while it runs.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"time"
)

// Errors callers branch on.
var (
	// ErrMissingTool means fio, nbdkit or another required program is absent.
	ErrMissingTool = errors.New("bench: required program not found")
	// ErrFio means fio ran but failed or printed no usable result.
	ErrFio = errors.New("bench: fio failed")
)

// Workload is one fio job, run with ioengine=nbd against an NBD URI.
type Workload struct {
	Name    string
	RW      string // fio rw=: randwrite, randread, write, read, randrw
	BS      string // block size, e.g. 4k, 1m
	IODepth int
	Jobs    int      // connections (fio numjobs), each its own NBD connection
	Extra   []string // more fio options, e.g. --rwmixread=70, --fsync=1
}

// Standard workloads, as named in docs/benchmarks.md.
var (
	SeqWrite1M  = Workload{Name: "seqwrite-1m-qd8", RW: "write", BS: "1m", IODepth: 8, Jobs: 1}
	RandWrite32 = Workload{Name: "randwrite-4k-qd32", RW: "randwrite", BS: "4k", IODepth: 32, Jobs: 1}
	RandRead32  = Workload{Name: "randread-4k-qd32", RW: "randread", BS: "4k", IODepth: 32, Jobs: 1}
	RandWrite1  = Workload{Name: "randwrite-4k-qd1", RW: "randwrite", BS: "4k", IODepth: 1, Jobs: 1}
	RandRead1   = Workload{Name: "randread-4k-qd1", RW: "randread", BS: "4k", IODepth: 1, Jobs: 1}
	Mixed7030   = Workload{Name: "randrw70-4k-qd32", RW: "randrw", BS: "4k", IODepth: 32, Jobs: 1, Extra: []string{"--rwmixread=70"}}
	SeqRead1M   = Workload{Name: "seqread-1m-qd8", RW: "read", BS: "1m", IODepth: 8, Jobs: 1}
	FsyncWrite  = Workload{Name: "randwrite-4k-qd1-fsync", RW: "randwrite", BS: "4k", IODepth: 1, Jobs: 1, Extra: []string{"--fsync=1"}}
)

// Result is one workload measured on one system.
type Result struct {
	System   string  `json:"system"`
	Workload string  `json:"workload"`
	IOPS     float64 `json:"iops"`
	BW       float64 `json:"bytes_per_second"`
	P50      float64 `json:"lat_p50_us"`
	P99      float64 `json:"lat_p99_us"`
	P999     float64 `json:"lat_p999_us"`
}

// runFio runs one workload against uri for d (time based, over size bytes).
func runFio(ctx context.Context, w Workload, uri string, size int64, d time.Duration) (Result, error) {
	args := []string{
		"--name=" + w.Name, "--ioengine=nbd", "--uri=" + uri, "--rw=" + w.RW, "--bs=" + w.BS,
		"--iodepth=" + strconv.Itoa(w.IODepth), "--numjobs=" + strconv.Itoa(max(w.Jobs, 1)),
		"--size=" + strconv.FormatInt(size, 10), "--time_based", "--runtime=" + strconv.Itoa(int(max(d.Seconds(), 1))),
		"--ramp_time=1", "--group_reporting", "--output-format=json", "--randrepeat=0",
	}
	args = append(args, w.Extra...)
	cmd := exec.CommandContext(ctx, "fio", args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return Result{}, fmt.Errorf("%w: %s on %s: %v: %s", ErrFio, w.Name, uri, err, lastLine(stderr.String()))
	}
	return parseFio(out.Bytes(), w.Name)
}

type fioOutput struct {
	Jobs []struct {
		Error int     `json:"error"`
		Read  fioStat `json:"read"`
		Write fioStat `json:"write"`
	} `json:"jobs"`
}

type fioStat struct {
	IOPS  float64 `json:"iops"`
	BW    float64 `json:"bw_bytes"`
	ClatN struct {
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

// parseFio extracts the summed read+write figures; latencies come from the
// direction that carries the I/O (writes when both do).
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
	r := Result{Workload: name, IOPS: j.Read.IOPS + j.Write.IOPS, BW: j.Read.BW + j.Write.BW}
	lat := j.Write
	if j.Write.IOPS == 0 {
		lat = j.Read
	}
	p := lat.ClatN.Percentile
	r.P50, r.P99, r.P999 = p["50.000000"]/1e3, p["99.000000"]/1e3, p["99.900000"]/1e3
	return r, nil
}

func lastLine(s string) string {
	s = string(bytes.TrimSpace([]byte(s)))
	if i := bytes.LastIndexByte([]byte(s), '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

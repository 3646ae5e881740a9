package bench

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func sampleReport() *Report {
	results := []Result{
		{System: SysNBDKit, Job: "randwrite-4k-qd32", IOPS: 50000, BW: 50000 * 4096, P50: 500, P99: 900, P999: 2000},
		{System: SysNBDKit, Job: "seqwrite-1m-qd8", IOPS: 3000, BW: 3000 << 20, P50: 2000, P99: 9000, P999: 20000},
		{System: SysGrbd1, Job: "randwrite-4k-qd32", IOPS: 45000, BW: 45000 * 4096, P50: 600, P99: 1100, P999: 3000},
		{System: SysGrbd1, Job: "seqwrite-1m-qd8", IOPS: 600, BW: 600 << 20, P50: 9000, P99: 40000, P999: 60000},
	}
	resync := &ResyncResult{System: "resync-2n+w-C", Job: "seqwrite-1m-qd8", AwaySeconds: 5, BytesWritten: 2e9,
		BytesMoved: 1e9, Seconds: 0.8, BytesPerSecond: 1.25e9, Amplification: 0.5}
	return &Report{
		Baseline: SysNBDKit, Rounds: 1, Duration: 5, Size: 1 << 30, Machine: Machine{CPUs: 2, LoadStart: "0.50"}, LoadEnd: "1.50",
		Results: results, Runs: results,
		Skipped:  []Skip{{System: SysGrbd2Witness, Reason: "grbd witness not available"}},
		Failures: []Failure{{System: SysQemuQuorum, Job: "randread-4k-qd32", Round: 1, Error: "bench: fio failed: EIO"}},
		Procs:    []ProcStats{{System: SysGrbd1, Process: "n0", PID: 7, PeakRSS: 64 << 20, CPUSeconds: 12.5}},
		Resync:   resync,
		Failover: &FailoverResult{System: "failover-3n-C", Outcome: Outcome{Skipped: "needs automatic failover"}},
		Goals:    EvaluateGoals(DefaultGoals()[:3], results, resync),
	}
}

func TestWriteText(t *testing.T) {
	var b strings.Builder
	require.NoError(t, sampleReport().WriteText(&b))
	out := b.String()
	for _, want := range []string{
		"vs nbdkit-file",
		"0.90x", // grbd-1n randwrite
		"0.20x", // grbd-1n seqwrite
		"1.00x", // the baseline's own ratio
		"grbd-2n+w-C: skipped: grbd witness not available",
		"qemu-quorum-2 randread-4k-qd32 round 1: FAILED: bench: fio failed: EIO",
		"64.0   12.5", // peak RSS MiB, CPU s
		"= 1.25 GB/s, 0.50x the bytes written",
		"failover (failover-3n-C): skipped: needs automatic failover",
		"grbd-1n randwrite-4k-qd32 >= 0.90x nbdkit-file  0.90x     pass",
		"grbd-1n seqwrite-1m-qd8 >= 0.80x nbdkit-file    0.20x     FAIL",
		"skipped: grbd-1n did not run randread-4k-qd32",
	} {
		require.Contains(t, out, want)
	}
	// Rows are grouped by job: both randwrite rows, then both seqwrite rows.
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 8 && strings.HasSuffix(f[7], "x") {
			rows = append(rows, f[0]+" "+f[1])
		}
	}
	require.Equal(t, []string{"randwrite-4k-qd32 nbdkit-file", "randwrite-4k-qd32 grbd-1n",
		"seqwrite-1m-qd8 nbdkit-file", "seqwrite-1m-qd8 grbd-1n"}, rows)
}

func TestTitle(t *testing.T) {
	require.Equal(t, "grbd bench 0001-01-01, 2 CPUs, load average 0.50 -> 1.50", sampleReport().Title())
}

func TestWriteJSONRoundTrip(t *testing.T) {
	rep := sampleReport()
	p := filepath.Join(t.TempDir(), "r.json")
	require.NoError(t, rep.WriteJSON(p))
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	var back Report
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, rep.Results, back.Results)
	require.Equal(t, rep.Goals, back.Goals)
	require.Equal(t, *rep.Resync, *back.Resync)
	require.Contains(t, string(b), `"skipped": "needs automatic failover"`)
}

func TestRenderPNG(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, renderPNG(&buf, sampleReport().Results, "test"))
	img, err := png.Decode(&buf)
	require.NoError(t, err)
	require.Greater(t, img.Bounds().Dx(), 500)
	require.Greater(t, img.Bounds().Dy(), 500)
	// Not a blank canvas: many distinct colours (bars, text, legend).
	colours := map[[4]uint32]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 3 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 3 {
			r, g, b, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, b, a}] = true
		}
	}
	require.Greater(t, len(colours), 10)

	p := filepath.Join(t.TempDir(), "b.png")
	require.NoError(t, WritePNG(p, sampleReport().Results, "file"))
	st, err := os.Stat(p)
	require.NoError(t, err)
	require.Greater(t, st.Size(), int64(10000))

	require.Error(t, renderPNG(&buf, nil, "empty"))
	require.Error(t, renderPNG(&buf, []Result{{System: "a", Job: "w"}}, "all zero"))
}

package blockdev

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPerfVsNbdkit compares fio 4 KiB random IOPS at QD32 against this
// server (memory device) and `nbdkit memory 1G`. It takes about a minute and the
// numbers depend on the machine, so it runs only with GRBD_NBD_PERF=1:
//
//	GRBD_NBD_PERF=1 go test -run TestPerfVsNbdkit -v ./blockdev
//
// GRBD_NBD_PERF_ROUNDS sets the rounds per workload (default 3; medians are
// compared). GRBD_NBD_CPUPROFILE=/tmp/grbd.prof also writes a CPU profile
// of the process (server and fio wait) per workload.
func TestPerfVsNbdkit(t *testing.T) {
	if os.Getenv("GRBD_NBD_PERF") != "1" {
		t.Skip("set GRBD_NBD_PERF=1 to run the fio comparison against nbdkit")
	}
	fio := requireTool(t, "fio")
	nbdkit := requireTool(t, "nbdkit")
	const size = 1 << 30

	_, grbdAddr := startServer(t, newMemDev(size), Options{})

	l := listen(t) // reserve a free port for nbdkit
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	kit := exec.Command(nbdkit, "-f", "-i", "127.0.0.1", "-p", fmt.Sprint(port), "memory", "1G")
	require.NoError(t, kit.Start())
	t.Cleanup(func() { _ = kit.Process.Kill(); _ = kit.Wait() })
	kitAddr := fmt.Sprintf("127.0.0.1:%d", port)
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", kitAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, testTimeout, 50*time.Millisecond)

	iops := func(addr, rw string) float64 {
		out := run(t, nil, fio, "--name=p", "--ioengine=nbd", "--uri=nbd://"+addr,
			"--rw="+rw, "--bs=4k", "--iodepth=32", "--numjobs=1", "--size=1g",
			"--time_based", "--runtime=5", "--output-format=json")
		var res struct {
			Jobs []struct {
				Read, Write struct {
					IOPS float64 `json:"iops"`
				}
			}
		}
		// The nbd engine prints "fio: connected to NBD server" before the JSON.
		require.NoError(t, json.Unmarshal([]byte(out[strings.IndexByte(out, '{')+0:]), &res), out)
		require.Len(t, res.Jobs, 1)
		return res.Jobs[0].Read.IOPS + res.Jobs[0].Write.IOPS
	}
	// Both devices allocate memory on first touch: fill them once so the
	// measurement sees steady state, not page faults.
	for _, addr := range []string{grbdAddr, kitAddr} {
		run(t, nil, fio, "--name=fill", "--ioengine=nbd", "--uri=nbd://"+addr,
			"--rw=write", "--bs=1m", "--iodepth=8", "--size=1g")
	}
	// The machine may be shared: alternate the two servers for several
	// rounds and compare medians.
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("GRBD_NBD_PERF_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	for _, rw := range []string{"randwrite", "randread"} {
		if path := os.Getenv("GRBD_NBD_CPUPROFILE"); path != "" {
			f, err := os.Create(path + "." + rw)
			require.NoError(t, err)
			require.NoError(t, pprof.StartCPUProfile(f))
		}
		var gs, ks []float64
		for r := range rounds {
			gs = append(gs, iops(grbdAddr, rw))
			ks = append(ks, iops(kitAddr, rw))
			t.Logf("%s round %d: grbd %.0f, nbdkit %.0f IOPS", rw, r+1, gs[r], ks[r])
		}
		pprof.StopCPUProfile()
		g, k := median(gs), median(ks)
		t.Logf("%s 4k QD32 median: grbd %.0f IOPS, nbdkit memory %.0f IOPS, ratio %.2f", rw, g, k, g/k)
	}
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

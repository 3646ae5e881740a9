package blockdev

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPerfVsNbdkit compares fio 4 KiB random IOPS at QD32 against this
// server (memory device) and `nbdkit memory 1G`. It takes ~25 s and the
// numbers depend on the machine, so it runs only with GRBD_NBD_PERF=1:
//
//	GRBD_NBD_PERF=1 go test -run TestPerfVsNbdkit -v ./blockdev
//
// GRBD_NBD_CPUPROFILE=/tmp/grbd.prof also writes a CPU profile of the server
// during each grbd run (<path>.randwrite, <path>.randread).
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
	for _, rw := range []string{"randwrite", "randread"} {
		if path := os.Getenv("GRBD_NBD_CPUPROFILE"); path != "" {
			f, err := os.Create(path + "." + rw)
			require.NoError(t, err)
			require.NoError(t, pprof.StartCPUProfile(f))
		}
		g := iops(grbdAddr, rw)
		pprof.StopCPUProfile()
		k := iops(kitAddr, rw)
		t.Logf("%s 4k QD32: grbd %.0f IOPS, nbdkit memory %.0f IOPS, ratio %.2f", rw, g, k, g/k)
	}
}

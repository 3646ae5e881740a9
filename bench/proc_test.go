package bench

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseProcStats(t *testing.T) {
	const status = "Name:\tgrbd\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n"
	// Fields 14 and 15 (utime, stime) are 250 and 50 clock ticks.
	const stat = "4242 (grbd) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 9 0 100 900000 12800"
	for _, tc := range []struct {
		name, status, stat string
		rss                int64
		cpu                float64
		fails              bool
	}{
		{name: "grbd", status: status, stat: stat, rss: 50 << 20, cpu: 3},
		{name: "command with spaces and parens", status: status,
			stat: "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 100 1 0 0 20 0 1 0 5 100 10", rss: 50 << 20, cpu: 1.01},
		{name: "no VmHWM", status: "Name:\tx\n", stat: stat, fails: true},
		{name: "VmHWM not in kB", status: "VmHWM:\t12 MB\n", stat: stat, fails: true},
		{name: "short stat", status: status, stat: "1 (x) S 1 2 3", fails: true},
		{name: "no command", status: status, stat: "garbage", fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rss, cpu, err := parseProcStats(tc.status, tc.stat)
			if tc.fails {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.rss, rss)
			require.InDelta(t, tc.cpu, cpu, 1e-9)
		})
	}
}

func TestReadProcStatsSelf(t *testing.T) {
	rss, cpu, err := readProcStats(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, rss, int64(1<<20))
	require.GreaterOrEqual(t, cpu, 0.0)
	_, _, err = readProcStats(-1)
	require.Error(t, err)
}

// TestChildLifecycle starts a child that prints a ready line, reads its
// resources, and stops it; a child that exits early reports its log.
func TestChildLifecycle(t *testing.T) {
	dir := t.TempDir()
	c, rest, err := startChild(context.Background(), dir, "sh", []string{"sh", "-c", "echo ready nbd://x:1; exec sleep 60"}, readiness{Line: "ready "})
	require.NoError(t, err)
	require.Equal(t, "nbd://x:1", rest)
	_, _, err = readProcStats(c.PID())
	require.NoError(t, err)
	require.NoError(t, c.stop())
	require.NoError(t, c.stop(), "stop twice")

	_, _, err = startChild(context.Background(), dir, "early", []string{"sh", "-c", "echo boom >&2; exit 3"}, readiness{Line: "ready "})
	require.ErrorContains(t, err, "boom")
	_, _, err = startChild(context.Background(), dir, "missing", []string{"no-such-program-grbd"}, readiness{Line: "ready "})
	require.ErrorIs(t, err, ErrMissingTool)
}

package bench

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseFio(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		iops       float64
		flush      bool
	}{
		{"randwrite QD32", "testdata/fio-randwrite.json", 57078.9, false},
		{"randwrite QD1 fsync=1", "testdata/fio-fsync.json", 3194.9, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile(tc.file) // real fio 3.33 output, with its preamble line
			require.NoError(t, err)
			r, err := parseFio(b, "job")
			require.NoError(t, err)
			require.Equal(t, "job", r.Job)
			require.InDelta(t, tc.iops, r.IOPS, 0.1)
			require.InDelta(t, r.IOPS*4096, r.BW, r.BW*0.01, "4 KiB blocks")
			require.Positive(t, r.P50)
			require.Greater(t, r.P99, r.P50)
			require.GreaterOrEqual(t, r.P999, r.P99)
			if tc.flush {
				require.Positive(t, r.FlushP99, "the flushes of fsync=1")
			} else {
				require.Zero(t, r.FlushP99)
			}
		})
	}
}

func TestParseFioErrors(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"not json", "fio: connected\ngarbage"},
		{"no jobs", `{"jobs": []}`},
		{"job error", `{"jobs": [{"error": 5}]}`},
		{"no I/O", `{"jobs": [{"error": 0, "read": {"iops": 0}, "write": {"iops": 0}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFio([]byte(tc.in), tc.name)
			require.ErrorIs(t, err, ErrFio)
		})
	}
}

func TestAverage(t *testing.T) {
	runs := []Result{
		{System: "a", Job: "w", IOPS: 100, P99: 10, Round: 1},
		{System: "b", Job: "w", IOPS: 50, P99: 30, Round: 1},
		{System: "a", Job: "w", IOPS: 300, P99: 20, Round: 2},
		{System: "b", Job: "w", IOPS: 70, P99: 50, Round: 2},
	}
	require.Equal(t, []Result{
		{System: "a", Job: "w", IOPS: 200, P99: 15},
		{System: "b", Job: "w", IOPS: 60, P99: 40},
	}, average(runs))
}

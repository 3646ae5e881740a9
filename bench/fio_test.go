package bench

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseFio(t *testing.T) {
	b, err := os.ReadFile("testdata/fio-randwrite.json") // real fio 3.33 output, with its preamble line
	require.NoError(t, err)
	r, err := parseFio(b, "randwrite")
	require.NoError(t, err)
	require.InDelta(t, 57078.9, r.IOPS, 0.1)
	require.Greater(t, r.BW, 200e6)
	require.Greater(t, r.P99, r.P50)
	require.GreaterOrEqual(t, r.P999, r.P99)

	for name, in := range map[string]string{
		"not json":  "fio: connected\ngarbage",
		"no jobs":   `{"jobs": []}`,
		"job error": `{"jobs": [{"error": 5}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseFio([]byte(in), name)
			require.ErrorIs(t, err, ErrFio)
		})
	}
}

func TestWriteTableRatios(t *testing.T) {
	rs := []Result{
		{System: "nbdkit-file", Workload: "w", IOPS: 1000},
		{System: "grbd", Workload: "w", IOPS: 900},
		{System: "grbd", Workload: "other", IOPS: 5},
	}
	require.InDelta(t, 0.9, Ratio(rs, rs[1], "nbdkit-file"), 1e-9)
	require.Zero(t, Ratio(rs, rs[2], "nbdkit-file"), "no baseline for that workload")
	var sb strings.Builder
	require.NoError(t, WriteTable(&sb, rs, "nbdkit-file"))
	require.Contains(t, sb.String(), "0.90x")
}

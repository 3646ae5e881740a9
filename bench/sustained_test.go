package bench

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseBWLog(t *testing.T) {
	ws, err := parseBWLog(strings.NewReader("5000, 1024000, 1, 0, 0\n10000, 512000, 1, 0, 0\n"))
	require.NoError(t, err)
	require.Equal(t, []float64{1024000 * 1024, 512000 * 1024}, ws)
	_, err = parseBWLog(strings.NewReader("5000, fast, 1, 0, 0\n"))
	require.ErrorIs(t, err, ErrFio)
	_, err = parseBWLog(strings.NewReader(""))
	require.ErrorIs(t, err, ErrFio)
}

func TestSustainedPass(t *testing.T) {
	for _, tc := range []struct {
		name    string
		windows []float64
		pass    bool
	}{
		{"steady", []float64{100, 110, 90, 100}, true},
		{"a collapse below half the mean", []float64{200, 200, 200, 40}, false},
		{"a burst above twice the mean", []float64{10, 10, 10, 100}, false},
		{"no windows", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := SustainedResult{Windows: tc.windows}
			for _, w := range tc.windows {
				r.Mean += w / float64(len(tc.windows))
			}
			require.Equal(t, tc.pass, r.Pass())
		})
	}
	require.False(t, SustainedResult{Windows: []float64{1}, Mean: 1, Outcome: Outcome{Error: "x"}}.Pass())
}

func TestWriteSustained(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeSustained(&b, []SustainedResult{
		{System: "a", Job: SustainedJob, Window: 5, Windows: []float64{1e9, 1.2e9}, Mean: 1.1e9},
		{System: "b", Job: SustainedJob, Window: 5, Outcome: Outcome{Error: "fio died"}},
	}))
	require.Regexp(t, `a\s+mean 1100\s+1000 1200\s+pass`, b.String())
	require.Contains(t, b.String(), "FAILED: fio died")
}

// TestSustainedRun runs the sustained job for real against nbdkit for 3 s
// in 1 s windows.
func TestSustainedRun(t *testing.T) {
	for _, tool := range []string{"fio", "nbdkit"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (make deps)", tool)
		}
	}
	dir := t.TempDir()
	s := NBDKitFile()
	uri, err := s.Start(t.Context(), filepath.Join(dir, "nbdkit"), 64<<20)
	require.NoError(t, err)
	defer s.Stop()
	jobsDir, err := WriteJobs(filepath.Join(dir, "jobs"), time.Second, 0)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r := sustained(ctx, jobsDir, s.Name(), uri, 3*time.Second, time.Second)
	require.Empty(t, r.Error)
	require.GreaterOrEqual(t, len(r.Windows), 2)
	require.Positive(t, r.Mean)
}

func TestCheckSustained(t *testing.T) {
	for _, tc := range []struct {
		d  time.Duration
		ok bool
	}{
		{time.Second, true},
		{90 * time.Second, true},
		{999 * time.Millisecond, false},
		{0, false},
		{-time.Second, false},
	} {
		t.Run(tc.d.String(), func(t *testing.T) {
			err := CheckSustained(tc.d)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrConfig)
			if tc.d != 0 { // 0 is Config's "no sustained run"
				// Run refuses it before it looks for fio or starts anything.
				_, err = Run(t.Context(), Config{Sustained: tc.d, Dir: t.TempDir()})
				require.ErrorIs(t, err, ErrConfig)
			}
		})
	}
}

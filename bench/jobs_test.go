package bench

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestJobFilesEmbedded: every job file in bench/jobs is embedded, run by
// the harness (JobOrder), has its options file, and appears in kernel.fio;
// the user-facing file targets ${NBD_URI}.
func TestJobFilesEmbedded(t *testing.T) {
	entries, err := fs.ReadDir(jobFS, "jobs")
	require.NoError(t, err)
	var files []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".fio"); ok && name != "kernel" {
			files = append(files, name)
		}
	}
	require.ElementsMatch(t, JobOrder, files, "JobOrder must list every bench/jobs/*.fio")
	for _, s := range ShortJobs {
		require.Contains(t, JobOrder, s)
	}
	kernel, err := jobFS.ReadFile("jobs/kernel.fio")
	require.NoError(t, err)

	jobs, err := Jobs()
	require.NoError(t, err)
	require.Len(t, jobs, len(JobOrder))
	for _, j := range jobs {
		t.Run(j.Name, func(t *testing.T) {
			require.NotEmpty(t, j.RW())
			require.NotEmpty(t, j.Options["bs"])
			require.NotEmpty(t, j.Options["iodepth"])
			b, err := jobFS.ReadFile("jobs/" + j.Name + ".fio")
			require.NoError(t, err)
			require.Contains(t, string(b), "["+j.Name+"]\n")
			require.Contains(t, string(b), "NBD_URI=")
			for _, inc := range []string{"inc/nbd.inc", "inc/common.inc", "inc/duration.inc", "inc/" + j.Name + ".inc"} {
				require.Contains(t, string(b), "include "+inc+"\n")
			}
			require.Contains(t, string(kernel), "["+j.Name+"]\ninclude inc/"+j.Name+".inc\n")
		})
	}
	nbd, err := jobFS.ReadFile("jobs/inc/nbd.inc")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"ioengine": "nbd", "uri": "${NBD_URI}"}, parseOptions(string(nbd)))
}

func TestJobWrites(t *testing.T) {
	for rw, want := range map[string]bool{"read": false, "randread": false, "write": true, "randwrite": true, "randrw": true} {
		require.Equal(t, want, Job{Options: map[string]string{"rw": rw}}.Writes(), rw)
	}
}

func TestLookupJobUnknown(t *testing.T) {
	_, err := LookupJob("nope")
	require.ErrorIs(t, err, ErrUnknownJob)
}

// TestWriteJobs: the rendered tree is the embedded one, byte for byte,
// except inc/duration.inc.
func TestWriteJobs(t *testing.T) {
	dir, err := WriteJobs(t.TempDir(), 3*time.Second, 1500*time.Millisecond)
	require.NoError(t, err)
	n := 0
	err = fs.WalkDir(jobFS, "jobs", func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if d.IsDir() {
			return nil
		}
		n++
		want, err := jobFS.ReadFile(p)
		require.NoError(t, err)
		rel := strings.TrimPrefix(p, "jobs/")
		got, err := os.ReadFile(filepath.Join(dir, rel))
		require.NoError(t, err)
		if rel == durationInc {
			require.Equal(t, map[string]string{"runtime": "3", "ramp_time": "2"}, parseOptions(string(got)))
			return nil
		}
		require.Equal(t, string(want), string(got), rel)
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, n, 2*len(JobOrder))

	require.Contains(t, durationOptions(0, -time.Second), "runtime=1\nramp_time=0\n", "fio needs runtime >= 1")
}

// TestKernelJobsRunOnAFile runs a job of kernel.fio with fio against a
// regular file, as a user would against /dev/nbdX (there is no kernel NBD
// driver here).
func TestKernelJobsRunOnAFile(t *testing.T) {
	if _, err := exec.LookPath("fio"); err != nil {
		t.Skip("needs fio")
	}
	dir, err := WriteJobs(t.TempDir(), time.Second, 0)
	require.NoError(t, err)
	dev := filepath.Join(t.TempDir(), "dev.img")
	require.NoError(t, makeImage(dev, 16<<20))
	cmd := exec.Command("fio", "--output-format=json", "--section=randwrite-4k-qd1", filepath.Join(dir, "kernel.fio"))
	cmd.Env = append(os.Environ(), "NBD_DEV="+dev)
	out, err := cmd.Output()
	require.NoError(t, err, string(out))
	r, err := parseFio(out, "randwrite-4k-qd1")
	require.NoError(t, err)
	require.Positive(t, r.IOPS)
}

package bench

import (
	"bufio"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// jobFS holds bench/jobs, the fio job files users run by hand
// (`NBD_URI=... fio bench/jobs/NAME.fio`); the harness runs the very same
// files. Layout:
//
//	jobs/NAME.fio        one workload against ${NBD_URI} (fio's nbd engine)
//	jobs/kernel.fio      every workload against ${NBD_DEV} (libaio), one per section
//	jobs/inc/NAME.inc    the workload's own options (rw, bs, iodepth, ...)
//	jobs/inc/common.inc  options every job shares
//	jobs/inc/duration.inc  runtime and ramp; the harness writes its own
//	jobs/inc/nbd.inc, kernel.inc  the two targets
//
//go:embed jobs
var jobFS embed.FS

// durationInc is the one file the harness replaces when it renders the jobs.
const durationInc = "inc/duration.inc"

// JobOrder is the order the harness runs the jobs in. Sequential writes come
// first so every later read finds written data on every system.
var JobOrder = []string{
	"seqwrite-1m-qd8",
	"seqread-1m-qd8",
	"randwrite-4k-qd32",
	"randread-4k-qd32",
	"randrw70-4k-qd32",
	"randwrite-4k-qd1",
	"randread-4k-qd1",
	"randwrite-4k-qd1-fsync",
}

// ShortJobs is the subset `grbd bench --short` runs: one sequential and
// two random jobs, enough to exercise every code path of the harness.
var ShortJobs = []string{"seqwrite-1m-qd8", "randwrite-4k-qd32", "randread-4k-qd32"}

// Job is one embedded workload: its name (the job file's base name) and the
// options of its inc/NAME.inc file.
type Job struct {
	Name    string
	Options map[string]string // e.g. rw=randwrite, bs=4k, iodepth=32
}

// RW is fio's rw= of the job.
func (j Job) RW() string { return j.Options["rw"] }

// Writes reports whether the job writes (anything but read and randread).
func (j Job) Writes() bool { return j.RW() != "read" && j.RW() != "randread" }

// Jobs returns the embedded jobs in JobOrder.
func Jobs() ([]Job, error) {
	jobs := make([]Job, 0, len(JobOrder))
	for _, name := range JobOrder {
		j, err := LookupJob(name)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// LookupJob returns the embedded job called name.
func LookupJob(name string) (Job, error) {
	if _, err := fs.Stat(jobFS, path.Join("jobs", name+".fio")); err != nil {
		return Job{}, fmt.Errorf("%w: %q (have %s)", ErrUnknownJob, name, strings.Join(JobOrder, ", "))
	}
	b, err := jobFS.ReadFile(path.Join("jobs", "inc", name+".inc"))
	if err != nil {
		return Job{}, fmt.Errorf("%w: %q has no inc/%s.inc: %v", ErrUnknownJob, name, name, err)
	}
	return Job{Name: name, Options: parseOptions(string(b))}, nil
}

// parseOptions reads fio "key=value" and bare "flag" lines, skipping
// comments (';' or '#') and section headers.
func parseOptions(s string) map[string]string {
	opts := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == ';' || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		opts[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return opts
}

// WriteJobs renders the embedded job tree into dir, with inc/duration.inc
// replaced by runtime and ramp (whole seconds, runtime at least 1). Every
// other byte is the shipped job files. It returns dir.
func WriteJobs(dir string, runtime, ramp time.Duration) (string, error) {
	err := fs.WalkDir(jobFS, "jobs", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, "jobs"), "/")
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := jobFS.ReadFile(p)
		if err != nil {
			return err
		}
		if rel == durationInc {
			b = []byte(durationOptions(runtime, ramp))
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		return "", fmt.Errorf("bench: render jobs into %s: %w", dir, err)
	}
	return dir, nil
}

func durationOptions(runtime, ramp time.Duration) string {
	secs := func(d time.Duration) string { return strconv.Itoa(int(d.Round(time.Second) / time.Second)) }
	if runtime < time.Second {
		runtime = time.Second
	}
	return "; written by grbd bench\nruntime=" + secs(runtime) + "\nramp_time=" + secs(max(ramp, 0)) + "\n"
}

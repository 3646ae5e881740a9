// Package bench runs grbd's fio benchmark suite: it starts every system under
// test (nbdkit's file plugin as the baseline, qemu-nbd's quorum driver, grbd
// clusters of one to three data nodes run as real `grbd node` processes), runs
// the same embedded fio job files (bench/jobs) against each in one run,
// interleaved round by round so machine drift affects all alike, and stops
// them. It also measures resync throughput, failover time, peak RSS and CPU
// time per process, and reports a table, JSON, a PNG plot and the
// performance goals of issues 2, 3 and 17, each pass or fail.
//
// Config plus Run is the whole API; cmd/grbd only binds flags to Config.
// Systems are started through the small System interface, with optional
// capabilities (Processes, Cluster) as separate interfaces. Nothing here is
// safe for concurrent use: a benchmark owns the machine while it runs.
package bench

import "errors"

// Errors callers branch on.
var (
	// ErrMissingTool means fio, nbdkit or another required program is absent.
	ErrMissingTool = errors.New("bench: required program not found")
	// ErrFio means fio ran but failed or printed no usable result.
	ErrFio = errors.New("bench: fio failed")
	// ErrSkip marks a system or measurement that cannot run here (a missing
	// grbd feature, say); it is reported as skipped with the reason, not as
	// a failure.
	ErrSkip = errors.New("bench: skipped")
	// ErrUnknownJob is returned for a job name with no embedded job file.
	ErrUnknownJob = errors.New("bench: unknown job")
	// ErrUnknownSystem is returned for a system name not in the suite.
	ErrUnknownSystem = errors.New("bench: unknown system")
	// ErrCluster means a grbd cluster did not reach the expected state.
	ErrCluster = errors.New("bench: cluster not ready")
	// ErrNBD is a protocol error or refusal from an NBD server.
	ErrNBD = errors.New("bench: nbd")
	// ErrConfig is returned for a Config that cannot be run as asked.
	ErrConfig = errors.New("bench: bad config")
)

package chaos

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Needs are what a scenario requires of the machine and the binary.
type Needs uint

// Needs flags.
const (
	// NeedRoot: mounts (tmpfs) or nftables.
	NeedRoot Needs = 1 << iota
	// NeedNft: the nft program (nftables partitions); implies root.
	NeedNft
	// NeedFailover: the quorum/witness/failover of issue 4 (detected by
	// `grbd witness --help` succeeding).
	NeedFailover
	// NeedDialOverrides: members honour --dial-override (detected after
	// start: some proxy accepted a connection).
	NeedDialOverrides
	// NeedStatic: a build without the quorum (static primary): the
	// scenario does by hand what the control plane would refuse.
	NeedStatic
)

// Shape is the cluster a scenario runs on.
type Shape struct {
	DataNodes int
	Witness   bool
	Protocol  string // default C
	// Replication: more replication settings (ClusterConfig.Replication).
	Replication string
	Proxies     bool
	// TmpfsData names a data node whose data directory is a small tmpfs
	// (disk-full faults), or with Ext4Data a small loop-mounted ext4 with
	// errors=remount-ro (read-only faults, TriggerFSError).
	TmpfsData string
	Ext4Data  bool
	// ExtraYAML is appended to the config (see ClusterConfig).
	ExtraYAML string
}

// Scenario is a cluster shape and a fault schedule.
type Scenario struct {
	Name  string
	Doc   string
	Shape Shape
	Needs Needs
	// Expected anomaly kinds: known gaps the suite must detect (they are
	// reported but do not fail the run).
	Expected []string
	// Inject runs the faults while the workload runs, and heals them. It
	// returns an error only when the harness itself fails; misbehaviour of
	// the cluster is reported with Run.Anomaly.
	Inject func(ctx context.Context, r *Run) error
}

// Env is where scenarios run.
type Env struct {
	Bin  string // grbd binary
	Dir  string // parent of each run's directory
	Logf func(format string, args ...any)
	// Soak, when positive, repeats each scenario's fault rounds until it has
	// passed (make chaos); zero runs the short schedule (make test).
	Soak time.Duration
	// CheckTimeout bounds each linearizability check (default 2 minutes).
	CheckTimeout time.Duration
	// Workload overrides workload defaults (Target, Seed and the block
	// layout are set by Execute).
	Workload WorkloadConfig
	// KeepData keeps the members' data directories of passing runs (they
	// are removed by default; failed runs keep everything).
	KeepData bool
}

// Run is one execution of a scenario, handed to its Inject.
type Run struct {
	C    *Cluster
	W    *Workload
	Rand *rand.Rand
	Env  Env

	report *Report
	until  time.Time // soak end; zero in the short schedule
}

// Round reports whether fault round i (from 0) should run: short runs do
// `short` rounds, soak runs keep going until the soak time is up (at most
// 10,000 rounds).
func (r *Run) Round(i, short int) bool {
	if r.until.IsZero() {
		return i < short
	}
	return i < 10_000 && time.Now().Before(r.until)
}

// Note records an observation in the report.
func (r *Run) Note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.report.Notes = append(r.report.Notes, s)
	r.C.Events().Logf("note: %s", s)
}

// Anomaly records a scenario-level failure (the cluster misbehaved).
func (r *Run) Anomaly(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.report.Anomalies = append(r.report.Anomalies, Anomaly{Kind: AnomalyScenario, Block: -1, Detail: s})
	r.C.Events().Logf("ANOMALY: %s", s)
}

// Progress waits (up to 30s) until n more writes are acknowledged.
func (r *Run) Progress(ctx context.Context, n int64) error {
	return r.ProgressWithin(ctx, n, 30*time.Second)
}

// ProgressWithin waits up to d until n more writes are acknowledged.
func (r *Run) ProgressWithin(ctx context.Context, n int64, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return r.W.WaitWrites(ctx, n)
}

// expectWrites waits (up to 30s) for n more acknowledged writes; when they
// do not come, that is an anomaly described by format and args.
func (r *Run) expectWrites(ctx context.Context, n int64, format string, args ...any) {
	if err := r.Progress(ctx, n); err != nil {
		r.Anomaly("%s: %v", fmt.Sprintf(format, args...), err)
	}
}

// Sleep waits a random time in [lo, hi), or until ctx ends.
func (r *Run) Sleep(ctx context.Context, lo, hi time.Duration) {
	d := lo
	if hi > lo {
		d += time.Duration(r.Rand.Int64N(int64(hi - lo)))
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// WaitInSync waits up to d for every data node to be UpToDate; a timeout is
// an anomaly (resync must finish once faults heal).
func (r *Run) WaitInSync(ctx context.Context, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := r.C.WaitInSync(ctx); err != nil {
		r.Anomaly("not in sync %v after healing: %v", d, err)
		return false
	}
	return true
}

// rejoin starts name again and waits up to 60 s for it to be in sync.
func (r *Run) rejoin(ctx context.Context, name string) error {
	if err := r.C.Start(ctx, name); err != nil {
		return err
	}
	r.WaitInSync(ctx, 60*time.Second)
	return nil
}

// Execute runs a scenario with a seed: start the cluster, start the
// workload, inject, heal, verify every block, stop cleanly, compare images
// when every data node is in sync, check the history and write the report
// under env.Dir. A scenario that cannot run here returns ErrSkip.
func Execute(ctx context.Context, env Env, sc Scenario, seed uint64) (*Report, error) {
	if err := checkNeeds(env, sc.Needs); err != nil {
		return nil, err
	}
	if env.CheckTimeout <= 0 {
		env.CheckTimeout = 2 * time.Minute
	}
	dir := filepath.Join(env.Dir, fmt.Sprintf("%s-%d", sc.Name, seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: run dir: %w", err)
	}
	ev := NewEvents(RealClock, env.Logf)
	rep := &Report{Scenario: sc.Name, Seed: seed, Binary: env.Bin, Expected: sc.Expected}
	ev.Logf("scenario %s seed %d in %s (replay: %s)", sc.Name, seed, dir, rep.Replay())

	ccfg, cleanup, err := clusterConfig(env, sc.Shape, dir, ev)
	defer cleanup()
	if err != nil {
		return nil, err
	}
	c, err := NewCluster(ccfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r := &Run{C: c, Env: env, Rand: rand.New(rand.NewPCG(seed, 0x5eed)), report: rep}
	if env.Soak > 0 {
		r.until = time.Now().Add(env.Soak)
	}
	if err := startCluster(ctx, c, sc); err != nil {
		if IsSkip(err) { // nothing worth keeping
			c.Close()
			_ = os.RemoveAll(dir)
		}
		return nil, err
	}

	wcfg := env.Workload
	wcfg.Target, wcfg.Seed, wcfg.Logf = c, seed, ev.Logf
	// Lighter than the workload's defaults: the machine is shared with the
	// members themselves (and, in CI, with other jobs).
	wcfg.Workers = cmp.Or(wcfg.Workers, 2)
	wcfg.Think = cmp.Or(wcfg.Think, 3*time.Millisecond)
	wcfg.Blocks = max(wcfg.Blocks, 64)
	// Slots of 64 KiB (the journal's default in-place-min), a fifth of the
	// reads and writes over a whole slot: the large-write path (extent
	// records, in-place writes, their catch-up and replay) runs under
	// every fault as 4 KiB writes do.
	wcfg.Span = cmp.Or(wcfg.Span, 16)
	wcfg.LargePct = cmp.Or(wcfg.LargePct, 20)
	// One spare block-sized slot past the last block is free for probes.
	wcfg.Base, wcfg.Stride = 0, deviceBytes(ccfg.DeviceSize)/int64(wcfg.Blocks+1)/BlockSize*BlockSize
	w, err := NewWorkload(wcfg)
	if err != nil {
		return nil, err
	}
	r.W = w
	w.Start(ctx)
	defer w.Stop()
	if err := r.Progress(ctx, 200); err != nil {
		return nil, fmt.Errorf("chaos: workload never got going: %w", err)
	}

	injectErr := sc.Inject(ctx, r)
	finish(ctx, r, injectErr == nil)
	rep.Events = ev.List()
	rep.Outages = w.Outages()
	rep.Analyze(w.Ops(), true, env.CheckTimeout)
	rep.Duration = ev.Since()
	if err := rep.Write(dir); err != nil {
		return rep, err
	}
	if rep.OK() && injectErr == nil && !env.KeepData {
		c.RemoveData()
	}
	if injectErr != nil {
		return rep, fmt.Errorf("chaos: scenario %s: %w", sc.Name, injectErr)
	}
	return rep, nil
}

// finish ends a run: progress after healing, the verification reads, a
// clean stop and the image comparison.
// noteExtents notes how many large writes the running data nodes logged as
// extent records (written in place) since they started: the report shows
// that the large-write path ran under the faults.
func (r *Run) noteExtents(ctx context.Context) {
	var parts []string
	for _, m := range r.C.DataNodes() {
		if !r.C.Running(m.Name) {
			continue
		}
		if st, err := r.C.Status(ctx, m.Name); err == nil {
			parts = append(parts, fmt.Sprintf("%s %d", m.Name, st.Journal.ExtentRecords))
		}
	}
	if len(parts) > 0 {
		r.Note("extent records (large writes in place) since each node started: %s", strings.Join(parts, ", "))
	}
}

func finish(ctx context.Context, r *Run, healthy bool) {
	c, w := r.C, r.W
	if healthy && !w.Stopped() {
		r.expectWrites(ctx, 100, "writes do not resume after the faults healed")
	}
	w.Stop()
	vctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := w.Verify(vctx); err != nil {
		r.Note("verification reads incomplete: %v", err)
	}
	running := 0
	for _, m := range c.DataNodes() {
		if c.Running(m.Name) {
			running++
		}
	}
	for name, tail := range c.Crashes() {
		r.Anomaly("member %s died on its own (not killed by the harness); its log ends:\n%s", name, tail)
	}
	compare := running == len(c.DataNodes()) && running > 1 && r.WaitInSync(ctx, 60*time.Second)
	r.noteExtents(ctx)
	r.noteCutExtents()
	if err := c.StopAll(ctx); err != nil {
		r.Anomaly("clean stop failed: %v", err)
		return
	}
	if !compare {
		return
	}
	var sums []string
	for _, m := range c.DataNodes() {
		s, err := c.ImageSum(m.Name)
		if err != nil {
			r.Anomaly("%v", err)
			return
		}
		sums = append(sums, s)
	}
	for i := range sums {
		sums[i] = c.DataNodes()[i].Name + "=" + sums[i][:16]
	}
	nodes := c.DataNodes()
	for i, s := range sums[1:] {
		if s[len(s)-16:] != sums[0][len(sums[0])-16:] {
			where := describeImageDiff(nodes[0], nodes[i+1])
			r.Anomaly("images differ after a clean stop with every node UpToDate: %s; %s and %s: %s",
				strings.Join(sums, " "), nodes[0].Name, nodes[i+1].Name, where)
			return
		}
	}
	r.Note("images identical: %s", strings.Join(sums, " "))
}

func checkNeeds(env Env, n Needs) error {
	if n&(NeedRoot|NeedNft) != 0 && os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root", ErrSkip)
	}
	if n&NeedNft != 0 {
		if _, err := lookNft(); err != nil {
			return fmt.Errorf("%w: needs nft (apt-get install nftables, or `make deps` as root)", ErrSkip)
		}
	}
	if n&NeedStatic != 0 && SupportsWitness(env.Bin) {
		return fmt.Errorf("%w: static-primary builds only (this binary has the quorum; a failover scenario covers the same ground)", ErrSkip)
	}
	if n&NeedFailover != 0 && !SupportsWitness(env.Bin) {
		return fmt.Errorf("%w: needs automatic failover with a witness (issue 4): `%s witness --help` fails", ErrSkip, filepath.Base(env.Bin))
	}
	return nil
}

// Sizes of every scenario's cluster: small, so that resyncs and disk-full
// faults are quick.
const (
	scenarioDevice  = "64MiB"
	scenarioJournal = "32MiB"
)

// clusterConfig builds the cluster config of a shape; cleanup unmounts what
// it mounted and must always run.
func clusterConfig(env Env, s Shape, dir string, ev *Events) (ClusterConfig, func(), error) {
	cfg := ClusterConfig{Bin: env.Bin, Dir: dir, DataNodes: max(s.DataNodes, 1), Witness: s.Witness,
		Protocol: s.Protocol, Replication: s.Replication, Proxies: s.Proxies, ExtraYAML: s.ExtraYAML, Events: ev,
		DeviceSize: scenarioDevice, JournalMaxSize: scenarioJournal}
	cleanup := func() {}
	if s.TmpfsData == "" {
		return cfg, cleanup, nil
	}
	// Room for the thick-provisioned image, the journal bound and a little
	// slack (meta, segment headers).
	mnt := filepath.Join(dir, "tmpfs-"+s.TmpfsData)
	mount := MountTmpfs
	if s.Ext4Data {
		mount = MountExt4
	}
	unmount, err := mount(mnt, deviceBytes(scenarioDevice)+deviceBytes(scenarioJournal)+8<<20)
	if err != nil {
		return cfg, cleanup, err
	}
	cleanup = func() {
		if err := unmount(); err != nil {
			ev.Logf("%v", err)
		}
	}
	cfg.DataDir = func(name string) string {
		if name == s.TmpfsData {
			return filepath.Join(mnt, name)
		}
		return filepath.Join(dir, name)
	}
	return cfg, cleanup, nil
}

func startCluster(ctx context.Context, c *Cluster, sc Scenario) error {
	if err := c.StartAll(ctx); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := c.WaitPrimary(wctx, ""); err != nil {
		return err
	}
	if len(c.DataNodes()) > 1 {
		if err := c.WaitInSync(wctx); err != nil {
			return err
		}
	}
	if sc.Needs&NeedDialOverrides != 0 {
		a, b := c.DataNodes()[0].Name, c.DataNodes()[1].Name
		if c.Proxies() == nil || c.Proxies().Accepted(a, b)+c.Proxies().Accepted(b, a) == 0 {
			return fmt.Errorf("%w: members do not honour --dial-override yet (no connection went through the proxies)", ErrSkip)
		}
	}
	return nil
}

// deviceBytes parses the sizes this package writes (NNMiB, NNGiB).
func deviceBytes(s string) int64 {
	var n int64
	var unit string
	if _, err := fmt.Sscanf(s, "%d%s", &n, &unit); err != nil {
		panic(fmt.Sprintf("chaos: size %q", s))
	}
	switch unit {
	case "MiB":
		return n << 20
	case "GiB":
		return n << 30
	}
	panic(fmt.Sprintf("chaos: size %q", s))
}

// IsSkip reports whether err means the scenario cannot run here.
func IsSkip(err error) bool { return errors.Is(err, ErrSkip) }

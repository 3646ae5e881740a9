package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// QuorumYAML is appended to the config of the failover scenarios: quorum
// settings (tick, lease, failover-timeout, on-no-quorum, ...). Empty: the
// defaults (auto-failover on) are what the suite checks.
const QuorumYAML = ""

// Scenarios lists every scenario, in the order the suite runs them.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "single-kill9", Doc: "kill -9 the only node under load and restart it: no acknowledged write may be lost (the page cache survives a process crash)",
			Shape: Shape{DataNodes: 1}, Inject: injectKillRestart(rolePrimary)},
		{Name: "single-torn-tail", Doc: "kill -9, then truncate the last journal segment inside an unsynced record (a power loss): the node cuts the tail; only unsynced writes may be lost",
			Shape: Shape{DataNodes: 1}, Inject: injectTornTail},
		{Name: "single-journal-bitflip", Doc: "flip a bit in a synced journal record: the node must refuse to start; undone, it starts with nothing lost. A flip in the unsynced tail is cut (or refused), never applied",
			Shape: Shape{DataNodes: 1}, Inject: injectJournalBitFlip},
		{Name: "single-data-bitflip", Doc: "flip bits in data.img blocks of a cleanly stopped node, or copy another written block over them (a misdirected write: a whole block that ends in its own CRC-32C): with no peer to repair them, reads of those blocks must fail (EIO), never return the bad bytes",
			Shape: Shape{DataNodes: 1}, Inject: injectDataBitFlip},
		{Name: "single-disk-full", Doc: "fill the node's filesystem under load, then free it: writes may fail, nothing acknowledged may be lost, service resumes (after a restart if the store failed)",
			Shape: Shape{DataNodes: 1, TmpfsData: "n0"}, Needs: NeedRoot, Inject: injectDiskFull},
		{Name: "two-kill9-secondary", Doc: "2 data nodes, protocol C: kill -9 the secondary under load (a static primary goes on alone; a quorum build without witness fences), restart it: it resyncs and the images end identical",
			Shape: Shape{DataNodes: 2}, Inject: injectKillRestart(roleSecondary)},
		{Name: "two-pause-secondary", Doc: "protocol C: SIGSTOP the secondary (writes stall or continue without it), SIGCONT, resync",
			Shape: Shape{DataNodes: 2}, Inject: injectPause(roleSecondary)},
		{Name: "failover-pause-secondary-protocol-a", Doc: "2 data + witness, protocol A, congestion-fill 1 MiB: SIGSTOP the secondary under load: writes complete until 1 MiB is queued for it, then wait (on-congestion: block) until the peer timeout cuts it off and it is Outdated; SIGCONT: it catches up, nothing acknowledged lost",
			Shape: Shape{DataNodes: 2, Witness: true, Protocol: "A", Replication: "congestion-fill: 1MiB", ExtraYAML: QuorumYAML}, Needs: NeedFailover, Inject: injectPause(roleSecondary)},
		{Name: "two-partition", Doc: "2 data nodes, protocol C: partition primary and secondary with nftables, heal: writes stall, fence or continue (a static primary drops the peer; a quorum build must outdate it first and cannot without a witness), then resync",
			Shape: Shape{DataNodes: 2}, Needs: NeedNft, Inject: injectPartition(false)},
		{Name: "two-oneway-partition", Doc: "protocol C: drop one direction only between primary and secondary, heal, resync",
			Shape: Shape{DataNodes: 2}, Needs: NeedNft, Inject: injectPartition(true)},
		{Name: "two-crash-promote", Doc: "static primary, protocol C: stall the secondary (SIGSTOP), kill -9 the primary and then the secondary, start the secondary alone as primary: it must hold every acknowledged write (catches a primary that acks before its peer has the write)",
			Shape: Shape{DataNodes: 2}, Needs: NeedStatic, Inject: injectCrashPromote},
		{Name: "two-latency", Doc: "protocol C through toxiproxy: latency then a bandwidth limit on the primary's link to the secondary; writes go on, resync after clearing",
			Shape: Shape{DataNodes: 2, Proxies: true}, Needs: NeedDialOverrides, Inject: injectLatency},
		{Name: "failover-kill-primary", Doc: "2 data + witness: kill -9 the primary; another node is primary within the timeout with no acknowledged write lost; the old one rejoins",
			Shape: quorumShape(), Needs: NeedFailover, Inject: injectFailoverKill},
		{Name: "failover-primary-power-loss", Doc: "2 data + witness, protocol C: power loss of the primary (kill -9, its journal torn inside the unsynced tail the secondary holds), restart it at once: the secondary takes over, or the old primary takes its role back, finds the secondary holds records it lost and hands over; no acknowledged write is lost, not even an unflushed one (the secondary has it)",
			Shape: quorumShape(), Needs: NeedFailover, Inject: injectPrimaryPowerLoss},
		{Name: "failover-stall-crash", Doc: "2 data + witness, protocol C: stall the secondary (SIGSTOP, shorter than peer-timeout), kill -9 the primary and then the secondary, restart the secondary: it becomes primary and must hold every acknowledged write (catches a primary that acks before its peer has the write)",
			Shape: quorumShape(), Needs: NeedFailover, Inject: injectStallCrash},
		{Name: "failover-isolate-primary", Doc: "2 data + witness: partition the primary from both others: it fences (EIO), the other side takes over; heal: one primary, data identical",
			Shape: quorumShape(), Needs: NeedFailover | NeedNft, Inject: injectIsolatePrimary},
		{Name: "failover-data-bitflip-repair", Doc: "2 data + witness: flip bits in data.img blocks of the cleanly stopped secondary, or copy another written block over them (a misdirected write), restart it, make it primary (stop the old one cleanly), bring the old one back: every damaged block reads back right, repaired from the peer",
			Shape: quorumShape(), Needs: NeedFailover, Inject: injectBitFlipRepair},
		{Name: "failover-disk-full-primary", Doc: "2 data + witness: fill the primary's filesystem under load: its disk fails, it gives the role back and the secondary serves within seconds with nothing lost; free the disk, restart it: it catches up",
			Shape: diskShape(false), Needs: NeedFailover | NeedRoot, Inject: injectDiskFailure(rolePrimary, false)},
		{Name: "failover-readonly-primary", Doc: "2 data + witness: the primary's ext4 goes read-only (errors=remount-ro after an error): its disk fails, the secondary serves with nothing lost; repair the filesystem, restart it: it catches up",
			Shape: diskShape(true), Needs: NeedFailover | NeedRoot, Inject: injectDiskFailure(rolePrimary, true)},
		{Name: "failover-disk-full-secondary", Doc: "2 data + witness: fill the secondary's filesystem under load: its disk fails, it is Outdated and writes go on; free the disk, restart it: it catches up and is cleared",
			Shape: diskShape(false), Needs: NeedFailover | NeedRoot, Inject: injectDiskFailure(roleSecondary, false)},
		{Name: "failover-witness-down", Doc: "2 data + witness: kill -9 the witness: service continues; restart it",
			Shape: quorumShape(), Needs: NeedFailover, Inject: injectWitnessDown},
		{Name: "failover-witness-secondary-down", Doc: "2 data + witness: kill -9 witness and secondary: the primary fences with EIO; restart both: service resumes",
			Shape: quorumShape(), Needs: NeedFailover, Inject: injectNoQuorum},
		{Name: "failover-oneway-cuts", Doc: "2 data + witness: drop one or two random directions among primary, secondary and witness for 0.5-6 s, heal: writes may stall, fence or move meanwhile; every acknowledged write reads back, writes resume, in sync at the end",
			Shape: quorumShape(), Needs: NeedFailover | NeedNft, Inject: injectOneWayCuts},
		{Name: "failover-wiped-witness", Doc: "2 data + witness: kill -9 the secondary and wait until it is Outdated, wipe the witness's data directory (a replaced host), kill -9 the primary; start the witness and the Outdated secondary: nobody may be promoted (the empty witness has no vote, the secondary lacks writes); the primary returns, grbd member replace admits the witness, nothing acknowledged lost",
			Shape: quorumShape(), Needs: NeedFailover, Inject: injectWipedWitness},
		{Name: "failover-resize", Doc: "2 data + witness: grow the device under load with grbd resize and kill -9 the primary racing the command, right after it, or not at all: a grow reported done is on the node that takes over, every size is the old or the new one, images (sizes included) identical at the end",
			Shape: quorumShape(), Needs: NeedFailover, Inject: injectResizeFailover},
		{Name: "failover-admin-ops", Doc: "2 data + witness, under load: grbd verify finds the in-sync copies equal; grbd disconnect Outdates the secondary first, grbd invalidate makes it resync in full; half of those rounds kill -9 the primary meanwhile: the secondary must not take over until the old primary returns; nothing acknowledged lost",
			Shape: Shape{DataNodes: 2, Witness: true, Replication: replaceResyncRate, ExtraYAML: QuorumYAML}, Needs: NeedFailover, Inject: injectAdminOps},
		{Name: "failover-replace-disk", Doc: "2 data + witness: kill -9 the secondary under load and replace its disk (store wiped, control-plane state kept) or its host (data directory wiped, then grbd member replace), or restore an older copy of its data directory (its rewound control-plane log dropped, then grbd member replace), restart it; kill -9 the primary at a random point of the new disk's full sync or after it: the node on the new disk takes over only holding every acknowledged write, else nobody does until the old primary returns; in sync at the end",
			Shape: Shape{DataNodes: 2, Witness: true, Replication: replaceResyncRate, ExtraYAML: QuorumYAML}, Needs: NeedFailover, Inject: injectReplaceDisk},
	}
}

func quorumShape() Shape { return Shape{DataNodes: 2, Witness: true, ExtraYAML: QuorumYAML} }

// ScenarioByName finds a scenario.
func ScenarioByName(name string) (Scenario, bool) {
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// role names a data node by what it does; scenarios resolve it when they
// inject, so they keep working when roles move (issue 4's elections).
type role int

const (
	rolePrimary   role = iota
	roleSecondary      // the first data node that is not the primary
)

// pick resolves a role now.
func (r *Run) pick(ctx context.Context, which role) (string, error) {
	prim, _, err := r.C.Primary(ctx)
	if err != nil {
		return "", err
	}
	if which == rolePrimary {
		return prim, nil
	}
	return r.secondaryOf(prim)
}

// secondaryOf names a data node other than prim.
func (r *Run) secondaryOf(prim string) (string, error) {
	others := otherData(r, prim)
	if len(others) == 0 {
		return "", fmt.Errorf("chaos: no secondary in a one-node cluster")
	}
	return others[0].Name, nil
}

// pair resolves the primary and a secondary now, from one answer: asking
// twice could straddle a change of primary (as right after a partition
// heals) and name the same node twice, which a fault would then cut from
// itself.
func (r *Run) pair(ctx context.Context) (prim, sec string, err error) {
	if prim, err = r.pick(ctx, rolePrimary); err != nil {
		return "", "", err
	}
	sec, err = r.secondaryOf(prim)
	return prim, sec, err
}

// perRound makes an injector whose rounds (2 in a short run) each run round
// against the member in role which at the round's start.
func perRound(which role, round func(ctx context.Context, r *Run, i int, name string) error) func(context.Context, *Run) error {
	return func(ctx context.Context, r *Run) error {
		for i := 0; r.Round(i, 2); i++ {
			name, err := r.pick(ctx, which)
			if err != nil {
				return err
			}
			if err := round(ctx, r, i, name); err != nil {
				return err
			}
		}
		return nil
	}
}

func injectKillRestart(which role) func(context.Context, *Run) error {
	return perRound(which, killRestart)
}

// killRestart kills name and starts it again.
func killRestart(ctx context.Context, r *Run, i int, name string) error {
	r.Sleep(ctx, 200*time.Millisecond, time.Second)
	r.C.Kill(name)
	if len(r.C.DataNodes()) > 1 {
		// Soak rounds sometimes stay away for more writes than the
		// journal retains (MaxSize/2 = 16 MiB): region resync.
		// Without a witness a quorum build fences meanwhile.
		away := int64(200)
		if i > 1 && r.Rand.IntN(3) == 0 {
			away = 5000
		}
		if err := r.ProgressWithin(ctx, away, 5*time.Second+time.Duration(away)*time.Millisecond); err != nil {
			r.Note("writes did not continue while %s was down: %v", name, err)
		}
	} else {
		r.Sleep(ctx, 100*time.Millisecond, 500*time.Millisecond)
	}
	if err := r.C.Start(ctx, name); err != nil {
		return err
	}
	r.expectWrites(ctx, 200, "no writes after restarting %s", name)
	if len(r.C.DataNodes()) > 1 {
		r.WaitInSync(ctx, 60*time.Second)
	}
	return nil
}

// crashWithUnsyncedTail stops flushes until the journal has an unsynced
// tail, then kills node.
func crashWithUnsyncedTail(ctx context.Context, r *Run, node string) error {
	r.W.PauseFlushes(true)
	defer r.W.PauseFlushes(false)
	if err := r.Progress(ctx, 100); err != nil {
		return err
	}
	r.C.Kill(node)
	return nil
}

// tearTail truncates the stopped node's last journal segment inside an
// unsynced record (a power loss) and records it; a journal with nothing
// to tear is noted for round.
func tearTail(r *Run, node string, round int) error {
	d, err := TearJournalTail(r.C.Member(node).DataDir, r.Rand)
	switch {
	case errors.Is(err, ErrNothingToDamage):
		r.Note("round %d: %v", round, err)
	case err != nil:
		return err
	default:
		r.C.Events().Add(EvTear, node, "%s", d)
	}
	return nil
}

// startExpectingRefusal starts a node that must refuse its damaged journal.
// It returns whether the node refused.
func startExpectingRefusal(ctx context.Context, r *Run, node string) (bool, error) {
	err := r.C.Start(ctx, node)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, ErrExited) {
		return false, err
	}
	r.C.Process(node).ExpectExit()
	return true, nil
}

func injectTornTail(ctx context.Context, r *Run) error {
	node := r.C.DataNodes()[0]
	for i := 0; r.Round(i, 2); i++ {
		if err := crashWithUnsyncedTail(ctx, r, node.Name); err != nil {
			return err
		}
		if err := tearTail(r, node.Name, i); err != nil {
			return err
		}
		r.W.NewEra()
		r.C.Events().Add(EvNewEra, node.Name, "era %d", i+1)
		if err := r.C.Start(ctx, node.Name); err != nil {
			r.Anomaly("node refused a torn unsynced tail (it must cut it): %v", err)
			return err
		}
		if !strings.Contains(r.C.Process(node.Name).LogTail(1<<20), "torn") {
			r.Note("round %d: the node's log does not mention the torn tail", i)
		}
		r.expectWrites(ctx, 200, "no writes after the torn-tail restart")
	}
	return nil
}

func injectJournalBitFlip(ctx context.Context, r *Run) error {
	node := r.C.DataNodes()[0]
	for i := 0; r.Round(i, 1); i++ {
		// A flip in synced bytes: the node must refuse to start.
		r.Sleep(ctx, 100*time.Millisecond, 500*time.Millisecond)
		r.C.Kill(node.Name)
		d, err := FlipJournalBit(node.DataDir, r.Rand, true)
		if err != nil {
			return err
		}
		r.C.Events().Add(EvBitFlip, node.Name, "%s", d)
		refused, err := startExpectingRefusal(ctx, r, node.Name)
		if err != nil {
			return err
		}
		if !refused {
			r.Anomaly("node started on a journal with a flipped bit in synced bytes (%s)", d)
			r.C.Kill(node.Name)
		} else if tail := r.C.Process(node.Name).LogTail(8192); !strings.Contains(tail, "corrupt") {
			r.Note("the refusal does not say \"corrupt\": %s", tail)
		}
		if err := d.Undo(); err != nil {
			return err
		}
		r.C.Events().Add(EvHeal, node.Name, "bit flipped back")
		if err := r.C.Start(ctx, node.Name); err != nil {
			return err
		}
		r.expectWrites(ctx, 200, "no writes after undoing the flip")

		// A flip in the unsynced tail: cut like a torn write, or refused.
		if err := crashWithUnsyncedTail(ctx, r, node.Name); err != nil {
			return err
		}
		d, err = FlipJournalBit(node.DataDir, r.Rand, false)
		if errors.Is(err, ErrNothingToDamage) {
			r.Note("%v", err)
		} else if err != nil {
			return err
		} else {
			r.C.Events().Add(EvBitFlip, node.Name, "%s", d)
		}
		r.W.NewEra()
		r.C.Events().Add(EvNewEra, node.Name, "")
		if refused, err = startExpectingRefusal(ctx, r, node.Name); err != nil {
			return err
		}
		if refused {
			r.Note("node refused a flipped bit in its unsynced tail (%s); undone", d)
			if err := d.Undo(); err != nil {
				return err
			}
			if err := r.C.Start(ctx, node.Name); err != nil {
				return err
			}
		}
		r.expectWrites(ctx, 200, "no writes after the unsynced flip")
	}
	return nil
}

// damageBlock damages a written block of data.img in dataDir: the i-th
// damage of a round flips a bit when i is even, and copies another written
// block over it when i is odd (a misdirected or lost write, which leaves a
// whole valid-looking block: the check must be on what the block is, not
// only on whether it is intact). It returns the block and what it did.
func (r *Run) damageBlock(dataDir string, i int) (int, string, error) {
	b := r.writtenBlock()
	if i%2 == 1 {
		if other := r.writtenBlock(); other != b {
			done, err := MisdirectBlock(dataDir, r.W.Offset(b), r.W.Offset(other), BlockSize)
			if err != nil || done {
				return b, fmt.Sprintf("block %d's bytes copied over it (a misdirected write)", other), err
			}
		}
	}
	what, err := FlipDataBit(dataDir, r.W.Offset(b), BlockSize, r.Rand)
	return b, what, err
}

// writtenBlock picks a register that holds an acknowledged write (any one
// when none does): a flipped bit in a block never written is no damage a
// replica could repair.
func (r *Run) writtenBlock() int {
	var written []int
	seen := map[int]bool{}
	for _, op := range r.W.Ops() {
		if op.Kind == OpWrite && op.Outcome == OK && !seen[op.Block] {
			seen[op.Block] = true
			written = append(written, op.Block)
		}
	}
	if len(written) == 0 {
		return r.Rand.IntN(r.W.Blocks())
	}
	slices.Sort(written)
	return written[r.Rand.IntN(len(written))]
}

func injectDataBitFlip(ctx context.Context, r *Run) error {
	node := r.C.DataNodes()[0]
	// Stop the load so nothing overwrites the damaged blocks before the
	// verification reads them, and stop cleanly so that no journal replay
	// rewrites them either.
	r.W.Stop()
	if err := r.C.Stop(ctx, node.Name); err != nil {
		return err
	}
	for i := range 4 {
		b, what, err := r.damageBlock(node.DataDir, i)
		if err != nil {
			return err
		}
		r.C.Events().Add(EvBitFlip, node.Name, "block %d: %s", b, what)
	}
	return r.C.Start(ctx, node.Name)
}

func injectDiskFull(ctx context.Context, r *Run) error {
	node := r.C.DataNodes()[0]
	for i := 0; r.Round(i, 1); i++ {
		// The node may stop on its own while the disk is full: its control
		// plane cannot persist there (see waitDiskFailed). That exit is
		// the fault's doing; any other exit is still a crash.
		proc := r.C.Process(node.Name)
		proc.AcceptExitIf(func(tail string) bool { return diskFaultExit(tail) != "" })
		free, err := FillDisk(node.DataDir, 64<<10)
		if err != nil {
			return err
		}
		r.C.Events().Add(EvDiskFull, node.Name, "64 KiB left")
		before := r.W.Ops()
		r.Sleep(ctx, time.Second, 2*time.Second)
		full := Count(r.W.Ops()[len(before):])
		r.Note("while full: %d writes ok, %d failed, %d unknown; errors %v", full.WritesOK, full.WritesFailed, full.WritesUnknown, full.Errors)
		if err := free(); err != nil {
			return err
		}
		r.C.Events().Add(EvDiskFree, node.Name, "")
		// A store that failed while full stays Failed (detached) until
		// the node restarts: no write can resume before that.
		var why error
		if done, _ := proc.Exited(); done {
			reason := diskFaultExit(proc.LogTail(1 << 20))
			if reason == "" {
				reason = "exited, not because of the disk (a crash: see the anomalies)"
			}
			why = errors.New("it " + reason)
		} else if st, err := r.C.Status(ctx, node.Name); err == nil && st.Disk == "Failed" {
			why = errors.New("its disk is Failed")
		} else if err := r.Progress(ctx, 100); err != nil {
			why = err
		}
		if why != nil {
			r.Note("writes did not resume after freeing the disk (%v): restarting the node", why)
			if err := r.C.Restart(ctx, node.Name); err != nil {
				return err
			}
			r.expectWrites(ctx, 200, "no writes after restarting on a freed disk")
		}
	}
	return nil
}

func injectPause(which role) func(context.Context, *Run) error {
	return perRound(which, pauseResume)
}

// pauseResume stops name (SIGSTOP) for a while and lets it go on.
func pauseResume(ctx context.Context, r *Run, i int, name string) error {
	if err := r.C.Pause(name); err != nil {
		return err
	}
	n := r.W.WritesOK()
	if i > 1 && r.Rand.IntN(3) == 0 {
		r.Sleep(ctx, 13*time.Second, 16*time.Second) // soak: past the link's keepalive timeout
	} else {
		r.Sleep(ctx, 300*time.Millisecond, 2500*time.Millisecond)
	}
	r.Note("round %d: %d writes acknowledged while %s was stopped", i, r.W.WritesOK()-n, name)
	if err := r.C.Resume(name); err != nil {
		return err
	}
	r.expectWrites(ctx, 200, "no writes after SIGCONT")
	r.WaitInSync(ctx, 60*time.Second)
	return nil
}

func injectPartition(oneWay bool) func(context.Context, *Run) error {
	return func(ctx context.Context, r *Run) error {
		fw, err := r.C.Firewall(ctx)
		if err != nil {
			return err
		}
		// Round 0 is short (TCP retransmits across it); round 1 outlasts
		// the link's keepalive timeout (2s + 10s), so the primary drops
		// the peer and catches it up after healing. Soak runs mix both.
		for i := 0; r.Round(i, 2); i++ {
			prim, sec, err := r.pair(ctx)
			if err != nil {
				return err
			}
			a, b := r.C.Member(prim).Endpoint(), r.C.Member(sec).Endpoint()
			hold := []time.Duration{time.Second, 3 * time.Second}
			if i == 1 || (i > 1 && r.Rand.IntN(3) == 0) {
				hold = []time.Duration{13 * time.Second, 16 * time.Second}
			}
			switch {
			case !oneWay:
				err = fw.Partition(ctx, a, b)
			case r.Rand.IntN(2) == 0:
				err = fw.Block(ctx, a, b)
			default:
				err = fw.Block(ctx, b, a)
			}
			if err != nil {
				return err
			}
			n := r.W.WritesOK()
			r.Sleep(ctx, hold[0], hold[1])
			r.Note("round %d: %d writes acknowledged during the partition", i, r.W.WritesOK()-n)
			if err := fw.Heal(ctx); err != nil {
				return err
			}
			r.expectWrites(ctx, 200, "no writes after healing")
			r.WaitInSync(ctx, 60*time.Second)
		}
		return nil
	}
}

// injectCrashPromote: with protocol C every acknowledged write is journaled
// on the secondary, so after a crash of both the secondary alone must hold
// them all. The SIGSTOP widens the window a primary that acknowledges too
// early would need to lose writes: the real code stalls, a buggy one acks.
func injectCrashPromote(ctx context.Context, r *Run) error {
	return r.stallCrashAndStart(ctx, r.C.StartAlone, func(_, _ string) error {
		r.verifyNow(ctx)
		r.W.Resume()
		r.expectWrites(ctx, 200, "no writes on the promoted secondary")
		return nil
	})
}

// stallAndCrash stops the secondary (SIGSTOP) for 300-600 ms under load,
// kills the primary and then the stopped secondary with SIGKILL (so that
// nothing still in its socket buffers reaches it), and pauses the workload;
// the caller resumes it.
func (r *Run) stallAndCrash(ctx context.Context) (prim, sec string, err error) {
	if prim, sec, err = r.pair(ctx); err != nil {
		return "", "", err
	}
	if err := r.C.Pause(sec); err != nil {
		return "", "", err
	}
	n := r.W.WritesOK()
	r.Sleep(ctx, 300*time.Millisecond, 600*time.Millisecond)
	r.Note("%d writes acknowledged while the secondary was stopped", r.W.WritesOK()-n)
	r.C.Kill(prim)
	r.C.Kill(sec)
	r.W.Pause()
	return prim, sec, nil
}

// stallCrashAndStart runs stallAndCrash, starts the crashed secondary again
// with start and then runs then. The workload stallAndCrash paused resumes
// at the latest when this returns, whatever failed.
func (r *Run) stallCrashAndStart(ctx context.Context, start func(context.Context, string) error, then func(prim, sec string) error) error {
	prim, sec, err := r.stallAndCrash(ctx)
	defer r.W.Resume()
	if err != nil {
		return err
	}
	if err := start(ctx, sec); err != nil {
		return err
	}
	return then(prim, sec)
}

// verifyNow reads every block (the workload should be paused, so that no
// new write hides a lost one first).
func (r *Run) verifyNow(ctx context.Context) {
	vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.W.Verify(vctx); err != nil {
		r.Note("reads right after the failover incomplete: %v", err)
	}
}

func injectLatency(ctx context.Context, r *Run) error {
	p := r.C.Proxies()
	for i := 0; r.Round(i, 1); i++ {
		prim, sec, err := r.pair(ctx)
		if err != nil {
			return err
		}
		lat := time.Duration(2+r.Rand.IntN(20)) * time.Millisecond
		if err := p.Latency(prim, sec, lat, lat/4); err != nil {
			return err
		}
		r.expectWrites(ctx, 100, "no writes with %v latency", lat)
		if err := p.Bandwidth(prim, sec, int64(256+r.Rand.IntN(4096))); err != nil {
			return err
		}
		r.expectWrites(ctx, 50, "no writes with a bandwidth limit")
		if err := p.Clear(prim, sec); err != nil {
			return err
		}
		r.WaitInSync(ctx, 60*time.Second)
	}
	return nil
}

package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// controlPlaneFiles are a member's control-plane state in its data
// directory (docs/raftlog.md; named here as a black box would, not from
// package raftlog): its raft log and its join identity, the files a
// replaced disk under a kept host keeps. Without member.id a member that
// joined through `grbd member replace` would run under its initial raft ID
// and find itself replaced (chaos seed 430).
var controlPlaneFiles = []string{"raft.state", "member.id"}

// EvReplaceDisk: a data node's store was wiped (its disk replaced).
const EvReplaceDisk = "disk-replaced"

// WipeStore deletes a stopped data node's store (image, journal, meta,
// history, resync state) and keeps its control-plane state: the disk was
// replaced under a node whose raft log lives elsewhere. The node starts on
// a new, empty disk with a new identity.
func WipeStore(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("chaos: wipe store: %w", err)
	}
	for _, e := range ents {
		if slices.Contains(controlPlaneFiles, e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("chaos: wipe store: %w", err)
		}
	}
	return nil
}

// replaceResyncRate slows the full sync of the replaced disk (64 MiB) to a
// few seconds, so that the primary's kill lands inside it as often as after.
const replaceResyncRate = "resync-rate: 16MiB"

// injectReplaceDisk replaces the secondary's disk (or its host, or
// restores an older copy of its data directory: replaceUnderLoad) under
// load and kills the primary at a random point of the new disk's full sync
// (or the copy's catch-up), or after it: the node on the new disk may take
// over only with every acknowledged write (its reads, right after the
// takeover, join the history the checks read), and is otherwise promoted
// by nobody until the old primary returns.
func injectReplaceDisk(ctx context.Context, r *Run) error {
	for i := 0; r.Round(i, 1); i++ {
		prim, sec, err := r.pair(ctx)
		if err != nil {
			return err
		}
		if err := r.replaceUnderLoad(ctx, sec, replaceMode(r.Rand.IntN(3))); err != nil {
			return err
		}
		at := r.killInFullSync(ctx, prim, sec)
		r.W.Pause()
		err = r.afterPrimaryLoss(ctx, prim, sec, at)
		r.W.Resume()
		if err != nil {
			return err
		}
		r.expectWrites(ctx, 200, "no writes after %s's disk was replaced", sec)
	}
	return nil
}

// replaceMode is what replaceUnderLoad puts under the secondary.
type replaceMode int

const (
	replaceStore replaceMode = iota // a new disk under a kept host: the store wiped, the control-plane state kept
	replaceHost                     // a new host: the whole data directory wiped, then grbd member replace
	restoreCopy                     // an older copy of the whole data directory (a backup) restored
)

// replaceUnderLoad kills sec and starts it again on a new disk: its store
// wiped (a replaced disk), its whole data directory wiped, the
// control-plane state too (a replaced host), which `grbd member replace`
// then admits again, or an older copy of the directory restored
// (restoreOlderCopy).
func (r *Run) replaceUnderLoad(ctx context.Context, sec string, mode replaceMode) error {
	dir := r.C.Member(sec).DataDir
	if mode == restoreCopy {
		return r.restoreOlderCopy(ctx, sec, dir)
	}
	r.C.Kill(sec)
	if mode == replaceHost {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("chaos: replace host: %w", err)
		}
		r.C.Events().Add(EvReplaceDisk, sec, "data directory wiped (a replaced host)")
	} else {
		if err := WipeStore(dir); err != nil {
			return err
		}
		r.C.Events().Add(EvReplaceDisk, sec, "store wiped, control-plane state kept")
	}
	if err := r.C.Start(ctx, sec); err != nil || mode != replaceHost {
		return err
	}
	r.memberReplace(ctx, sec)
	return nil
}

// restoreOlderCopy copies sec's data directory (killed: as a storage
// snapshot sees it), lets sec rejoin and acknowledge more writes and
// control-plane entries (its Outdate and Clear), then kills it and restores
// the copy. The raft leader finds the member's log rewound: it drops its
// control-plane state and is admitted again by `grbd member replace`
// (docs/quorum.md, "A restored control-plane log"); its disk lacks writes it
// acknowledged, which it must never serve as the primary.
func (r *Run) restoreOlderCopy(ctx context.Context, sec, dir string) error {
	r.C.Kill(sec)
	if out, err := exec.Command("cp", "-a", dir, dir+".copy").CombinedOutput(); err != nil {
		return fmt.Errorf("chaos: copy %s: %w: %s", dir, err, out)
	}
	if err := r.C.Start(ctx, sec); err != nil {
		return err
	}
	r.WaitInSync(ctx, 60*time.Second)
	r.Sleep(ctx, 200*time.Millisecond, time.Second) // writes the copy lacks
	r.C.Kill(sec)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("chaos: restore copy: %w", err)
	}
	if err := os.Rename(dir+".copy", dir); err != nil {
		return fmt.Errorf("chaos: restore copy: %w", err)
	}
	r.C.Events().Add(EvReplaceDisk, sec, "an older copy of the data directory restored")
	if err := r.C.Start(ctx, sec); err != nil {
		return err
	}
	if r.awaitsReplace(ctx, sec) {
		r.memberReplace(ctx, sec)
	} else {
		r.Note("%s kept its control-plane state after the restore (its log was not found rewound)", sec)
	}
	return nil
}

// awaitsReplace reports whether name says, within 10 s, that it lost its
// control-plane state and awaits a replace.
func (r *Run) awaitsReplace(ctx context.Context, name string) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if st, err := r.C.Status(ctx, name); err == nil && st.Quorum != nil && strings.HasPrefix(st.Quorum.Phase, "awaiting replace") {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// memberReplace runs `grbd member replace name`, retried for up to 30 s as
// an operator would while the members learn that name lost its state.
func (r *Run) memberReplace(ctx context.Context, name string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := r.grbd(ctx, "member", "replace", name)
		if err == nil {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.Anomaly("%v (retried for 30 s)", err)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// killInFullSync kills the primary at a random point of sec's return: a
// sixth of the time at once (sec still starting), half of the time when the
// primary reports a random share of sec's full sync done, else once sec is
// in sync and up to 300 ms later. It returns what the primary last said.
func (r *Run) killInFullSync(ctx context.Context, prim, sec string) string {
	mode, want := r.Rand.IntN(6), r.Rand.Float64()
	deadline := time.Now().Add(60 * time.Second)
	seen := "no status"
	for mode > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		st, err := r.C.Status(ctx, prim)
		if p, ok := st.peer(sec); err == nil && ok {
			seen = fmt.Sprintf("%s %s, resync %d of %d bytes", p.Connection, p.Disk, p.ResyncDone, p.ResyncTotal)
			inSync := p.Connection == ConnConnected && p.Disk == DiskUpToDate
			// Connected and not UpToDate: the numbers are the new disk's.
			syncing := p.Connection == ConnConnected && !inSync && p.ResyncTotal > 0
			if mode <= 3 && syncing && float64(p.ResyncDone) >= want*float64(p.ResyncTotal) {
				break
			}
			if inSync {
				if mode > 3 {
					r.Sleep(ctx, 0, 300*time.Millisecond)
				}
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.C.Kill(prim)
	r.C.Events().Add("replace", prim, "killed with %s at %s", sec, seen)
	return seen
}

// afterPrimaryLoss: within a few failover timeouts the node on the new disk
// is primary (it must then serve every acknowledged write: the reads go
// into the history) or it is not (it must then not be UpToDate with a
// recorded disk, which would make its idleness a liveness failure). Either
// way the old primary returns and the cluster ends in sync.
func (r *Run) afterPrimaryLoss(ctx context.Context, prim, sec, at string) error {
	if r.takesOver(ctx, sec) {
		r.Note("%s took over after its full sync (%s at the kill)", sec, at)
		r.verifyNow(ctx)
		r.W.Resume()
		return r.rejoin(ctx, prim)
	}
	st, serr := r.C.Status(ctx, sec)
	switch {
	case serr != nil:
		r.Anomaly("%s on the new disk answers no status after the primary's death: %v", sec, serr)
	case st.Disk == DiskUpToDate && st.Identity != nil && st.Identity.Promotable:
		r.Anomaly("%s is UpToDate and promotable but was not promoted within 5 s of the primary's death (%s at the kill)", sec, at)
	default:
		r.Note("%s not promoted: disk %s, %s at the kill", sec, st.Disk, at)
	}
	if err := r.primaryReturns(ctx, prim); err != nil {
		return err
	}
	r.W.Resume()
	r.WaitInSync(ctx, 60*time.Second)
	return nil
}

// takesOver reports whether name becomes the primary within 5 s (several
// failover timeouts) of the primary's death.
func (r *Run) takesOver(ctx context.Context, name string) bool {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := r.C.WaitPrimaryAmong(wctx, []*Member{r.C.Member(name)})
	return err == nil
}

// primaryReturns starts the killed primary again, waits up to 30 s for a
// primary and reads every block from it (the reads go into the history).
func (r *Run) primaryReturns(ctx context.Context, prim string) error {
	if err := r.C.Start(ctx, prim); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	next, err := r.C.WaitPrimary(wctx, "")
	cancel()
	if err != nil {
		r.Anomaly("no primary after %s returned: %v", prim, err)
		return nil
	}
	r.C.Events().Add("primary", next, "after %s returned", prim)
	r.verifyNow(ctx)
	return nil
}

// injectWipedWitness: the secondary is killed and Outdated while writes go
// on, then the witness's host is replaced (its data directory wiped) and
// the primary killed. The Outdated secondary and the empty witness start:
// together they are two of three members, but the witness has no vote
// until `grbd member replace` and the secondary lacks acknowledged writes,
// so nobody may be promoted (an empty witness must never elect a node over
// the data). The old primary returns, the witness is replaced, and every
// acknowledged write reads back.
func injectWipedWitness(ctx context.Context, r *Run) error {
	w := witness(r)
	for i := 0; r.Round(i, 1); i++ {
		prim, sec, err := r.pair(ctx)
		if err != nil {
			return err
		}
		r.C.Kill(sec)
		if !r.awaitOutdated(ctx, prim, sec) {
			return r.rejoin(ctx, sec)
		}
		r.Sleep(ctx, 200*time.Millisecond, time.Second) // writes sec misses
		r.C.Kill(w.Name)
		if err := os.RemoveAll(w.DataDir); err != nil {
			return fmt.Errorf("chaos: wipe witness: %w", err)
		}
		r.C.Events().Add(EvReplaceDisk, w.Name, "data directory wiped (a replaced host)")
		r.Sleep(ctx, 0, 500*time.Millisecond)
		r.C.Kill(prim)
		if err := r.wipedWitnessWindow(ctx, w.Name, prim, sec); err != nil {
			return err
		}
		r.expectWrites(ctx, 200, "no writes after the witness was replaced")
		r.WaitInSync(ctx, 60*time.Second)
	}
	return nil
}

// wipedWitnessWindow: with the primary dead and the workload paused, the
// empty witness and the Outdated sec start and must promote nobody; the
// primary returns, the witness is replaced and every block read back.
func (r *Run) wipedWitnessWindow(ctx context.Context, w, prim, sec string) error {
	r.W.Pause()
	defer r.W.Resume()
	for _, name := range []string{w, sec} {
		if err := r.C.Start(ctx, name); err != nil {
			return err
		}
	}
	if r.takesOver(ctx, sec) {
		r.Anomaly("the Outdated %s was promoted with a wiped witness while %s, which holds the data, was down", sec, prim)
	}
	if err := r.C.Start(ctx, prim); err != nil {
		return err
	}
	r.memberReplace(ctx, w)
	r.verifyNow(ctx)
	return nil
}

// awaitOutdated waits up to 10 s until the primary's control plane records
// peer as Outdated.
func (r *Run) awaitOutdated(ctx context.Context, prim, peer string) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if st, err := r.C.Status(ctx, prim); err == nil && st.Quorum != nil && slices.Contains(st.Quorum.Outdated, peer) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Anomaly("%s never recorded the killed %s as Outdated", prim, peer)
	return false
}

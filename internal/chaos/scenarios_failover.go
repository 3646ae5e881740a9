package chaos

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Scenarios of the quorum (issue 4): 2 data nodes and a witness, roles
// moved by the control plane. They need a binary with the witness command.

// otherData returns the data nodes other than name.
func otherData(r *Run, name string) []*Member {
	var out []*Member
	for _, m := range r.C.DataNodes() {
		if m.Name != name {
			out = append(out, m)
		}
	}
	return out
}

func witness(r *Run) *Member {
	for _, m := range r.C.Members() {
		if m.Witness {
			return m
		}
	}
	panic("chaos: scenario needs a witness")
}

func injectFailoverKill(ctx context.Context, r *Run) error {
	for i := 0; r.Round(i, 1); i++ {
		old, _, err := r.C.Primary(ctx)
		if err != nil {
			return err
		}
		r.Sleep(ctx, 200*time.Millisecond, time.Second)
		r.C.Kill(old)
		next, _, err := r.awaitFailover(ctx, old, time.Now(), "in %v (status)")
		if err != nil {
			r.Anomaly("no failover after killing primary %s: %v", old, err)
			return r.C.Start(ctx, old)
		}
		r.verifyNow(ctx) // concurrent with the workload: most blocks are read before a new write
		r.expectWrites(ctx, 200, "no writes on new primary %s", next)
		if err := r.rejoin(ctx, old); err != nil {
			return err
		}
	}
	return nil
}

// injectPrimaryPowerLoss loses the primary's unsynced journal tail, which
// its peer holds (protocol C journaled every acknowledged write there), and
// restarts it at once. No new era: every acknowledged write must survive.
// Before the primary handed over to a peer holding records it lost, a
// primary that took its role back rewound the peer's copy of them.
func injectPrimaryPowerLoss(ctx context.Context, r *Run) error {
	for i := 0; r.Round(i, 2); i++ {
		old, _, err := r.C.Primary(ctx)
		if err != nil {
			return err
		}
		if err := crashWithUnsyncedTail(ctx, r, old); err != nil {
			return err
		}
		if err := tearTail(r, old, i); err != nil {
			return err
		}
		if err := r.C.Start(ctx, old); err != nil {
			return err
		}
		r.expectWrites(ctx, 200, "no writes after the primary's power loss")
		r.verifyNow(ctx)
		r.WaitInSync(ctx, 60*time.Second)
	}
	return nil
}

// awaitFailover waits up to 30 s for a primary other than old and records
// the failover in the events: "OLD -> NEXT " then how, formatted with the
// time it took since t0.
func (r *Run) awaitFailover(ctx context.Context, old string, t0 time.Time, how string) (string, time.Duration, error) {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	next, err := r.C.WaitPrimary(wctx, old)
	if err != nil {
		return "", 0, err
	}
	took := time.Since(t0).Round(time.Millisecond)
	r.C.Events().Add("failover", next, "%s -> %s "+how, old, next, took)
	return next, took, nil
}

// injectStallCrash is injectCrashPromote with the control plane doing the
// promotion: the restarted secondary (not Outdated: its stall was shorter
// than peer-timeout) and the witness elect it.
func injectStallCrash(ctx context.Context, r *Run) error {
	return r.stallCrashAndStart(ctx, r.C.Start, func(prim, sec string) error {
		next, _, err := r.awaitFailover(ctx, prim, time.Now(), "in %v after its restart (status)")
		if err != nil {
			r.Anomaly("the restarted secondary %s was not promoted: %v", sec, err)
		} else {
			r.verifyNow(ctx)
			r.W.Resume()
			r.expectWrites(ctx, 200, "no writes on the new primary %s", next)
		}
		return r.rejoin(ctx, prim)
	})
}

func injectIsolatePrimary(ctx context.Context, r *Run) error {
	fw, err := r.C.Firewall(ctx)
	if err != nil {
		return err
	}
	old, _, err := r.C.Primary(ctx)
	if err != nil {
		return err
	}
	for _, m := range r.C.Members() {
		if m.Name != old {
			if err := fw.Partition(ctx, r.C.Member(old).Endpoint(), m.Endpoint()); err != nil {
				return err
			}
		}
	}
	// The majority side's failover is timed from the cut, while the
	// isolated primary is checked for fencing at the same time.
	t0 := time.Now()
	type elected struct {
		name string
		took time.Duration
		err  error
	}
	ch := make(chan elected, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		next, err := r.C.WaitPrimaryAmong(wctx, otherData(r, old))
		for err == nil {
			st, serr := r.C.Status(wctx, next)
			if serr == nil && st.Role == RolePrimary && st.serving() {
				break
			}
			select {
			case <-wctx.Done():
				err = fmt.Errorf("%w: %s never served", ErrTimeout, next)
			case <-time.After(10 * time.Millisecond):
			}
		}
		ch <- elected{next, time.Since(t0), err}
	}()
	r.expectFenced(ctx, old)
	e := <-ch
	if e.err != nil {
		r.Anomaly("the majority side elected no primary: %v", e.err)
	} else {
		r.C.Events().Add("failover", e.name, "%s isolated: %s serves %v after the cut", old, e.name, e.took.Round(time.Millisecond))
		r.Note("failover after isolating the primary: %s serves %v after the cut", e.name, e.took.Round(time.Millisecond))
		if e.took > 5*time.Second {
			r.Anomaly("failover after isolating the primary took %v (a silent link must be noticed within peer-timeout)", e.took)
		}
	}
	if err := fw.Heal(ctx); err != nil {
		return err
	}
	r.WaitInSync(ctx, 60*time.Second)
	return nil
}

func injectWitnessDown(ctx context.Context, r *Run) error {
	w := witness(r)
	r.C.Kill(w.Name)
	r.expectWrites(ctx, 300, "service stopped with only the witness down")
	return r.C.Start(ctx, w.Name)
}

func injectNoQuorum(ctx context.Context, r *Run) error {
	prim, _, err := r.C.Primary(ctx)
	if err != nil {
		return err
	}
	w, sec := witness(r), otherData(r, prim)[0]
	r.C.Kill(w.Name)
	r.C.Kill(sec.Name)
	r.expectFenced(ctx, prim)
	for _, m := range []*Member{w, sec} {
		if err := r.C.Start(ctx, m.Name); err != nil {
			return err
		}
	}
	r.WaitInSync(ctx, 60*time.Second)
	return nil
}

// expectFenced probes the cut-off primary with writes to the spare block
// (past the workload's blocks): within fenceWithin it must answer EIO, and
// after that it must not acknowledge anything.
func (r *Run) expectFenced(ctx context.Context, node string) {
	const fenceWithin = 5 * time.Second
	res := probeWrites(ctx, "nbd://"+r.C.Member(node).NBD, r.W.Offset(r.W.Blocks()), fenceWithin+2*time.Second)
	switch {
	case res.fencedAt < 0:
		r.Anomaly("cut-off primary %s never failed a write with EIO (%d acknowledged, last error %v)", node, res.acked, res.lastErr)
	case res.fencedAt > fenceWithin:
		r.Anomaly("cut-off primary %s fenced only after %v", node, res.fencedAt)
	default:
		r.C.Events().Add("fenced", node, "EIO after %v", res.fencedAt.Round(time.Millisecond))
	}
	if res.ackedAfterFence > 0 {
		r.Anomaly("cut-off primary %s acknowledged %d writes after it fenced", node, res.ackedAfterFence)
	}
}

// WaitPrimaryAmong waits until one of members is the only primary among them.
func (c *Cluster) WaitPrimaryAmong(ctx context.Context, members []*Member) (string, error) {
	for {
		for _, m := range members {
			if st, err := c.Status(ctx, m.Name); err == nil && st.Role == RolePrimary {
				return m.Name, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: no primary among %d members", ErrTimeout, len(members))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// injectBitFlipRepair damages blocks of the secondary while it is stopped
// (bit flips and misdirected writes: damageBlock), then makes it the
// primary with the old primary back as its UpToDate peer: the verification
// reads must return every block right, each damaged one repaired from the
// peer (the new primary's status counts them).
func injectBitFlipRepair(ctx context.Context, r *Run) error {
	prim, sec, err := r.pair(ctx)
	if err != nil {
		return err
	}
	// No write may replace a damaged block before the reads find it.
	r.W.Stop()
	if !r.WaitInSync(ctx, 30*time.Second) {
		return nil
	}
	if err := r.C.Stop(ctx, sec); err != nil {
		return err
	}
	damaged := map[int]bool{}
	for i := range 4 {
		b, what, err := r.damageBlock(r.C.Member(sec).DataDir, i)
		if err != nil {
			return err
		}
		damaged[b] = true
		r.C.Events().Add(EvBitFlip, sec, "block %d: %s", b, what)
	}
	if err := r.C.Start(ctx, sec); err != nil {
		return err
	}
	if !r.WaitInSync(ctx, 30*time.Second) {
		return nil
	}
	// Hand the primary role to the damaged node.
	if err := r.C.Stop(ctx, prim); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	next, err := r.C.WaitPrimary(wctx, prim)
	cancel()
	if err != nil || next != sec {
		r.Anomaly("the damaged node %s did not take over from %s: %q %v", sec, prim, next, err)
		return r.C.Start(ctx, prim)
	}
	if err := r.C.Start(ctx, prim); err != nil {
		return err
	}
	if !r.WaitInSync(ctx, 30*time.Second) {
		return nil
	}
	vctx, vcancel := context.WithTimeout(ctx, time.Minute)
	defer vcancel()
	if err := r.W.Verify(vctx); err != nil {
		r.Anomaly("blocks not repaired: %v", err)
	}
	st, err := r.C.Status(ctx, sec)
	if err != nil {
		return err
	}
	r.Note("%s: %d checksum errors, %d blocks repaired, %d unrepaired (%d blocks damaged)",
		sec, st.Checksums.Errors, st.Checksums.Repaired, st.Checksums.Unrepaired, len(damaged))
	if st.Checksums.Repaired != uint64(len(damaged)) || st.Checksums.Unrepaired != 0 {
		r.Anomaly("%d blocks damaged, %d repaired, %d unrepaired", len(damaged), st.Checksums.Repaired, st.Checksums.Unrepaired)
	}
	return nil
}

// injectOneWayCuts drops one or two random directions among the data nodes
// and the witness for 0.5-6 s each round: the cuts a silent switch port or
// a half-broken firewall make, on the links of the control plane as well
// as the data path. Nothing is demanded during the cut (writes may stall,
// the primary may fence or move); after it every acknowledged write must
// still read back (the history), writes must resume and the nodes end in
// sync.
func injectOneWayCuts(ctx context.Context, r *Run) error {
	fw, err := r.C.Firewall(ctx)
	if err != nil {
		return err
	}
	members := r.C.Members()
	for i := 0; r.Round(i, 1); i++ {
		var cuts []string
		for k := 1 + r.Rand.IntN(2); len(cuts) < k; {
			from := r.Rand.IntN(len(members))
			to := (from + 1 + r.Rand.IntN(len(members)-1)) % len(members)
			cut := members[from].Name + "->" + members[to].Name
			if slices.Contains(cuts, cut) {
				continue
			}
			if err := fw.Block(ctx, members[from].Endpoint(), members[to].Endpoint()); err != nil {
				return err
			}
			cuts = append(cuts, cut)
		}
		n, t0 := r.W.WritesOK(), time.Now()
		r.Sleep(ctx, 500*time.Millisecond, 6*time.Second)
		r.Note("round %d: %d writes acknowledged in %v with %v cut", i, r.W.WritesOK()-n, time.Since(t0).Round(time.Millisecond), cuts)
		if err := fw.Heal(ctx); err != nil {
			return err
		}
		r.expectWrites(ctx, 200, "no writes after healing %v", cuts)
		r.WaitInSync(ctx, 60*time.Second)
	}
	return nil
}

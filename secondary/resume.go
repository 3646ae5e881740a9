package secondary

// Resuming an interrupted resync (docs/replication.md, "Resuming a
// resync"), the secondary's side: it persists how far a resync got at
// bounded intervals (each time after its journal is synced past every copy
// it names), reports that to the primary that copied when it reconnects,
// and keeps only what the primary's answer keeps.

import (
	"fmt"
	"time"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/peerwire"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/replicator"
)

// Progress is persisted after this many bytes of region copies or this
// long after the last save, whichever comes first. Copies written in place
// save after at least tableShare times the region table's bytes: each save
// is then a checkpoint, which writes the table (8 bytes a region) and syncs
// the data file; measured on a 4 GiB device (an 8 MiB table), saves every
// 8 MiB held a resync to 0.23 GB/s.
const (
	progressBytes = 8 << 20
	tableShare    = 32
	progressEvery = time.Second
	// maxProgressExtents bounds the ranges a progress names (dropping
	// ranges only claims less).
	maxProgressExtents = 1 << 16
)

// offer is the progress a secondary reported in its handshake.
type offer replicator.ResyncProgress

func (o *offer) wire() *wire.ResyncProgress {
	m := &wire.ResyncProgress{AsOf: o.AsOf, Epoch: o.Epoch, Source: o.Source}
	for _, e := range o.Copied {
		m.Copied = append(m.Copied, extent.Extent{Offset: e.Offset, Length: e.Length})
	}
	return m
}

// offerProgress is agree for an Inconsistent node with progress whose
// history agrees with the primary's up to its resync's start. If the
// primary's Hello passes the checks the primary will make
// (replicator.Offer), it keeps its journal up to the progress position AsOf
// (those records are the primary's: the histories agree up to there),
// rewinds the rest (their regions join the persisted Extents and leave the
// copied ranges), and returns the Hello, the Extents (conservative: every
// region it changed since the resync began, for a primary that does not
// trust the report) and the report. A nil offer: go on without progress.
func (s *Side) offerProgress(h *wire.Hello, pri, mine replicator.History, rs *replicator.ResyncState) (*wire.Hello, *wire.Extents, *offer, error) {
	pr := *rs.Progress
	_, priDisk := h.Disks()
	src := replicator.ResumeSource{Disk: priDisk, LastSeq: h.LastSeq, History: pri}
	forged := s.forgedOffer()
	if forged != nil {
		pr = *forged
	} else if h.Flags&wire.HelloResume == 0 || s.cfg.ErasureCoded || pr.AsOf > s.store.LastSeq() || !replicator.Offer(pr, rs.From, src, mine) {
		s.log.Info("resync progress cannot be offered to this primary: it is dropped", "primary", h.From, "as_of", pr.AsOf)
		return nil, nil, nil, nil
	}
	own := s.store.ChangedSince(pr.AsOf)
	extra := extent.Union(rs.Extents, s.store.ChangedSince(rs.From))
	copied := extent.Subtract(pr.Copied, own)
	if len(copied) > maxProgressExtents {
		copied = copied[:maxProgressExtents]
	}
	next := replicator.ResyncState{From: rs.From, All: rs.All, Extents: extent.Union(rs.Extents, own),
		Progress: &replicator.ResyncProgress{AsOf: pr.AsOf, Epoch: pr.Epoch, Source: pr.Source, Copied: copied}}
	if len(next.Extents) > wire.MaxExtents/2 {
		next.All, next.Extents = true, nil
	}
	if err := s.SaveResync(&next); err != nil {
		return nil, nil, nil, err
	}
	if _, err := s.store.Rewind(pr.AsOf); err != nil {
		return nil, nil, nil, fmt.Errorf("secondary: rewind to %d: %w", pr.AsOf, err)
	}
	if err := s.node.SetHistory(mine.Adopt(pri, pr.AsOf)); err != nil {
		return nil, nil, nil, err
	}
	s.mu.Lock()
	s.splitBrain.Store(false)
	s.discard = false
	s.mu.Unlock()
	me := &wire.Hello{Cluster: s.cfg.Cluster, From: s.cfg.Name, Role: wire.RoleSecondary, Epoch: h.Epoch,
		LastSeq: rs.From, DurableSeq: rs.From, Flags: wire.HelloInconsistent | wire.HelloResume}
	me.PutDisks(s.store.ID(), 0)
	ex := &wire.Extents{}
	if next.All || len(extra) > wire.MaxExtents/2 {
		ex.Flags = wire.ExtentsAll
	} else {
		for _, e := range extra {
			ex.Extents = append(ex.Extents, extent.Extent{Offset: e.Offset, Length: e.Length})
		}
	}
	o := offer(*next.Progress)
	s.log.Info("offering the progress of the interrupted resync", "primary", h.From, "sync_from", rs.From, "as_of", pr.AsOf,
		"copied_bytes", extent.Bytes(copied))
	return me, ex, &o, nil
}

// resumed takes the primary's answer to the offer: the copied ranges it
// keeps (current as of the resync it starts now) are the base of this
// session's progress, persisted at once; an untrusted report is dropped.
func (a *applier) resumed(m *wire.ResyncProgress) error {
	s, o := a.s, a.offered
	a.offered = nil
	if o == nil || m.Source != a.source {
		return fmt.Errorf("%w: unexpected ResyncProgress from primary", peerwire.ErrHandshake)
	}
	s.mu.Lock()
	rs := s.resync
	s.mu.Unlock()
	if rs == nil {
		return fmt.Errorf("%w: ResyncProgress for a consistent disk", peerwire.ErrHandshake)
	}
	next := *rs
	next.Progress = nil
	a.copied, a.tracking = nil, false
	if m.AsOf != 0 && m.AsOf == o.AsOf {
		var answer []extent.Extent
		for _, e := range m.Copied {
			answer = append(answer, extent.Extent{Offset: e.Offset, Length: e.Length})
		}
		// What both sides keep: never more than was reported.
		kept := extent.Subtract(o.Copied, extent.Subtract(o.Copied, answer))
		next.Progress = &replicator.ResyncProgress{AsOf: o.AsOf, Epoch: o.Epoch, Source: o.Source, Copied: kept}
		a.copied, a.tracking, a.lastSave = kept, true, time.Now()
		s.log.Info("primary resumes the interrupted resync", "as_of", o.AsOf, "kept_bytes", extent.Bytes(kept))
		s.node.Inconsistent(fmt.Sprintf("resync resumed: %d bytes copied before are kept", extent.Bytes(kept)))
	} else {
		s.log.Warn("primary does not trust the resync progress: everything is copied again", "as_of", o.AsOf)
	}
	return s.SaveResync(&next)
}

// copiedRange records a region copy the session applied and persists the
// progress when enough accumulated.
func (a *applier) copiedRange(off, n uint64) error {
	if a.source == 0 || a.s.cfg.ErasureCoded || a.offered != nil {
		return nil // a primary before resume, or an erasure-coded resource
	}
	if !a.tracking {
		a.tracking, a.lastSave = true, time.Now()
	}
	a.copied = append(a.copied, extent.Extent{Offset: off, Length: n})
	a.copiedN += n
	limit := uint64(progressBytes)
	if a.inPlace {
		st := a.s.store
		regions := (uint64(st.Size()) + uint64(st.RegionSize()) - 1) / uint64(st.RegionSize())
		limit = max(limit, tableShare*8*regions)
	}
	if a.copiedN < limit && time.Since(a.lastSave) < progressEvery {
		return nil
	}
	if a.inPlace {
		return a.saveInBackground()
	}
	return a.saveProgress()
}

// saveInBackground saves the progress of in-place copies on a goroutine of
// its own, so that copies go on while its checkpoint syncs the data file
// and writes the region table (tens of milliseconds: it stalled every copy
// behind it). At most one runs; a copy that finds one running leaves the
// save to a later copy, and a failed save fails the next copy. Whoever
// saves the resync state next waits for it (waitSaved).
func (a *applier) saveInBackground() error {
	if err := a.saveErr.Load(); err != nil {
		return *err
	}
	if a.saving.Load() {
		return nil
	}
	asOf := a.s.store.LastSeq()
	copied := a.takeCopied()
	a.saving.Store(true)
	a.saves.Go(func() {
		defer a.saving.Store(false)
		err := a.makeDurable(asOf, true)
		if err == nil {
			err = a.persistProgress(asOf, copied)
		}
		if err != nil {
			a.saveErr.Store(&err)
		}
	})
	return nil
}

// waitSaved returns once no background save runs, with its error.
func (a *applier) waitSaved() error {
	a.saves.Wait()
	if err := a.saveErr.Load(); err != nil {
		return *err
	}
	return nil
}

// saveProgress persists the ranges copied so far as current at the
// journal's position, after making every copy it names durable.
func (a *applier) saveProgress() error {
	if err := a.waitSaved(); err != nil {
		return err
	}
	asOf := a.s.store.LastSeq()
	copied := a.takeCopied()
	if err := a.makeDurable(asOf, a.inPlace); err != nil {
		return err
	}
	return a.persistProgress(asOf, copied)
}

// takeCopied returns the ranges copied so far (merged, bounded) for a save
// and restarts the count towards the next one.
func (a *applier) takeCopied() []extent.Extent {
	a.copied = extent.Merge(a.copied)
	a.copiedN, a.lastSave = 0, time.Now()
	return append([]extent.Extent(nil), a.copied[:min(len(a.copied), maxProgressExtents)]...)
}

// makeDurable makes every copy up to asOf durable: a checkpoint for copies
// written in place (it syncs the data file, and no record older than it is
// replayed over them), else a journal sync. It runs on the save's
// goroutine: the caller says whether copies went in place.
func (a *applier) makeDurable(asOf uint64, inPlace bool) error {
	if inPlace && !plantedUnsyncedProgress { // the planted bug: plantedbug_progress_on.go
		return a.s.store.Checkpoint()
	}
	return a.s.store.Sync(asOf)
}

// persistProgress saves copied, current as of asOf, in the resync state.
func (a *applier) persistProgress(asOf uint64, copied []extent.Extent) error {
	s := a.s
	s.mu.Lock()
	rs := s.resync
	s.mu.Unlock()
	if rs == nil {
		return nil
	}
	next := *rs
	next.Progress = &replicator.ResyncProgress{AsOf: asOf, Epoch: a.epoch, Source: a.source, Copied: copied}
	return s.SaveResync(&next)
}

// forgedOffer is the progress a test makes this side offer unchecked (nil:
// none).
func (s *Side) forgedOffer() *replicator.ResyncProgress {
	if s.cfg.ForgedOffer == nil {
		return nil
	}
	return s.cfg.ForgedOffer()
}

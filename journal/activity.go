package journal

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/grbd/grbd/internal/datadir"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/vfs"
)

// The activity log (docs/journal.md, "Activity log"), as DRBD's: the set
// of data.img extents that may hold bytes of writes whose records are not
// durable yet. A write reaches data.img only once its extents are in the
// log on disk, and an extent leaves the log only once every write applied
// into it is durable in the journal (replay re-applies those). So after a
// power loss, every byte of data.img that no surviving record explains lies
// in an extent the log held: those extents are the store's Suspects until a
// replicator has made them equal to its peers' (docs/replication.md).

const (
	// ActivityExtentSize is the activity log's granularity.
	ActivityExtentSize = 4 << 20
	// DefaultActivityExtents bounds the hot set (4.8 GiB, DRBD's
	// al-extents default): the most a node resyncs after a power loss,
	// and the working set a write enters without a log transaction.
	DefaultActivityExtents = 1237
	// actLookahead is how many extents after a write's the log takes in
	// ahead of need, without waiting: a sequential stream then finds its
	// next extent logged and never waits for a transaction.
	actLookahead = 16
	// actFileSize is what an activity log file is sized to (and grown by
	// doubling): a transaction then rewrites allocated blocks of a file
	// whose size does not change, and its fdatasync commits no metadata.
	actFileSize = 64 << 10
)

var actNames = [2]string{"activity.0", "activity.1"}

// activity is the in-memory activity log.
type activity struct {
	mu       sync.Mutex
	cond     sync.Cond // on mu: a transaction ended
	hot      map[uint32]*actEntry
	suspects []uint32 // ascending
	max      int      // the hot set's size that eviction keeps to
	extent   int64    // ActivityExtentSize (tests: smaller)
	ahead    int64    // actLookahead (tests: smaller)
	boot     uint64   // this boot of the machine (bootHash)
	gen      uint64   // the last transaction's generation
	clock    uint64
	writing  bool // a transaction is in flight
	err      error
	files    [2]vfs.File
	direct   [2]vfs.File // the files with O_DIRECT|O_DSYNC, or nil
	sizes    [2]int64    // the files' sizes
	dbuf     []byte      // aligned scratch for direct
	buf      []byte
	commits  uint64
}

// actEntry is a hot extent.
type actEntry struct {
	seq       uint64 // the highest seq applied into it
	used      uint64 // the clock at its last write: eviction takes the oldest
	pin       uint64 // an in-place write's: the data.sum save it waits for (sumFile.done)
	committed bool   // a transaction holding it is durable
}

// openActivity loads the activity log, makes every extent it held hot a
// suspect (clean says the store was closed cleanly; without a log, an
// unclean stop suspects the whole device), and writes the log back with
// no hot extents before any write can reach data.img.
func (j *Journal) openActivity(clean bool, maxExtents int, ahead int64, bootID string) error {
	a := &j.act
	a.cond.L = &a.mu
	a.hot, a.max, a.ahead, a.boot = map[uint32]*actEntry{}, maxExtents, ahead, bootHash(bootID)
	for i, name := range actNames {
		path := filepath.Join(j.dir, name)
		f, err := j.fs.OpenFile(path, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			if f, err = j.createActFile(path); err != nil {
				return err
			}
		} else if err != nil {
			return fmt.Errorf("journal: open %s: %w", name, err)
		}
		a.files[i] = f
		if a.sizes[i], err = f.Size(); err != nil {
			return fmt.Errorf("journal: stat %s: %w", name, err)
		}
	}
	best := j.newestAct(a.files, true)
	var sus []uint32
	if best != nil {
		a.gen = best.gen
	}
	switch {
	case best != nil && best.boot != 0 && best.boot == a.boot:
		// The last run stopped in this boot (a crash of the process, not
		// of the machine): the page cache kept every byte it wrote, so
		// every data.img byte came from a record replay found, and replay
		// made those durable: no hot extent can hold bytes of a lost write.
		sus = best.suspects
	case best != nil:
		sus = mergeExtentNums(best.suspects, best.hot)
	case !clean:
		// No log (a store from before it, or both files lost) after an
		// unclean stop: any extent may hold bytes of lost writes.
		for x := range uint32((j.devSize.Load() + a.extent - 1) / a.extent) {
			sus = append(sus, x)
		}
	}
	for _, x := range j.torn { // extent records without their data (verifyExtents)
		for n := x.Offset / uint64(a.extent); n*uint64(a.extent) < x.End(); n++ {
			sus = mergeExtentNums(sus, []uint32{uint32(n)})
		}
	}
	j.torn = nil
	a.suspects = sus
	if len(sus) > 0 {
		j.log.Warn("journal: an unclean stop left extents that may differ from every peer until resynced",
			"suspect_extents", len(sus), "bytes", int64(len(sus))*a.extent)
	}
	j.openActDirect()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.writing = true
	return j.commitActLocked()
}

// bootID is this boot's identity on Linux; elsewhere, or unreadable, ""
// (every unclean stop then counts as a power loss).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// bootHash is the boot's identity as the activity log stores it; 0 for
// an unknown boot, which matches none.
func bootHash(id string) uint64 {
	if id == "" {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(id))
	return max(h.Sum64(), 1)
}

// createActFile creates an activity log file durably (its name too).
func (j *Journal) createActFile(path string) (vfs.File, error) {
	f, err := j.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, datadir.FileMode)
	if err != nil {
		return nil, fmt.Errorf("journal: create %s: %w", filepath.Base(path), err)
	}
	if err := j.fs.SyncDir(j.dir); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("journal: sync dir %s: %w", j.dir, err)
	}
	return f, nil
}

// readActivityLog reads the newest usable activity log of the store's two
// files, or nil for none (before openActivity, which writes them).
func (j *Journal) readActivityLog() *actLog {
	var files [2]vfs.File
	for i, name := range actNames {
		if f, err := j.fs.OpenFile(filepath.Join(j.dir, name), os.O_RDONLY, 0); err == nil {
			files[i] = f // missing or unreadable: nil
		}
	}
	defer func() {
		for _, f := range files {
			if f != nil {
				_ = f.Close()
			}
		}
	}()
	return j.newestAct(files, false)
}

// newestAct returns the newest usable log of the two files (nil ones are
// missing), or nil; warn logs why a file is not usable.
func (j *Journal) newestAct(files [2]vfs.File, warn bool) *actLog {
	var best *actLog
	for i, f := range files {
		if f == nil {
			continue
		}
		l, why := j.readAct(f)
		if l == nil {
			if why != "" && warn {
				j.log.Warn("journal: activity log file not usable", "file", actNames[i], "reason", why)
			}
			continue
		}
		if best == nil || l.gen > best.gen {
			best = l
		}
	}
	return best
}

// readAct decodes one activity log file, or says why it cannot be used
// ("" for an empty file).
func (j *Journal) readAct(f vfs.File) (*actLog, string) {
	size, err := f.Size()
	if err != nil {
		return nil, err.Error()
	}
	if size == 0 {
		return nil, ""
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); n < len(b) {
		return nil, fmt.Sprintf("read: %v", err)
	}
	l, err := decodeAct(b)
	switch {
	case err != nil:
		return nil, err.Error()
	case l.salt != j.salt:
		return nil, "it belongs to another store"
	case int64(l.extentSize) != j.act.extent:
		return nil, fmt.Sprintf("extent size %d, want %d", l.extentSize, j.act.extent)
	}
	return l, ""
}

// mergeExtentNums returns the ascending union of two ascending lists.
func mergeExtentNums(a, b []uint32) []uint32 {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// activate returns once the extents of [off, end) are in the activity log
// on disk, and records seq as applied into them. A write's data-file write
// must not start before. inPlace (a write without a record, which replay
// cannot re-apply) also pins the extents until a data.sum save that
// started after now has completed: till then only the log tells Open that
// data.sum may be stale there.
func (j *Journal) activate(seq uint64, off, end int64, inPlace bool) error {
	if end <= off || plantedNoActivityLog {
		return nil
	}
	a := &j.act
	first, last := uint32(off/a.extent), uint32((end-1)/a.extent)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clock++
	pending := false
	for x := first; x <= last; x++ {
		e := a.hot[x]
		if e == nil {
			e = &actEntry{}
			a.hot[x] = e
		}
		e.seq, e.used = max(e.seq, seq), a.clock
		if inPlace {
			e.pin = max(e.pin, j.sumf.started.Load()+1)
		}
		pending = pending || !e.committed
	}
	j.lookAheadLocked(last)
	for pending {
		if a.err != nil {
			return a.err
		}
		if !a.writing {
			a.writing = true
			if err := j.commitActLocked(); err != nil {
				return err
			}
		} else {
			a.cond.Wait()
		}
		pending = false
		for x := first; x <= last; x++ {
			// Gone: committed, then evicted as durable (its seq covers
			// this write's), so this write needs it no more.
			if e := a.hot[x]; e != nil && !e.committed {
				pending = true
			}
		}
	}
	return nil
}

// lookAheadLocked adds the actLookahead extents after last to the hot set
// once the second half of that window is not in it, and, if that needs a
// transaction and none runs, starts one in the background. Caller holds mu.
func (j *Journal) lookAheadLocked(last uint32) {
	a := &j.act
	extents := (j.devSize.Load() + a.extent - 1) / a.extent
	if mid := int64(last) + max(a.ahead/2, 1); mid >= extents || a.hot[uint32(mid)] != nil {
		return // half the window is logged still: one transaction per half window
	}
	added := false
	for x := int64(last) + 1; x <= int64(last)+a.ahead && x < extents; x++ {
		if a.hot[uint32(x)] == nil {
			a.hot[uint32(x)] = &actEntry{used: a.clock}
			added = true
		}
	}
	if !added || a.writing || a.err != nil {
		return
	}
	a.writing = true
	go func() { // closeActivity waits for it (writing)
		a.mu.Lock()
		defer a.mu.Unlock()
		_ = j.commitActLocked() // a failure fails the store
	}()
}

// commitActLocked writes the log as it is now, one transaction, evicting
// hot extents above max whose writes are all durable. The caller holds mu
// and has set writing; mu is released during the I/O.
func (j *Journal) commitActLocked() error {
	a := &j.act
	defer func() {
		a.writing = false
		a.cond.Broadcast()
	}()
	if a.err != nil {
		return a.err
	}
	j.evictActLocked()
	entries := make([]*actEntry, 0, len(a.hot))
	l := actLog{extentSize: uint32(a.extent), gen: a.gen + 1, salt: j.salt, boot: a.boot, suspects: a.suspects}
	for x, e := range a.hot {
		l.hot = append(l.hot, x)
		entries = append(entries, e)
	}
	slices.Sort(l.hot)
	a.buf = encodeAct(a.buf, &l)
	i := l.gen % 2
	buf := a.buf
	a.mu.Unlock()
	err := j.writeAct(i, buf)
	a.mu.Lock()
	if err != nil {
		a.err = j.fail(fmt.Errorf("write the activity log: %w", err))
		return a.err
	}
	a.gen = l.gen
	a.commits++
	for _, e := range entries {
		e.committed = true
	}
	return nil
}

// evictActLocked drops the least recently written hot extents while the
// set is above max, among those whose writes are all durable. Caller holds
// mu.
func (j *Journal) evictActLocked() {
	a := &j.act
	if len(a.hot) <= a.max {
		return
	}
	durable, saved := j.durable.Load(), j.sumf.done.Load()
	var old []uint32
	for x, e := range a.hot {
		if e.committed && e.seq <= durable && e.pin <= saved {
			old = append(old, x)
		}
	}
	slices.SortFunc(old, func(x, y uint32) int { return cmp.Compare(a.hot[x].used, a.hot[y].used) })
	for _, x := range old[:min(len(old), len(a.hot)-a.max)] {
		delete(a.hot, x)
	}
}

// Suspects returns the byte ranges an unclean stop left in doubt: data.img
// may hold there bytes of writes whose records were lost, so this replica
// may differ from its peers there until ClearSuspects. Nil: none.
func (j *Journal) Suspects() []extent.Extent {
	a := &j.act
	a.mu.Lock()
	defer a.mu.Unlock()
	size := uint64(j.devSize.Load())
	var out []extent.Extent
	for _, x := range a.suspects {
		off := uint64(x) * uint64(a.extent)
		if off >= size {
			continue
		}
		out = append(out, extent.Extent{Offset: off, Length: min(uint64(a.extent), size-off)})
	}
	return extent.Merge(out)
}

// ClearSuspects durably forgets the suspects: call it once they are equal
// to the peers' (resynced, or rewritten through replication), or persisted
// elsewhere as regions to resync.
func (j *Journal) ClearSuspects() error {
	a := &j.act
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.suspects) == 0 {
		return nil
	}
	for a.writing {
		a.cond.Wait()
	}
	a.suspects = nil
	a.writing = true
	return j.commitActLocked()
}

// closeActivity ends the log; clean (every write is checkpointed) writes
// it with no hot extent first.
func (j *Journal) closeActivity(clean bool) {
	a := &j.act
	a.mu.Lock()
	for a.writing {
		a.cond.Wait()
	}
	if clean && a.err == nil && a.files[0] != nil {
		clear(a.hot)
		a.writing = true
		if err := j.commitActLocked(); err != nil {
			j.log.Warn("journal: the next Open treats the hot extents as suspect", "err", err)
		}
	}
	a.err = ErrClosed
	a.mu.Unlock()
	for i := range a.files {
		for _, f := range []*vfs.File{&a.files[i], &a.direct[i]} {
			if *f != nil {
				_ = (*f).Close()
				*f = nil
			}
		}
	}
}

// writeAct makes buf file i's content durably. The file is first grown to
// hold it, with its blocks written (allocated), so that a transaction is a
// pure overwrite: with O_DIRECT|O_DSYNC one FUA write where the disk has
// it, instead of an fdatasync that flushes the whole disk cache (measured:
// a flush per transaction cost a fifth of the 1 MiB write throughput).
// Only the transactions' writer calls it.
func (j *Journal) writeAct(i uint64, buf []byte) error {
	a := &j.act
	f := a.files[i]
	n := (int64(len(buf)) + directAlign - 1) / directAlign * directAlign
	if size := a.sizes[i]; n > size || size < actFileSize {
		grow := max(size, actFileSize)
		for grow < n {
			grow *= 2
		}
		if _, err := f.WriteAt(make([]byte, grow-size), size); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		a.sizes[i] = grow
	}
	if d := a.direct[i]; d != nil {
		if int64(cap(a.dbuf)) < n {
			a.dbuf = alignedBuf(int(n))
		}
		b := a.dbuf[:n]
		clear(b[copy(b, buf):])
		if _, err := d.WriteAt(b, 0); !errors.Is(err, syscall.EINVAL) {
			return err
		}
		// Opened, but this write refused: through the page cache from now.
		_ = d.Close()
		a.direct[i] = nil
	}
	if _, err := f.WriteAt(buf, 0); err != nil {
		return err
	}
	return f.Sync()
}

// openActDirect opens the activity log files a second time with O_DIRECT
// and O_DSYNC, on the operating system's file system only (the in-memory
// one of the crash tests makes writes durable at Sync alone).
func (j *Journal) openActDirect() {
	if j.fs != vfs.Default || oDirect == 0 {
		return
	}
	for i, name := range actNames {
		f, err := j.fs.OpenFile(filepath.Join(j.dir, name), os.O_RDWR|oDirect|syscall.O_DSYNC, 0)
		if err == nil {
			j.act.direct[i] = f
		}
	}
}

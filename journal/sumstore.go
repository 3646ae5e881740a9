package journal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/datadir"
	"github.com/grbd/grbd/internal/vfs"
)

// How data.sum follows the table (docs/journal.md, "The checksum file").
// The rule that makes a page trustworthy after a crash: a block's entry in
// data.sum may be older than the block only while something else explains
// the block. Three things do: a record replay re-applies (Open re-reads the
// blocks replay wrote), an extent the activity log holds (Open re-reads
// the log's hot and suspect extents after an unclean stop), and a page that
// fails its CRC (re-read). A checkpoint writes every page whose blocks
// changed before it frees the records that explain them, and an in-place
// write (no record) keeps its extent in the activity log until a page save
// that started after it has completed (activate's pin).

// sumFile is data.sum while the store is open.
type sumFile struct {
	f           vfs.File
	saved       []uint32 // per change counter (sumGenBlocks), its value at the last save
	savedBlocks int64    // the device's blocks at the last save: pages past it are new
	buf         []byte   // checkpoint's scratch
	gens        []uint32 // checkpoint's scratch
	// started counts the page saves begun (one per checkpoint, counted
	// before it waits for the applies in flight); done is the last one
	// that completed.
	started, done atomic.Uint64
	pages         atomic.Uint64 // pages written since Open
	fromFile      uint64        // pages with written blocks Open took from data.sum
}

// sumLoad is what Open found in data.sum.
type sumLoad struct {
	t      *sumTable // nil: rebuild it all
	clean  bool      // the last run closed cleanly
	why    string    // why t is nil
	bad    []bool    // per page: not usable (version 3 only)
	data   []bool    // per page: holds a written block's ID (version 3 only)
	legacy bool      // a whole-file version: rewrite it paged
}

// setupSums gives the opened store its checksum table: from data.sum, with
// the pages a crash can have left stale re-read from the data file, or all
// rebuilt from it when data.sum cannot tell. Then it makes data.sum hold
// the table and say "not closed cleanly", durably, before the first write
// can change a block or the activity log forgets an extent.
func (j *Journal) setupSums() error {
	blocks := (j.devSize.Load() + SumBlockSize - 1) / SumBlockSize
	name := filepath.Join(j.dir, sumName)
	ld := j.loadSums(name, blocks)
	j.openedClean = ld.clean
	t, rewrite := ld.t, ld.legacy || ld.t == nil
	start := time.Now()
	var doubt []bool
	if t == nil {
		t = newSumTable(blocks)
		if err := j.rebuildSums(t, 0, j.devSize.Load()); err != nil {
			return err
		}
		j.log.Info("journal: rebuilt block checksums from the data file", "reason", ld.why,
			"bytes", j.devSize.Load(), "took", time.Since(start).Round(time.Millisecond))
	} else if doubt = j.sumsInDoubt(ld, blocks); doubt != nil {
		n, err := j.rebuildPages(t, doubt)
		if err != nil {
			return err
		}
		j.countFromFile(ld, doubt)
		j.log.Info("journal: re-read the block checksums a crash can have left stale", "pages", n,
			"bytes", n*sumPageBlocks*SumBlockSize, "took", time.Since(start).Round(time.Millisecond),
			"pages_with_data_kept", j.sumf.fromFile)
	} else {
		j.countFromFile(ld, nil)
	}
	j.sums, j.touched = t, nil
	if rewrite {
		return j.writeSumFile(name, blocks)
	}
	return j.openSumFile(name, blocks, doubt)
}

// countFromFile counts the pages holding a written block's ID that Open
// took from data.sum (not in doubt): for the log, and tests.
func (j *Journal) countFromFile(ld sumLoad, doubt []bool) {
	for p, d := range ld.data {
		if d && (doubt == nil || !doubt[p]) {
			j.sumf.fromFile++
		}
	}
}

// sumsSaved records that data.sum holds the table as it is now.
func (j *Journal) sumsSaved(blocks int64) {
	j.sumf.savedBlocks = blocks
	j.sumf.saved = j.sums.gensInto(j.sumf.saved[:0], blocks)
}

// loadSums reads data.sum, or says why it cannot be used.
func (j *Journal) loadSums(name string, blocks int64) sumLoad {
	f, err := j.fs.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return sumLoad{why: "no checksum file: the store was not closed cleanly"}
	}
	if err != nil {
		return sumLoad{why: err.Error()}
	}
	defer f.Close()
	head := make([]byte, sumPageSize)
	n, err := f.ReadAt(head, 0)
	if n < 32 {
		return sumLoad{why: fmt.Sprintf("checksum file header: %d bytes read: %v", n, err)}
	}
	if head[4] == sumVersionIDs || head[4] == sumVersionCRC {
		return j.loadLegacySums(f, blocks)
	}
	salt, clean, err := decodeSumHeader(head)
	switch {
	case err != nil:
		return sumLoad{why: err.Error()}
	case salt != j.salt:
		return sumLoad{why: "the checksum file belongs to another store"}
	}
	ld := sumLoad{t: newSumTable(blocks), clean: clean, bad: make([]bool, sumPages(blocks)), data: make([]bool, sumPages(blocks))}
	buf := make([]byte, 256*sumPageSize)
	for p := int64(0); p < int64(len(ld.bad)); {
		chunk := buf[:min(int64(len(buf)), (int64(len(ld.bad))-p)*sumPageSize)]
		n, _ := f.ReadAt(chunk, sumOffset(p)) // a short file: its missing pages are bad
		for i := 0; i < len(chunk); i, p = i+sumPageSize, p+1 {
			if i+sumPageSize > n {
				ld.bad[p] = true
				continue
			}
			idx, psalt, ids, err := decodeSumPage(chunk[i:])
			if err != nil || idx != p || psalt != j.salt {
				ld.bad[p] = true
				continue
			}
			for k := range min(sumPageBlocks, blocks-p*sumPageBlocks) {
				v := le.Uint32(ids[4*k:])
				ld.t.set(p*sumPageBlocks+k, v)
				ld.data[p] = ld.data[p] || v != zeroBlockSum
			}
		}
	}
	return ld
}

// loadLegacySums reads a whole-file data.sum (version 1 or 2), which a
// clean Close of an earlier build wrote: also "clean" for version 1, whose
// CRC-32Cs the table cannot take (the table is rebuilt, but the activity
// log need not treat the stop as a crash).
func (j *Journal) loadLegacySums(f vfs.File, blocks int64) sumLoad {
	if j.replayed > 0 {
		return sumLoad{why: fmt.Sprintf("the journal replayed %d records", j.replayed)}
	}
	size, err := f.Size()
	if err != nil {
		return sumLoad{why: err.Error()}
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); int64(n) < size {
		return sumLoad{why: fmt.Sprintf("read the checksum file: %v", err)}
	}
	h, body, err := decodeSums(b)
	switch {
	case err != nil:
		return sumLoad{why: err.Error()}
	case h.salt != j.salt:
		return sumLoad{why: "the checksum file belongs to another store"}
	case int64(h.count) != blocks:
		return sumLoad{why: fmt.Sprintf("the checksum file has %d blocks, the device %d", h.count, blocks)}
	case h.version == sumVersionCRC:
		return sumLoad{clean: true, why: "the checksum file holds an earlier build's CRC-32Cs, not block IDs"}
	}
	t := newSumTable(blocks)
	for i := int64(0); i < blocks; i++ {
		t.set(i, le.Uint32(body[4*i:]))
	}
	return sumLoad{t: t, clean: true, legacy: true}
}

// sumsInDoubt marks the pages whose entries a crash can have left older
// than their blocks (see the rule at the top of this file), or returns nil
// for none.
func (j *Journal) sumsInDoubt(ld sumLoad, blocks int64) []bool {
	doubt := make([]bool, sumPages(blocks))
	some := false
	mark := func(off, end int64) {
		if end <= off {
			return
		}
		for p := off / SumBlockSize / sumPageBlocks; p <= (end-1)/SumBlockSize/sumPageBlocks && p < int64(len(doubt)); p++ {
			doubt[p], some = true, true
		}
	}
	for p, bad := range ld.bad {
		if bad {
			doubt[p], some = true, true
		}
	}
	for _, x := range slices.Concat(j.touched, j.torn) {
		mark(int64(x.Offset), int64(x.End()))
	}
	if !ld.clean {
		l := j.readActivityLog()
		if l == nil {
			// No log after an unclean stop: any extent may have been written.
			mark(0, j.devSize.Load())
		} else {
			for _, x := range mergeExtentNums(l.hot, l.suspects) {
				mark(int64(x)*j.act.extent, int64(x+1)*j.act.extent)
			}
		}
	}
	if !some {
		return nil
	}
	return doubt
}

// rebuildPages re-reads the data file under the pages marked in doubt and
// returns how many there were.
func (j *Journal) rebuildPages(t *sumTable, doubt []bool) (int64, error) {
	const span = sumPageBlocks * SumBlockSize
	var n int64
	for p := int64(0); p < int64(len(doubt)); p++ {
		if !doubt[p] {
			continue
		}
		q := p
		for q < int64(len(doubt)) && doubt[q] {
			q++
		}
		start, end := p*span, min(q*span, j.devSize.Load())
		for b := start / SumBlockSize; b < (end+SumBlockSize-1)/SumBlockSize; b++ {
			t.set(b, zeroBlockSum) // holes are not read
		}
		if err := j.rebuildSums(t, start, end); err != nil {
			return 0, err
		}
		n += q - p
		p = q
	}
	return n, nil
}

// rebuildSums sets the entries of the blocks of [start, end) that hold
// data from the data file. Only its data ranges are read: a hole reads back
// as zeros, whose checksum the caller has set. (Reading a sparse 1 GiB data.img took 3.5 s at each restart
// after a crash on this machine, nearly all of it the kernel zero-filling
// page-cache pages for the holes.)
func (j *Journal) rebuildSums(t *sumTable, start, end int64) error {
	buf := make([]byte, 1<<20)
	return dataRanges(j.data, start, end, func(lo, hi int64) error {
		for off := lo; off < hi; off += int64(len(buf)) {
			p := buf[:min(int64(len(buf)), hi-off)]
			if n, err := j.data.ReadAt(p, off); n < len(p) {
				return fmt.Errorf("journal: read data file at %d for checksums: %w", off, err)
			}
			for i := 0; i < len(p); i += SumBlockSize {
				t.set((off+int64(i))/SumBlockSize, blockSum(p[i:min(i+SumBlockSize, len(p))]))
			}
		}
		return nil
	})
}

// dataRanges calls fn, in order, for the ranges of f's bytes [from, size)
// that may hold data, widened to whole checksum blocks (from is one's
// start) and never overlapping: all of it where f cannot tell
// (vfs.DataFinder). It syncs f first, so that the file system answers from
// its allocation rather than from dirty pages: OpenZFS 2.2 could report
// freshly written data as a hole (openzfs/zfs#15526).
func dataRanges(f vfs.File, from, size int64, fn func(start, end int64) error) error {
	df, ok := f.(vfs.DataFinder)
	if !ok {
		return fn(from, size)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: sync the data file: %w", err)
	}
	for off := from; off < size; {
		start, end, err := df.NextData(off)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, vfs.ErrNotSupported):
			return fn(off, size)
		case err != nil:
			return fmt.Errorf("journal: find data in the data file: %w", err)
		case end <= start || start < off:
			return fmt.Errorf("journal: data file reports data range [%d, %d) after %d", start, end, off)
		}
		start = max(off, start/SumBlockSize*SumBlockSize)
		if start >= size {
			return nil
		}
		end = min(size, (end+SumBlockSize-1)/SumBlockSize*SumBlockSize)
		if err := fn(start, end); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// writeSumFile writes data.sum whole (a new store, a rebuilt table, an
// earlier build's file), saying "not closed cleanly", and keeps it open.
// In place, not renamed: every page proves itself by its CRC, so a crash
// part way leaves pages that are current or that fail.
func (j *Journal) writeSumFile(name string, blocks int64) error {
	f, err := j.fs.OpenFile(name, os.O_RDWR|os.O_CREATE, datadir.FileMode)
	if err != nil {
		return fmt.Errorf("journal: open %s: %w", sumName, err)
	}
	j.sumf.f = f
	if err := j.writeSums(encodeSumHeader(nil, j.salt, false), 0); err != nil {
		return err
	}
	if _, err := j.writeSumPages(blocks, func(int64) bool { return true }); err != nil {
		return err
	}
	if err := f.Truncate(sumOffset(sumPages(blocks))); err != nil {
		return fmt.Errorf("journal: size %s: %w", sumName, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: sync %s: %w", sumName, err)
	}
	if err := j.fs.SyncDir(j.dir); err != nil {
		return fmt.Errorf("journal: sync dir %s: %w", j.dir, err)
	}
	j.sumsSaved(blocks)
	return nil
}

// openSumFile opens a version-3 data.sum for updates: it writes the pages
// rebuilt (doubt) and a header that says "not closed cleanly", durably.
func (j *Journal) openSumFile(name string, blocks int64, doubt []bool) error {
	f, err := j.fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("journal: open %s: %w", sumName, err)
	}
	j.sumf.f = f
	if doubt != nil {
		if _, err := j.writeSumPages(blocks, func(p int64) bool { return doubt[p] }); err != nil {
			return err
		}
	}
	if err := j.writeSums(encodeSumHeader(nil, j.salt, false), 0); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: sync %s: %w", sumName, err)
	}
	j.sumsSaved(blocks)
	return nil
}

// writeSums writes b at off in data.sum, counting its pages.
func (j *Journal) writeSums(b []byte, off int64) error {
	if _, err := j.sumf.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("journal: write %s at %d: %w", sumName, off, err)
	}
	j.sumf.pages.Add(uint64(len(b) / sumPageSize))
	return nil
}

// writeSumPages writes the pages p of data.sum for which want(p) holds,
// runs of adjacent pages (up to 1 MiB) in one write, without a sync. It
// reports whether it wrote any.
func (j *Journal) writeSumPages(blocks int64, want func(p int64) bool) (wrote bool, err error) {
	s := &j.sumf
	s.buf = s.buf[:0]
	next := int64(-1) // the page after the last one in buf
	flush := func() error {
		if len(s.buf) == 0 {
			return nil
		}
		err := j.writeSums(s.buf, sumOffset(next)-int64(len(s.buf)))
		s.buf, wrote = s.buf[:0], true
		return err
	}
	for p := int64(0); p < sumPages(blocks); p++ {
		if !want(p) {
			continue
		}
		if p != next || len(s.buf) >= 1<<20 {
			if err := flush(); err != nil {
				return wrote, err
			}
		}
		s.buf = encodeSumPage(s.buf, j.sums, p, blocks, j.salt)
		next = p + 1
	}
	return wrote, flush()
}

// saveSums writes, durably, the pages of data.sum whose blocks' entries
// changed since the last save: a checkpoint's, after every write it covers
// has set its entries and before the meta file frees their records.
func (j *Journal) saveSums() error {
	s := &j.sumf
	if s.f == nil {
		return nil
	}
	blocks := (j.devSize.Load() + SumBlockSize - 1) / SumBlockSize
	// The counters first: an entry set after its counter was read is saved
	// again next time, since its counter moved.
	s.gens = j.sums.gensInto(s.gens[:0], blocks)
	wrote, err := j.writeSumPages(blocks, s.pageChanged)
	if err != nil {
		return err
	}
	if wrote {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("journal: sync %s: %w", sumName, err)
		}
	}
	s.saved, s.gens = s.gens, s.saved
	s.savedBlocks = blocks
	return nil
}

// pageChanged says whether page p's entries may differ from the file's:
// one of its counters moved, or it holds blocks a grow added since.
func (s *sumFile) pageChanged(p int64) bool {
	if (p+1)*sumPageBlocks > s.savedBlocks {
		return true
	}
	first := p * sumPageBlocks / sumGenBlocks
	for g := first; g < first+sumPageBlocks/sumGenBlocks && g < int64(len(s.gens)); g++ {
		if g >= int64(len(s.saved)) || s.gens[g] != s.saved[g] {
			return true
		}
	}
	return false
}

// closeSums closes data.sum; clean (the last checkpoint covered every
// write, and no write runs any more) first saves the pages a write applied
// after that checkpoint changed, then marks the file closed cleanly.
func (j *Journal) closeSums(clean bool) {
	f := j.sumf.f
	if f == nil {
		return
	}
	if clean {
		err := j.saveSums()
		if err == nil {
			_, err = f.WriteAt(encodeSumHeader(nil, j.salt, true), 0)
		}
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			j.log.Warn("journal: the next Open treats this stop as a crash", "err", err)
		}
	}
	j.sumf.f = nil
	_ = f.Close()
}

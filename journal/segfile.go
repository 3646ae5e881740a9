package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grbd/grbd/internal/datadir"
	"github.com/grbd/grbd/internal/vfs"
)

// Segment files are reused: a checkpoint keeps the files of the segments
// it frees as spares (renamed NNNNNNNN.spare), and rotation renames a
// spare to the new segment's name and writes its header over the old one.
// Appends then overwrite pages and blocks the file already has instead of
// allocating new ones: measured on this machine, a 4 KiB append into a
// reused file cost 2.3-2.8 us of CPU against 6.0-6.1 us into a new
// preallocated one, and appends with an fdatasync every 128 KiB ran 1.4-2x
// faster (docs/journal.md, "Reused segment files"). The records of a
// file's earlier lives stay behind the new ones; version-2 segments make
// them harmless (segSalt, replay's rules).

const spareSuffix = ".spare"

func spareName(num uint64) string { return fmt.Sprintf("%08d%s", num, spareSuffix) }

// createSegment creates segment num with its header (not synced), in a
// spare file when there is one.
func (j *Journal) createSegment(num, firstSeq uint64) (*segment, error) {
	name := filepath.Join(j.jdir, segName(num))
	f := j.reuseSpare(name)
	if f == nil {
		var err error
		if f, err = j.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, datadir.FileMode); err != nil {
			return nil, fmt.Errorf("journal: create segment: %w", err)
		}
	}
	hdr := segHeader{version: segVersion2, num: num, firstSeq: firstSeq, salt: j.salt}
	var b [segHeaderSize]byte
	encodeSegHeader(b[:], hdr)
	if _, err := f.WriteAt(b[:], 0); err != nil {
		_ = f.Close()
		_ = j.fs.Remove(name)
		return nil, fmt.Errorf("journal: write segment %d header: %w", num, err)
	}
	if err := j.preallocate(f, num); err != nil {
		_ = f.Close()
		_ = j.fs.Remove(name)
		return nil, err
	}
	return newSegment(hdr, f, segHeaderSize), nil
}

// newSegment is the in-memory segment for header hdr of file f, its
// records ending at size.
func newSegment(hdr segHeader, f vfs.File, size int64) *segment {
	return &segment{num: hdr.num, firstSeq: hdr.firstSeq, salt: hdr.recordSalt(), version: hdr.version,
		f: f, lastSeq: hdr.firstSeq - 1, size: size}
}

// reuseSpare renames a spare file to name and opens it; nil if there is
// no spare or its reuse failed (that spare is then removed).
func (j *Journal) reuseSpare(name string) vfs.File {
	j.spareMu.Lock()
	n := len(j.spares)
	if n == 0 {
		j.spareMu.Unlock()
		return nil
	}
	spare := j.spares[n-1]
	j.spares = j.spares[:n-1]
	j.spareMu.Unlock()
	if err := j.fs.Rename(spare, name); err != nil {
		j.log.Warn("journal: reuse spare segment file", "file", spare, "err", err)
		_ = j.fs.Remove(spare)
		return nil
	}
	f, err := j.fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		j.log.Warn("journal: open reused segment file", "file", name, "err", err)
		_ = j.fs.Remove(name)
		return nil
	}
	j.reused.Add(1)
	return f
}

// retire disposes of the files of the segments free that a checkpoint
// freed: the version-2 ones no reader or syncer still had open (reusable)
// are kept as spares while the live segments and the spares fit in
// MaxSize, the rest removed. Neither needs to be durable: a freed segment that comes back
// after a crash holds only checkpointed records, and replay drops it. A
// spare joins j.spares only once its name is durable, so that a crash
// never brings a reused file back under its spare name (Open removes
// every spare: one from before a crash may hold records of a segment
// number that replay then hands out again, with the same salt).
func (j *Journal) retire(free []*segment, reusable []bool, live int) {
	j.spareMu.Lock()
	room := int(j.maxSize/j.segSize) - live - len(j.spares)
	j.spareMu.Unlock()
	var kept []string
	for i, s := range free {
		name := filepath.Join(j.jdir, segName(s.num))
		if reusable[i] && room > 0 {
			spare := filepath.Join(j.jdir, spareName(s.num))
			if err := j.fs.Rename(name, spare); err == nil {
				kept = append(kept, spare)
				room--
				continue
			}
		}
		if err := j.fs.Remove(name); err != nil {
			j.log.Warn("journal: remove freed segment", "segment", s.num, "err", err)
		}
	}
	if len(free) == 0 {
		return
	}
	if err := j.fs.SyncDir(j.jdir); err != nil {
		j.log.Warn("journal: sync dir after freeing segments", "err", err)
		return // the spares stay unused until Open removes them
	}
	j.spareMu.Lock()
	j.spares = append(j.spares, kept...)
	j.spareMu.Unlock()
}

// isSpare reports whether a journal directory entry is a spare segment
// file.
func isSpare(name string) bool {
	var num uint64
	_, err := fmt.Sscanf(name, "%d"+spareSuffix, &num)
	return err == nil && spareName(num) == name
}

// removeSpares removes the spare files names of the journal directory
// (Open: see retire). An error is only logged: a spare left behind is
// removed by the next Open.
func (j *Journal) removeSpares(names []string) {
	for _, name := range names {
		if err := j.fs.Remove(filepath.Join(j.jdir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			j.log.Warn("journal: remove spare segment file", "file", name, "err", err)
		}
	}
}

// preallocate reserves a whole segment's space in f (fallocate): appending
// records then overwrites allocated zeros instead of growing the file, which
// on ext4 costs several times less per write and per fdatasync. A reused
// file is whole already (rotation no longer trims version-2 segments).
func (j *Journal) preallocate(f vfs.File, num uint64) error {
	a, ok := f.(vfs.Allocator)
	if !ok {
		return nil
	}
	if err := a.Allocate(0, j.segSize); err != nil && !errors.Is(err, vfs.ErrNotSupported) {
		return fmt.Errorf("journal: preallocate segment %d: %w", num, err)
	}
	return nil
}

// candidateSalts are the record salts segment num may carry, given its
// header bytes hb: the header's own if it names num; a version-2
// segment's if it is a header of the file's earlier life (its new one was
// lost: every segment made since version 2 is version 2), so that old
// records with their sync hints prove nothing; either if it is torn (a
// version-1 segment's records carry the journal's salt, and no file that
// held them is ever reused, so no older record carries it).
func (j *Journal) candidateSalts(num uint64, hb []byte) []uint64 {
	hdr, err := decodeSegHeader(hb)
	switch {
	case err == nil && hdr.salt == j.salt && hdr.num == num:
		return []uint64{hdr.recordSalt()}
	case err == nil && hdr.salt == j.salt:
		return []uint64{segSalt(j.salt, num)}
	}
	return []uint64{j.salt, segSalt(j.salt, num)}
}

// ownHeader decodes hb as a header of this journal that names segment num.
func (j *Journal) ownHeader(hb []byte, num uint64) (segHeader, bool) {
	hdr, err := decodeSegHeader(hb)
	return hdr, err == nil && hdr.salt == j.salt && hdr.num == num
}

// segmentEnds reports whether the records of seg, not the last segment,
// end at off, where the last one has seq last. A version-1 segment ends in
// zeros. A version-2 one ends where the next segment, next, starts right
// after last, or where no record of its own follows (zeros included). The
// first is the common case and spares reading the rest of the file (up to a
// segment of zeros or of a reused file's older bytes).
func (j *Journal) segmentEnds(r *segReader, seg *segment, off int64, last, next uint64) bool {
	if seg.version == segVersion1 {
		return r.zeroFrom(off)
	}
	if j.firstSeqOf(next) == last+1 {
		return true
	}
	valid, _ := j.scanLater(r, off, last, seg.salt)
	return valid == 0
}

// firstSeqOf returns the first seq of segment num per its header, 0 if the
// header does not name it.
func (j *Journal) firstSeqOf(num uint64) uint64 {
	f, err := j.fs.OpenFile(filepath.Join(j.jdir, segName(num)), os.O_RDONLY, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	var b [segHeaderSize]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return 0
	}
	if hdr, ok := j.ownHeader(b[:], num); ok {
		return hdr.firstSeq
	}
	return 0
}

// damagedHeaderAt reports whether the bytes at off, which do not decode,
// are a damaged record of the segment rather than where its records end
// (zeros, or a reused file's older records: another salt, lower seqs). One
// flipped bit leaves the magic or the salt intact: a record header with the
// salt, or with the magic and a seq above last.
func (r *segReader) damagedHeaderAt(off int64, salt, last uint64) bool {
	magic, seq, s, ok := r.headerAt(off)
	return ok && (s == salt || magic == recordMagic && seq > last)
}

// ownHeaderAt reports whether the bytes at off start a record header with
// the magic and salt: a record of the segment torn in its data, rather
// than a reused file's older bytes.
func (r *segReader) ownHeaderAt(off int64, salt uint64) bool {
	magic, _, s, ok := r.headerAt(off)
	return ok && magic == recordMagic && s == salt
}

// headerAt reads the magic, seq and salt fields of a record header at off,
// decoded or not; false where no whole header fits.
func (r *segReader) headerAt(off int64) (magic uint32, seq, salt uint64, ok bool) {
	b, err := r.peek(off, RecordHeaderSize)
	if err != nil || len(b) < RecordHeaderSize {
		return 0, 0, 0, false
	}
	le := binary.LittleEndian
	return le.Uint32(b), le.Uint64(b[16:]), le.Uint64(b[48:]), true
}

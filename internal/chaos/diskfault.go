package chaos

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/grbd/grbd/internal/crc32c"
)

// The journal layout this file damages is documented in docs/journal.md
// (format version 1); it is read here independently of package journal, as
// a black box would: segment header 64 bytes with the sync mark at 48 (u64)
// and its CRC32C over 48..60 at 60; records 8-aligned from offset 64, each
// with magic "GRJR" at 0, total length at 8 (u32), seq at 16 (u64) and a
// sync hint at 56 (u32) and a header CRC32C over 0..60 at 60.
const (
	segHeaderSize    = 64
	recHeaderSize    = 64
	recMagic         = 0x524a5247 // "GRJR"
	segMagic         = 0x534a5247 // "GRJS"
	segSyncMarkOff   = 48
	segSyncMarkCRC   = 60
	recLengthOff     = 8
	recSeqOff        = 16
	recSaltOff       = 48
	recSyncedOff     = 56
	segFirstSeqOff   = 24
	recHeaderCRCOff  = 60
	journalSubdir    = "journal"
	dataImage        = "data.img"
	fillerFileName   = "chaos-filler"
	segmentExtension = ".seg"
)

// journalRecord is one record found in a segment.
type journalRecord struct {
	Off, Len int64
	Seq      uint64
	Hint     int64 // its sync hint: bytes of the segment durable when it was appended
	Synced   bool  // proven durable (readJournal)
}

// journalSegment is one segment file.
type journalSegment struct {
	Path    string
	Num     int
	Size    int64
	Mark    int64 // synced bytes per the sync mark (0 if the mark is torn)
	Records []journalRecord
}

// readJournal lists the segments of a stopped node's journal, oldest first,
// with the intact records of each (scanning stops at the first bad header).
func readJournal(dataDir string) ([]journalSegment, error) {
	dir := filepath.Join(dataDir, journalSubdir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("chaos: journal of %s: %w", dataDir, err)
	}
	var segs []journalSegment
	for _, e := range ents {
		num, err := strconv.Atoi(strings.TrimSuffix(e.Name(), segmentExtension))
		if err != nil || !strings.HasSuffix(e.Name(), segmentExtension) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("chaos: read segment: %w", err)
		}
		segs = append(segs, parseSegment(filepath.Join(dir, e.Name()), num, b))
	}
	slices.SortFunc(segs, func(a, b journalSegment) int { return a.Num - b.Num })
	markSynced(segs)
	return segs, nil
}

// markSynced says which records were made durable, as docs/journal.md
// ("Replay") proves it: the segment's sync mark or a later record's sync
// hint covers the record, or a later segment was ever synced (a sync mark
// or a hint in it), since the journal syncs a rotated-out segment before
// anything newer. A kill right after a rotation leaves the records of the
// segment before it unproven.
func markSynced(segs []journalSegment) {
	laterSynced := false
	for i := len(segs) - 1; i >= 0; i-- {
		s := &segs[i]
		covered := s.Mark
		for j := len(s.Records) - 1; j >= 0; j-- {
			r := &s.Records[j]
			r.Synced = laterSynced || r.Off+r.Len <= covered
			covered = max(covered, r.Hint)
		}
		laterSynced = laterSynced || covered > 0
	}
}

func parseSegment(path string, num int, b []byte) journalSegment {
	s := journalSegment{Path: path, Num: num, Size: int64(len(b))}
	if len(b) < segHeaderSize || binary.LittleEndian.Uint32(b) != segMagic {
		return s
	}
	if crc32.Checksum(b[segSyncMarkOff:segSyncMarkCRC], crc32c.Table) == binary.LittleEndian.Uint32(b[segSyncMarkCRC:]) {
		s.Mark = int64(binary.LittleEndian.Uint64(b[segSyncMarkOff:]))
	}
	// A reused segment file holds records of its earlier lives after the
	// current ones: they carry another salt and lower seqs.
	le := binary.LittleEndian
	prev, salt := le.Uint64(b[segFirstSeqOff:])-1, uint64(0)
	for off := int64(segHeaderSize); off+recHeaderSize <= int64(len(b)); {
		h := b[off : off+recHeaderSize]
		n, seq := int64(le.Uint32(h[recLengthOff:])), le.Uint64(h[recSeqOff:])
		if le.Uint32(h) != recMagic ||
			crc32.Checksum(h[:recHeaderCRCOff], crc32c.Table) != le.Uint32(h[recHeaderCRCOff:]) ||
			n < recHeaderSize || off+n > int64(len(b)) || seq <= prev || salt != 0 && le.Uint64(h[recSaltOff:]) != salt {
			break
		}
		s.Records = append(s.Records, journalRecord{Off: off, Len: n, Seq: seq, Hint: int64(le.Uint32(h[recSyncedOff:]))})
		prev, salt = seq, le.Uint64(h[recSaltOff:])
		off += n
	}
	return s
}

// JournalDamage says what a journal fault did.
type JournalDamage struct {
	Segment string
	Offset  int64 // of the flipped byte, or the new file size after a tear
	Bit     uint  // flipped bit (bit flips)
	Seq     uint64
	Synced  bool // the damaged record was covered by a completed fdatasync
	Torn    bool // a truncation rather than a bit flip
}

func (d JournalDamage) String() string {
	what := fmt.Sprintf("bit %d of byte %d", d.Bit, d.Offset)
	if d.Torn {
		what = fmt.Sprintf("truncated to %d bytes", d.Offset)
	}
	state := "unsynced"
	if d.Synced {
		state = "synced"
	}
	return fmt.Sprintf("%s: %s, inside %s record seq %d", filepath.Base(d.Segment), what, state, d.Seq)
}

// Undo flips the bit back (bit flips only).
func (d JournalDamage) Undo() error {
	if d.Torn {
		return fmt.Errorf("chaos: a tear cannot be undone")
	}
	return flipBit(d.Segment, d.Offset, d.Bit)
}

// TearJournalTail truncates the last segment in the middle of one of its
// unsynced records, as a crash that lost part of an unsynced append would
// (the node must be down). ErrNothingToDamage when the tail is all synced.
func TearJournalTail(dataDir string, rng *rand.Rand) (JournalDamage, error) {
	segs, err := readJournal(dataDir)
	if err != nil || len(segs) == 0 {
		return JournalDamage{}, fmt.Errorf("%w: no segments: %v", ErrNothingToDamage, err)
	}
	last := segs[len(segs)-1]
	var cands []journalRecord
	for _, r := range last.Records {
		if !r.Synced && r.Off >= last.Mark {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		return JournalDamage{}, fmt.Errorf("%w: %s has no unsynced record (mark %d, %d records)", ErrNothingToDamage, last.Path, last.Mark, len(last.Records))
	}
	r := cands[rng.IntN(len(cands))]
	cut := r.Off + 1 + rng.Int64N(r.Len-1)
	if err := os.Truncate(last.Path, cut); err != nil {
		return JournalDamage{}, fmt.Errorf("chaos: tear %s: %w", last.Path, err)
	}
	return JournalDamage{Segment: last.Path, Offset: cut, Seq: r.Seq, Torn: true}, nil
}

// FlipJournalBit flips one random bit inside a journal record: a synced one
// (any segment; the node must refuse to start) or an unsynced one of the last
// segment (the node may cut it as a torn tail).
func FlipJournalBit(dataDir string, rng *rand.Rand, synced bool) (JournalDamage, error) {
	segs, err := readJournal(dataDir)
	if err != nil {
		return JournalDamage{}, err
	}
	type cand struct {
		seg string
		r   journalRecord
	}
	var cands []cand
	for i, s := range segs {
		for _, r := range s.Records {
			if r.Synced == synced && (synced || (i == len(segs)-1 && r.Off >= s.Mark)) {
				cands = append(cands, cand{s.Path, r})
			}
		}
	}
	if len(cands) == 0 {
		return JournalDamage{}, fmt.Errorf("%w: no record with synced=%t", ErrNothingToDamage, synced)
	}
	c := cands[rng.IntN(len(cands))]
	d := JournalDamage{Segment: c.seg, Offset: c.r.Off + rng.Int64N(c.r.Len), Bit: uint(rng.IntN(8)), Seq: c.r.Seq, Synced: synced}
	return d, flipBit(d.Segment, d.Offset, d.Bit)
}

// FlipDataBit flips one random bit of data.img in [off, off+n).
func FlipDataBit(dataDir string, off, n int64, rng *rand.Rand) (string, error) {
	at, bit := off+rng.Int64N(n), uint(rng.IntN(8))
	if err := flipBit(filepath.Join(dataDir, dataImage), at, bit); err != nil {
		return "", err
	}
	return fmt.Sprintf("data.img bit %d of byte %d", bit, at), nil
}

// MisdirectBlock copies the n bytes of data.img at from over those at to
// (a write the disk put in the wrong place, or an older block it left
// behind): the damage a CRC-32C table cannot see when both blocks end in
// their own CRC-32C, as every workload block does (block.go). It does
// nothing, and returns false, when the two hold the same bytes.
func MisdirectBlock(dataDir string, to, from, n int64) (bool, error) {
	path := filepath.Join(dataDir, dataImage)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("chaos: misdirect block: %w", err)
	}
	defer f.Close()
	b, old := make([]byte, n), make([]byte, n)
	if _, err := f.ReadAt(b, from); err != nil {
		return false, fmt.Errorf("chaos: misdirect block of %s at %d: %w", path, from, err)
	}
	if _, err := f.ReadAt(old, to); err != nil {
		return false, fmt.Errorf("chaos: misdirect block of %s to %d: %w", path, to, err)
	}
	if bytes.Equal(b, old) {
		return false, nil
	}
	if _, err := f.WriteAt(b, to); err != nil {
		return false, fmt.Errorf("chaos: misdirect block of %s to %d: %w", path, to, err)
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("chaos: misdirect block: %w", err)
	}
	return true, nil
}

func flipBit(path string, off int64, bit uint) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("chaos: flip bit: %w", err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return fmt.Errorf("chaos: flip bit in %s at %d: %w", path, off, err)
	}
	b[0] ^= 1 << bit
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("chaos: flip bit in %s at %d: %w", path, off, err)
	}
	return f.Sync()
}

// MountTmpfs mounts a tmpfs of size bytes on dir (created if needed) and
// returns its unmount. ErrSkip when not root.
func MountTmpfs(dir string, size int64) (func() error, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: a small filesystem for disk-full faults needs root (mount -t tmpfs)", ErrSkip)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: tmpfs dir: %w", err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		return nil, fmt.Errorf("chaos: mount tmpfs on %s: %w", dir, err)
	}
	return func() error {
		if err := unix.Unmount(dir, 0); err != nil {
			// A process still holding a file: lazy unmount frees it when
			// the process goes.
			if err2 := unix.Unmount(dir, unix.MNT_DETACH); err2 != nil {
				return fmt.Errorf("chaos: unmount %s: %w", dir, err)
			}
		}
		return nil
	}, nil
}

// FillDisk allocates a filler file in dir until its filesystem is full, then
// gives back leave bytes, and returns the function that removes the filler.
// It grows the filler step by step because the node keeps writing: "free
// space" is a moving target.
func FillDisk(dir string, leave int64) (func() error, error) {
	path := filepath.Join(dir, fillerFileName)
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("chaos: filler: %w", err)
	}
	defer f.Close()
	var size int64
	for _, step := range []int64{4 << 20, 64 << 10, 4 << 10} {
		for unix.Fallocate(int(f.Fd()), 0, size, step) == nil {
			size += step
		}
	}
	if err := f.Truncate(max(size-leave, 0)); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("chaos: filler: %w", err)
	}
	return func() error { return os.Remove(path) }, nil
}

// Package journal is the write path of one grbd node: a journaled block
// store made of a data file (the device image, data.img), a write-ahead
// journal of physical redo records (journal/NNNNNNNN.seg) and a small meta
// file holding the last checkpoint and a per-region table of last writes.
//
// Append writes a record to the journal (page cache) and applies it to the
// data file, so reads see it at once. Sync group-commits the journal: many
// callers share one fdatasync. Checkpoint makes the data file durable,
// records the checkpoint in meta and frees the segments no longer needed.
// Open replays the records past the checkpoint and cuts a torn tail. The
// formats and the replay rules are in docs/journal.md.
//
// Durability: a write is durable once Sync(s) with s >= its seq returned nil,
// or a checkpoint covering it completed. After a power loss the store holds
// every durable write. A write that was not yet durable may survive or not;
// in the data file its sectors may hold old or new bytes (like a disk with a
// volatile cache), and the recovered LastSeq does not count it.
//
// Concurrency: a Journal is safe for concurrent use. Appends are serialized
// by one mutex held across seq assignment, the journal write and the
// data-file write, so the data file reflects the journal in seq order. ReadAt
// runs concurrently with everything; a read racing an overlapping write sees
// old or new bytes per sector. One journal fdatasync is in flight at a time.
// Checkpoints never hold the append mutex across an fdatasync; they run in a
// background goroutine once MaxSize/4 journal bytes (or 4*MaxSize bytes of
// extent-record data) accumulated, and when a writer blocks on a full
// journal (MaxSize).
package journal

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/grbd/grbd/internal/datadir"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/vfs"
)

// Defaults and limits of Options.
const (
	DefaultSegmentSize = 64 << 20
	DefaultMaxSize     = 1 << 30
	MinSegmentSize     = 4 << 10
	MaxSegmentSize     = 1 << 30 // the record sync hint is 32 bits

	dataName    = "data.img"
	journalName = "journal"
)

// Options configure Open.
type Options struct {
	Dir         string       // holds data.img, meta, journal/NNNNNNNN.seg
	FS          vfs.FS       // default vfs.Default
	DeviceSize  int64        // required when creating; on reopen 0 or at most the store's size (a store grows by resize records)
	SegmentSize int64        // default 64 MiB
	MaxSize     int64        // journal bytes bound, default 1 GiB, at least 2 segments
	RegionSize  int64        // dirty-tracking granularity; default 4 KiB, grown to <= 4M regions
	Logger      *slog.Logger // default: discard
	// ActivityExtents bounds the activity log's hot set, in
	// ActivityExtentSize extents; default DefaultActivityExtents.
	ActivityExtents int

	// InPlaceMin is the smallest write (on whole blocks) that is written
	// in place with an extent record instead of through the journal
	// (docs/journal.md, "Large writes in place"); 0: DefaultInPlaceMin,
	// negative: never.
	InPlaceMin int64

	// BootID names this boot of the machine; default the kernel's
	// boot_id. An unclean stop in the same boot was the process's (the
	// page cache kept its writes), not a power loss ("Activity log").
	BootID string

	activityExtentSize int64 // tests: below ActivityExtentSize
	activityLookahead  int64 // tests: other than actLookahead
}

// Journal is an open journaled block store. See the package documentation.
type Journal struct {
	fs               vfs.FS
	log              *slog.Logger
	dir, jdir        string
	segSize, maxSize int64
	salt             uint64
	data             vfs.File

	spareMu sync.Mutex // guards spares; taken after mu
	spares  []string   // freed segment files to reuse, their names durable (segfile.go)

	ckMu     sync.Mutex // serializes checkpoints; taken before mu
	metaBuf  []byte     // guarded by ckMu
	ckClosed bool       // guarded by ckMu

	mu           sync.Mutex // the append lock; guards the fields below
	spaceCond    sync.Cond  // on mu: journal space freed, closed or failed
	segs         []*segment // oldest first; the last one is active
	rotated      []*segment // rotated out, not yet synced (the next Sync leader's)
	lastSeq      uint64     // the last record's or the checkpoint's
	inPlaceSeq   uint64     // the last in-place write's, when above lastSeq (WriteInPlace)
	regions      []uint64   // per region the seq of its last write
	regionSize   int64      // grows (doubles) only when a resize would pass maxRegions
	journalBytes int64
	appended     int64 // journal bytes appended since Open
	ckptAppended int64 // appended as of the last checkpoint's snapshot
	retain       uint64
	waiters      int    // appenders blocked on space
	ckptFails    uint64 // failed checkpoints, to wake blocked appenders
	ckptErr      error
	closed       bool
	punch        vfs.Puncher // nil if the data file cannot punch holes
	nextTicket   uint64      // log order of the next record
	buf          []byte      // record encoding scratch
	placedBuf    []bool      // scratch: which writes of a batch are extent records
	hooks        testHooks

	direct directFile // data.img with O_DIRECT, for WriteInPlace

	inPlaceMin      int64                 // Options.InPlaceMin; <= 0: never
	placed          []uint64              // guarded by mu: per region, whether its last write was an extent record (a bit set)
	extentSeq       uint64                // guarded by mu: the last extent record's seq
	extentBytes     int64                 // guarded by mu: data bytes of extent records since Open
	ckptExtentBytes int64                 // guarded by mu: extentBytes as of the last checkpoint's snapshot
	imageSynced     atomic.Uint64         // every extent record <= it has its data durable in data.img
	extentBlocks    map[int64]extentBlock // Open only: for verifyExtents
	torn            []extent.Extent       // Open only: blocks of extent records without their data
	touched         []extent.Extent       // Open only: the ranges replay wrote (or grew)

	sums           *sumTable // nil until Open has replayed; then set once
	sumf           sumFile   // data.sum (sumstore.go)
	openedClean    bool      // created, or the last run closed cleanly
	act            activity
	checksumErrors atomic.Uint64
	replayed       int // records replay applied

	applyMu   sync.Mutex            // guards applying
	applyCond sync.Cond             // on applyMu: a data-file write landed
	applying  map[uint64]applyRange // by ticket: logged, data-file write pending

	smu        sync.Mutex // group commit state
	syncCond   sync.Cond  // on smu
	syncing    bool       // a leader is syncing
	syncClosed bool

	syncMu sync.Mutex // held across every journal fdatasync: one in flight

	life       sync.RWMutex // ReadAt (read side) against Close
	lifeClosed bool

	devSize                    atomic.Int64 // grows under mu (resize records), never shrinks
	lastSeqA, durable, ckptSeq atomic.Uint64
	writes, syncs, ckpts       atomic.Uint64
	reused                     atomic.Uint64 // segment files reused (segfile.go)
	inPlace                    atomic.Uint64 // bytes written in place since Open
	extents                    atomic.Uint64 // extent records appended since Open
	closing                    atomic.Bool
	failure                    atomic.Pointer[error]
	noPunch                    atomic.Bool // the data file said ErrNotSupported

	ckptReq  chan struct{}
	aheadReq chan struct{} // the active segment holds syncAhead unsynced bytes
	done     chan struct{}
	bg       sync.WaitGroup
}

// testHooks let tests observe the write path.
type testHooks struct {
	beforeWrite func(w Write, inPlace bool) // under mu, seq assigned, before the journal write
}

// segment is one journal file.
type segment struct {
	num, firstSeq uint64
	salt          uint64 // the salt its records carry (segHeader.recordSalt)
	version       uint16 // of its header: what may follow its records
	f             vfs.File
	synced        atomic.Int64 // bytes made durable by fdatasync (the sync mark)

	// Guarded by Journal.mu.
	lastSeq uint64 // firstSeq-1 while empty
	size    int64
	refs    int  // readers and syncers using f
	freed   bool // removed from Journal.segs; close f when refs drops to 0

	dirSynced bool // guarded by Journal.syncMu: its name is durable

	// endErr, replay only: why a record of this segment did not decode
	// where replay took its records to end (a rotated-out segment), for
	// the refusal that names it if records then turn out missing.
	endErr error
}

func (s *segment) empty() bool { return s.lastSeq < s.firstSeq }

func segName(num uint64) string { return fmt.Sprintf("%08d.seg", num) }

// Open creates a store in opts.Dir, or opens the one there and replays its
// journal. See docs/journal.md for the replay rules.
func Open(opts Options) (*Journal, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("%w: Dir is required", ErrInvalidOptions)
	}
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.MaxSize == 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case opts.SegmentSize < MinSegmentSize || opts.SegmentSize > MaxSegmentSize:
		return nil, fmt.Errorf("%w: SegmentSize %d not in [%d, %d]", ErrInvalidOptions, opts.SegmentSize, MinSegmentSize, MaxSegmentSize)
	case opts.MaxSize < 2*opts.SegmentSize:
		return nil, fmt.Errorf("%w: MaxSize %d below 2 segments", ErrInvalidOptions, opts.MaxSize)
	case opts.DeviceSize < 0:
		return nil, fmt.Errorf("%w: DeviceSize %d", ErrInvalidOptions, opts.DeviceSize)
	case opts.ActivityExtents < 0:
		return nil, fmt.Errorf("%w: ActivityExtents %d", ErrInvalidOptions, opts.ActivityExtents)
	}
	if opts.ActivityExtents == 0 {
		opts.ActivityExtents = DefaultActivityExtents
	}
	if opts.InPlaceMin == 0 {
		opts.InPlaceMin = DefaultInPlaceMin
	}
	j := &Journal{
		fs: opts.FS, log: opts.Logger, dir: opts.Dir, jdir: filepath.Join(opts.Dir, journalName),
		segSize: opts.SegmentSize, maxSize: opts.MaxSize, retain: ^uint64(0),
		ckptReq: make(chan struct{}, 1), aheadReq: make(chan struct{}, 1), done: make(chan struct{}),
		applying: map[uint64]applyRange{}, inPlaceMin: opts.InPlaceMin,
	}
	j.spaceCond.L = &j.mu
	j.applyCond.L = &j.applyMu
	j.syncCond.L = &j.smu
	j.act.extent = cmp.Or(opts.activityExtentSize, ActivityExtentSize) // set first: setupSums reads the log
	err := j.open(opts.DeviceSize, opts.RegionSize)
	if err == nil {
		err = j.openActivity(j.openedClean, opts.ActivityExtents, cmp.Or(opts.activityLookahead, actLookahead), cmp.Or(opts.BootID, bootID()))
	}
	if err != nil {
		j.closeFiles(false)
		return nil, err
	}
	// The records replayed count toward the next checkpoint as if just
	// appended: a node restarted often, each run short, would otherwise
	// never checkpoint, and every run left a segment behind (the chaos
	// soak's single-disk-full filled its disk with them).
	j.appended = j.journalBytes
	j.bg.Add(2)
	go j.background("checkpoint", j.ckptReq, j.checkpoint)
	go j.background("sync", j.aheadReq, func() error { return j.Sync(j.lastSeqA.Load()) })
	return j, nil
}

func (j *Journal) open(deviceSize, regionSize int64) error {
	if err := j.fs.MkdirAll(j.jdir, datadir.DirMode); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := j.fs.Remove(filepath.Join(j.dir, metaTmpName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("journal: remove stale meta.tmp: %w", err)
	}
	m, err := j.readMeta()
	if err != nil {
		return err
	}
	if m == nil {
		return j.create(deviceSize, regionSize)
	}
	j.regionSize, j.salt, j.regions = m.regionSize, m.salt, m.regions
	j.devSize.Store(m.deviceSize)
	j.ckptSeq.Store(m.checkpointSeq)
	if j.data, err = j.fs.OpenFile(filepath.Join(j.dir, dataName), os.O_RDWR, 0); err != nil {
		return fmt.Errorf("journal: open data file: %w", err)
	}
	size, err := j.data.Size()
	if err != nil {
		return fmt.Errorf("journal: stat data file: %w", err)
	}
	if size < m.deviceSize {
		return fmt.Errorf("%w: data file is %d bytes, meta says %d", ErrCorrupt, size, m.deviceSize)
	}
	// A larger data file is a grow after the checkpoint: replay re-applies
	// its resize record, or cuts the grow off (trimData) if it was lost.
	j.punch, _ = j.data.(vfs.Puncher)
	if err := j.replay(m.checkpointSeq); err != nil {
		return err
	}
	if err := j.trimData(size); err != nil {
		return err
	}
	if deviceSize > j.devSize.Load() {
		return fmt.Errorf("%w: store in %s has %d bytes, options say %d (a store only grows through a resize)", ErrSizeMismatch, j.dir, j.devSize.Load(), deviceSize)
	}
	return j.setupSums()
}

// create makes a new store. The meta file is written last: until it exists
// a crash leaves nothing that Open would not recreate.
func (j *Journal) create(deviceSize, wantRegion int64) error {
	if deviceSize <= 0 {
		return fmt.Errorf("%w: DeviceSize is required to create a store in %s", ErrInvalidOptions, j.dir)
	}
	rs, err := regionSizeFor(deviceSize, wantRegion)
	if err != nil {
		return err
	}
	nums, err := j.listSegments()
	if err != nil {
		return err
	}
	for _, num := range nums {
		if j.segmentHasRecords(num) {
			return fmt.Errorf("%w: %s holds journal records but no meta file", ErrCorrupt, j.jdir)
		}
		if err := j.fs.Remove(filepath.Join(j.jdir, segName(num))); err != nil {
			return fmt.Errorf("journal: remove empty segment: %w", err)
		}
	}
	var b [8]byte
	for j.salt == 0 {
		_, _ = rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
		j.salt = binary.LittleEndian.Uint64(b[:])
	}
	j.regionSize = rs
	j.devSize.Store(deviceSize)
	j.regions = make([]uint64, regionCount(deviceSize, rs))
	if j.data, err = j.fs.OpenFile(filepath.Join(j.dir, dataName), os.O_RDWR|os.O_CREATE|os.O_TRUNC, datadir.FileMode); err != nil {
		return fmt.Errorf("journal: create data file: %w", err)
	}
	j.punch, _ = j.data.(vfs.Puncher)
	if err := j.data.Truncate(deviceSize); err != nil {
		return fmt.Errorf("journal: size data file: %w", err)
	}
	// Thick-provision the image: a full disk is an error now, not an EIO on
	// some later write, and first writes skip block allocation.
	if a, ok := j.data.(vfs.Allocator); ok {
		if err := a.Allocate(0, deviceSize); err != nil && !errors.Is(err, vfs.ErrNotSupported) {
			return fmt.Errorf("journal: reserve %d bytes for the data file: %w", deviceSize, err)
		}
	}
	if err := j.data.Sync(); err != nil {
		return fmt.Errorf("journal: sync data file: %w", err)
	}
	seg, err := j.createSegment(1, 1)
	if err != nil {
		return err
	}
	j.segs, j.journalBytes = []*segment{seg}, seg.size
	if err := j.fdatasync(seg); err != nil {
		return err
	}
	for _, d := range []string{j.jdir, filepath.Dir(j.dir)} {
		if err := j.fs.SyncDir(d); err != nil {
			return fmt.Errorf("journal: sync dir %s: %w", d, err)
		}
	}
	seg.dirSynced = true
	blocks := (deviceSize + SumBlockSize - 1) / SumBlockSize
	j.sums = newSumTable(blocks)
	if err := j.writeSumFile(filepath.Join(j.dir, sumName), blocks); err != nil {
		return err
	}
	if _, err := j.writeMeta(encodeMeta(nil, &meta{deviceSize: deviceSize, regionSize: rs, salt: j.salt, regions: j.regions})); err != nil {
		return err
	}
	j.openedClean = true
	j.log.Info("journal: created store", "dir", j.dir, "device_size", deviceSize, "region_size", rs)
	return nil
}

// fdatasync syncs a segment file, counting the call. The caller must not
// hold syncMu; it is taken here so that only one runs at a time.
func (j *Journal) fdatasync(s *segment) error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.syncs.Add(1)
	if err := s.f.Sync(); err != nil {
		return j.fail(fmt.Errorf("journal: sync segment %d: %w", s.num, err))
	}
	if !s.dirSynced {
		if err := j.fs.SyncDir(j.jdir); err != nil {
			return j.fail(fmt.Errorf("journal: sync dir %s: %w", j.jdir, err))
		}
		s.dirSynced = true
	}
	return nil
}

// fail records the first fatal error and wakes everyone waiting; it returns
// err wrapped in ErrFailed. It takes no locks (callers may hold mu); waiters
// recheck j.failed() whenever they wake, and every path that fails also
// broadcasts.
func (j *Journal) fail(err error) error {
	werr := fmt.Errorf("%w: %w", ErrFailed, err)
	if j.failure.CompareAndSwap(nil, &werr) {
		j.log.Error("journal: store failed, reopen to recover", "err", err)
	}
	go j.wakeAll() // outside any lock the caller may hold
	return *j.failure.Load()
}

func (j *Journal) wakeAll() {
	j.mu.Lock()
	j.spaceCond.Broadcast()
	j.mu.Unlock()
	j.smu.Lock()
	j.syncCond.Broadcast()
	j.smu.Unlock()
}

// failed returns the sticky failure, if any.
func (j *Journal) failed() error {
	if p := j.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// ID is the store's identity: a random non-zero number drawn when the store
// was created and kept in its meta file for its whole life. A store created
// anew (a replaced or wiped disk) has another ID (docs/quorum.md, "Data
// identity").
func (j *Journal) ID() uint64 { return j.salt }

// Size is the device size in bytes. It grows when a resize record is
// appended or replayed.
func (j *Journal) Size() int64 { return j.devSize.Load() }

// RegionSize is the granularity of ChangedSince. It doubles when a resize
// would make the region table larger than its bound.
func (j *Journal) RegionSize() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.regionSize
}

// LastSeq is the seq of the last appended record.
func (j *Journal) LastSeq() uint64 { return j.lastSeqA.Load() }

// DurableSeq is the highest seq known durable.
func (j *Journal) DurableSeq() uint64 { return j.durable.Load() }

// Retain asks the journal to keep the records > seq (for replication catch
// up). It is a floor, not a guarantee: when the journal passes MaxSize/2 or
// a writer waits for space, checkpoints free retained segments anyway.
func (j *Journal) Retain(seq uint64) {
	j.mu.Lock()
	j.retain = seq
	j.mu.Unlock()
}

// Close checkpoints (so the next Open replays nothing) and closes the store.
func (j *Journal) Close() error {
	if !j.closing.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(j.done)
	j.bg.Wait()
	err := j.failed()
	if err == nil {
		err = j.checkpoint()
	}
	j.shutdown(err == nil)
	return err
}

// closeNoCheckpoint closes like a crashed process would leave things (but
// with the page cache intact): for tests of replay.
func (j *Journal) closeNoCheckpoint() {
	if !j.closing.CompareAndSwap(false, true) {
		return
	}
	close(j.done)
	j.bg.Wait()
	j.shutdown(false)
}

// shutdown closes the store; clean (a checkpoint covered every write and
// saved the block checksums) tells the next Open so.
func (j *Journal) shutdown(clean bool) {
	j.ckMu.Lock() // waits for a checkpoint a caller started concurrently
	j.ckClosed = true
	j.ckMu.Unlock()
	j.mu.Lock()
	j.closed = true
	j.spaceCond.Broadcast()
	j.mu.Unlock()
	j.waitApplied() // appends past the journal write finish their data write
	j.smu.Lock()
	j.syncClosed = true
	for j.syncing {
		j.syncCond.Wait()
	}
	j.syncCond.Broadcast()
	j.smu.Unlock()
	j.life.Lock()
	j.lifeClosed = true
	j.life.Unlock()
	// data.sum first: once the log has no hot extent, only data.sum
	// vouches for the blocks.
	j.closeSums(clean && j.failed() == nil)
	j.closeActivity(clean && j.failed() == nil)
	j.closeFiles(true)
}

// closeFiles closes the data file and the segments nobody references.
// tidy trims the last segment to its records; a refused Open must not: its
// last segment may be one that only looked like the end, with a damaged
// record behind what replay read (trimmed, the record was gone for good and
// could not be repaired or examined; the chaos soak, seed 66).
func (j *Journal) closeFiles(tidy bool) {
	j.closeActivity(false)
	j.closeSums(false)
	j.closeDirect()
	if j.data != nil {
		_ = j.data.Close()
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if n := len(j.segs); tidy && n > 0 && !j.segs[n-1].freed {
		// Leave no preallocated zeros behind: tidy for tools, and a
		// journal read by an older grbd needs no tail cut. A crash leaves
		// them, and replay reads them as the end.
		_ = j.segs[n-1].f.Truncate(j.segs[n-1].size)
	}
	for _, s := range j.rotated { // a crash test's close: never synced
		s.refs--
		if s.freed && s.refs == 0 {
			_ = s.f.Close()
		}
	}
	j.rotated = nil
	for _, s := range j.segs {
		s.freed = true
		if s.refs == 0 {
			_ = s.f.Close()
		}
	}
}

// background runs run each time req is signalled, until Close: the
// automatic checkpoints and the write-behind syncs of the active segment.
func (j *Journal) background(what string, req <-chan struct{}, run func() error) {
	defer j.bg.Done()
	for {
		select {
		case <-j.done:
			return
		case <-req:
			if err := run(); err != nil && !errors.Is(err, ErrClosed) {
				j.log.Error("journal: background "+what, "err", err)
			}
		}
	}
}

// syncAhead is how many unsynced bytes the active segment may hold before a
// background fdatasync starts on it. Without it, the rotation's fdatasync
// under the append lock flushes a whole segment (64 MiB by default, up to
// 200 ms on a slow disk) while every writer waits: the stalls in the 1 MiB
// write job's p99.9 (docs/journal.md, "Where a write's time goes"). Group
// commit lets a FLUSH in the meantime share the fdatasync.
func (j *Journal) syncAhead() int64 { return max(j.segSize/8, 1<<20) }

// extentWindow is how much extent-record data may come between two
// checkpoints: replay reads back at most this much of data.img to check it
// (verifyExtents; 4 GiB with the default MaxSize, and never more than the
// device, since it keeps one entry per block). Every checkpoint fdatasyncs
// data.img, and one per MaxSize/4 of large writes kept the disk flushing
// all the time: 1 MiB writes ran at 0.8x the throughput with twice the
// p99.9 latency (docs/journal.md, "Large writes in place").
func (j *Journal) extentWindow() int64 { return 4 * j.maxSize }

// requestCheckpoint wakes the background goroutine; requests coalesce.
func (j *Journal) requestCheckpoint() {
	select {
	case j.ckptReq <- struct{}{}:
	default:
	}
}

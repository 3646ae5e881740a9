package vfs

import (
	"os"
	"sync/atomic"
	"time"
)

// A disk that stops answering fails nothing: its operations just never
// return, and whatever waits for them waits with them. Watch makes that
// visible: it wraps an FS and keeps the start of every operation in flight,
// so that a caller can ask, without blocking, which one has waited longest.

// Stall is an operation in flight.
type Stall struct {
	Op   Op
	Name string        // the file (or directory) it is on
	For  time.Duration // how long it has been in flight
}

// watchSlots bounds the operations tracked at once. More run untracked
// (Stalled then reports the oldest of those tracked).
const watchSlots = 256

// Watched is an FS whose operations in flight can be listed (Stalled).
type Watched struct {
	fs    FS
	base  time.Time // the origin of the monotonic starts below
	next  atomic.Uint64
	slots [watchSlots]watchSlot
}

type watchSlot struct {
	start atomic.Int64 // ns since base, plus one; 0: free
	op    atomic.Uint32
	name  atomic.Pointer[string]
}

// Watch wraps fs. Files it opens have exactly the optional capabilities
// (Puncher, Allocator, DataFinder) of the files fs opens: callers branch on
// them.
func Watch(fs FS) *Watched { return &Watched{fs: fs, base: time.Now()} }

// Stalled returns the operation in flight that started first, if any.
// The name may belong to a later operation that took the same slot.
func (w *Watched) Stalled() (Stall, bool) {
	var oldest int64
	var slot *watchSlot
	for i := range w.slots {
		s := &w.slots[i]
		if t := s.start.Load(); t != 0 && (slot == nil || t < oldest) {
			oldest, slot = t, s
		}
	}
	if slot == nil {
		return Stall{}, false
	}
	st := Stall{Op: Op(slot.op.Load()), For: time.Since(w.base) - time.Duration(oldest-1)}
	if n := slot.name.Load(); n != nil {
		st.Name = *n
	}
	return st, true
}

// begin records an operation's start and returns its slot (-1: untracked).
// name must stay valid: it is read until end.
func (w *Watched) begin(op Op, name *string) int {
	now := int64(time.Since(w.base)) + 1
	first := w.next.Add(1)
	for i := range uint64(watchSlots) {
		k := (first + i) % watchSlots
		s := &w.slots[k]
		if s.start.CompareAndSwap(0, now) {
			s.op.Store(uint32(op))
			s.name.Store(name)
			return int(k)
		}
	}
	return -1
}

func (w *Watched) end(slot int) {
	if slot >= 0 {
		w.slots[slot].start.Store(0)
	}
}

func (w *Watched) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	defer w.end(w.begin(OpOpen, &name))
	f, err := w.fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return watchFile(&watchedFile{w: w, f: f, name: name}), nil
}

func (w *Watched) Remove(name string) error {
	defer w.end(w.begin(OpRemove, &name))
	return w.fs.Remove(name)
}

func (w *Watched) Rename(oldname, newname string) error {
	defer w.end(w.begin(OpRename, &oldname))
	return w.fs.Rename(oldname, newname)
}

func (w *Watched) ReadDir(dir string) ([]string, error) {
	defer w.end(w.begin(OpReadDir, &dir))
	return w.fs.ReadDir(dir)
}

func (w *Watched) MkdirAll(dir string, perm os.FileMode) error {
	defer w.end(w.begin(OpMkdirAll, &dir))
	return w.fs.MkdirAll(dir, perm)
}

func (w *Watched) SyncDir(dir string) error {
	defer w.end(w.begin(OpSyncDir, &dir))
	return w.fs.SyncDir(dir)
}

func (w *Watched) Stat(name string) (os.FileInfo, error) {
	defer w.end(w.begin(OpStat, &name))
	return w.fs.Stat(name)
}

// watchedFile is a File of a Watched FS, without the optional capabilities
// (watchFile adds those the wrapped file has).
type watchedFile struct {
	w    *Watched
	f    File
	name string
}

func (f *watchedFile) ReadAt(p []byte, off int64) (int, error) {
	defer f.w.end(f.w.begin(OpRead, &f.name))
	return f.f.ReadAt(p, off)
}

func (f *watchedFile) WriteAt(p []byte, off int64) (int, error) {
	defer f.w.end(f.w.begin(OpWrite, &f.name))
	return f.f.WriteAt(p, off)
}

func (f *watchedFile) Sync() error {
	defer f.w.end(f.w.begin(OpSync, &f.name))
	return f.f.Sync()
}

func (f *watchedFile) Truncate(size int64) error {
	defer f.w.end(f.w.begin(OpTruncate, &f.name))
	return f.f.Truncate(size)
}

func (f *watchedFile) Size() (int64, error) {
	defer f.w.end(f.w.begin(OpSize, &f.name))
	return f.f.Size()
}

func (f *watchedFile) Close() error {
	defer f.w.end(f.w.begin(OpClose, &f.name))
	return f.f.Close()
}

// The optional capabilities, each forwarded to the wrapped file.
type (
	watchPunch struct{ f *watchedFile }
	watchAlloc struct{ f *watchedFile }
	watchFind  struct{ f *watchedFile }
)

func (c watchPunch) PunchHole(off, n int64) error {
	defer c.f.w.end(c.f.w.begin(OpPunchHole, &c.f.name))
	return c.f.f.(Puncher).PunchHole(off, n)
}

func (c watchAlloc) Allocate(off, n int64) error {
	defer c.f.w.end(c.f.w.begin(OpAllocate, &c.f.name))
	return c.f.f.(Allocator).Allocate(off, n)
}

func (c watchFind) NextData(off int64) (start, end int64, err error) {
	defer c.f.w.end(c.f.w.begin(OpNextData, &c.f.name))
	return c.f.f.(DataFinder).NextData(off)
}

// watchFile returns f with the optional capabilities of the file it wraps:
// one type per combination, since a method set cannot be composed at run
// time.
func watchFile(f *watchedFile) File {
	_, p := f.f.(Puncher)
	_, a := f.f.(Allocator)
	_, d := f.f.(DataFinder)
	switch {
	case p && a && d:
		return struct {
			*watchedFile
			watchPunch
			watchAlloc
			watchFind
		}{f, watchPunch{f}, watchAlloc{f}, watchFind{f}}
	case p && a:
		return struct {
			*watchedFile
			watchPunch
			watchAlloc
		}{f, watchPunch{f}, watchAlloc{f}}
	case p && d:
		return struct {
			*watchedFile
			watchPunch
			watchFind
		}{f, watchPunch{f}, watchFind{f}}
	case a && d:
		return struct {
			*watchedFile
			watchAlloc
			watchFind
		}{f, watchAlloc{f}, watchFind{f}}
	case p:
		return struct {
			*watchedFile
			watchPunch
		}{f, watchPunch{f}}
	case a:
		return struct {
			*watchedFile
			watchAlloc
		}{f, watchAlloc{f}}
	case d:
		return struct {
			*watchedFile
			watchFind
		}{f, watchFind{f}}
	}
	return f
}

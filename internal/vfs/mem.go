package vfs

import (
	"io"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SectorSize is the unit in which MemFS.CrashClone may tear an unsynced
// write: each aligned 512-byte piece of it survives or not on its own.
const SectorSize = 512

// MemFS is an in-memory FS that can simulate a power loss. Besides the
// current state it tracks what is durable: per file the contents as of the
// last Sync plus the ordered list of later changes, per directory the set of
// names as of the last SyncDir. CrashClone builds the file system a reboot
// after a power loss could find.
//
// All operations take one mutex, so a CrashClone is atomic with respect to
// concurrent I/O. Relative names are resolved from the root.
type MemFS struct {
	mu   sync.Mutex
	root *memNode
}

// NewMem returns an empty in-memory file system.
func NewMem() *MemFS { return &MemFS{root: newMemDir()} }

type memNode struct {
	dir bool
	// Directories: the current names, and the names as of the last SyncDir.
	kids    map[string]*memNode
	durable map[string]*memNode
	// Files: current contents, contents as of the last Sync, and the changes
	// since then in the order they were made.
	data    []byte
	synced  []byte
	pending []memChange
}

type changeKind uint8

const (
	changeWrite changeKind = iota
	changeTruncate
	changePunch
)

type memChange struct {
	kind changeKind
	off  int64  // write, punch
	n    int64  // truncate: new size; punch: length
	data []byte // write: a private copy
}

func newMemDir() *memNode {
	return &memNode{dir: true, kids: map[string]*memNode{}, durable: map[string]*memNode{}}
}

func pathErr(op, name string, err error) error { return &os.PathError{Op: op, Path: name, Err: err} }

// split cleans name into its components below the root.
func split(name string) []string {
	p := path.Clean("/" + name)
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// walk returns the node at parts, or an errno.
func (fs *MemFS) walk(parts []string) (*memNode, error) {
	n := fs.root
	for _, p := range parts {
		if !n.dir {
			return nil, syscall.ENOTDIR
		}
		k, ok := n.kids[p]
		if !ok {
			return nil, syscall.ENOENT
		}
		n = k
	}
	return n, nil
}

// parent returns the directory holding name and name's base.
func (fs *MemFS) parent(name string) (*memNode, string, error) {
	parts := split(name)
	if len(parts) == 0 {
		return nil, "", syscall.EINVAL // the root has no parent
	}
	dir, err := fs.walk(parts[:len(parts)-1])
	if err != nil {
		return nil, "", err
	}
	if !dir.dir {
		return nil, "", syscall.ENOTDIR
	}
	return dir, parts[len(parts)-1], nil
}

// dirAt returns the directory at name, or op's *os.PathError when there is
// none.
func (fs *MemFS) dirAt(op, name string) (*memNode, error) {
	n, err := fs.walk(split(name))
	if err == nil && !n.dir {
		err = syscall.ENOTDIR
	}
	if err != nil {
		return nil, pathErr(op, name, err)
	}
	return n, nil
}

// existing returns the node at name, the directory holding it and its base
// name, or op's *os.PathError when there is none.
func (fs *MemFS) existing(op, name string) (dir *memNode, base string, n *memNode, err error) {
	dir, base, err = fs.parent(name)
	if err != nil {
		return nil, "", nil, pathErr(op, name, err)
	}
	n, ok := dir.kids[base]
	if !ok {
		return nil, "", nil, pathErr(op, name, syscall.ENOENT)
	}
	return dir, base, n, nil
}

// OpenFile implements FS.
func (fs *MemFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir, base, err := fs.parent(name)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	f := &memFile{fs: fs, name: name, read: acc != os.O_WRONLY, write: acc != os.O_RDONLY}
	n, ok := dir.kids[base]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, pathErr("open", name, syscall.EEXIST)
	case ok && n.dir:
		return nil, pathErr("open", name, syscall.EISDIR)
	case !ok && flag&os.O_CREATE == 0:
		return nil, pathErr("open", name, syscall.ENOENT)
	case !ok:
		n = &memNode{}
		dir.kids[base] = n
	}
	if flag&os.O_TRUNC != 0 && f.write {
		n.truncate(0)
	}
	f.n = n
	return f, nil
}

// Remove implements FS.
func (fs *MemFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir, base, n, err := fs.existing("remove", name)
	if err != nil {
		return err
	}
	if n.dir && len(n.kids) > 0 {
		return pathErr("remove", name, syscall.ENOTEMPTY)
	}
	delete(dir.kids, base)
	return nil
}

// Rename implements FS.
func (fs *MemFS) Rename(oldname, newname string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	odir, obase, n, err := fs.existing("rename", oldname)
	if err != nil {
		return err
	}
	ndir, nbase, err := fs.parent(newname)
	if err != nil {
		return pathErr("rename", newname, err)
	}
	if old, ok := ndir.kids[nbase]; ok && old.dir {
		return pathErr("rename", newname, syscall.EISDIR)
	}
	delete(odir.kids, obase)
	ndir.kids[nbase] = n
	return nil
}

// ReadDir implements FS.
func (fs *MemFS) ReadDir(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.dirAt("readdir", dir)
	if err != nil {
		return nil, err
	}
	return sortedNames(n.kids), nil
}

// MkdirAll implements FS.
func (fs *MemFS) MkdirAll(dir string, perm os.FileMode) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := fs.root
	for _, p := range split(dir) {
		k, ok := n.kids[p]
		if !ok {
			k = newMemDir()
			n.kids[p] = k
		}
		if !k.dir {
			return pathErr("mkdir", dir, syscall.ENOTDIR)
		}
		n = k
	}
	return nil
}

// SyncDir implements FS.
func (fs *MemFS) SyncDir(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.dirAt("syncdir", dir)
	if err != nil {
		return err
	}
	n.durable = make(map[string]*memNode, len(n.kids))
	for k, v := range n.kids {
		n.durable[k] = v
	}
	return nil
}

// Stat implements FS.
func (fs *MemFS) Stat(name string) (os.FileInfo, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	parts := split(name)
	n, err := fs.walk(parts)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	base := "/"
	if len(parts) > 0 {
		base = parts[len(parts)-1]
	}
	return memInfo{name: base, size: int64(len(n.data)), dir: n.dir}, nil
}

// CrashClone returns the file system a reboot after a power loss at this
// instant could find, choosing with rng:
//
//   - a directory holds exactly the names it had at its last SyncDir (the
//     root's names too); entries created, renamed or removed since are
//     undone;
//   - a file holds its contents as of its last Sync, then each later change
//     in order is dropped, applied, or (for writes and punches) applied piece
//     by piece, each SectorSize-aligned piece kept or dropped on its own.
//
// Everything in the clone is durable. The receiver is not changed and may go
// on being used; files open on it stay attached to it.
func (fs *MemFS) CrashClone(rng *rand.Rand) *MemFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	memo := map[*memNode]*memNode{}
	return &MemFS{root: crashNode(fs.root, rng, memo)}
}

func crashNode(n *memNode, rng *rand.Rand, memo map[*memNode]*memNode) *memNode {
	if c, ok := memo[n]; ok {
		return c // one node under two durable names (a rename seen by both dirs)
	}
	if n.dir {
		c := newMemDir()
		memo[n] = c
		for _, name := range sortedNames(n.durable) { // sorted: same seed, same clone
			k := crashNode(n.durable[name], rng, memo)
			c.kids[name], c.durable[name] = k, k
		}
		return c
	}
	c := &memNode{data: slices.Clone(n.synced)}
	memo[n] = c
	for _, ch := range n.pending {
		switch mode := rng.IntN(3); {
		case mode == 0:
			// lost
		case mode == 1 || ch.kind == changeTruncate:
			c.apply(ch, ch.off, ch.off+ch.len())
		default:
			// Torn: every sector-aligned piece on its own.
			for lo := ch.off; lo < ch.off+ch.len(); {
				hi := min((lo/SectorSize+1)*SectorSize, ch.off+ch.len())
				if rng.IntN(2) == 0 {
					c.apply(ch, lo, hi)
				}
				lo = hi
			}
		}
	}
	c.synced = slices.Clone(c.data)
	return c
}

func (ch memChange) len() int64 {
	if ch.kind == changeWrite {
		return int64(len(ch.data))
	}
	return ch.n
}

// apply replays the part [lo, hi) of change ch onto n.data (all of it for a
// truncate).
func (n *memNode) apply(ch memChange, lo, hi int64) {
	switch ch.kind {
	case changeTruncate:
		n.resize(ch.n)
	case changeWrite:
		if int64(len(n.data)) < hi {
			n.resize(hi)
		}
		copy(n.data[lo:hi], ch.data[lo-ch.off:hi-ch.off])
	case changePunch:
		hi = min(hi, int64(len(n.data)))
		if lo < hi {
			clear(n.data[lo:hi])
		}
	}
}

func (n *memNode) resize(size int64) {
	if size <= int64(len(n.data)) {
		n.data = n.data[:size]
		return
	}
	n.data = append(n.data, make([]byte, size-int64(len(n.data)))...)
}

func (n *memNode) truncate(size int64) {
	n.record(memChange{kind: changeTruncate, n: size})
}

// record applies all of ch to n.data and keeps it pending until the next
// Sync (a CrashClone may lose or tear it).
func (n *memNode) record(ch memChange) {
	n.apply(ch, ch.off, ch.off+ch.len())
	n.pending = append(n.pending, ch)
}

func sortedNames(m map[string]*memNode) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

type memFile struct {
	fs          *MemFS
	n           *memNode
	name        string
	read, write bool
	closed      bool
}

// check validates a call under fs.mu: f is open for op, and no offset or
// length in offs is negative.
func (f *memFile) check(op string, write bool, offs ...int64) error {
	switch {
	case f.closed:
		return pathErr(op, f.name, os.ErrClosed)
	case write && !f.write, !write && !f.read:
		return pathErr(op, f.name, syscall.EBADF)
	case slices.ContainsFunc(offs, func(o int64) bool { return o < 0 }):
		return pathErr(op, f.name, syscall.EINVAL)
	}
	return nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("read", false, off); err != nil {
		return 0, err
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// modify applies change to the file under fs.mu once check passes for the
// write operation op with the offsets and lengths offs.
func (f *memFile) modify(op string, change func(), offs ...int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(op, true, offs...); err != nil {
		return err
	}
	change()
	return nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	err := f.modify("write", func() {
		if len(p) > 0 {
			f.n.record(memChange{kind: changeWrite, off: off, data: slices.Clone(p)})
		}
	}, off)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (f *memFile) Truncate(size int64) error {
	return f.modify("truncate", func() { f.n.truncate(size) }, size)
}

// Allocate implements Allocator like fallocate mode 0: the file grows to
// off+n, zero filled, if it is shorter.
func (f *memFile) Allocate(off, n int64) error {
	return f.modify("allocate", func() {
		if end := off + n; end > int64(len(f.n.data)) {
			f.n.truncate(end)
		}
	}, off, n)
}

// PunchHole implements Puncher.
func (f *memFile) PunchHole(off, n int64) error {
	return f.modify("punch", func() { f.n.record(memChange{kind: changePunch, off: off, n: n}) }, off, n)
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("sync", f.name, os.ErrClosed)
	}
	f.n.synced = append(f.n.synced[:0], f.n.data...)
	f.n.pending = nil
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, pathErr("stat", f.name, os.ErrClosed)
	}
	return int64(len(f.n.data)), nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, os.ErrClosed)
	}
	f.closed = true
	return nil
}

type memInfo struct {
	name string
	size int64
	dir  bool
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return i.dir }
func (i memInfo) Sys() any           { return nil }
func (i memInfo) Mode() os.FileMode {
	if i.dir {
		return os.ModeDir | 0o755
	}
	return 0o644
}

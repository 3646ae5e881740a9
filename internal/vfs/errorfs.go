package vfs

import (
	"fmt"
	"os"
)

// Op names an FS or File operation for an error injector.
type Op uint8

// Operations seen by an injector. File operations report the name the file
// was opened with.
const (
	OpOpen Op = iota + 1
	OpRemove
	OpRename // name is the old name
	OpReadDir
	OpMkdirAll
	OpSyncDir
	OpStat
	OpRead
	OpWrite
	OpSync
	OpTruncate
	OpSize
	OpPunchHole
	OpClose
	OpAllocate
	OpNextData
)

var opNames = [...]string{
	OpOpen: "open", OpRemove: "remove", OpRename: "rename", OpReadDir: "readdir",
	OpMkdirAll: "mkdirall", OpSyncDir: "syncdir", OpStat: "stat", OpRead: "read",
	OpWrite: "write", OpSync: "sync", OpTruncate: "truncate", OpSize: "size",
	OpPunchHole: "punchhole", OpClose: "close", OpAllocate: "allocate", OpNextData: "nextdata",
}

func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// WithErrors wraps fs so that every operation first calls inject(op, name);
// when inject returns a non-nil error the operation is not performed and
// fails with an *os.PathError wrapping that error (so errors.Is(err,
// syscall.EIO) holds when inject returned syscall.EIO). inject may also
// block or count calls; it must be safe for concurrent use.
//
// Files opened through the wrapper always implement Puncher; PunchHole
// returns an error wrapping ErrNotSupported when the wrapped file lacks it.
func WithErrors(fs FS, inject func(op Op, name string) error) FS {
	return &errFS{fs: fs, inject: inject}
}

type errFS struct {
	fs     FS
	inject func(Op, string) error
}

func (e *errFS) check(op Op, name string) error {
	if err := e.inject(op, name); err != nil {
		return &os.PathError{Op: op.String(), Path: name, Err: err}
	}
	return nil
}

func (e *errFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if err := e.check(OpOpen, name); err != nil {
		return nil, err
	}
	f, err := e.fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &errFile{fs: e, f: f, name: name}, nil
}

func (e *errFS) Remove(name string) error {
	if err := e.check(OpRemove, name); err != nil {
		return err
	}
	return e.fs.Remove(name)
}

func (e *errFS) Rename(oldname, newname string) error {
	if err := e.check(OpRename, oldname); err != nil {
		return err
	}
	return e.fs.Rename(oldname, newname)
}

func (e *errFS) ReadDir(dir string) ([]string, error) {
	if err := e.check(OpReadDir, dir); err != nil {
		return nil, err
	}
	return e.fs.ReadDir(dir)
}

func (e *errFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := e.check(OpMkdirAll, dir); err != nil {
		return err
	}
	return e.fs.MkdirAll(dir, perm)
}

func (e *errFS) SyncDir(dir string) error {
	if err := e.check(OpSyncDir, dir); err != nil {
		return err
	}
	return e.fs.SyncDir(dir)
}

func (e *errFS) Stat(name string) (os.FileInfo, error) {
	if err := e.check(OpStat, name); err != nil {
		return nil, err
	}
	return e.fs.Stat(name)
}

type errFile struct {
	fs   *errFS
	f    File
	name string
}

func (f *errFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.check(OpRead, f.name); err != nil {
		return 0, err
	}
	return f.f.ReadAt(p, off)
}

func (f *errFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.check(OpWrite, f.name); err != nil {
		return 0, err
	}
	return f.f.WriteAt(p, off)
}

func (f *errFile) Sync() error {
	if err := f.fs.check(OpSync, f.name); err != nil {
		return err
	}
	return f.f.Sync()
}

func (f *errFile) Truncate(size int64) error {
	if err := f.fs.check(OpTruncate, f.name); err != nil {
		return err
	}
	return f.f.Truncate(size)
}

func (f *errFile) Size() (int64, error) {
	if err := f.fs.check(OpSize, f.name); err != nil {
		return 0, err
	}
	return f.f.Size()
}

func (f *errFile) PunchHole(off, n int64) error {
	if err := f.fs.check(OpPunchHole, f.name); err != nil {
		return err
	}
	p, ok := f.f.(Puncher)
	if !ok {
		return fmt.Errorf("punch hole %s: %w", f.name, ErrNotSupported)
	}
	return p.PunchHole(off, n)
}

func (f *errFile) Close() error {
	if err := f.fs.check(OpClose, f.name); err != nil {
		return err
	}
	return f.f.Close()
}

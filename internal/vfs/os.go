package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Default is the operating system's file system.
var Default FS = osFS{}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &osFile{f: f, rc: rc}, nil
}

func (osFS) Remove(name string) error                    { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error        { return os.Rename(oldname, newname) }
func (osFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }
func (osFS) Stat(name string) (os.FileInfo, error)       { return os.Stat(name) }

func (osFS) ReadDir(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	// fsync on a directory makes its entries durable; fdatasync is not
	// guaranteed to on every file system.
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// osFile wraps *os.File. The raw descriptor is used only through
// syscall.RawConn.Control, which keeps it valid against a concurrent Close.
type osFile struct {
	f  *os.File
	rc syscall.RawConn
}

func (f *osFile) ReadAt(p []byte, off int64) (int, error)  { return f.f.ReadAt(p, off) }
func (f *osFile) WriteAt(p []byte, off int64) (int, error) { return f.f.WriteAt(p, off) }
func (f *osFile) Close() error                             { return f.f.Close() }
func (f *osFile) Truncate(size int64) error                { return f.f.Truncate(size) }

func (f *osFile) Size() (int64, error) {
	fi, err := f.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (f *osFile) Sync() error {
	var serr error
	if err := f.rc.Control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.f.Name(), Err: serr}
	}
	return nil
}

// PunchHole implements Puncher with fallocate(PUNCH_HOLE|KEEP_SIZE).
func (f *osFile) PunchHole(off, n int64) error {
	return f.fallocate("punch hole", unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// Allocate implements Allocator with fallocate(0).
func (f *osFile) Allocate(off, n int64) error { return f.fallocate("allocate", 0, off, n) }

// NextData implements DataFinder with lseek(SEEK_DATA) and lseek(SEEK_HOLE).
// They move the descriptor's offset, which no I/O here uses (positional
// reads and writes only).
func (f *osFile) NextData(off int64) (start, end int64, err error) {
	var serr error
	if err := f.rc.Control(func(fd uintptr) {
		start, serr = unix.Seek(int(fd), off, unix.SEEK_DATA)
		if serr == nil {
			end, serr = unix.Seek(int(fd), start, unix.SEEK_HOLE)
		}
	}); err != nil {
		return 0, 0, err
	}
	switch {
	case serr == nil:
		return start, end, nil
	case errors.Is(serr, unix.ENXIO): // no data at or after off
		return 0, 0, io.EOF
	case errors.Is(serr, unix.EINVAL), errors.Is(serr, unix.EOPNOTSUPP):
		return 0, 0, fmt.Errorf("find data in %s: %w (%w)", f.f.Name(), ErrNotSupported, serr)
	default:
		return 0, 0, &os.PathError{Op: "lseek", Path: f.f.Name(), Err: serr}
	}
}

func (f *osFile) fallocate(what string, mode uint32, off, n int64) error {
	if n == 0 {
		return nil
	}
	var serr error
	if err := f.rc.Control(func(fd uintptr) {
		serr = unix.Fallocate(int(fd), mode, off, n)
	}); err != nil {
		return err
	}
	switch {
	case serr == nil:
		return nil
	case errors.Is(serr, unix.EOPNOTSUPP), errors.Is(serr, unix.ENOSYS):
		return fmt.Errorf("%s %s: %w (%w)", what, f.f.Name(), ErrNotSupported, serr)
	default:
		return &os.PathError{Op: "fallocate", Path: f.f.Name(), Err: serr}
	}
}

// Package vfs is grbd's file-system seam. Storage code (journal/) does all of
// its file I/O through FS and File so that tests can substitute an in-memory
// file system that simulates power loss (NewMem, MemFS.CrashClone) or one
// that fails chosen operations (WithErrors).
//
// Durability contract, shared by every implementation:
//
//   - File.WriteAt, File.Truncate and Puncher.PunchHole change the file at
//     once for readers, but survive a power loss only after a later
//     File.Sync on that file returns nil. Until then any subset of them may
//     survive, torn at sector (512 byte) granularity.
//   - File.Sync is fdatasync: everything written to the file so far, and its
//     size, is durable when it returns nil. It does not make the file's name
//     durable.
//   - Creating, renaming and removing names in a directory survive a power
//     loss only after SyncDir on that directory returns nil.
//   - After Sync or SyncDir returns an error the on-disk state is unknown (the
//     kernel may have dropped dirty pages): callers must not retry and assume
//     success.
//
// Concurrency: FS implementations and Files are safe for concurrent use.
// Concurrent writes to overlapping ranges of one file leave an unspecified
// mix of their bytes; callers order such writes themselves.
package vfs

import (
	"errors"
	"io"
	"os"
)

// Errors of this package. Implementations otherwise return *os.PathError
// values wrapping syscall errnos, so errors.Is(err, os.ErrNotExist) and
// errors.Is(err, syscall.EIO) work for every FS.
var (
	// ErrNotSupported reports an optional operation (such as PunchHole) that
	// the file or the underlying file system cannot perform.
	ErrNotSupported = errors.New("vfs: operation not supported")
	// ErrDirSync: WriteFileAtomic renamed the new file into place but could
	// not sync the directory; which content a crash would leave is unknown.
	ErrDirSync = errors.New("vfs: directory not synced after the rename")
)

// FS is a file system. Names are slash-separated paths; see the package
// documentation for the durability contract.
type FS interface {
	// OpenFile opens name with os.OpenFile flags (O_RDONLY, O_WRONLY,
	// O_RDWR, O_CREATE, O_EXCL, O_TRUNC).
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// Rename atomically replaces newname (a file, if it exists) by oldname.
	Rename(oldname, newname string) error
	// ReadDir returns the base names in dir, sorted.
	ReadDir(dir string) ([]string, error)
	// MkdirAll creates dir and any missing parents.
	MkdirAll(dir string, perm os.FileMode) error
	// SyncDir makes the creates, renames and removes done so far in dir
	// durable.
	SyncDir(dir string) error
	// Stat describes name.
	Stat(name string) (os.FileInfo, error)
}

// File is an open file. It has no file position: all I/O is positional.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync is fdatasync: when it returns nil everything written so far, and
	// the file size, is durable.
	Sync() error
	// Truncate sets the file size, zero-filling when it grows.
	Truncate(size int64) error
	// Size returns the current file size.
	Size() (int64, error)
}

// Puncher is the optional capability of deallocating a range of a file: the
// range reads back as zeros and the file size does not change
// (fallocate(FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE)). Implementations
// return an error wrapping ErrNotSupported when the file system lacks it.
type Puncher interface {
	PunchHole(off, n int64) error
}

// DataFinder is the optional capability of telling where a file holds data
// (lseek SEEK_DATA and SEEK_HOLE): whatever lies outside its data ranges
// reads back as zeros. A file system may report a hole as data, never data
// as a hole. Implementations return an error wrapping ErrNotSupported when
// the file system cannot tell.
type DataFinder interface {
	// NextData returns the first data range [start, end) at or after off
	// (start is off when off lies in data); io.EOF when no data lies at or
	// after off.
	NextData(off int64) (start, end int64, err error)
}

// Allocator is the optional capability of reserving disk space for a range
// of a file (fallocate mode 0): later writes there cannot fail for lack of
// space and skip block allocation. Implementations return an error wrapping
// ErrNotSupported when the file system lacks it.
type Allocator interface {
	Allocate(off, n int64) error
}

// Package datadir guards a member's data directory: one process at a time
// (an exclusive flock on a lock file, held for the life of the member) and
// private file modes (directories 0700, files 0600).
//
// A member calls Lock before it reads or writes anything in its directory
// and keeps the returned Lock until it stops; Release is for the end of
// the process or of an in-process member (tests). The kernel drops the
// lock when the process dies, however it dies: a stale lock file never
// blocks a restart.
//
// Concurrency: a Lock is used by one goroutine.
package datadir

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Errors callers branch on.
var (
	// ErrLocked: another process (or another member in this process) holds
	// the directory.
	ErrLocked = errors.New("datadir: data directory in use")
)

// LockFile is the lock file's name in a data directory. It holds the pid
// of the process that holds the lock, for the error the next one gets.
const LockFile = "lock"

// Lock is a held data-directory lock.
type Lock struct {
	f   *os.File
	dir string
	// created: Acquire made dir; before: the entries dir held then. What a
	// failed start made is what Undo removes.
	created bool
	before  map[string]bool
}

// Acquire creates dir (mode 0700) if needed and takes its lock without
// waiting. When another process holds it the error wraps ErrLocked and
// names that process.
func Acquire(dir string) (*Lock, error) {
	_, statErr := os.Stat(dir)
	created := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by %s: stop that member first (one process per data directory)", ErrLocked, dir, holder(path))
		}
		return nil, fmt.Errorf("datadir: lock %s: %w", path, err)
	}
	// Ours: record who holds it. Not synced: it only names the holder
	// while it runs, and the kernel, not the file, is the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	l := &Lock{f: f, dir: dir, created: created, before: map[string]bool{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		_ = l.Release()
		return nil, fmt.Errorf("datadir: %w", err)
	}
	for _, e := range ents {
		l.before[e.Name()] = true
	}
	return l, nil
}

// holder describes the process named in the lock file at path.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "another process"
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return "another process (no pid in " + path + ")"
	}
	if pid == os.Getpid() {
		return fmt.Sprintf("this process (pid %d)", pid)
	}
	if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(cmd) > 0 {
		args := strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")
		return fmt.Sprintf("process %d (%s)", pid, args)
	}
	return fmt.Sprintf("process %d", pid)
}

// Undo removes what was created in the directory since Acquire (every
// entry that was not there then; the directory itself if Acquire made it)
// and releases the lock: a start that failed leaves nothing behind, e.g.
// no partly preallocated data.img on a full file system (issue 15). Call
// it only when the member never started: it cannot tell a new file from
// one the member should keep.
func (l *Lock) Undo() error {
	if l == nil || l.f == nil {
		return nil
	}
	ents, err := os.ReadDir(l.dir)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range ents {
		if !l.before[e.Name()] && e.Name() != LockFile {
			errs = append(errs, os.RemoveAll(filepath.Join(l.dir, e.Name())))
		}
	}
	if l.created && errors.Join(errs...) == nil {
		// Remove the lock file while still holding it: no one else
		// can have opened it, the directory was ours alone.
		errs = append(errs, os.Remove(filepath.Join(l.dir, LockFile)))
		errs = append(errs, l.Release())
		errs = append(errs, os.Remove(l.dir))
	} else {
		errs = append(errs, l.Release())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("datadir: clean up %s after a failed start: %w", l.dir, err)
	}
	return nil
}

// Dir is the locked directory.
func (l *Lock) Dir() string { return l.dir }

// Release drops the lock. The file stays: removing it would let a third
// process lock a new file while a second still waits on the old one.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
	return err
}

// Prepare is what a member does first with its data directory: Acquire,
// then FixModes, with one warning when modes from an older version were
// fixed.
func Prepare(dir string, log *slog.Logger) (*Lock, error) {
	l, err := Acquire(dir)
	if err != nil {
		return nil, err
	}
	fixed, err := FixModes(dir)
	if err != nil {
		_ = l.Release()
		return nil, err
	}
	if len(fixed) > 0 && log != nil {
		log.Warn("data directory was readable by other users (made by an older grbd): made it private (directories 0700, files 0600)",
			"dir", dir, "fixed", len(fixed), "first", fixed[0])
	}
	return l, nil
}

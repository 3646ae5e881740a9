// Package sidecar owns the small files a data node keeps next to its
// journal: the data-generation history, the state of an interrupted resync
// and the erasure-coding markers (a settle or a takeover under way, a store
// that became a full copy). Every change goes through vfs and is atomic
// across a crash: a reader after a power loss finds the old or the new
// file, whole, never a torn or empty one (see the crash tests).
package sidecar

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/replicator"
)

// File names in the data directory (formats: docs/quorum.md for the
// history, docs/erasure.md for the markers).
const (
	// HistoryFile holds the node's data-generation history.
	HistoryFile = "history"
	// ResyncFile records that the disk is Inconsistent: a resync from
	// another node was under way; which extents are still to be copied.
	ResyncFile = "resync"
)

// Marker is a file whose presence records an erasure-coding step under way
// or done.
type Marker string

// Markers.
const (
	// Settle: a shard peer is dropping journaled writes for a takeover; a
	// crash leaves its store Inconsistent.
	Settle Marker = "ec-settle"
	// Takeover: a rebuild into this store is under way; a crash leaves it
	// Inconsistent, to be resynced in full.
	Takeover Marker = "ec-takeover"
	// FullCopy: this node took over; its store is a full copy of the
	// device, not its configured shard.
	FullCopy Marker = "ec-full-copy"
)

// Store reads and writes the sidecar files of one data directory.
type Store struct {
	fs  vfs.FS
	dir string
}

// New returns the Store of dir on fs (nil: the operating system's).
func New(fs vfs.FS, dir string) *Store {
	if fs == nil {
		fs = vfs.Default
	}
	return &Store{fs: fs, dir: dir}
}

func (s *Store) path(name string) string { return filepath.Join(s.dir, name) }

// load decodes the file name; ok is false when it does not exist.
func load[T any](s *Store, name string, decode func([]byte) (T, error)) (v T, ok bool, err error) {
	b, err := vfs.ReadFile(s.fs, s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("sidecar: %w", err)
	}
	if v, err = decode(b); err != nil {
		return v, false, fmt.Errorf("sidecar: %s: %w", s.path(name), err)
	}
	return v, true, nil
}

// remove deletes name and syncs the directory, so the removal survives a
// crash; a missing file is not an error.
func (s *Store) remove(name string) error {
	if err := s.fs.Remove(s.path(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sidecar: %w", err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	return nil
}

// History returns the stored history (nil when there is none yet).
func (s *Store) History() (replicator.History, error) {
	h, _, err := load(s, HistoryFile, replicator.DecodeHistory)
	return h, err
}

// SaveHistory replaces the stored history with h.
func (s *Store) SaveHistory(h replicator.History) error {
	return vfs.WriteFileAtomic(s.fs, s.path(HistoryFile), h.Encode())
}

// Resync returns the state of an interrupted resync, or nil when the disk
// is consistent.
func (s *Store) Resync() (*replicator.ResyncState, error) {
	rs, ok, err := load(s, ResyncFile, replicator.DecodeResyncState)
	if !ok {
		return nil, err
	}
	return &rs, nil
}

// SaveResync stores rs; nil removes the file (the disk is consistent).
func (s *Store) SaveResync(rs *replicator.ResyncState) error {
	if rs == nil {
		return s.remove(ResyncFile)
	}
	return vfs.WriteFileAtomic(s.fs, s.path(ResyncFile), rs.Encode())
}

// Mark sets m; note (a sequence number, say) is for the operator who
// reads the file.
func (s *Store) Mark(m Marker, note string) error {
	return vfs.WriteFileAtomic(s.fs, s.path(string(m)), []byte(note))
}

// Unmark removes m.
func (s *Store) Unmark(m Marker) error { return s.remove(string(m)) }

// Marked reports whether m is set. A file that cannot be examined counts
// as not set, as a missing one does.
func (s *Store) Marked(m Marker) bool {
	_, err := s.fs.Stat(s.path(string(m)))
	return err == nil
}

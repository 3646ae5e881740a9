// Package raftlog keeps a member's control-plane raft log on disk: the hard
// state, the latest snapshot and the entries after it, in one small file
// (raft.state in the member's data directory) that Save replaces atomically.
// The control-plane log is tiny (quorum compacts it to a few hundred
// entries of tens of bytes) and changes only on elections and state
// changes, so rewriting the whole file keeps recovery trivial: after a
// crash the file is either the previous or the new version, never a mix.
//
// The format is in docs/raftlog.md. Functions are safe for concurrent use
// on different directories; callers serialise Saves of one directory.
package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"github.com/grbd/grbd/internal/crc32c"
	"github.com/grbd/grbd/internal/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// FileName is the log file in a member's data directory.
const FileName = "raft.state"

// Errors callers branch on.
var (
	// ErrCorrupt marks a file that does not decode: wrong magic, version,
	// length or checksum, or a body that does not parse.
	ErrCorrupt = errors.New("raftlog: corrupt")
)

// Format constants. Part of the format: do not change.
//
//	0       4         5           8        12       16
//	| magic | version | reserved  | length | crc32c | body[length]
//	| u32   | u8 (1)  | 3 x 0     | u32    | u32    |
//
//	body: | u32 n | HardState (n bytes, protobuf) |
//	      | u32 n | Snapshot  (n bytes, protobuf) |
//	      | u32 count | count x (u32 n | Entry (n bytes, protobuf)) |
//
// Little-endian; the CRC-32C covers header bytes [0:12] and the body.
const (
	magic      uint32 = 0x52425247 // "GRBR"
	version    uint8  = 1
	headerSize        = 16
	maxBody           = 64 << 20
)

// Log is what the file holds.
type Log struct {
	HardState pb.HardState
	Snapshot  pb.Snapshot
	Entries   []pb.Entry
}

// Encode returns the file image of l.
func Encode(l Log) ([]byte, error) {
	out := make([]byte, headerSize, 4096)
	put := func(b []byte, err error) error {
		if err != nil {
			return fmt.Errorf("raftlog: encode: %w", err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(b)))
		out = append(out, b...)
		return nil
	}
	if err := put(l.HardState.Marshal()); err != nil {
		return nil, err
	}
	if err := put(l.Snapshot.Marshal()); err != nil {
		return nil, err
	}
	out = binary.LittleEndian.AppendUint32(out, uint32(len(l.Entries)))
	for i := range l.Entries {
		if err := put(l.Entries[i].Marshal()); err != nil {
			return nil, err
		}
	}
	body := len(out) - headerSize
	if body > maxBody {
		return nil, fmt.Errorf("raftlog: encode: %d bytes exceed %d", body, maxBody)
	}
	binary.LittleEndian.PutUint32(out[0:], magic)
	out[4] = version
	binary.LittleEndian.PutUint32(out[8:], uint32(body))
	crc := crc32.Update(crc32.Checksum(out[:12], crc32c.Table), crc32c.Table, out[headerSize:])
	binary.LittleEndian.PutUint32(out[12:], crc)
	return out, nil
}

// Decode parses a file image. Errors wrap ErrCorrupt.
func Decode(b []byte) (Log, error) {
	var l Log
	if len(b) < headerSize {
		return l, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(b))
	}
	if m := binary.LittleEndian.Uint32(b); m != magic {
		return l, fmt.Errorf("%w: magic %08x", ErrCorrupt, m)
	}
	if b[4] != version || b[5]|b[6]|b[7] != 0 {
		return l, fmt.Errorf("%w: version %d", ErrCorrupt, b[4])
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if n > maxBody || int(n) != len(b)-headerSize {
		return l, fmt.Errorf("%w: length %d in %d bytes", ErrCorrupt, n, len(b))
	}
	crc := crc32.Update(crc32.Checksum(b[:12], crc32c.Table), crc32c.Table, b[headerSize:])
	if want := binary.LittleEndian.Uint32(b[12:]); crc != want {
		return l, fmt.Errorf("%w: crc %08x, want %08x", ErrCorrupt, crc, want)
	}
	r := b[headerSize:]
	next := func() ([]byte, error) {
		if len(r) < 4 || uint64(len(r)-4) < uint64(binary.LittleEndian.Uint32(r)) {
			return nil, fmt.Errorf("%w: truncated body", ErrCorrupt)
		}
		k := binary.LittleEndian.Uint32(r)
		v := r[4 : 4+k]
		r = r[4+k:]
		return v, nil
	}
	unmarshal := func(what string, u interface{ Unmarshal([]byte) error }) error {
		v, err := next()
		if err != nil {
			return err
		}
		if err := u.Unmarshal(v); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, what, err)
		}
		return nil
	}
	if err := unmarshal("hard state", &l.HardState); err != nil {
		return Log{}, err
	}
	if err := unmarshal("snapshot", &l.Snapshot); err != nil {
		return Log{}, err
	}
	if len(r) < 4 {
		return Log{}, fmt.Errorf("%w: truncated body", ErrCorrupt)
	}
	count := binary.LittleEndian.Uint32(r)
	r = r[4:]
	if uint64(count)*4 > uint64(len(r)) {
		return Log{}, fmt.Errorf("%w: %d entries in %d bytes", ErrCorrupt, count, len(r))
	}
	l.Entries = make([]pb.Entry, count)
	for i := range l.Entries {
		if err := unmarshal("entry", &l.Entries[i]); err != nil {
			return Log{}, err
		}
		if i > 0 && l.Entries[i].Index != l.Entries[i-1].Index+1 {
			return Log{}, fmt.Errorf("%w: entry %d follows %d", ErrCorrupt, l.Entries[i].Index, l.Entries[i-1].Index)
		}
	}
	if len(r) != 0 {
		return Log{}, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r))
	}
	return l, nil
}

// Load reads the log of the member whose data directory is dir. A missing
// file is an empty Log (a new member).
func Load(fs vfs.FS, dir string) (Log, error) {
	b, err := vfs.ReadFile(fs, filepath.Join(dir, FileName))
	if errors.Is(err, os.ErrNotExist) {
		return Log{}, nil
	}
	if err != nil {
		return Log{}, fmt.Errorf("raftlog: %w", err)
	}
	l, err := Decode(b)
	if err != nil {
		return Log{}, fmt.Errorf("raftlog: %s: %w", filepath.Join(dir, FileName), err)
	}
	return l, nil
}

// Save replaces the log of dir with l, durably.
func Save(fs vfs.FS, dir string, l Log) error {
	b, err := Encode(l)
	if err != nil {
		return err
	}
	return vfs.WriteFileAtomic(fs, filepath.Join(dir, FileName), b)
}

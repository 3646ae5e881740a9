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
)

// JoinFileName is the join-identity file in a member's data directory
// (docs/raftlog.md, "Join identity").
const JoinFileName = "member.id"

// Join-identity format. Part of the format: do not change.
//
//	0       4         5       6          8    16       20
//	| magic | version | flags | reserved | id | crc32c |
//	| u32   | u8 (1)  | u8    | 2 x 0    | u64| u32    |
//
// magic "GRBJ"; flags bit 0: joined (the member has raft state under id);
// the CRC-32C covers bytes [0:16].
const (
	joinMagic   uint32 = 0x4a425247 // "GRBJ"
	joinVersion uint8  = 1
	joinSize           = 20
	joinJoined  uint8  = 1 << 0
)

// JoinID is the content of the join-identity file.
type JoinID struct {
	ID     uint64
	Joined bool // raft state exists under ID; without it ID must not be reused
}

// EncodeJoinID encodes j.
func EncodeJoinID(j JoinID) []byte {
	b := make([]byte, 16, joinSize)
	binary.LittleEndian.PutUint32(b[0:], joinMagic)
	b[4] = joinVersion
	if j.Joined {
		b[5] = joinJoined
	}
	binary.LittleEndian.PutUint64(b[8:], j.ID)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crc32c.Table))
}

// DecodeJoinID decodes a join-identity file; any mismatch is ErrCorrupt.
func DecodeJoinID(b []byte) (JoinID, error) {
	switch {
	case len(b) != joinSize:
		return JoinID{}, fmt.Errorf("%w: join identity of %d bytes, want %d", ErrCorrupt, len(b), joinSize)
	case binary.LittleEndian.Uint32(b) != joinMagic:
		return JoinID{}, fmt.Errorf("%w: join identity magic", ErrCorrupt)
	case b[4] != joinVersion:
		return JoinID{}, fmt.Errorf("%w: join identity version %d", ErrCorrupt, b[4])
	case b[5]&^joinJoined != 0 || b[6] != 0 || b[7] != 0:
		return JoinID{}, fmt.Errorf("%w: join identity flags or reserved bytes", ErrCorrupt)
	case binary.LittleEndian.Uint32(b[16:]) != crc32.Checksum(b[:16], crc32c.Table):
		return JoinID{}, fmt.Errorf("%w: join identity checksum", ErrCorrupt)
	}
	j := JoinID{ID: binary.LittleEndian.Uint64(b[8:]), Joined: b[5]&joinJoined != 0}
	if j.ID == 0 {
		return JoinID{}, fmt.Errorf("%w: join identity 0", ErrCorrupt)
	}
	return j, nil
}

// LoadJoinID reads the join-identity file of dir; ok is false when there
// is none.
func LoadJoinID(fs vfs.FS, dir string) (j JoinID, ok bool, err error) {
	name := filepath.Join(dir, JoinFileName)
	b, err := vfs.ReadFile(fs, name)
	if errors.Is(err, os.ErrNotExist) {
		return JoinID{}, false, nil
	}
	if err != nil {
		return JoinID{}, false, fmt.Errorf("raftlog: %w", err)
	}
	if j, err = DecodeJoinID(b); err != nil {
		return JoinID{}, false, fmt.Errorf("raftlog: %s: %w", name, err)
	}
	return j, true, nil
}

// SaveJoinID replaces the join-identity file of dir atomically and durably.
func SaveJoinID(fs vfs.FS, dir string, j JoinID) error {
	return vfs.WriteFileAtomic(fs, filepath.Join(dir, JoinFileName), EncodeJoinID(j))
}

// RemoveJoinID removes the join-identity file of dir, if any, durably.
func RemoveJoinID(fs vfs.FS, dir string) error {
	err := fs.Remove(filepath.Join(dir, JoinFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	return fs.SyncDir(dir)
}

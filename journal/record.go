package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/grbd/grbd/internal/blockid"
	"github.com/grbd/grbd/internal/crc32c"
)

// Record format, part of the format: do not change (docs/journal.md has the
// full description). Little-endian; every record starts 8-byte aligned.
//
//	 0      4       5      6       8        12      16     24      32       40     48     56       60     64
//	+-------+-------+------+-------+--------+-------+------+-------+--------+------+------+--------+------+-----------------+
//	| magic |version| type | flags | length | dcrc  | seq  | epoch | offset | dlen | salt | synced | hcrc | data | zero pad |
//	+-------+-------+------+-------+--------+-------+------+-------+--------+------+------+--------+------+-----------------+
//
// length is the whole record (header, data, padding to 8 bytes); dcrc is the
// CRC32C of data and padding (0 for a zero record); hcrc is the CRC32C of
// bytes [0,60), so the pair covers every byte of the record. salt is the
// journal's random identity: guest data that happens to look like a record
// does not carry it. synced is a durability hint: the number of bytes of the
// record's segment known durable when it was appended.
const (
	// RecordHeaderSize is the size of a record header.
	RecordHeaderSize = 64
	// MaxWriteSize bounds the data of one write record.
	MaxWriteSize = 32 << 20

	recordMagic   = 0x524a5247 // "GRJR"
	segmentMagic  = 0x534a5247 // "GRJS"
	metaMagic     = 0x4d4a5247 // "GRJM"
	formatVersion = 1
	// resizeVersion is the record version of resize records. Writes keep
	// version 1, so a journal without a resize stays readable by version-1
	// code, which reports a resize record as ErrVersion instead of
	// misreading it.
	resizeVersion = 2
	// extentVersion is the record version of extent records (writes done
	// in place) whose sums are CRC32C: version-1 and -2 code reports them
	// as ErrVersion. Read, no longer written (idVersion).
	extentVersion = 3
	// idVersion is the record version whose data checks are block IDs
	// (internal/blockid), not CRC32C: extent records (their sums) and write
	// records (their dcrc). Version-3 code reports them as ErrVersion.
	// CRC32C cannot tell a torn record or extent from a whole one when the
	// data is made of blocks that end in their own CRC32C (docs/journal.md,
	// "Block IDs").
	idVersion = 4

	typeWrite  = 1 // versions 1 and 4
	typeZero   = 2 // version 1 only
	typeResize = 3 // version 2 only
	typeExtent = 4 // versions 3 and 4 only

	maxZeroLength = 1 << 62
	// MaxDeviceSize bounds a store's size (and a resize record's).
	MaxDeviceSize = 1 << 62
)

// Write is one block-device write: Data at Offset, or, when ZeroLength > 0
// (and Data is nil), ZeroLength bytes of zeros at Offset, or, when Resize >
// 0 (and nothing else but Seq and Epoch is set), a grow of the device to
// Resize bytes, ordered with the writes around it.
type Write struct {
	Seq        uint64
	Epoch      uint64
	Offset     int64
	Data       []byte
	ZeroLength int64
	Resize     int64
}

// Record is a Write as stored in the journal, with the journal's salt and the
// durability hint (see the format description above).
//
// InPlace marks an extent record (docs/journal.md, "Large writes in place"):
// the write's data went to the data file in place, and the record keeps its
// Length and the block ID (internal/blockid) of each of its SumBlockSize blocks
// (Sums) instead of its bytes. To encode one, set InPlace and Data
// (block-aligned); a decoded one has Data nil and Sums aliasing the input.
// CRC marks a record of an earlier build whose data check is CRC32C: a
// version-1 write (dcrc) or a version-3 extent record (Sums).
type Record struct {
	Write
	Salt    uint64
	Synced  int64
	InPlace bool
	CRC     bool
	Length  int64
	Sums    []byte
}

func align8(n int64) int64 { return (n + 7) &^ 7 }

// recordLen is the encoded size of w as a data record, assuming w is valid.
func recordLen(w *Write) int64 {
	return RecordHeaderSize + align8(int64(len(w.Data)))
}

// extentRecordLen is the encoded size of an extent record of n bytes.
func extentRecordLen(n int64) int64 {
	return RecordHeaderSize + align8(4*(n/SumBlockSize))
}

// blockAligned reports whether w is data on whole SumBlockSize blocks, as
// an extent record requires.
func blockAligned(w *Write) bool {
	return len(w.Data) > 0 && w.Offset%SumBlockSize == 0 && len(w.Data)%SumBlockSize == 0
}

// checkWrite validates the shape of w (not its seq or device bounds).
func checkWrite(w *Write) error {
	if w.Resize != 0 {
		if w.Resize < 0 || w.Resize > MaxDeviceSize || len(w.Data) > 0 || w.ZeroLength != 0 || w.Offset != 0 {
			return fmt.Errorf("%w: resize to %d with data %d zero %d offset %d", ErrInvalidWrite, w.Resize, len(w.Data), w.ZeroLength, w.Offset)
		}
		return nil
	}
	switch {
	case len(w.Data) > 0 && w.ZeroLength != 0:
		return fmt.Errorf("%w: both data and zero length", ErrInvalidWrite)
	case len(w.Data) == 0 && w.ZeroLength <= 0:
		return fmt.Errorf("%w: no data and zero length %d", ErrInvalidWrite, w.ZeroLength)
	case len(w.Data) > MaxWriteSize:
		return fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, len(w.Data), MaxWriteSize)
	case w.ZeroLength > maxZeroLength:
		return fmt.Errorf("%w: zero length %d", ErrTooLarge, w.ZeroLength)
	case w.Offset < 0 || w.Offset > math.MaxInt64-int64(len(w.Data))-w.ZeroLength:
		return fmt.Errorf("%w: offset %d", ErrOutOfRange, w.Offset)
	}
	return nil
}

// EncodeRecord appends the encoding of r to dst and returns the extended
// slice. It allocates only when dst lacks capacity. r.Seq must be > 0 and
// r.Synced must fit in 32 bits.
func EncodeRecord(dst []byte, r Record) ([]byte, error) {
	if r.InPlace {
		return encodeExtent(dst, &r)
	}
	if err := checkWrite(&r.Write); err != nil {
		return dst, err
	}
	if err := checkRecordHeader(&r); err != nil {
		return dst, err
	}
	n := int(recordLen(&r.Write))
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	b := dst[start:]
	typ, dlen, version := byte(typeWrite), uint64(len(r.Data)), byte(idVersion)
	switch {
	case r.ZeroLength > 0:
		typ, dlen, version = typeZero, uint64(r.ZeroLength), formatVersion
	case r.Resize > 0:
		typ, dlen, version = typeResize, uint64(r.Resize), resizeVersion
	case r.CRC:
		version = formatVersion
	}
	var dcrc uint32
	if typ == typeWrite {
		copy(b[RecordHeaderSize:], r.Data)
		clear(b[RecordHeaderSize+len(r.Data):])
		dcrc = blockid.OrCRC(b[RecordHeaderSize:], r.CRC) // data + padding
	}
	putRecordHeader(b, &r, version, typ, dlen, dcrc)
	return dst, nil
}

// checkRecordHeader validates what every record's header carries besides
// the write.
func checkRecordHeader(r *Record) error {
	if r.Seq == 0 || r.Synced < 0 || r.Synced > math.MaxUint32 {
		return fmt.Errorf("%w: seq %d synced %d", ErrInvalidWrite, r.Seq, r.Synced)
	}
	return nil
}

// putRecordHeader fills the 64-byte header of the record b (len(b) is its
// length) whose body CRC is dcrc.
func putRecordHeader(b []byte, r *Record, version, typ byte, dlen uint64, dcrc uint32) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], recordMagic)
	b[4] = version
	b[5] = typ
	le.PutUint16(b[6:], 0)
	le.PutUint32(b[8:], uint32(len(b)))
	le.PutUint32(b[12:], dcrc)
	le.PutUint64(b[16:], r.Seq)
	le.PutUint64(b[24:], r.Epoch)
	le.PutUint64(b[32:], uint64(r.Offset))
	le.PutUint64(b[40:], dlen)
	le.PutUint64(b[48:], r.Salt)
	le.PutUint32(b[56:], uint32(r.Synced))
	le.PutUint32(b[60:], crc32.Checksum(b[:60], crc32c.Table))
}

// DecodeRecord decodes the record at the start of b and returns it with its
// encoded length. Data aliases b: nothing is allocated. Errors:
//
//   - ErrTruncated: b ends inside the record; n is the record's full length
//     when the header is intact, else 0;
//   - ErrCorrupt: any check fails (a single flipped bit anywhere in a record
//     is always reported as ErrCorrupt);
//   - ErrVersion: the header is intact but of an unknown version.
func DecodeRecord(b []byte) (r Record, n int, err error) {
	le := binary.LittleEndian
	if len(b) < 4 {
		return r, 0, ErrTruncated
	}
	if le.Uint32(b) != recordMagic {
		return r, 0, fmt.Errorf("%w: bad record magic %#x", ErrCorrupt, le.Uint32(b))
	}
	if len(b) < RecordHeaderSize {
		return r, 0, ErrTruncated
	}
	if got, want := crc32.Checksum(b[:60], crc32c.Table), le.Uint32(b[60:]); got != want {
		return r, 0, fmt.Errorf("%w: record header crc %#x, want %#x", ErrCorrupt, got, want)
	}
	version := b[4]
	if version != formatVersion && version != resizeVersion && version != extentVersion && version != idVersion {
		return r, 0, fmt.Errorf("%w: record version %d", ErrVersion, b[4])
	}
	typ, flags, length := b[5], le.Uint16(b[6:]), int64(le.Uint32(b[8:]))
	dcrc, dlen := le.Uint32(b[12:]), le.Uint64(b[40:])
	r.Seq = le.Uint64(b[16:])
	r.Epoch = le.Uint64(b[24:])
	off := le.Uint64(b[32:])
	r.Salt = le.Uint64(b[48:])
	r.Synced = int64(le.Uint32(b[56:]))
	switch {
	case flags != 0:
		return Record{}, 0, fmt.Errorf("%w: record flags %#x", ErrCorrupt, flags)
	case r.Seq == 0:
		return Record{}, 0, fmt.Errorf("%w: record seq 0", ErrCorrupt)
	case typ == typeWrite && (dlen == 0 || dlen > MaxWriteSize || length != RecordHeaderSize+align8(int64(dlen))):
		return Record{}, 0, fmt.Errorf("%w: write record length %d data %d", ErrCorrupt, length, dlen)
	case typ == typeZero && (dlen == 0 || dlen > maxZeroLength || length != RecordHeaderSize || dcrc != 0):
		return Record{}, 0, fmt.Errorf("%w: zero record length %d zero length %d", ErrCorrupt, length, dlen)
	case typ == typeResize && (dlen == 0 || dlen > MaxDeviceSize || length != RecordHeaderSize || dcrc != 0 || off != 0):
		return Record{}, 0, fmt.Errorf("%w: resize record length %d size %d offset %d", ErrCorrupt, length, dlen, off)
	case typ == typeExtent && (dlen == 0 || dlen > MaxWriteSize || dlen%SumBlockSize != 0 || off%SumBlockSize != 0 ||
		length != extentRecordLen(int64(dlen))):
		return Record{}, 0, fmt.Errorf("%w: extent record length %d data %d offset %d", ErrCorrupt, length, dlen, off)
	case !versionHolds(version, typ):
		return Record{}, 0, fmt.Errorf("%w: record type %d in version %d", ErrCorrupt, typ, version)
	case off > math.MaxInt64-dlen:
		return Record{}, 0, fmt.Errorf("%w: record offset %d length %d", ErrCorrupt, off, dlen)
	}
	r.Offset = int64(off)
	if int64(len(b)) < length {
		return Record{}, int(length), ErrTruncated
	}
	switch typ {
	case typeZero:
		r.ZeroLength = int64(dlen)
		return r, int(length), nil
	case typeResize:
		r.Resize = int64(dlen)
		return r, int(length), nil
	}
	if typ == typeExtent {
		// Its sums are IDs or CRCs; the check over them is CRC32C either way.
		if got := crc32.Checksum(b[RecordHeaderSize:length], crc32c.Table); got != dcrc {
			return Record{}, 0, fmt.Errorf("%w: extent record sums crc %#x, want %#x", ErrCorrupt, got, dcrc)
		}
		n := RecordHeaderSize + 4*int64(dlen/SumBlockSize)
		r.InPlace, r.Length, r.Sums, r.CRC = true, int64(dlen), b[RecordHeaderSize:n:n], version == extentVersion
		return r, int(length), nil
	}
	r.CRC = version == formatVersion
	if got := blockid.OrCRC(b[RecordHeaderSize:length], r.CRC); got != dcrc {
		return Record{}, 0, fmt.Errorf("%w: record data check %#x, want %#x", ErrCorrupt, got, dcrc)
	}
	r.Data = b[RecordHeaderSize : RecordHeaderSize+int64(dlen) : RecordHeaderSize+int64(dlen)]
	return r, int(length), nil
}

// versionHolds reports whether a record of version may be of type typ.
func versionHolds(version, typ byte) bool {
	switch version {
	case formatVersion:
		return typ == typeWrite || typ == typeZero
	case resizeVersion:
		return typ == typeResize
	case extentVersion:
		return typ == typeExtent
	case idVersion:
		return typ == typeWrite || typ == typeExtent
	}
	return false
}

// Segment header, part of the format: do not change. Bytes [48,64) are the
// sync mark, rewritten in place after every fdatasync of the segment.
//
//	 0       4         6       8        12         16      24         32     40         44    48       56         60      64
//	+-------+---------+-------+--------+----------+-------+----------+------+----------+-----+--------+----------+-------+
//	| magic | version | flags | length | reserved | segno | firstSeq | salt | reserved | crc | synced | reserved | mcrc  |
//	+-------+---------+-------+--------+----------+-------+----------+------+----------+-----+--------+----------+-------+
//
// crc is the CRC32C of [0,44); mcrc the CRC32C of [48,60). synced is the
// number of bytes of this segment made durable by a completed fdatasync.
// The version says what the records carry and what may follow them:
// segVersion1 or segVersion2.
const segHeaderSize = 64

const (
	// segVersion1: records carry the journal's salt; the segment is
	// preallocated with zeros, so zeros follow its records.
	segVersion1 = 1
	// segVersion2: records carry the segment's own salt (segSalt), so a
	// reused segment file may hold the records of its earlier lives after
	// the current ones: they carry other salts and are not records of
	// this segment.
	segVersion2 = 2
)

type segHeader struct {
	version  uint16
	num      uint64
	firstSeq uint64
	salt     uint64 // the journal's
}

// recordSalt is the salt the segment's records carry.
func (h segHeader) recordSalt() uint64 {
	if h.version == segVersion1 {
		return h.salt
	}
	return segSalt(h.salt, h.num)
}

// segSalt is the record salt of a version-2 segment num of the journal
// with salt salt: distinct for every segment number (the multiplier is
// odd, so num -> num*k is one to one) and never the journal's own salt
// (num > 0), so no record of a file's earlier life passes for one of its
// current life, nor for a version-1 record.
func segSalt(salt, num uint64) uint64 { return salt ^ num*0x9e3779b97f4a7c15 }

func encodeSegHeader(b []byte, h segHeader) {
	le := binary.LittleEndian
	clear(b[:segHeaderSize])
	le.PutUint32(b[0:], segmentMagic)
	le.PutUint16(b[4:], h.version)
	le.PutUint32(b[8:], segHeaderSize)
	le.PutUint64(b[16:], h.num)
	le.PutUint64(b[24:], h.firstSeq)
	le.PutUint64(b[32:], h.salt)
	le.PutUint32(b[44:], crc32.Checksum(b[:44], crc32c.Table))
	encodeMark(b[48:64], 0)
}

func decodeSegHeader(b []byte) (segHeader, error) {
	le := binary.LittleEndian
	if len(b) < segHeaderSize {
		return segHeader{}, fmt.Errorf("%w: segment header is %d bytes", ErrTruncated, len(b))
	}
	if le.Uint32(b) != segmentMagic {
		return segHeader{}, fmt.Errorf("%w: bad segment magic %#x", ErrCorrupt, le.Uint32(b))
	}
	if got, want := crc32.Checksum(b[:44], crc32c.Table), le.Uint32(b[44:]); got != want {
		return segHeader{}, fmt.Errorf("%w: segment header crc %#x, want %#x", ErrCorrupt, got, want)
	}
	v := le.Uint16(b[4:])
	if v != segVersion1 && v != segVersion2 {
		return segHeader{}, fmt.Errorf("%w: segment version %d", ErrVersion, v)
	}
	if le.Uint16(b[6:]) != 0 || le.Uint32(b[8:]) != segHeaderSize || le.Uint32(b[12:]) != 0 || le.Uint32(b[40:]) != 0 {
		return segHeader{}, fmt.Errorf("%w: segment header fields", ErrCorrupt)
	}
	return segHeader{version: v, num: le.Uint64(b[16:]), firstSeq: le.Uint64(b[24:]), salt: le.Uint64(b[32:])}, nil
}

// encodeMark fills the 16-byte sync mark.
func encodeMark(b []byte, synced int64) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], uint64(synced))
	le.PutUint32(b[8:], 0)
	le.PutUint32(b[12:], crc32.Checksum(b[:12], crc32c.Table))
}

// decodeMark returns the synced offset of a sync mark, 0 when it is torn.
func decodeMark(b []byte) int64 {
	le := binary.LittleEndian
	if len(b) < 16 || crc32.Checksum(b[:12], crc32c.Table) != le.Uint32(b[12:]) || le.Uint64(b) > math.MaxInt64 {
		return 0
	}
	return int64(le.Uint64(b))
}

package journal

import "errors"

// Errors of the journal. Corruption (ErrCorrupt, ErrTruncated, ErrVersion)
// means the bytes on disk cannot be trusted and an operator or a resync must
// step in; ErrFailed means an fdatasync or a data-file write failed and the
// store must be reopened; the rest reject a single call.
var (
	// ErrCorrupt reports bytes that fail their checks: a CRC, a magic number,
	// a field out of range, a record in the wrong order.
	ErrCorrupt = errors.New("journal: corrupt")
	// ErrTruncated reports a buffer shorter than the record it holds.
	ErrTruncated = errors.New("journal: truncated record")
	// ErrVersion reports a well-formed record, segment or meta file of a
	// format version this code does not know.
	ErrVersion = errors.New("journal: unknown format version")
	// ErrSizeMismatch reports Options.DeviceSize above the store's size.
	ErrSizeMismatch = errors.New("journal: device size mismatch")
	// ErrShrink reports a resize record below the device's current size:
	// a store only grows.
	ErrShrink = errors.New("journal: device cannot shrink")
	// ErrSeqOrder reports an explicit Write.Seq not above LastSeq.
	ErrSeqOrder = errors.New("journal: sequence number out of order")
	// ErrOutOfRange reports an access beyond the device.
	ErrOutOfRange = errors.New("journal: offset out of range")
	// ErrInvalidWrite reports a malformed Write (no data and no zero length,
	// or both).
	ErrInvalidWrite = errors.New("journal: invalid write")
	// ErrNotWholeBlocks reports a summed read (ReadSummed) that does not
	// cover whole SumBlockSize blocks.
	ErrNotWholeBlocks = errors.New("journal: not whole blocks")
	// ErrTooLarge reports a write above MaxWriteSize or one that cannot fit
	// in the journal's MaxSize.
	ErrTooLarge = errors.New("journal: write too large")
	// ErrCompacted reports a ReadRecords start older than the oldest
	// retained record.
	ErrCompacted = errors.New("journal: records compacted")
	// ErrExtentGone (with ErrCompacted) reports an extent record whose
	// blocks a later write changed: ReadRecords cannot serve its data.
	ErrExtentGone = errors.New("journal: extent record's blocks written again")
	// ErrInvalidOptions reports unusable Options.
	ErrInvalidOptions = errors.New("journal: invalid options")
	// ErrClosed reports use after Close.
	ErrClosed = errors.New("journal: closed")
	// ErrFailed wraps the first fdatasync or data-file write error; after it
	// every write, Sync and Checkpoint fails. Reopen to recover by replay.
	ErrFailed = errors.New("journal: store failed")
)

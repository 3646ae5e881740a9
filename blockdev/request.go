package blockdev

import (
	"encoding/binary"
	"fmt"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Request header, 28 bytes, big endian (part of the NBD protocol: do not change):
//
//	0        4       6       8               16              24      28
//	+--------+-------+-------+---------------+---------------+-------+
//	| magic  | flags | type  |    cookie     |    offset     |length |
//	+--------+-------+-------+---------------+---------------+-------+
//	 0x25609513                                               (WRITE: length payload bytes follow)
//
// Simple reply header, 16 bytes (READ: length data bytes follow on success):
//
//	0        4       8               16
//	+--------+-------+---------------+
//	| magic  | error |    cookie     |
//	+--------+-------+---------------+
//	 0x67446698

// decodeRequest parses a request header from b. It checks only the magic: a
// bad magic means the stream is desynchronised. Everything else is judged by
// export.check.
func decodeRequest(b []byte, h *protocol.TransmissionRequestHeader) error {
	if len(b) < nbdproto.RequestHeaderSize {
		return fmt.Errorf("%w: %d bytes", ErrShortHeader, len(b))
	}
	h.RequestMagic = binary.BigEndian.Uint32(b[0:4])
	h.CommandFlags = binary.BigEndian.Uint16(b[4:6])
	h.Type = binary.BigEndian.Uint16(b[6:8])
	h.Handle = binary.BigEndian.Uint64(b[8:16])
	h.Offset = binary.BigEndian.Uint64(b[16:24])
	h.Length = binary.BigEndian.Uint32(b[24:28])
	if h.RequestMagic != protocol.TRANSMISSION_MAGIC_REQUEST {
		return fmt.Errorf("%w: %#08x", ErrBadRequestMagic, h.RequestMagic)
	}
	return nil
}

// putReplyHeader encodes a simple reply header into b[:nbdproto.ReplyHeaderSize].
func putReplyHeader(b []byte, errno uint32, cookie uint64) {
	binary.BigEndian.PutUint32(b[0:4], protocol.TRANSMISSION_MAGIC_REPLY)
	binary.BigEndian.PutUint32(b[4:8], errno)
	binary.BigEndian.PutUint64(b[8:16], cookie)
}

// export is what the transmission phase of one connection knows about its
// export; it is fixed at the end of the handshake.
type export struct {
	size     int64
	flags    nbdproto.Flags // transmission flags advertised
	readOnly bool
	// align is the enforced alignment of offset and length: MinBlockSize if
	// the client asked for NBD_INFO_BLOCK_SIZE in NBD_OPT_GO, else 1.
	align    uint32
	maxBlock uint32 // largest READ/WRITE length
}

// isWrite reports whether a command changes the device and so takes part in
// FLUSH ordering and is refused on a read-only export.
func isWrite(cmd uint16) bool {
	return cmd == protocol.TRANSMISSION_TYPE_REQUEST_WRITE || cmd == nbdproto.CmdTrim || cmd == nbdproto.CmdWriteZeroes
}

// check returns the NBD error for a request that must be refused before it
// reaches the device, or 0 if the request is valid. DISC is handled by the
// caller. The order of the checks decides which error a request with several
// faults gets: command, flags, permission, size limit, zero length,
// alignment, bounds.
func (x *export) check(h *protocol.TransmissionRequestHeader) uint32 {
	cmd, length, off := h.Type, h.Length, h.Offset
	allowed := nbdproto.CmdFlagFUA // FUA is accepted on every command (spec)
	switch cmd {
	case protocol.TRANSMISSION_TYPE_REQUEST_READ, protocol.TRANSMISSION_TYPE_REQUEST_WRITE, nbdproto.CmdTrim:
	case nbdproto.CmdWriteZeroes:
		allowed |= nbdproto.CmdFlagNoHole
	case nbdproto.CmdFlush:
		// Offset and length are reserved and MUST be zero.
		if nbdproto.CmdFlags(h.CommandFlags)&^allowed != 0 || off != 0 || length != 0 {
			return nbdproto.EINVAL
		}
		return 0
	default: // CACHE, BLOCK_STATUS and unknown commands
		return nbdproto.EINVAL
	}
	if nbdproto.CmdFlags(h.CommandFlags)&^allowed != 0 {
		return nbdproto.EINVAL
	}
	if x.readOnly && isWrite(cmd) {
		return nbdproto.EPERM
	}
	// READ and WRITE carry a payload bounded by the maximum block size;
	// TRIM and WRITE_ZEROES may be larger (spec, "Size constraints").
	if length > x.maxBlock && (cmd == protocol.TRANSMISSION_TYPE_REQUEST_READ || cmd == protocol.TRANSMISSION_TYPE_REQUEST_WRITE) {
		return nbdproto.EINVAL
	}
	if length == 0 {
		return nbdproto.EINVAL
	}
	if off%uint64(x.align) != 0 || length%x.align != 0 {
		return nbdproto.EINVAL
	}
	if off > uint64(x.size) || uint64(length) > uint64(x.size)-off {
		// The spec asks ENOSPC for writes past the end, EINVAL for reads
		// and trims.
		if cmd == protocol.TRANSMISSION_TYPE_REQUEST_WRITE || cmd == nbdproto.CmdWriteZeroes {
			return nbdproto.ENOSPC
		}
		return nbdproto.EINVAL
	}
	return 0
}

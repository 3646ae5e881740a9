// Package nbdproto holds the NBD wire values grbd uses that
// github.com/pojntfx/go-nbd/pkg/protocol does not define: one home for
// grbd's NBD server (blockdev), its client (internal/nbdclient) and the
// kernel hand-off (internal/nbdkernel).
//
// Everything here is part of the NBD protocol (NetworkBlockDevice/nbd
// doc/proto.md, "Values"): do not change. Names follow the spec's NBD_*
// identifiers so they can be grepped against it. Each constant has the
// width of its field on the wire.
package nbdproto

// Handshake flags (server to client, 16 bits).
const (
	FlagFixedNewstyle uint16 = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	FlagNoZeroes      uint16 = 1 << 1 // NBD_FLAG_NO_ZEROES
)

// Client flags (client to server, 32 bits).
const (
	FlagCFixedNewstyle uint32 = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	FlagCNoZeroes      uint32 = 1 << 1 // NBD_FLAG_C_NO_ZEROES
)

// Option ids (32 bits).
const (
	OptExportName      uint32 = 1 // NBD_OPT_EXPORT_NAME
	OptStartTLS        uint32 = 5 // NBD_OPT_STARTTLS
	OptStructuredReply uint32 = 8 // NBD_OPT_STRUCTURED_REPLY
)

// Option reply types (32 bits); errors have bit 31 set.
const (
	RepErrPolicy  uint32 = 1<<31 | 2 // NBD_REP_ERR_POLICY
	RepErrInvalid uint32 = 1<<31 | 3 // NBD_REP_ERR_INVALID
	RepErrTLSReqd uint32 = 1<<31 | 5 // NBD_REP_ERR_TLS_REQD
)

// Flags are the transmission flags (16 bits, sent with the export size;
// the kernel's NBD_SET_FLAGS takes the same bits).
type Flags uint16

// Has reports whether every flag in want is set.
func (f Flags) Has(want Flags) bool { return f&want == want }

// Transmission flags.
const (
	FlagHasFlags        Flags = 1 << 0  // NBD_FLAG_HAS_FLAGS
	FlagReadOnly        Flags = 1 << 1  // NBD_FLAG_READ_ONLY
	FlagSendFlush       Flags = 1 << 2  // NBD_FLAG_SEND_FLUSH
	FlagSendFUA         Flags = 1 << 3  // NBD_FLAG_SEND_FUA
	FlagRotational      Flags = 1 << 4  // NBD_FLAG_ROTATIONAL
	FlagSendTrim        Flags = 1 << 5  // NBD_FLAG_SEND_TRIM
	FlagSendWriteZeroes Flags = 1 << 6  // NBD_FLAG_SEND_WRITE_ZEROES
	FlagCanMultiConn    Flags = 1 << 8  // NBD_FLAG_CAN_MULTI_CONN
	FlagSendCache       Flags = 1 << 10 // NBD_FLAG_SEND_CACHE
)

// Command types (16 bits). READ (0), WRITE (1) and DISC (2) come from
// go-nbd.
const (
	CmdFlush       uint16 = 3 // NBD_CMD_FLUSH
	CmdTrim        uint16 = 4 // NBD_CMD_TRIM
	CmdCache       uint16 = 5 // NBD_CMD_CACHE
	CmdWriteZeroes uint16 = 6 // NBD_CMD_WRITE_ZEROES
	CmdBlockStatus uint16 = 7 // NBD_CMD_BLOCK_STATUS
)

// CmdFlags are a request's command flags (16 bits in every request).
type CmdFlags uint16

// Command flags.
const (
	CmdFlagFUA      CmdFlags = 1 << 0 // NBD_CMD_FLAG_FUA
	CmdFlagNoHole   CmdFlags = 1 << 1 // NBD_CMD_FLAG_NO_HOLE
	CmdFlagDF       CmdFlags = 1 << 2 // NBD_CMD_FLAG_DF
	CmdFlagReqOne   CmdFlags = 1 << 3 // NBD_CMD_FLAG_REQ_ONE
	CmdFlagFastZero CmdFlags = 1 << 4 // NBD_CMD_FLAG_FAST_ZERO
)

// Error values of the simple reply (32 bits). NBD_ENOTSUP (95) is reserved
// for FAST_ZERO, which grbd does not advertise.
const (
	EPERM     uint32 = 1   // NBD_EPERM
	EIO       uint32 = 5   // NBD_EIO
	ENOMEM    uint32 = 12  // NBD_ENOMEM
	EINVAL    uint32 = 22  // NBD_EINVAL
	ENOSPC    uint32 = 28  // NBD_ENOSPC
	EOVERFLOW uint32 = 75  // NBD_EOVERFLOW
	ESHUTDOWN uint32 = 108 // NBD_ESHUTDOWN
)

// Fixed sizes and magics of wire messages.
const (
	RequestHeaderSize = 28  // magic 4, flags 2, type 2, cookie 8, offset 8, length 4
	ReplyHeaderSize   = 16  // magic 4, error 4, cookie 8
	ExportNameZeroes  = 124 // reserved zeroes after NBD_OPT_EXPORT_NAME's reply without NO_ZEROES
	MaxStringLength   = 4096
	// StructuredReplyMagic starts a structured reply
	// (NBD_STRUCTURED_REPLY_MAGIC).
	StructuredReplyMagic uint32 = 0x668e33ef
)

package nbdclient

// NBD wire values that github.com/pojntfx/go-nbd/pkg/protocol does not
// define, seen from the client's side. All are part of the NBD protocol
// (NetworkBlockDevice/nbd doc/proto.md, "Values"): do not change. Names follow
// the spec's NBD_* identifiers so they can be grepped against it.

// Handshake flags (server to client) and client flags (client to server).
const (
	flagNoZeroes        uint16 = 1 << 1 // NBD_FLAG_NO_ZEROES
	flagCFixedNewstyle  uint32 = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	flagCNoZeroes       uint32 = 1 << 1 // NBD_FLAG_C_NO_ZEROES
	optExportName       uint32 = 1      // NBD_OPT_EXPORT_NAME
	optStartTLS         uint32 = 5      // NBD_OPT_STARTTLS
	exportNameZeroes           = 124    // zeroes after NBD_OPT_EXPORT_NAME's answer without NO_ZEROES
	maxOptionReplyBytes        = 1 << 20
)

// Flags are the transmission flags the server sent with the export size.
type Flags uint16

// Transmission flags (part of the protocol: do not change).
const (
	FlagHasFlags     Flags = 1 << 0  // NBD_FLAG_HAS_FLAGS
	FlagReadOnly     Flags = 1 << 1  // NBD_FLAG_READ_ONLY
	FlagSendFlush    Flags = 1 << 2  // NBD_FLAG_SEND_FLUSH
	FlagSendFUA      Flags = 1 << 3  // NBD_FLAG_SEND_FUA
	FlagRotational   Flags = 1 << 4  // NBD_FLAG_ROTATIONAL
	FlagSendTrim     Flags = 1 << 5  // NBD_FLAG_SEND_TRIM
	FlagWriteZeroes  Flags = 1 << 6  // NBD_FLAG_SEND_WRITE_ZEROES
	FlagCanMultiConn Flags = 1 << 8  // NBD_FLAG_CAN_MULTI_CONN
	FlagSendCache    Flags = 1 << 10 // NBD_FLAG_SEND_CACHE
)

// Has reports whether every flag in want is set.
func (f Flags) Has(want Flags) bool { return f&want == want }

// CmdFlags are per-request command flags.
type CmdFlags uint16

// Command flags (part of the protocol: do not change).
const (
	CmdFlagFUA    CmdFlags = 1 << 0 // NBD_CMD_FLAG_FUA
	CmdFlagNoHole CmdFlags = 1 << 1 // NBD_CMD_FLAG_NO_HOLE
)

// Command types beyond READ (0), WRITE (1) and DISC (2), which come from
// go-nbd.
const (
	cmdFlush       uint16 = 3 // NBD_CMD_FLUSH
	cmdTrim        uint16 = 4 // NBD_CMD_TRIM
	cmdWriteZeroes uint16 = 6 // NBD_CMD_WRITE_ZEROES
)

// Sizes of fixed wire messages.
const (
	requestHeaderSize = 28 // magic 4, flags 2, type 2, cookie 8, offset 8, length 4
	replyHeaderSize   = 16 // magic 4, error 4, cookie 8
)

// structuredReplyMagic starts a structured reply (NBD_STRUCTURED_REPLY_MAGIC);
// this client never negotiates them, so one is a protocol violation.
const structuredReplyMagic uint32 = 0x668e33ef

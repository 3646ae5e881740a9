package blockdev

import "github.com/pojntfx/go-nbd/pkg/protocol"

// NBD wire values that github.com/pojntfx/go-nbd/pkg/protocol does not define.
// Everything here is part of the NBD protocol (NetworkBlockDevice/nbd
// doc/proto.md, "Values"): do not change. Names follow the spec's
// NBD_* identifiers so they can be grepped against it.

// Handshake flags (server → client, 16 bits).
const (
	nbdFlagNoZeroes uint16 = 1 << 1 // NBD_FLAG_NO_ZEROES
)

// Client flags (client → server, 32 bits).
const (
	nbdFlagCFixedNewstyle uint32 = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	nbdFlagCNoZeroes      uint32 = 1 << 1 // NBD_FLAG_C_NO_ZEROES
	nbdFlagsCKnown               = nbdFlagCFixedNewstyle | nbdFlagCNoZeroes
)

// Option ids.
const (
	nbdOptExportName      uint32 = 1 // NBD_OPT_EXPORT_NAME
	nbdOptStartTLS        uint32 = 5 // NBD_OPT_STARTTLS
	nbdOptStructuredReply uint32 = 8 // NBD_OPT_STRUCTURED_REPLY
)

// Option reply types. Errors have bit 31 set.
const (
	nbdRepErrPolicy  uint32 = 1<<31 | 2 // NBD_REP_ERR_POLICY
	nbdRepErrInvalid uint32 = 1<<31 | 3 // NBD_REP_ERR_INVALID
	nbdRepErrTLSReqd uint32 = 1<<31 | 5 // NBD_REP_ERR_TLS_REQD
)

// Transmission flags (16 bits, sent with the export size).
const (
	nbdFlagReadOnly        uint16 = 1 << 1 // NBD_FLAG_READ_ONLY
	nbdFlagSendFlush       uint16 = 1 << 2 // NBD_FLAG_SEND_FLUSH
	nbdFlagSendFUA         uint16 = 1 << 3 // NBD_FLAG_SEND_FUA
	nbdFlagSendTrim        uint16 = 1 << 5 // NBD_FLAG_SEND_TRIM
	nbdFlagSendWriteZeroes uint16 = 1 << 6 // NBD_FLAG_SEND_WRITE_ZEROES
)

// Command types. READ (0), WRITE (1) and DISC (2) come from go-nbd.
const (
	nbdCmdFlush       uint16 = 3 // NBD_CMD_FLUSH
	nbdCmdTrim        uint16 = 4 // NBD_CMD_TRIM
	nbdCmdCache       uint16 = 5 // NBD_CMD_CACHE (not supported: EINVAL)
	nbdCmdWriteZeroes uint16 = 6 // NBD_CMD_WRITE_ZEROES
	nbdCmdBlockStatus uint16 = 7 // NBD_CMD_BLOCK_STATUS (not supported: EINVAL)
)

// Command flags (16 bits in every request).
const (
	nbdCmdFlagFUA      uint16 = 1 << 0 // NBD_CMD_FLAG_FUA
	nbdCmdFlagNoHole   uint16 = 1 << 1 // NBD_CMD_FLAG_NO_HOLE
	nbdCmdFlagDF       uint16 = 1 << 2 // NBD_CMD_FLAG_DF
	nbdCmdFlagReqOne   uint16 = 1 << 3 // NBD_CMD_FLAG_REQ_ONE
	nbdCmdFlagFastZero uint16 = 1 << 4 // NBD_CMD_FLAG_FAST_ZERO
)

// Error values of the simple reply. EPERM (1) and EINVAL (22) come from go-nbd;
// they are aliased here so the full set reads in one place.
const (
	nbdEPERM     uint32 = protocol.TRANSMISSION_ERROR_EPERM  // NBD_EPERM (1)
	nbdEIO       uint32 = 5                                  // NBD_EIO
	nbdENOMEM    uint32 = 12                                 // NBD_ENOMEM
	nbdEINVAL    uint32 = protocol.TRANSMISSION_ERROR_EINVAL // NBD_EINVAL (22)
	nbdENOSPC    uint32 = 28                                 // NBD_ENOSPC
	nbdEOVERFLOW uint32 = 75                                 // NBD_EOVERFLOW
	// NBD_ENOTSUP (95) is reserved for FAST_ZERO, which is not advertised.
	nbdESHUTDOWN uint32 = 108 // NBD_ESHUTDOWN
)

// Fixed sizes of wire messages.
const (
	requestHeaderSize = 28  // magic 4, flags 2, type 2, cookie 8, offset 8, length 4
	replyHeaderSize   = 16  // magic 4, error 4, cookie 8
	exportNameZeroes  = 124 // reserved zeroes after NBD_OPT_EXPORT_NAME's reply
	maxStringLength   = 4096
)

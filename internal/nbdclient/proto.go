package nbdclient

import "github.com/grbd/grbd/internal/nbdproto"

// Flags are the transmission flags the server sent with the export size.
type Flags = nbdproto.Flags

// CmdFlags are per-request command flags.
type CmdFlags = nbdproto.CmdFlags

// maxOptionReplyBytes bounds an option reply this client reads.
const maxOptionReplyBytes = 1 << 20

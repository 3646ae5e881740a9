package blockdev

import "github.com/grbd/grbd/internal/nbdproto"

// clientFlagsKnown are the client flags this server understands; a client
// that sets any other is refused (NBD protocol, "Client flags").
const clientFlagsKnown = nbdproto.FlagCFixedNewstyle | nbdproto.FlagCNoZeroes

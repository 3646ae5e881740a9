package blockdev

import (
	"crypto/tls"
	"fmt"
	"github.com/grbd/grbd/internal/bufpool"
	"github.com/grbd/grbd/internal/nbdproto"
	"log/slog"
	"math/bits"
	"time"
)

// Defaults applied by NewServer to zero-valued Options fields.
const (
	DefaultMinBlockSize       = 512
	DefaultPreferredBlockSize = 4096
	DefaultMaxBlockSize       = 32 << 20
	DefaultMaxInFlight        = 128
	DefaultMaxInFlightBytes   = 64 << 20
	DefaultHandshakeTimeout   = 10 * time.Second
	DefaultMaxConnections     = 256
	DefaultMaxHandshakes      = 32
)

// Limits that are not options.
const (
	// maxBlockSizeLimit caps MaxBlockSize: a single request buffer never
	// exceeds 256 MiB, the largest pooled buffer.
	maxBlockSizeLimit = bufpool.Max
	// spec25 is 2^25: the spec says no payload up to this size should be
	// treated as a denial of service, so oversized WRITEs up to
	// max(MaxBlockSize, spec25) are drained and answered EINVAL; larger ones
	// close the connection.
	spec25 = 1 << 25
	// maxOptionLength bounds the data of one handshake option. NBD_OPT_GO
	// needs at most 4 + 4096 + 2 + 2*n bytes.
	maxOptionLength = 64 << 10
	// maxOptions bounds the number of options in one handshake.
	maxOptions = 1024
	// closeGrace bounds how long Close waits for a client that does not read
	// its replies.
	closeGrace = 10 * time.Second
	// handshakeBufferSize sizes a connection's buffers until it enters
	// transmission: a connection that never gets there costs little.
	handshakeBufferSize = 1 << 10
)

// Options configure a Server. The zero value of each field selects its default.
type Options struct {
	// ExportName is the name of the single export; "" (the NBD default
	// export) is always accepted as well.
	ExportName string
	// Description is shown by clients (NBD_INFO_DESCRIPTION).
	Description string

	// MinBlockSize, PreferredBlockSize and MaxBlockSize are advertised with
	// NBD_INFO_BLOCK_SIZE. Min and Preferred are powers of two, Min <= 64 KiB,
	// Preferred >= max(Min, 512), Max >= Preferred and a multiple of Min.
	// Alignment to MinBlockSize is enforced only for clients that asked for
	// block sizes in NBD_OPT_GO (the spec's contract); MaxBlockSize bounds
	// READ and WRITE lengths for every client.
	MinBlockSize, PreferredBlockSize, MaxBlockSize uint32

	// MaxInFlight bounds the requests of one connection that are received
	// but not yet answered. The reader stops reading while it is reached.
	MaxInFlight int
	// MaxInFlightBytes bounds the payload bytes one connection holds (WRITE
	// data received but not yet written, READ data not yet sent). Default
	// max(64 MiB, MaxBlockSize); at least MaxBlockSize. Without it
	// MaxInFlight x MaxBlockSize could reach 4 GiB per connection.
	MaxInFlightBytes int64
	// HandshakeTimeout bounds the whole option negotiation, TLS included.
	HandshakeTimeout time.Duration
	// MaxConnections bounds the connections served at once; MaxHandshakes
	// those still negotiating (at most MaxConnections). A connection beyond
	// either is closed as soon as it is accepted. Together with the
	// per-connection budgets they bound the server's memory: about
	// MaxHandshakes x 10 KiB for negotiating connections, MaxConnections x
	// (MaxInFlightBytes + 0.5 MiB of buffers) for the others.
	MaxConnections, MaxHandshakes int
	// TLS enables NBD_OPT_STARTTLS with this configuration (nil: the option
	// is refused with NBD_REP_ERR_UNSUP). With TLSRequired the server runs
	// in the spec's FORCEDTLS mode: before STARTTLS every option but
	// STARTTLS and ABORT is refused with NBD_REP_ERR_TLS_REQD, and
	// NBD_OPT_EXPORT_NAME closes the connection.
	TLS         *tls.Config
	TLSRequired bool
	// OrderOverlapping makes a request that overlaps an earlier one of the
	// same connection still in flight (one of the two writing) wait until
	// that one completed, so the device sees overlapping requests in wire
	// order. NBD does not require it; grbd proxy does, because it may
	// execute an unanswered request again after a failover.
	OrderOverlapping bool
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
}

// withDefaults returns o with defaults filled in, or ErrInvalidOptions.
func (o Options) withDefaults(devSize int64) (Options, error) {
	if o.MinBlockSize == 0 {
		o.MinBlockSize = DefaultMinBlockSize
	}
	if o.PreferredBlockSize == 0 {
		o.PreferredBlockSize = max(DefaultPreferredBlockSize, o.MinBlockSize)
	}
	if o.MaxBlockSize == 0 {
		o.MaxBlockSize = max(DefaultMaxBlockSize, o.PreferredBlockSize)
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxInFlightBytes == 0 {
		o.MaxInFlightBytes = max(DefaultMaxInFlightBytes, int64(o.MaxBlockSize))
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.MaxHandshakes == 0 {
		o.MaxHandshakes = min(DefaultMaxHandshakes, o.MaxConnections)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	bad := func(format string, args ...any) (Options, error) {
		return o, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
	}
	switch {
	case len(o.ExportName) > nbdproto.MaxStringLength:
		return bad("export name longer than %d bytes", nbdproto.MaxStringLength)
	case len(o.Description) > nbdproto.MaxStringLength:
		return bad("description longer than %d bytes", nbdproto.MaxStringLength)
	case bits.OnesCount32(o.MinBlockSize) != 1 || o.MinBlockSize > 1<<16:
		return bad("MinBlockSize %d: want a power of two <= 65536", o.MinBlockSize)
	case bits.OnesCount32(o.PreferredBlockSize) != 1 || o.PreferredBlockSize < max(o.MinBlockSize, 512):
		return bad("PreferredBlockSize %d: want a power of two >= max(MinBlockSize, 512)", o.PreferredBlockSize)
	case o.MaxBlockSize < o.PreferredBlockSize || o.MaxBlockSize%o.MinBlockSize != 0 || o.MaxBlockSize > maxBlockSizeLimit:
		return bad("MaxBlockSize %d: want a multiple of MinBlockSize in [PreferredBlockSize, %d]", o.MaxBlockSize, maxBlockSizeLimit)
	case o.MaxInFlight < 1 || o.MaxInFlight > 1<<16:
		return bad("MaxInFlight %d: want 1..65536", o.MaxInFlight)
	case o.MaxInFlightBytes < int64(o.MaxBlockSize):
		return bad("MaxInFlightBytes %d: want >= MaxBlockSize %d", o.MaxInFlightBytes, o.MaxBlockSize)
	case o.HandshakeTimeout < 0:
		return bad("negative HandshakeTimeout")
	case o.MaxConnections < 1:
		return bad("MaxConnections %d: want >= 1", o.MaxConnections)
	case o.MaxHandshakes < 1 || o.MaxHandshakes > o.MaxConnections:
		return bad("MaxHandshakes %d: want 1..MaxConnections", o.MaxHandshakes)
	case o.TLSRequired && o.TLS == nil:
		return bad("TLSRequired without TLS")
	case devSize < 0:
		return bad("device size %d", devSize)
	case devSize%int64(o.MinBlockSize) != 0:
		return bad("device size %d is not a multiple of MinBlockSize %d", devSize, o.MinBlockSize)
	}
	return o, nil
}

// drainLimit is the largest WRITE payload the server reads and discards when
// it rejects the request; larger payloads close the connection.
func (o *Options) drainLimit() uint32 { return max(o.MaxBlockSize, spec25) }

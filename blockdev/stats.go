package blockdev

import (
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/metrics"
	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Stats are cumulative counters of a Server since NewServer.
type Stats struct {
	Connections       uint64 // connections accepted
	ActiveConnections uint64 // connections open now
	HandshakeFailures uint64 // connections that never reached transmission (aborts excluded)
	// Refused counts connections closed at accept by MaxConnections or
	// MaxHandshakes (not included in Connections).
	Refused uint64
	// TLSConnections counts connections that negotiated TLS.
	TLSConnections uint64

	Reads, Writes, Flushes, Trims, WriteZeroes uint64 // successful commands
	BytesRead, BytesWritten                    uint64 // payload bytes of successful READs / WRITEs

	// Errors is the number of error replies; ErrorsByKind splits it by the
	// NBD error value sent.
	Errors       uint64
	ErrorsByKind ErrorCounts
	// DeviceErrors counts errors returned by the Device (a subset of Errors;
	// the rest are requests refused by validation).
	DeviceErrors uint64
	// ProtocolErrors counts connections closed for a protocol violation in
	// the transmission phase (bad request magic, undrainable payload).
	ProtocolErrors uint64

	// Latency of successful READs, WRITEs and FLUSHes: from the request
	// header read to the reply handed to the socket buffer.
	ReadLatency, WriteLatency, FlushLatency metrics.HistogramSnapshot
}

// ErrorCounts counts error replies by NBD error value.
type ErrorCounts struct {
	Perm, IO, NoMem, Invalid, NoSpace, Overflow, Shutdown, Other uint64
}

type counters struct {
	connections, active, handshakeFailures     atomic.Uint64
	refused, tlsConns                          atomic.Uint64
	reads, writes, flushes, trims, zeroes      atomic.Uint64
	bytesRead, bytesWritten                    atomic.Uint64
	errPerm, errIO, errNoMem, errInvalid       atomic.Uint64
	errNoSpace, errOverflow, errShutdown, errX atomic.Uint64
	deviceErrors, protocolErrors               atomic.Uint64
	readLat, writeLat, flushLat                metrics.Histogram
}

// monoBase anchors monoNow: the monotonic clock reading of process start.
var monoBase = time.Now()

// monoNow is nanoseconds on the monotonic clock (cheap: one vDSO call).
func monoNow() int64 { return int64(time.Since(monoBase)) }

// count records the outcome of a finished request. Called by connection
// writers.
func (s *counters) count(req *request) {
	if req.errno != 0 {
		switch req.errno {
		case nbdproto.EPERM:
			s.errPerm.Add(1)
		case nbdproto.EIO:
			s.errIO.Add(1)
		case nbdproto.ENOMEM:
			s.errNoMem.Add(1)
		case nbdproto.EINVAL:
			s.errInvalid.Add(1)
		case nbdproto.ENOSPC:
			s.errNoSpace.Add(1)
		case nbdproto.EOVERFLOW:
			s.errOverflow.Add(1)
		case nbdproto.ESHUTDOWN:
			s.errShutdown.Add(1)
		default:
			s.errX.Add(1)
		}
		return
	}
	lat := time.Duration(monoNow() - req.start)
	switch req.hdr.Type {
	case protocol.TRANSMISSION_TYPE_REQUEST_READ:
		s.reads.Add(1)
		s.bytesRead.Add(uint64(req.hdr.Length))
		s.readLat.Observe(lat)
	case protocol.TRANSMISSION_TYPE_REQUEST_WRITE:
		s.writes.Add(1)
		s.bytesWritten.Add(uint64(req.hdr.Length))
		s.writeLat.Observe(lat)
	case nbdproto.CmdFlush:
		s.flushes.Add(1)
		s.flushLat.Observe(lat)
	case nbdproto.CmdTrim:
		s.trims.Add(1)
	case nbdproto.CmdWriteZeroes:
		s.zeroes.Add(1)
	}
}

func (s *counters) snapshot() Stats {
	st := Stats{
		Connections:       s.connections.Load(),
		ActiveConnections: s.active.Load(),
		HandshakeFailures: s.handshakeFailures.Load(),
		Refused:           s.refused.Load(),
		TLSConnections:    s.tlsConns.Load(),
		Reads:             s.reads.Load(),
		Writes:            s.writes.Load(),
		Flushes:           s.flushes.Load(),
		Trims:             s.trims.Load(),
		WriteZeroes:       s.zeroes.Load(),
		BytesRead:         s.bytesRead.Load(),
		BytesWritten:      s.bytesWritten.Load(),
		ErrorsByKind: ErrorCounts{
			Perm:     s.errPerm.Load(),
			IO:       s.errIO.Load(),
			NoMem:    s.errNoMem.Load(),
			Invalid:  s.errInvalid.Load(),
			NoSpace:  s.errNoSpace.Load(),
			Overflow: s.errOverflow.Load(),
			Shutdown: s.errShutdown.Load(),
			Other:    s.errX.Load(),
		},
		DeviceErrors:   s.deviceErrors.Load(),
		ProtocolErrors: s.protocolErrors.Load(),
		ReadLatency:    s.readLat.Snapshot(),
		WriteLatency:   s.writeLat.Snapshot(),
		FlushLatency:   s.flushLat.Snapshot(),
	}
	e := st.ErrorsByKind
	st.Errors = e.Perm + e.IO + e.NoMem + e.Invalid + e.NoSpace + e.Overflow + e.Shutdown + e.Other
	return st
}

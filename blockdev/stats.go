package blockdev

import (
	"slices"
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

// errKinds are the NBD error values ErrorCounts splits by, in the order of
// ErrorCounts.kinds; any other value counts as Other.
var errKinds = [...]uint32{
	nbdproto.EPERM, nbdproto.EIO, nbdproto.ENOMEM, nbdproto.EINVAL,
	nbdproto.ENOSPC, nbdproto.EOVERFLOW, nbdproto.ESHUTDOWN,
}

// kinds are c's fields in errKinds order, Other last.
func (c *ErrorCounts) kinds() [len(errKinds) + 1]*uint64 {
	return [...]*uint64{&c.Perm, &c.IO, &c.NoMem, &c.Invalid, &c.NoSpace, &c.Overflow, &c.Shutdown, &c.Other}
}

// errKind is the index of NBD error value errno in errKinds, or
// len(errKinds) (Other) for a value not listed.
func errKind(errno uint32) int {
	if i := slices.Index(errKinds[:], errno); i >= 0 {
		return i
	}
	return len(errKinds)
}

type counters struct {
	connections, active, handshakeFailures atomic.Uint64
	refused, tlsConns                      atomic.Uint64
	reads, writes, flushes, trims, zeroes  atomic.Uint64
	bytesRead, bytesWritten                atomic.Uint64
	errs                                   [len(errKinds) + 1]atomic.Uint64 // by errKind
	deviceErrors, protocolErrors           atomic.Uint64
	readLat, writeLat, flushLat            metrics.Histogram
}

// monoBase anchors monoNow: the monotonic clock reading of process start.
var monoBase = time.Now()

// monoNow is nanoseconds on the monotonic clock (cheap: one vDSO call).
func monoNow() int64 { return int64(time.Since(monoBase)) }

// count records the outcome of a finished request. Called by connection
// writers.
func (s *counters) count(req *request) {
	if req.errno != 0 {
		s.errs[errKind(req.errno)].Add(1)
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
		DeviceErrors:      s.deviceErrors.Load(),
		ProtocolErrors:    s.protocolErrors.Load(),
		ReadLatency:       s.readLat.Snapshot(),
		WriteLatency:      s.writeLat.Snapshot(),
		FlushLatency:      s.flushLat.Snapshot(),
	}
	for i, n := range st.ErrorsByKind.kinds() {
		*n = s.errs[i].Load()
		st.Errors += *n
	}
	return st
}

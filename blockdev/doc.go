// Package blockdev is grbd's NBD server: it exports one Device (the
// replicated volume of a node) to NBD clients such as the kernel's nbd
// driver, qemu, libnbd (nbdsh, nbdcopy, nbdinfo) and fio's nbd engine.
//
// It speaks the fixed newstyle handshake (NBD_OPT_EXPORT_NAME, LIST, INFO,
// GO, ABORT; everything else NBD_REP_ERR_UNSUP) and the transmission phase
// with simple replies: READ, WRITE (FUA), FLUSH, TRIM, WRITE_ZEROES (FUA,
// NO_HOLE) and DISC. docs/nbd.md lists flags, error mapping and limits.
//
// # Concurrency contract
//
// A Server is safe for concurrent use; Serve may run on several listeners and
// ServeConn on many connections at once. Each connection has:
//
//   - one reader goroutine that decodes requests in wire order and reads WRITE
//     payloads into pooled buffers;
//   - up to Options.MaxInFlight worker goroutines that call the Device
//     concurrently, so requests complete and are answered out of order
//     (replies carry the client's cookie);
//   - one writer goroutine that sends replies through a buffered writer and
//     flushes it only when no further reply is queued.
//
// The Device therefore sees concurrent calls from all connections and must
// order overlapping requests itself if it needs to; NBD gives no ordering
// between requests in flight. The one ordering the server adds is FLUSH: it
// calls Device.Flush only after every write (WRITE, TRIM, WRITE_ZEROES)
// received on that connection before the FLUSH has completed. Flush is
// global to the Device, so NBD_FLAG_CAN_MULTI_CONN is advertised.
//
// Memory per connection is bounded by MaxInFlight requests and
// MaxInFlightBytes of payload: the reader stops reading while either limit
// is reached. Close stops accepting, stops every reader, waits for requests
// already read to be answered, then closes the connections.
package blockdev

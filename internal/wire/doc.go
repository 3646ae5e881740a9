// Package wire is the framing and message layer of grbd's peer protocol: the
// bytes data nodes (and later the witness) exchange over long-lived yamux
// streams. The primary ships journaled writes in sequence order and peers
// acknowledge them; resync, verify and heartbeats use their own streams.
// docs/wire.md is the normative description of the format.
//
// Every message travels in one frame: a 16-byte little-endian header (magic,
// version, type, flags, body length, CRC32C over header and body) followed by
// a fixed-layout body. Decoding is strict: an unknown version or type, a
// checksum mismatch, a body of the wrong size, a string longer than
// MaxString, a boolean other than 0 or 1, an unknown enum value or a reserved
// flag bit is an error, never a guess. Consequently every frame that decodes
// re-encodes to exactly the same bytes.
//
// The package knows nothing about what the messages mean (sequence order,
// epochs, alignment): the replicator validates semantics.
//
// # Concurrency contract
//
// Message values, AppendFrame and DecodeFrame have no shared state and may be
// used from any number of goroutines. A Writer and a Reader are each not safe
// for concurrent use: one goroutine writes a stream through its Writer and one
// goroutine reads it through its Reader (the two may run concurrently, as they
// share nothing).
//
// # Buffer ownership
//
//   - Writer.WriteMsg does not retain the message: the caller may reuse it,
//     and its Data, once WriteMsg returns (the bytes are then in the Writer's
//     buffer or already written).
//   - Reader.ReadMsg reuses one message value per type and one body buffer:
//     the returned Message, and every slice it holds, is valid only until the
//     next ReadMsg. Clone it to keep it longer or hand it to another
//     goroutine. This is what makes the read path allocation-free.
//   - DecodeFrame returns a fresh message whose byte slices alias its input.
package wire

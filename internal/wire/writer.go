package wire

import (
	"bufio"
	"fmt"
	"hash/crc32"

	"github.com/grbd/grbd/internal/crc32c"
	"io"
)

// bufSize is the buffer size of Writers and Readers created here: large
// enough to batch many 4 KiB writes per system call.
const bufSize = 64 << 10

// Writer frames messages onto a stream through a bufio.Writer. Messages are
// buffered: call Flush when a burst is complete (a driver typically flushes
// when its send queue is empty). Not safe for concurrent use.
type Writer struct {
	bw *bufio.Writer
	// frame holds a header and the fixed fields of one message; it is large
	// enough for every message, so planOf reallocates it only for the list
	// of a History, Extents or ResyncProgress.
	frame [HeaderSize + maxFixed]byte
	// sums stages VerifyReply checksums as little-endian bytes.
	sums [4096]byte
}

// NewWriter returns a Writer on w. A *bufio.Writer is used as is; anything
// else is wrapped in a 64 KiB one.
func NewWriter(w io.Writer) *Writer {
	bw, ok := w.(*bufio.Writer)
	if !ok {
		bw = bufio.NewWriterSize(w, bufSize)
	}
	return &Writer{bw: bw}
}

// WriteMsg appends m's frame to the buffer. An invalid message (ErrMalformed,
// ErrTooLarge) is refused before anything is written, so the stream stays
// usable. Data at least as large as the Writer's buffer goes to the
// underlying writer straight from the caller's slice (after a flush of what
// is buffered), never through an intermediate copy; smaller Data is copied
// into the buffer to be batched. WriteMsg does not retain m. Errors from the
// underlying writer are sticky (bufio semantics).
func (w *Writer) WriteMsg(m Message) error {
	p, err := planOf(m, w.frame[:HeaderSize])
	if err != nil {
		return err
	}
	n := p.bodyLen(HeaderSize)
	if n > MaxBody {
		// Only reachable through a bug in a size check of plan.
		return encodeErr(p.typ, ErrTooLarge, "body of %d bytes, max %d", n, MaxBody)
	}
	f := p.buf
	putHeader(f, p.typ, p.flags, n)
	c := crc32.Update(0, crc32c.Table, f[:offCRC])
	c = crc32.Update(c, crc32c.Table, f[HeaderSize:])
	if p.rawSums != nil {
		c = crc32c.Extend(c, p.rawSums)
	} else {
		c = crc32.Update(c, crc32c.Table, p.raw)
	}
	for rest := p.sums; len(rest) > 0; {
		var b []byte
		b, rest = w.stageSums(rest)
		c = crc32.Update(c, crc32c.Table, b)
	}
	le.PutUint32(f[offCRC:], c)

	if _, err := w.bw.Write(f); err != nil {
		return fmt.Errorf("wire: write %v: %w", p.typ, err)
	}
	if len(p.raw) > 0 {
		// Flushing first lets bufio hand a payload at least as large as
		// its buffer straight to the underlying writer, instead of copying
		// a buffer's worth of it first.
		if len(p.raw) >= w.bw.Size() && w.bw.Buffered() > 0 {
			if err := w.bw.Flush(); err != nil {
				return fmt.Errorf("wire: write %v: %w", p.typ, err)
			}
		}
		if _, err := w.bw.Write(p.raw); err != nil {
			return fmt.Errorf("wire: write %v: %w", p.typ, err)
		}
	}
	for rest := p.sums; len(rest) > 0; {
		var b []byte
		b, rest = w.stageSums(rest)
		if _, err := w.bw.Write(b); err != nil {
			return fmt.Errorf("wire: write %v: %w", p.typ, err)
		}
	}
	return nil
}

// stageSums encodes a prefix of sums into w.sums and returns the bytes and
// the sums not yet encoded.
func (w *Writer) stageSums(sums []uint32) ([]byte, []uint32) {
	k := min(len(sums), len(w.sums)/4)
	for i, s := range sums[:k] {
		le.PutUint32(w.sums[4*i:], s)
	}
	return w.sums[:4*k], sums[k:]
}

// Flush writes buffered frames to the underlying writer.
func (w *Writer) Flush() error {
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("wire: flush: %w", err)
	}
	return nil
}

// Buffered is the number of bytes written but not yet flushed.
func (w *Writer) Buffered() int { return w.bw.Buffered() }

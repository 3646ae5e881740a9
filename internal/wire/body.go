package wire

import (
	"errors"
	"fmt"
	"slices"

	"github.com/grbd/grbd/internal/extent"
)

// Body coding shared by the messages. Each message has one code method that
// states its layout and its checks once, for both directions: the codec
// either appends the fields (encoding) or reads them back (decoding).
// Decode errors are wrapped by decodeBody with the type and size; encode
// errors name the type here.

// Fixed body sizes (bytes before a trailing Data, Sums or list) that size
// limits depend on. Part of the format: do not change.
const (
	writeFixed       = 24 // then Data
	resyncDataFixed  = 16 // then Data
	verifyReplyFixed = 28 // then Sums
	controlFixed     = 17 // then Data
	extentsFixed     = 8  // then extents
	progressFixed    = 28 // then extents

	// historyEntrySize is one History entry: epoch, firstSeq, flags.
	historyEntrySize = 17
	// maxFixed bounds the fixed fields encoding appends to the caller's
	// buffer: a StreamOpen with three maximal strings (longer than a Hello
	// with two). A list (History, Extents, ResyncProgress) follows them
	// there and may reallocate it; Data and Sums are planned, not copied.
	maxFixed = 1 + 3*(2+MaxString)
	// maxSums is the largest VerifyReply.Sums that fits in MaxBody.
	maxSums = (MaxBody - verifyReplyFixed) / 4
)

// codec moves one message's fields to or from a body. Encoding, it builds
// the embedded plan; decoding, it reads b. The first failure is kept in err
// and ends the reading; checks that run after it on what a failed read left
// are ignored.
type codec struct {
	plan
	decoding bool
	allowed  uint16 // decoding: the flags the message admits
	b        []byte // decoding: the body not yet read
	err      error
}

// encode codes v into c; a nil v is an encode error (errNil until planOf
// names the type), not a crash. It is small enough to be inlined, which
// makes code a direct call: v then does not escape and a caller's
// &Write{...} stays on its stack.
func encode[T any](c *codec, t Type, v *T, code func(*T, *codec)) {
	c.typ = t
	if v == nil {
		c.err = errNil
	} else {
		code(v, c)
	}
}

// errNil marks a nil message in codec.err; planOf names the type.
var errNil = errors.New("nil message")

// decodeBody fills m (of type h.typ) from a checksummed body, using c;
func decodeBody(m Message, h header, body []byte, c *codec) error {
	// Field by field: c is the Reader's, and clearing all of it costs.
	c.typ, c.flags, c.decoding, c.allowed, c.b, c.err = h.typ, h.flags, true, 0, body, nil
	c.rawSums = nil
	m.code(c)
	if c.flags&^c.allowed != 0 {
		c.fail(ErrMalformed, "flags %#04x, allowed %#04x", c.flags, c.allowed)
	}
	if len(c.b) != 0 {
		c.fail(ErrMalformed, "%d trailing bytes", len(c.b))
	}
	if c.err != nil {
		return fmt.Errorf("wire: %v body (%d bytes): %w", h.typ, len(body), c.err)
	}
	return nil
}

// fail records a failure unless one is already recorded. Decoding, every
// failure is ErrMalformed (a body over a limit is malformed); encoding, the
// error names the type and wraps sentinel.
func (c *codec) fail(sentinel error, format string, args ...any) {
	switch {
	case c.err != nil:
	case c.decoding:
		c.err = malformed(format, args...)
	default:
		c.err = encodeErr(c.typ, sentinel, format, args...)
	}
}

// failWith records err, an ErrMalformed from a check shared with other
// code, like fail.
func (c *codec) failWith(err error) {
	switch {
	case c.err != nil:
	case c.decoding:
		c.err = err
	default:
		c.err = encodeErr(c.typ, ErrMalformed, "%v", err)
	}
}

// encodeErr is an encode error of a message of type t.
func encodeErr(t Type, sentinel error, format string, args ...any) error {
	return fmt.Errorf("wire: encode %v: %s: %w", t, fmt.Sprintf(format, args...), sentinel)
}

// malformed is a decode error; decodeBody adds the type.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrMalformed)
}

// take consumes the next n bytes of the body, or fails and returns nil.
func (c *codec) take(n int) []byte {
	if c.err != nil {
		return nil
	}
	if len(c.b) < n {
		c.fail(ErrMalformed, "body ends %d bytes early", n-len(c.b))
		return nil
	}
	b := c.b[:n]
	c.b = c.b[n:]
	return b
}

// u8 codes a byte.
func (c *codec) u8(v *uint8) {
	if !c.decoding {
		c.buf = append(c.buf, *v)
	} else if b := c.take(1); b != nil {
		*v = b[0]
	}
}

// u16 codes a little-endian uint16.
func (c *codec) u16(v *uint16) {
	if !c.decoding {
		c.buf = le.AppendUint16(c.buf, *v)
	} else if b := c.take(2); b != nil {
		*v = le.Uint16(b)
	}
}

// u32 codes a little-endian uint32.
func (c *codec) u32(v *uint32) {
	if !c.decoding {
		c.buf = le.AppendUint32(c.buf, *v)
	} else if b := c.take(4); b != nil {
		*v = le.Uint32(b)
	}
}

// u64s codes each of vs, a little-endian uint64.
func (c *codec) u64s(vs ...*uint64) {
	if !c.decoding {
		for _, v := range vs {
			c.buf = le.AppendUint64(c.buf, *v)
		}
		return
	}
	if b := c.take(8 * len(vs)); b != nil {
		for i, v := range vs {
			*v = le.Uint64(b[8*i:])
		}
	}
}

// array codes a fixed-size byte array (a slice of it).
func (c *codec) array(v []byte) {
	if !c.decoding {
		c.buf = append(c.buf, v...)
	} else if b := c.take(len(v)); b != nil {
		copy(v, b)
	}
}

// boolean codes a byte that is 0 or 1.
func (c *codec) boolean(field string, v *bool) {
	var b uint8
	if *v {
		b = 1
	}
	c.u8(&b)
	if b > 1 {
		c.fail(ErrMalformed, "%s is %d, want 0 or 1", field, b)
	}
	*v = b == 1
}

// flag codes a frame flag, one the message admits.
func (c *codec) flag(bit uint16, v *bool) {
	c.allowed |= bit
	if !c.decoding {
		if *v {
			c.flags |= bit
		}
	} else {
		*v = c.flags&bit != 0
	}
}

// str codes a string: a u16 length of at most MaxString, then its bytes.
func (c *codec) str(field string, v *string) {
	if !c.decoding {
		if len(*v) > MaxString {
			c.fail(ErrMalformed, "%s is %d bytes, max %d", field, len(*v), MaxString)
			return
		}
		c.buf = le.AppendUint16(c.buf, uint16(len(*v)))
		c.buf = append(c.buf, *v...)
		return
	}
	var n uint16
	c.u16(&n)
	switch {
	case n > MaxString:
		c.fail(ErrMalformed, "%s is %d bytes, max %d", field, n, MaxString)
	case len(c.b) < int(n):
		c.fail(ErrMalformed, "%s is %d bytes, only %d left", field, n, len(c.b))
	default:
		*v = string(c.take(int(n)))
	}
}

// tail codes Data, the rest of the body. Decoded, empty Data is nil so that
// messages compare equal however the sender spelled it.
func (c *codec) tail(v *[]byte) {
	if !c.decoding {
		c.raw = *v
		return
	}
	var d []byte
	if len(c.b) > 0 {
		d = c.b
	}
	*v, c.b = d, nil
}

// fits checks a size against the most a message may carry: encoding, more
// is ErrTooLarge. (A decoded body fits in MaxBody, so its Data does.)
func (c *codec) fits(what string, n, max int) {
	if n > max {
		c.fail(ErrTooLarge, "%d %s, max %d", n, what, max)
	}
}

// within checks that an enumeration, length or size is lo..hi.
func (c *codec) within(what string, n, lo, hi int) {
	if n < lo || n > hi {
		c.fail(ErrMalformed, "%s %d, want %d..%d", what, n, lo, hi)
	}
}

// count codes the length n of a list that ends the body, in width bytes (2
// or 4), at most max; each element takes size bytes. It returns the count,
// or 0 after a failure; decoding, only once the rest of the body is known to
// hold exactly that many elements, so that they may be allocated.
func (c *codec) count(what string, n, width, max, size int) int {
	if !c.decoding {
		c.fits(what, n, max)
	}
	v := uint32(n)
	if width == 2 {
		w := uint16(v)
		c.u16(&w)
		v = uint32(w)
	} else {
		c.u32(&v)
	}
	if c.decoding {
		c.fits(what, int(v), max)
		if len(c.b) != size*int(v) {
			c.fail(ErrMalformed, "%d %s need %d bytes, have %d", v, what, size*int(v), len(c.b))
		}
	}
	if c.err != nil {
		return 0
	}
	return int(v)
}

// extents codes a u32 count and that many ranges (at most max), which end
// the body.
func (c *codec) extents(v *[]extent.Extent, max int) {
	n := c.count("extents", len(*v), 4, max, extent.Size)
	if c.decoding {
		*v = extent.Decode(c.take(extent.Size*n), n)
	} else if n > 0 {
		c.buf = extent.Append(slices.Grow(c.buf, extent.Size*n), *v)
	}
}

package wire

import "fmt"

// Body helpers shared by the message codecs. Decode errors returned here are
// wrapped by decodeBody with the type and size; encode errors by encodeErr.

// Fixed body sizes (bytes before any trailing Data, Sums or strings). Part of
// the format: do not change.
const (
	helloFixed          = 45 // then Cluster and From strings
	writeFixed          = 24 // then Data
	zeroSize            = 32
	ackSize             = 9
	flushSize           = 16
	flushAckSize        = 20
	resyncReqSize       = 9
	resyncDataFixed     = 16 // then Data
	resyncDoneSize      = 8
	nackFixed           = 12 // then Reason string
	pingSize            = 16
	verifyReqSize       = 32
	verifyReplyFixed    = 28 // then Sums
	controlFixed        = 17 // then Data
	historyFixed        = 10 // then entries
	extentsFixed        = 8  // then extents
	progressFixed       = 28 // then extents
	authChallengeSize   = 1 + NonceSize
	authProofSize       = MACSize
	resizeSize          = 28
	blockRequestSize    = 20
	blockDataFixed      = 24 // then Data
	commitSize          = 8
	shardStateSize      = 16
	shardStateReplySize = 36
	shardSettleSize     = 24
	shardReadSize       = 36
	shardDataFixed      = 24 // then Data

	// maxFixed bounds what plan appends: a StreamOpen with three maximal
	// strings (longer than a Hello with two).
	maxFixed = 1 + 3*(2+MaxString)
	// maxSums is the largest VerifyReply.Sums that fits in MaxBody.
	maxSums = (MaxBody - verifyReplyFixed) / 4
)

func encodeErr(t Type, sentinel error, format string, args ...any) error {
	return fmt.Errorf("wire: encode %v: %s: %w", t, fmt.Sprintf(format, args...), sentinel)
}

func nilMessage(t Type) (plan, error) {
	return plan{}, encodeErr(t, ErrMalformed, "nil message")
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrMalformed)
}

// checkFlags rejects any flag outside allowed: unknown bits are refused so
// that every decodable frame re-encodes to the same bytes.
func checkFlags(flags, allowed uint16) error {
	if flags&^allowed != 0 {
		return malformed("flags %#04x, allowed %#04x", flags, allowed)
	}
	return nil
}

// checkSize requires a fixed-size body of exactly n bytes.
func checkSize(b []byte, n int) error {
	if len(b) != n {
		return malformed("want %d bytes", n)
	}
	return nil
}

// checkFixed checks a fixed-size body: only the allowed flags, exactly n
// bytes.
func checkFixed(flags, allowed uint16, b []byte, n int) error {
	if err := checkFlags(flags, allowed); err != nil {
		return err
	}
	return checkSize(b, n)
}

// checkVariable checks a variable body: only the allowed flags, at least
// its n fixed bytes.
func checkVariable(flags, allowed uint16, b []byte, n int) error {
	if err := checkFlags(flags, allowed); err != nil {
		return err
	}
	return checkMinSize(b, n)
}

// appendU64s appends each of vs, little-endian.
func appendU64s(dst []byte, vs ...uint64) []byte {
	for _, v := range vs {
		dst = le.AppendUint64(dst, v)
	}
	return dst
}

// checkMinSize requires at least the n fixed bytes of a variable body.
func checkMinSize(b []byte, n int) error {
	if len(b) < n {
		return malformed("want at least %d bytes", n)
	}
	return nil
}

// getBool decodes a boolean byte: only 0 and 1 are valid.
func getBool(field string, v byte) (bool, error) {
	switch v {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, malformed("%s is %d, want 0 or 1", field, v)
}

func putBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func fuaFlag(fua bool) uint16 {
	if fua {
		return FlagFUA
	}
	return 0
}

// checkString validates a string field for encoding.
func checkString(t Type, field, s string) error {
	if len(s) > MaxString {
		return encodeErr(t, ErrMalformed, "%s is %d bytes, max %d", field, len(s), MaxString)
	}
	return nil
}

// appendString encodes a string as u16 length + bytes.
func appendString(dst []byte, s string) []byte {
	dst = le.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// getString decodes a u16 length + bytes string at the start of b and
// returns it with the rest of b.
func getString(field string, b []byte) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, malformed("%s: no length", field)
	}
	n := int(le.Uint16(b))
	if n > MaxString {
		return "", nil, malformed("%s is %d bytes, max %d", field, n, MaxString)
	}
	if len(b)-2 < n {
		return "", nil, malformed("%s is %d bytes, only %d left", field, n, len(b)-2)
	}
	return string(b[2 : 2+n]), b[2+n:], nil
}

// payload returns b, or nil when b is empty: decoded messages carry nil for
// empty Data so that they compare equal however the sender spelled it.
func payload(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

package wire

// Messages of the member-link authentication (docs/wire.md, "Session
// handshake"): the shared-secret challenge and response exchanged on the raw
// connection before yamux starts. Part of the format: do not change.

// Authentication methods in AuthChallenge. Part of the format; any other
// value is ErrMalformed, so a node refuses a method it does not know instead
// of guessing. A new method (or a new version of the MAC input) takes a new
// value.
const (
	// AuthHMACSHA256: each side proves knowledge of the cluster's shared
	// secret with HMAC-SHA256 over both nonces, the cluster and both member
	// names (docs/wire.md gives the exact input).
	AuthHMACSHA256 uint8 = 1
)

// Sizes of the authentication fields. Part of the format.
const (
	NonceSize = 32 // random bytes of an AuthChallenge
	MACSize   = 32 // an HMAC-SHA256
)

// AuthChallenge opens the shared-secret exchange in each direction: the
// method the sender uses and a fresh random nonce the other side must
// include in its proof.
//
//	0        1
//	| method | nonce
//	| u8     | [32]byte
type AuthChallenge struct {
	Method uint8
	Nonce  [NonceSize]byte
}

// Type implements Message.
func (*AuthChallenge) Type() Type { return TypeAuthChallenge }

func (m *AuthChallenge) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeAuthChallenge)
	}
	if m.Method != AuthHMACSHA256 {
		return plan{}, encodeErr(TypeAuthChallenge, ErrMalformed, "method %d", m.Method)
	}
	dst = append(dst, m.Method)
	dst = append(dst, m.Nonce[:]...)
	return plan{typ: TypeAuthChallenge, buf: dst}, nil
}

func (m *AuthChallenge) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, authChallengeSize); err != nil {
		return err
	}
	if b[0] != AuthHMACSHA256 {
		return malformed("method %d, want %d", b[0], AuthHMACSHA256)
	}
	m.Method = b[0]
	copy(m.Nonce[:], b[1:])
	return nil
}

// AuthProof answers the other side's AuthChallenge: the MAC that proves the
// sender knows the shared secret.
//
//	0
//	| mac
//	| [32]byte
type AuthProof struct {
	MAC [MACSize]byte
}

// Type implements Message.
func (*AuthProof) Type() Type { return TypeAuthProof }

func (m *AuthProof) plan(dst []byte) (plan, error) {
	if m == nil {
		return nilMessage(TypeAuthProof)
	}
	return plan{typ: TypeAuthProof, buf: append(dst, m.MAC[:]...)}, nil
}

func (m *AuthProof) decode(flags uint16, b []byte) error {
	if err := checkFixed(flags, 0, b, authProofSize); err != nil {
		return err
	}
	copy(m.MAC[:], b)
	return nil
}

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

func (m *AuthChallenge) code(c *codec) {
	c.u8(&m.Method)
	if m.Method != AuthHMACSHA256 {
		c.fail(ErrMalformed, "method %d, want %d", m.Method, AuthHMACSHA256)
	}
	c.array(m.Nonce[:])
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

func (m *AuthProof) code(c *codec) { c.array(m.MAC[:]) }

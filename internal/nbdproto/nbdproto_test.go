package nbdproto

import (
	"testing"

	"github.com/pojntfx/go-nbd/pkg/protocol"
	"github.com/stretchr/testify/require"
)

// Where go-nbd defines the same value, both agree.
func TestAgreesWithGoNBD(t *testing.T) {
	require.EqualValues(t, protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE, FlagFixedNewstyle)
	require.EqualValues(t, protocol.TRANSMISSION_ERROR_EPERM, EPERM)
	require.EqualValues(t, protocol.TRANSMISSION_ERROR_EINVAL, EINVAL)
}

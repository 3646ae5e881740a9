package blockdev

import (
	"testing"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/stretchr/testify/require"
)

// Every NBD error value lands in its own ErrorCounts field (errKinds and
// ErrorCounts.kinds agree on the order), and the rest in Other.
func TestErrorCountsByKind(t *testing.T) {
	var s counters
	for _, errno := range []uint32{
		nbdproto.EPERM, nbdproto.EIO, nbdproto.EIO, nbdproto.ENOMEM, nbdproto.EINVAL,
		nbdproto.ENOSPC, nbdproto.EOVERFLOW, nbdproto.ESHUTDOWN, 95, // NBD_ENOTSUP
	} {
		s.count(&request{errno: errno})
	}
	st := s.snapshot()
	require.Equal(t, ErrorCounts{Perm: 1, IO: 2, NoMem: 1, Invalid: 1, NoSpace: 1, Overflow: 1, Shutdown: 1, Other: 1}, st.ErrorsByKind)
	require.Equal(t, uint64(9), st.Errors)
}

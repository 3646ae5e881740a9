package freeport

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// Ports are bindable, below the ephemeral range and never handed out twice.
func TestPortsAreDistinctBindableAndBelowEphemeral(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p := LoopbackPort(t)
		require.False(t, seen[p], "port %d handed out twice", p)
		seen[p] = true
		require.GreaterOrEqual(t, p, low)
		require.Less(t, p, high)
	}
	a := Loopback(t)
	l, err := net.Listen("tcp", a)
	require.NoError(t, err)
	l.Close()
	_, port, _ := net.SplitHostPort(a)
	n, _ := strconv.Atoi(port)
	require.False(t, seen[n])
}

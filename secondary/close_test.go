package secondary

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// A stream a peer opens while the node closes (node.Close runs while the
// mesh still accepts) must not start a session after Close: under -race,
// counting it in after Close began waiting was a data race (CI, 98e3f2f),
// and the session would run on a closing store.
func TestStreamDuringClose(t *testing.T) {
	for range 10 {
		s, _ := newSide(t, 0, false)
		var wg sync.WaitGroup
		here, there := net.Pipe()
		wg.Go(func() { s.Handle("p", here) })
		wg.Go(s.Close)
		wg.Wait()
		_, err := io.ReadAll(there) // the stream is closed, with or without a refusal
		require.NoError(t, err)
	}
	s, _ := newSide(t, 0, false)
	s.Close()
	here, there := net.Pipe()
	go s.Handle("p", here)
	b, err := io.ReadAll(there)
	require.NoError(t, err)
	require.Empty(t, b, "a closed side answers nothing: it only closes the stream")
}

package bench

import (
	"context"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/freeport"

	"github.com/stretchr/testify/require"
)

// nbdkitMemory runs nbdkit's memory plugin for the test.
func nbdkitMemory(t *testing.T, extra ...string) string {
	t.Helper()
	if _, err := exec.LookPath("nbdkit"); err != nil {
		t.Skip("needs nbdkit")
	}
	addr, err := freeport.Addr()
	require.NoError(t, err)
	_, port, err := splitHostPort(addr)
	require.NoError(t, err)
	argv := append([]string{"nbdkit", "-f", "-i", "127.0.0.1", "-p", port}, extra...)
	c, _, err := startChild(context.Background(), t.TempDir(), "nbdkit", append(argv, "memory", "16M"), readiness{Addr: addr})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.stop() })
	return "nbd://" + addr
}

func TestNBDClientWrite(t *testing.T) {
	c, err := dialNBD(nbdkitMemory(t), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, uint64(16<<20), c.size)
	for i := range 3 {
		require.NoError(t, c.write(uint64(i)*4096, make([]byte, 4096), 5*time.Second))
	}
	require.ErrorIs(t, c.write(32<<20, make([]byte, 4096), 5*time.Second), ErrNBD, "beyond the end")
}

func TestNBDClientReadOnly(t *testing.T) {
	c, err := dialNBD(nbdkitMemory(t, "-r"), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.ErrorIs(t, c.write(0, make([]byte, 4096), 5*time.Second), ErrNBD)
}

func TestNBDClientErrors(t *testing.T) {
	_, err := dialNBD("http://x", time.Second)
	require.ErrorIs(t, err, ErrNBD)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = c.Write([]byte("HTTP/1.0 400 nope\r\n\r\n"))
			c.Close()
		}
	}()
	_, err = dialNBD("nbd://"+l.Addr().String(), time.Second)
	require.ErrorIs(t, err, ErrNBD)
}

package blockdev

import (
	"bytes"
	"sync"
	"syscall"
	"testing"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/stretchr/testify/require"
)

// ownedDev is a memDev that takes write payloads over (OwnedWriter) and
// keeps them, as a replicating device keeps them until its peers have them.
type ownedDev struct {
	*memDev
	mu   sync.Mutex
	kept []*[]byte
	fail bool
}

func (d *ownedDev) WriteOwned(p *[]byte, off int64, fua bool) error {
	d.mu.Lock()
	d.kept = append(d.kept, p)
	fail := d.fail
	d.mu.Unlock()
	if fail {
		return syscall.EIO
	}
	return d.WriteAt(*p, off, fua)
}

// A device that takes payloads over gets each write's own buffer, and the
// server reuses none of them afterwards (the pool would hand the same
// buffer to the next write of the same size); a failed WriteOwned is the
// client's error as WriteAt's is.
func TestOwnedPayloadsAreNotReused(t *testing.T) {
	dev := &ownedDev{memDev: newMemDev(1 << 20)}
	_, addr := startServer(t, dev, Options{})
	c, _ := dialGo(t, addr, true)
	const n = 8
	for i := range n {
		errno, _ := c.do(cmdWrite, 0, uint64(i)*65536, 65536, bytes.Repeat([]byte{byte(i + 1)}, 65536))
		require.Zero(t, errno)
	}
	require.Len(t, dev.kept, n, "every write went through WriteOwned")
	for i, p := range dev.kept {
		require.Equal(t, bytes.Repeat([]byte{byte(i + 1)}, 65536), *p, "write %d's buffer changed after its reply", i)
	}
	dev.mu.Lock()
	dev.fail = true
	dev.mu.Unlock()
	errno, _ := c.do(cmdWrite, 0, 0, 4096, make([]byte, 4096))
	require.Equal(t, uint32(nbdproto.EIO), errno)
}

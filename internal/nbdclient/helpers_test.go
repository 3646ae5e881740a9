package nbdclient

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/stretchr/testify/require"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

// memDev is an in-memory blockdev.Device. hold, when set, is called before
// every operation with its kind and offset and may block or fail it.
type memDev struct {
	mu       sync.Mutex
	data     []byte
	fuaSeen  []bool
	flushes  int
	readOnly bool
	hold     func(op string, off int64) error
}

func newMemDev(size int) *memDev { return &memDev{data: make([]byte, size)} }

func (d *memDev) before(op string, off int64) error {
	if d.hold != nil {
		return d.hold(op, off)
	}
	return nil
}

func (d *memDev) Size() int64 { return int64(len(d.data)) }

func (d *memDev) ReadAt(p []byte, off int64) error {
	if err := d.before("read", off); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(p, d.data[off:])
	return nil
}

func (d *memDev) WriteAt(p []byte, off int64, fua bool) error {
	if err := d.before("write", off); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.data[off:], p)
	d.fuaSeen = append(d.fuaSeen, fua)
	return nil
}

func (d *memDev) WriteZeroes(off, n int64, fua bool) error {
	if err := d.before("zero", off); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.data[off : off+n])
	d.fuaSeen = append(d.fuaSeen, fua)
	return nil
}

func (d *memDev) Flush() error {
	if err := d.before("flush", 0); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flushes++
	return nil
}

func (d *memDev) bytes(off, n int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.data[off:off+n]...)
}

func (d *memDev) stats() (flushes int, fua []bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.flushes, append([]bool(nil), d.fuaSeen...)
}

// roDev reports itself read-only to the server.
type roDev struct{ *memDev }

func (roDev) ReadOnly() bool { return true }

// serve runs grbd's NBD server for dev on a loopback listener until the test
// ends and returns its address.
func serve(t *testing.T, dev blockdev.Device, opts blockdev.Options) (*blockdev.Server, string) {
	t.Helper()
	s, err := blockdev.NewServer(dev, opts)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { _ = s.Close() })
	return s, l.Addr().String()
}

// dial connects a client that the test closes at its end.
func dial(t *testing.T, addr string, opts Options) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := Dial(ctx, addr, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// gate blocks device operations at chosen offsets until released.
type gate struct {
	mu      sync.Mutex
	held    map[int64]chan struct{}
	entered chan int64
}

func newGate(t *testing.T) *gate {
	g := &gate{held: map[int64]chan struct{}{}, entered: make(chan int64, 64)}
	t.Cleanup(g.releaseAll)
	return g
}

// hold makes operations at off block until release(off).
func (g *gate) hold(off int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held[off] = make(chan struct{})
}

func (g *gate) wait(_ string, off int64) error {
	g.mu.Lock()
	ch, ok := g.held[off]
	g.mu.Unlock()
	if ok {
		g.entered <- off
		<-ch
	}
	return nil
}

func (g *gate) release(off int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ch, ok := g.held[off]; ok {
		close(ch)
		delete(g.held, off)
	}
}

func (g *gate) releaseAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for off, ch := range g.held {
		close(ch)
		delete(g.held, off)
	}
}

func (g *gate) awaitEntered(t *testing.T, off int64) {
	t.Helper()
	select {
	case got := <-g.entered:
		require.Equal(t, off, got)
	case <-time.After(testTimeout):
		t.Fatalf("device call at %d never arrived", off)
	}
}

// heldWrite starts a write at off that the gate holds inside the device, and
// returns its result channel once the device has it.
func heldWrite(t *testing.T, c *Client, g *gate, off int64, data []byte) <-chan error {
	t.Helper()
	g.hold(off)
	done := make(chan error, 1)
	go func() { done <- c.WriteAt(ctxT(t), data, off, 0) }()
	g.awaitEntered(t, off)
	return done
}

// gatedClient serves a 1 MiB device whose operations a gate can hold, and
// connects a client to it.
func gatedClient(t *testing.T) (*memDev, *gate, *Client) {
	t.Helper()
	d := newMemDev(1 << 20)
	g := newGate(t)
	d.hold = g.wait
	_, addr := serve(t, d, blockdev.Options{})
	return d, g, dial(t, addr, Options{})
}

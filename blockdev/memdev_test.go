package blockdev

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// memDev is an in-memory Device for tests. Optional hooks run before each
// operation (they may block, to hold requests in flight, or fail it); when
// record is set every call is appended to events.
type memDev struct {
	mu       sync.RWMutex
	data     []byte
	readOnly bool

	beforeRead  func(off int64, n int) error
	beforeWrite func(off int64, n int, fua bool) error
	beforeZero  func(off, n int64, fua bool) error
	beforeFlush func() error

	record  bool
	evMu    sync.Mutex
	events  []string
	flushes atomic.Int64
}

func newMemDev(size int64) *memDev { return &memDev{data: make([]byte, size)} }

// newRandDev returns a device filled with deterministic pseudo-random bytes,
// so that stray writes and zeroing are visible.
func newRandDev(size int64) *memDev {
	d := newMemDev(size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range d.data {
		d.data[i] = byte(r.Uint32())
	}
	return d
}

func (d *memDev) Size() int64 { return int64(len(d.data)) }

func (d *memDev) ReadAt(p []byte, off int64) error {
	if d.beforeRead != nil {
		if err := d.beforeRead(off, len(p)); err != nil {
			return err
		}
	}
	d.mu.RLock()
	copy(p, d.data[off:])
	d.mu.RUnlock()
	return nil
}

func (d *memDev) WriteAt(p []byte, off int64, fua bool) error {
	if d.beforeWrite != nil {
		if err := d.beforeWrite(off, len(p), fua); err != nil {
			return err
		}
	}
	d.mu.Lock()
	copy(d.data[off:], p)
	d.mu.Unlock()
	if d.record { // the check keeps the variadic boxing off the benchmark path
		d.event("write off=%d len=%d fua=%t", off, len(p), fua)
	}
	return nil
}

func (d *memDev) WriteZeroes(off, n int64, fua bool) error {
	if d.beforeZero != nil {
		if err := d.beforeZero(off, n, fua); err != nil {
			return err
		}
	}
	d.mu.Lock()
	clear(d.data[off : off+n])
	d.mu.Unlock()
	if d.record {
		d.event("zero off=%d len=%d fua=%t", off, n, fua)
	}
	return nil
}

func (d *memDev) Flush() error {
	if d.beforeFlush != nil {
		if err := d.beforeFlush(); err != nil {
			return err
		}
	}
	d.flushes.Add(1)
	d.event("flush")
	return nil
}

func (d *memDev) event(format string, args ...any) {
	if !d.record {
		return
	}
	d.evMu.Lock()
	d.events = append(d.events, fmt.Sprintf(format, args...))
	d.evMu.Unlock()
}

func (d *memDev) eventLog() []string {
	d.evMu.Lock()
	defer d.evMu.Unlock()
	return append([]string(nil), d.events...)
}

func (d *memDev) sum() [32]byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return sha256.Sum256(d.data)
}

func (d *memDev) bytesAt(off, n int64) []byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return bytes.Clone(d.data[off : off+n])
}

// roDev is a memDev that reports itself read-only.
type roDev struct{ *memDev }

func (roDev) ReadOnly() bool { return true }

// gate holds device calls until released; entered reports each held call.
// At the end of the test every held call is released, so that a failing
// test does not hang in Server.Close.
type gate struct {
	entered chan int64
	stop    chan struct{}
	mu      sync.Mutex
	release map[int64]chan struct{}
}

func newGate(t *testing.T) *gate {
	g := &gate{entered: make(chan int64, 64), stop: make(chan struct{}), release: make(map[int64]chan struct{})}
	t.Cleanup(func() { close(g.stop) })
	return g
}

func (g *gate) ch(off int64) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.release[off]
	if !ok {
		c = make(chan struct{})
		g.release[off] = c
	}
	return c
}

// wait blocks the calling device operation at off until open(off).
func (g *gate) wait(off int64) {
	c := g.ch(off)
	g.entered <- off
	select {
	case <-c:
	case <-g.stop:
	}
}

func (g *gate) open(off int64) { close(g.ch(off)) }

// awaitEntered waits until the held calls at offs have all entered the device.
func (g *gate) awaitEntered(t *testing.T, offs ...int64) {
	t.Helper()
	want := map[int64]bool{}
	for _, o := range offs {
		want[o] = true
	}
	for len(want) > 0 {
		select {
		case o := <-g.entered:
			delete(want, o)
		case <-timeout():
			t.Fatalf("device calls at %v did not arrive", want)
		}
	}
}

func TestMemDevSanity(t *testing.T) {
	d := newRandDev(4096)
	before := d.sum()
	require.NoError(t, d.WriteAt([]byte{1, 2, 3}, 10, false))
	require.NotEqual(t, before, d.sum())
	require.Equal(t, []byte{1, 2, 3}, d.bytesAt(10, 3))
	require.NoError(t, d.WriteZeroes(0, 4096, false))
	require.Equal(t, make([]byte, 4096), d.bytesAt(0, 4096))
}

package chaos

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/stretchr/testify/require"
)

// crashDev is an in-memory device with a volatile and a durable copy, like a
// disk with a write cache: Flush (and FUA) persist, crash reverts to the
// durable copy. Its bug switches plant faults the checks must catch.
type crashDev struct {
	mu       sync.Mutex
	live     []byte
	durable  []byte
	writes   int
	dropEach int  // bug: silently drop every dropEach-th write (0: never)
	fakeSync bool // bug: Flush and FUA persist nothing
	rot      bool // bug: the next read of block 0 returns a flipped bit
	dropTail bool // bug: a write of several blocks loses its last block
}

func newCrashDev(size int) *crashDev {
	return &crashDev{live: make([]byte, size), durable: make([]byte, size)}
}

func (d *crashDev) Size() int64 { return int64(len(d.live)) }

func (d *crashDev) ReadAt(p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(p, d.live[off:])
	if d.rot && off == 0 {
		p[100] ^= 4
		d.rot = false
	}
	return nil
}

func (d *crashDev) WriteAt(p []byte, off int64, fua bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes++
	if d.dropEach > 0 && d.writes%d.dropEach == 0 {
		return nil
	}
	if d.dropTail && len(p) > BlockSize {
		p = p[:len(p)-BlockSize]
	}
	copy(d.live[off:], p)
	if fua {
		d.persistLocked()
	}
	return nil
}

func (d *crashDev) WriteZeroes(off, n int64, fua bool) error {
	return d.WriteAt(make([]byte, n), off, fua)
}

func (d *crashDev) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.persistLocked()
	return nil
}

func (d *crashDev) persistLocked() {
	if !d.fakeSync {
		copy(d.durable, d.live)
	}
}

// crash loses every write not made durable.
func (d *crashDev) crash() {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.live, d.durable)
}

// fixedTarget is a Target that always names one server.
type fixedTarget struct{ uri string }

func (f fixedTarget) Primary(context.Context) (string, string, error) { return "mem", f.uri, nil }

// serveDev serves dev until the test ends; restart closes every connection
// and serves again, calling during (if not nil) while nothing is served.
func serveDev(t *testing.T, dev blockdev.Device) (uri string, restart func(during func())) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	var mu sync.Mutex
	start := func(l net.Listener) *blockdev.Server {
		s, err := blockdev.NewServer(dev, blockdev.Options{})
		require.NoError(t, err)
		go func() { _ = s.Serve(l) }()
		return s
	}
	s := start(l)
	t.Cleanup(func() { mu.Lock(); defer mu.Unlock(); _ = s.Close() })
	return "nbd://" + addr, func(during func()) {
		mu.Lock()
		defer mu.Unlock()
		_ = s.Close()
		if during != nil {
			during()
		}
		l, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		s = start(l)
	}
}

// runWorkload runs a short workload against dev; between is called in the
// middle (to inject a fault) and the history is analyzed at the end.
func runWorkload(t *testing.T, dev blockdev.Device, uri string, between func(w *Workload)) *Report {
	t.Helper()
	return runWorkloadWith(t, WorkloadConfig{Blocks: 16}, uri, between)
}

// runWorkloadWith is runWorkload with cfg's layout and mix.
func runWorkloadWith(t *testing.T, cfg WorkloadConfig, uri string, between func(w *Workload)) *Report {
	t.Helper()
	cfg.Target, cfg.Seed, cfg.Think, cfg.OpTimeout = fixedTarget{uri}, 1, 200*time.Microsecond, 2*time.Second
	w, err := NewWorkload(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w.Start(ctx)
	require.NoError(t, w.WaitWrites(ctx, 300))
	if between != nil {
		between(w)
		require.NoError(t, w.WaitWrites(ctx, 300))
	}
	w.Stop()
	require.NoError(t, w.Verify(ctx))
	w.Stop()
	r := &Report{Scenario: t.Name(), Seed: 1, Outages: w.Outages()}
	r.Analyze(w.Ops(), true, 20*time.Second)
	t.Log(r.Summary())
	return r
}

func TestWorkloadHealthy(t *testing.T) {
	dev := newCrashDev(1 << 20)
	uri, restart := serveDev(t, dev)
	r := runWorkload(t, dev, uri, func(*Workload) { restart(nil) })
	require.True(t, r.OK(), r.Summary())
	require.Greater(t, r.Ops.WritesOK, 500)
	require.NotZero(t, r.Ops.FlushesOK)
	require.NotEmpty(t, r.Outages, "the restart dropped every connection")
	require.False(t, r.Outages[0].Failover, "same server before and after")
}

// TestWorkloadCrashLosesOnlyUnsynced: a crash that loses unflushed writes,
// announced as a new era, is not an anomaly.
func TestWorkloadCrashLosesOnlyUnsynced(t *testing.T) {
	dev := newCrashDev(1 << 20)
	uri, restart := serveDev(t, dev)
	r := runWorkload(t, dev, uri, func(w *Workload) {
		restart(func() {
			dev.crash()
			w.NewEra()
		})
	})
	require.True(t, r.OK(), r.Summary())
	require.Len(t, r.Eras, 2)
}

func TestWorkloadCatchesPlantedBugs(t *testing.T) {
	cases := []struct {
		name  string
		plant func(d *crashDev)
		crash bool
		want  string
	}{
		{name: "dropped acknowledged writes", plant: func(d *crashDev) { d.dropEach = 5 }, want: AnomalyLinearizability},
		{name: "flush that persists nothing", plant: func(d *crashDev) { d.fakeSync = true }, crash: true, want: AnomalyLostWrite},
		{name: "bit rot on read", plant: func(d *crashDev) { d.rot = true }, want: AnomalyCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dev := newCrashDev(1 << 20)
			uri, restart := serveDev(t, dev)
			r := runWorkload(t, dev, uri, func(w *Workload) {
				dev.mu.Lock()
				tc.plant(dev)
				dev.mu.Unlock()
				if tc.crash {
					require.NoError(t, w.WaitWrites(context.Background(), 300))
					// Read every block right after the crash, before a new
					// write can replace a lost one (else the check depends
					// on which block the workload happens to read first).
					w.Pause()
					restart(func() {
						dev.crash()
						w.NewEra()
					})
					require.NoError(t, w.Verify(context.Background()))
					w.Resume()
				}
			})
			require.False(t, r.OK(), r.Summary())
			require.True(t, r.Found(tc.want), r.Summary())
		})
	}
}

// Large requests (a whole slot of 16 blocks, each its own register): a
// healthy device passes, and one that loses the tail of a large write is
// caught, so the chaos scenarios check what the large-write path stores.
func TestWorkloadLargeOps(t *testing.T) {
	cfg := WorkloadConfig{Blocks: 8, Span: 16, LargePct: 40}
	t.Run("healthy", func(t *testing.T) {
		dev := newCrashDev(1 << 20)
		uri, restart := serveDev(t, dev)
		r := runWorkloadWith(t, cfg, uri, func(*Workload) { restart(nil) })
		require.True(t, r.OK(), r.Summary())
	})
	t.Run("lost tail", func(t *testing.T) {
		dev := newCrashDev(1 << 20)
		uri, _ := serveDev(t, dev)
		r := runWorkloadWith(t, cfg, uri, func(*Workload) {
			dev.mu.Lock()
			dev.dropTail = true
			dev.mu.Unlock()
		})
		require.False(t, r.OK(), r.Summary())
		require.True(t, r.Found(AnomalyLinearizability), r.Summary())
	})
	t.Run("bad layout", func(t *testing.T) {
		_, err := NewWorkload(WorkloadConfig{Target: fixedTarget{}, Span: 16, Stride: 8 * BlockSize})
		require.ErrorContains(t, err, "shorter than a slot")
		_, err = NewWorkload(WorkloadConfig{Target: fixedTarget{}, LargePct: 101})
		require.ErrorContains(t, err, "not in 0..100")
	})
}

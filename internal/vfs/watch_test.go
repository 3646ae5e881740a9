package vfs

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A Sync that does not return is reported by Stalled, with its file and a
// growing age, and is gone once it returns.
func TestWatchReportsTheOldestOperationInFlight(t *testing.T) {
	release := make(chan struct{})
	blocking := WithErrors(NewMem(), func(op Op, name string) error {
		if op == OpSync && filepath.Base(name) == "hung" {
			<-release
		}
		return nil
	})
	w := Watch(blocking)
	_, ok := w.Stalled()
	require.False(t, ok, "nothing in flight")

	hung, err := w.OpenFile("/hung", os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	other, err := w.OpenFile("/other", os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- hung.Sync() }()
	require.Eventually(t, func() bool { _, ok := w.Stalled(); return ok }, 5*time.Second, time.Millisecond)

	// Later operations come and go; the hung one stays the oldest.
	time.Sleep(20 * time.Millisecond)
	_, err = other.WriteAt([]byte("x"), 0)
	require.NoError(t, err)
	require.NoError(t, other.Sync())
	st, ok := w.Stalled()
	require.True(t, ok)
	require.Equal(t, OpSync, st.Op)
	require.Equal(t, "/hung", st.Name)
	require.GreaterOrEqual(t, st.For, 20*time.Millisecond)

	close(release)
	require.NoError(t, <-done)
	_, ok = w.Stalled()
	require.False(t, ok, "the sync returned")
}

// More operations in flight than there are slots: the extra ones run
// untracked, and every slot is free again afterwards.
func TestWatchMoreOperationsThanSlots(t *testing.T) {
	release := make(chan struct{})
	w := Watch(WithErrors(NewMem(), func(op Op, _ string) error {
		if op == OpWrite {
			<-release
		}
		return nil
	}))
	f, err := w.OpenFile("/f", os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range watchSlots + 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = f.WriteAt([]byte{1}, int64(i))
		}()
	}
	require.Eventually(t, func() bool { _, ok := w.Stalled(); return ok }, 5*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	_, ok := w.Stalled()
	require.False(t, ok)
}

// A watched file has exactly the optional capabilities of the file under
// it: the journal branches on them (a DataFinder is synced before it is
// asked, which would change what a simulated power loss keeps).
func TestWatchKeepsCapabilities(t *testing.T) {
	caps := func(f File) [3]bool {
		_, p := f.(Puncher)
		_, a := f.(Allocator)
		_, d := f.(DataFinder)
		return [3]bool{p, a, d}
	}
	dir := t.TempDir()
	for _, fs := range []FS{Default, NewMem(), WithErrors(NewMem(), func(Op, string) error { return nil })} {
		require.NoError(t, fs.MkdirAll(dir, 0o700))
		plain, err := fs.OpenFile(filepath.Join(dir, "f"), os.O_RDWR|os.O_CREATE, 0o600)
		require.NoError(t, err)
		watched, err := Watch(fs).OpenFile(filepath.Join(dir, "g"), os.O_RDWR|os.O_CREATE, 0o600)
		require.NoError(t, err)
		require.Equal(t, caps(plain), caps(watched), "%T", plain)
		if a, ok := watched.(Allocator); ok {
			require.NoError(t, a.Allocate(0, 8192))
			size, err := watched.Size()
			require.NoError(t, err)
			require.EqualValues(t, 8192, size)
		}
		if d, ok := watched.(DataFinder); ok {
			_, err := watched.WriteAt(make([]byte, 4096), 1<<20)
			require.NoError(t, err)
			start, _, err := d.NextData(64 << 10)
			if err == nil {
				require.EqualValues(t, 1<<20, start)
			}
		}
		require.NoError(t, plain.Close())
		require.NoError(t, watched.Close())
	}
	require.Equal(t, [3]bool{true, true, true}, caps(func() File {
		f, err := Watch(Default).OpenFile(filepath.Join(dir, "h"), os.O_RDWR|os.O_CREATE, 0o600)
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		return f
	}()), "os files have all three")
}

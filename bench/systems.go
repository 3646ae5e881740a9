package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/grbd/grbd/internal/freeport"
)

// System is one NBD server (or cluster) under test.
type System interface {
	Name() string
	// Start launches the system with its data under dir and a device of
	// size bytes, and returns the NBD URI of its writable export once every
	// member is ready. An error wrapping ErrSkip means the system cannot
	// run here; the run goes on without it.
	Start(ctx context.Context, dir string, size int64) (uri string, err error)
	// Stop ends every process Start began; safe to call more than once.
	Stop() error
}

// Process is one server process of a system.
type Process struct {
	Name string
	PID  int
}

// ProcessLister is the optional System capability behind the peak RSS and
// CPU columns: the system's running server processes.
type ProcessLister interface {
	Processes() []Process
}

// nbdkitFile is nbdkit's file plugin over a preallocated image: one copy in
// the page cache, the baseline every ratio is against.
type nbdkitFile struct {
	name string
	c    *serverProc
}

// NBDKitFile returns the nbdkit `file` system, named "nbdkit-file".
func NBDKitFile() System { return &nbdkitFile{name: "nbdkit-file"} }

func (n *nbdkitFile) Name() string { return n.name }

func (n *nbdkitFile) Start(ctx context.Context, dir string, size int64) (string, error) {
	addr, err := freeport.Addr()
	if err != nil {
		return "", err
	}
	img := filepath.Join(dir, "disk.img")
	if err := makeImage(img, size); err != nil {
		return "", err
	}
	_, port, _ := splitHostPort(addr)
	argv := []string{"nbdkit", "-f", "-i", "127.0.0.1", "-p", port, "file", img}
	c, _, err := startChild(ctx, dir, n.name, argv, readiness{Addr: addr})
	if err != nil {
		return "", err
	}
	n.c = c
	return "nbd://" + addr, nil
}

func (n *nbdkitFile) Stop() error {
	if n.c == nil {
		return nil
	}
	err := n.c.stop()
	n.c = nil
	return err
}

func (n *nbdkitFile) Processes() []Process {
	if n.c == nil {
		return nil
	}
	return []Process{{Name: n.name, PID: n.c.PID()}}
}

// makeImage creates a fully allocated image so no system pays for block
// allocation on first write while another does not.
func makeImage(path string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		if !errors.Is(err, syscall.EOPNOTSUPP) {
			return fmt.Errorf("bench: allocate %s: %w", path, err)
		}
		return f.Truncate(size)
	}
	return nil
}

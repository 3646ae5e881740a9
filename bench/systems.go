package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// System is one NBD server under test.
type System interface {
	Name() string
	// Start launches the server with its data under dir and a device of size
	// bytes, and returns the NBD URI once it accepts connections.
	Start(ctx context.Context, dir string, size int64) (uri string, err error)
	Stop() error
}

// process is a System run as a child process.
type process struct {
	name string
	// argv builds the command line for a data dir, size and free port.
	argv func(dir string, size int64, port int) ([]string, error)
	// readyLine, when set, is a stdout prefix the child prints when ready;
	// otherwise readiness is the port accepting TCP connections.
	readyLine string
	cmd       *exec.Cmd
	done      chan error
}

func (p *process) Name() string { return p.name }

func (p *process) Start(ctx context.Context, dir string, size int64) (string, error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	argv, err := p.argv(dir, size, port)
	if err != nil {
		return "", err
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		return "", fmt.Errorf("%w: %s (%s)", ErrMissingTool, argv[0], p.name)
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return "", err
	}
	p.cmd.Stderr = logf
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := p.cmd.Start(); err != nil {
		return "", fmt.Errorf("bench: start %s: %w", p.name, err)
	}
	p.done = make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if p.readyLine != "" && strings.HasPrefix(sc.Text(), p.readyLine) {
				ready <- strings.TrimSpace(strings.TrimPrefix(sc.Text(), p.readyLine))
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { p.done <- p.cmd.Wait(); logf.Close() }()

	uri := fmt.Sprintf("nbd://127.0.0.1:%d", port)
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		if p.readyLine == "" && dialOK(port) {
			return uri, nil
		}
		select {
		case u := <-ready:
			return u, nil
		case err := <-p.done:
			return "", fmt.Errorf("bench: %s exited before ready (%v); see %s/server.log", p.name, err, dir)
		case <-deadline.C:
			_ = p.Stop()
			return "", fmt.Errorf("bench: %s not ready after 30s; see %s/server.log", p.name, dir)
		case <-ctx.Done():
			_ = p.Stop()
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM, then SIGKILL after 10 s.
func (p *process) Stop() error {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
	return nil
}

func dialOK(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// FreePort asks the kernel for an unused loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// NBDKitFile is nbdkit's file plugin over a preallocated image: one copy,
// page cache, the reference every ratio is against.
func NBDKitFile() System {
	return &process{name: "nbdkit-file", argv: func(dir string, size int64, port int) ([]string, error) {
		img := filepath.Join(dir, "disk.img")
		if err := makeImage(img, size); err != nil {
			return nil, err
		}
		return []string{"nbdkit", "-f", "-i", "127.0.0.1", "-p", strconv.Itoa(port), "file", img}, nil
	}}
}

// GrbdLocal is grbd's embedded local cluster (`grbd local`) run from binary.
func GrbdLocal(name, binary string, extra ...string) System {
	return &process{name: name, readyLine: "ready ", argv: func(dir string, size int64, port int) ([]string, error) {
		base, err := FreePort()
		if err != nil {
			return nil, err
		}
		// Admin ports are base+100.. : pick a base whose neighbours are free enough.
		if base > 65000 {
			base = 40000 + base%20000
		}
		args := []string{binary, "local", "--dir", dir, "--size", strconv.FormatInt(size, 10),
			"--nbd-port", strconv.Itoa(port), "--base-port", strconv.Itoa(base), "--log-level", "warn"}
		return append(args, extra...), nil
	}}
}

// makeImage creates a fully allocated image so the peer does not pay for
// allocation on first write while grbd does (or the other way round).
func makeImage(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		if !errors.Is(err, syscall.EOPNOTSUPP) {
			return err
		}
		return f.Truncate(size)
	}
	return nil
}

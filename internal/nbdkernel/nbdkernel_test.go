package nbdkernel

import (
	"encoding/binary"
	"github.com/grbd/grbd/internal/nbdproto"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestKernelFlags(t *testing.T) {
	tests := []struct {
		name   string
		server nbdproto.Flags
		want   uint64
	}{
		{"grbd primary", nbdproto.FlagHasFlags | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA | nbdproto.FlagSendTrim | nbdproto.FlagSendWriteZeroes,
			uint64(nbdproto.FlagHasFlags | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA | nbdproto.FlagSendTrim | nbdproto.FlagSendWriteZeroes)},
		{"HAS_FLAGS added", nbdproto.FlagSendFlush | nbdproto.FlagSendFUA, uint64(nbdproto.FlagHasFlags | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA)},
		{"read-only kept", nbdproto.FlagHasFlags | nbdproto.FlagReadOnly, uint64(nbdproto.FlagHasFlags | nbdproto.FlagReadOnly)},
		{"multi-conn and rotational kept", nbdproto.FlagHasFlags | nbdproto.FlagCanMultiConn | nbdproto.FlagRotational, uint64(nbdproto.FlagHasFlags | nbdproto.FlagCanMultiConn | nbdproto.FlagRotational)},
		{"unknown bits dropped", nbdproto.FlagHasFlags | 1<<7 | 1<<9 | 1<<15, uint64(nbdproto.FlagHasFlags)},
		{"nothing advertised", 0, uint64(nbdproto.FlagHasFlags)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, KernelFlags(tc.server)) })
	}
}

func TestChooseBlockSize(t *testing.T) {
	tests := []struct {
		name string
		x    Export
		want uint32
		err  bool
	}{
		{"preferred", Export{Size: 1 << 30, MinBlock: 512, PreferredBlock: 4096}, 4096, false},
		{"no info", Export{Size: 1 << 30}, 4096, false},
		{"small preferred", Export{Size: 1 << 20, MinBlock: 1, PreferredBlock: 512}, 512, false},
		{"clamped to a page", Export{Size: 1 << 30, MinBlock: 512, PreferredBlock: 65536}, 4096, false},
		{"minimum wins", Export{Size: 1 << 30, MinBlock: 2048, PreferredBlock: 1024}, 2048, false},
		{"minimum too large", Export{Size: 1 << 30, MinBlock: 8192, PreferredBlock: 8192}, 0, true},
		{"size not a multiple", Export{Size: 4096 + 512, PreferredBlock: 4096}, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ChooseBlockSize(tc.x)
			if tc.err {
				require.ErrorIs(t, err, ErrNegotiate)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestSetupStepsSetFlags(t *testing.T) {
	x := Export{Size: 8 << 20, Flags: nbdproto.FlagHasFlags | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA | nbdproto.FlagSendTrim}
	steps := setupSteps(x, 4096, 30*time.Second)
	var names []string
	for _, s := range steps {
		names = append(names, s.name)
	}
	require.Equal(t, []string{"NBD_SET_BLKSIZE", "NBD_SET_SIZE_BLOCKS", "NBD_SET_FLAGS", "NBD_SET_TIMEOUT"}, names)
	require.Equal(t, uint64(2048), steps[1].arg)
	require.Equal(t, uint(0xab0a), steps[2].req)
	require.Equal(t, KernelFlags(x.Flags), steps[2].arg)
	require.Equal(t, uint64(30), steps[3].arg)
	require.Len(t, setupSteps(x, 4096, 0), 3, "no timeout: the kernel's default")
}

// memDevice is a small in-memory blockdev.Device.
type memDevice struct {
	mu       sync.Mutex
	data     []byte
	readOnly bool
}

func (m *memDevice) Size() int64 { return int64(len(m.data)) }
func (m *memDevice) ReadAt(p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(p, m.data[off:])
	return nil
}
func (m *memDevice) WriteAt(p []byte, off int64, _ bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	return nil
}
func (m *memDevice) WriteZeroes(off, n int64, _ bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}
func (m *memDevice) Flush() error   { return nil }
func (m *memDevice) ReadOnly() bool { return m.readOnly }

// serve runs grbd's NBD server for dev on loopback.
func serve(t *testing.T, dev *memDevice, export string) string {
	t.Helper()
	srv, err := blockdev.NewServer(dev, blockdev.Options{ExportName: export})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// TestNegotiateWithGrbd runs the handshake against grbd's own NBD server
// and then a READ on the same connection: the handshake leaves the stream
// exactly at the transmission phase, where the kernel takes over.
func TestNegotiateWithGrbd(t *testing.T) {
	dev := &memDevice{data: make([]byte, 1<<20)}
	copy(dev.data[4096:], "grbd")
	addr := serve(t, dev, "")
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	x, err := Negotiate(c, "")
	require.NoError(t, err)
	require.Equal(t, uint64(1<<20), x.Size)
	for _, f := range []nbdproto.Flags{nbdproto.FlagHasFlags, nbdproto.FlagSendFlush, nbdproto.FlagSendFUA, nbdproto.FlagSendTrim, nbdproto.FlagSendWriteZeroes} {
		require.NotZero(t, x.Flags&f, "flag %#x advertised", f)
		require.NotZero(t, KernelFlags(x.Flags)&uint64(f), "flag %#x set for the kernel", f)
	}
	require.Zero(t, x.Flags&nbdproto.FlagReadOnly)
	require.Equal(t, uint32(512), x.MinBlock)
	require.Equal(t, uint32(4096), x.PreferredBlock)
	bs, err := ChooseBlockSize(x)
	require.NoError(t, err)
	require.Equal(t, uint32(4096), bs)

	// NBD_CMD_READ of 4 KiB at 4096, as the kernel would send it.
	req := binary.BigEndian.AppendUint32(nil, 0x25609513)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint64(req, 42)
	req = binary.BigEndian.AppendUint64(req, 4096)
	req = binary.BigEndian.AppendUint32(req, 4096)
	_, err = c.Write(req)
	require.NoError(t, err)
	reply := make([]byte, 16+4096)
	_, err = io.ReadFull(c, reply)
	require.NoError(t, err)
	require.Equal(t, uint32(0x67446698), binary.BigEndian.Uint32(reply))
	require.Zero(t, binary.BigEndian.Uint32(reply[4:]), "no error")
	require.Equal(t, uint64(42), binary.BigEndian.Uint64(reply[8:]))
	require.Equal(t, "grbd", string(reply[16:20]))
}

func TestNegotiateRefusals(t *testing.T) {
	t.Run("unknown export", func(t *testing.T) {
		addr := serve(t, &memDevice{data: make([]byte, 1<<20)}, "disk")
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		_, err = Negotiate(c, "other")
		require.ErrorIs(t, err, ErrNegotiate)
		require.ErrorContains(t, err, `refused export "other"`)
	})
	t.Run("not nbd", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		go func() { _, _ = b.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n")); b.Close() }()
		_, err := Negotiate(a, "")
		require.ErrorIs(t, err, ErrNegotiate)
	})
	t.Run("read-only export is not attached", func(t *testing.T) {
		addr := serve(t, &memDevice{data: make([]byte, 1<<20), readOnly: true}, "")
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		x, err := Negotiate(c, "")
		require.NoError(t, err)
		require.NotZero(t, x.Flags&nbdproto.FlagReadOnly)
		err = Attach(Device{Path: "/nonexistent/nbd0", Name: "nbd0"}, c.(*net.TCPConn), x, AttachOptions{})
		require.ErrorIs(t, err, ErrReadOnly)
	})
}

// TestCheck covers what an operator sees on hosts without the module or
// the device (this machine has neither: the "absent" path is the real one).
func TestCheck(t *testing.T) {
	root := t.TempDir()
	sys := Sys{SysFS: filepath.Join(root, "sys"), Dev: filepath.Join(root, "dev")}
	require.NoError(t, os.MkdirAll(sys.Dev, 0o755))

	_, err := sys.Check(filepath.Join(sys.Dev, "nbd0"), true)
	require.ErrorIs(t, err, ErrNoModule)
	require.ErrorContains(t, err, "modprobe nbd")
	require.ErrorContains(t, err, "nbdfuse")

	require.NoError(t, os.MkdirAll(filepath.Join(sys.SysFS, "module", "nbd"), 0o755))
	_, err = sys.Check(filepath.Join(sys.Dev, "nbd0"), true)
	require.ErrorIs(t, err, ErrNoDevice)
	require.ErrorContains(t, err, "nbds_max")
	_, err = sys.Check(filepath.Join(sys.Dev, "sda"), true)
	require.ErrorIs(t, err, ErrNoDevice)
	require.ErrorContains(t, err, "want /dev/nbdN")
	require.NoError(t, os.WriteFile(filepath.Join(sys.Dev, "nbd1"), nil, 0o644))
	_, err = sys.Check(filepath.Join(sys.Dev, "nbd1"), true)
	require.ErrorContains(t, err, "not a block device")

	// A block device node, when this process may make one.
	dev := filepath.Join(sys.Dev, "nbd2")
	if err := unix.Mknod(dev, unix.S_IFBLK|0o600, int(unix.Mkdev(43, 2))); err != nil {
		t.Logf("mknod: %v: block-device cases skipped", err)
		return
	}
	d, err := sys.Check(dev, true)
	require.NoError(t, err)
	require.Equal(t, Device{Path: dev, Name: "nbd2"}, d)
	require.NoError(t, os.MkdirAll(filepath.Join(sys.SysFS, "block", "nbd2"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(sys.SysFS, "block", "nbd2", "pid"), []byte("4242\n"), 0o644))
	_, err = sys.Check(dev, true)
	require.ErrorIs(t, err, ErrBusy)
	require.ErrorContains(t, err, "client pid 4242")
	_, err = sys.Check(dev, false)
	require.NoError(t, err, "detach wants an attached device")
}

func TestCheckHost(t *testing.T) {
	if _, err := os.Stat("/sys/module/nbd"); err == nil {
		t.Skip("this host has the nbd module")
	}
	_, err := Host.Check("/dev/nbd0", true)
	require.ErrorIs(t, err, ErrNoModule)
}

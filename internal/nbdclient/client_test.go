package nbdclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/stretchr/testify/require"
)

func TestHandshake(t *testing.T) {
	dev := newMemDev(1 << 20)
	_, addr := serve(t, dev, blockdev.Options{ExportName: "vol0", Description: "test volume"})
	cases := []struct {
		name    string
		opts    Options
		wantErr error
	}{
		{name: "default export", opts: Options{}},
		{name: "named export with block sizes", opts: Options{ExportName: "vol0", BlockSizes: true}},
		{name: "unknown export", opts: Options{ExportName: "nope"}, wantErr: ErrUnknownExport},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(ctxT(t), addr, tc.opts)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			info := c.Info()
			require.Equal(t, int64(1<<20), c.Size())
			require.Equal(t, "test volume", info.Description)
			require.True(t, info.Flags.Has(nbdproto.FlagHasFlags|nbdproto.FlagSendFlush|nbdproto.FlagSendFUA|nbdproto.FlagSendTrim|nbdproto.FlagSendWriteZeroes|nbdproto.FlagCanMultiConn))
			require.False(t, info.Flags.Has(nbdproto.FlagReadOnly))
			if tc.opts.BlockSizes {
				require.Equal(t, [3]uint32{512, 4096, 32 << 20}, [3]uint32{info.MinBlockSize, info.PreferredBlockSize, info.MaxBlockSize})
			}
		})
	}
}

func TestCommands(t *testing.T) {
	const size = 1 << 20
	pattern := bytes.Repeat([]byte{0xab}, 8192)
	cases := []struct {
		name string
		dev  func(*memDev) blockdev.Device
		opts Options
		run  func(ctx context.Context, c *Client) error
		want error // nil, an Errno, or a client sentinel
		// check inspects the device afterwards.
		check func(t *testing.T, d *memDev)
	}{
		{
			name: "write then read",
			run: func(ctx context.Context, c *Client) error {
				if err := c.WriteAt(ctx, pattern, 4096, 0); err != nil {
					return err
				}
				got := make([]byte, len(pattern))
				if err := c.ReadAt(ctx, got, 4096); err != nil {
					return err
				}
				if !bytes.Equal(got, pattern) {
					return errors.New("read back differs")
				}
				return nil
			},
			check: func(t *testing.T, d *memDev) { require.Equal(t, pattern, d.bytes(4096, len(pattern))) },
		},
		{
			name: "FUA reaches the device",
			run: func(ctx context.Context, c *Client) error {
				return c.WriteAt(ctx, pattern[:512], 0, nbdproto.CmdFlagFUA)
			},
			check: func(t *testing.T, d *memDev) {
				_, fua := d.stats()
				require.Equal(t, []bool{true}, fua)
			},
		},
		{
			name: "flush",
			run:  func(ctx context.Context, c *Client) error { return c.Flush(ctx) },
			check: func(t *testing.T, d *memDev) {
				n, _ := d.stats()
				require.Equal(t, 1, n)
			},
		},
		{
			name: "trim reads back as zeroes",
			run: func(ctx context.Context, c *Client) error {
				if err := c.WriteAt(ctx, pattern, 0, 0); err != nil {
					return err
				}
				return c.Trim(ctx, 0, 4096, 0)
			},
			check: func(t *testing.T, d *memDev) {
				require.Equal(t, make([]byte, 4096), d.bytes(0, 4096))
				require.Equal(t, pattern[:4096], d.bytes(4096, 4096))
			},
		},
		{
			name: "write zeroes with FUA and NO_HOLE",
			run: func(ctx context.Context, c *Client) error {
				if err := c.WriteAt(ctx, pattern, 8192, 0); err != nil {
					return err
				}
				return c.WriteZeroes(ctx, 8192, 8192, nbdproto.CmdFlagFUA|nbdproto.CmdFlagNoHole)
			},
			check: func(t *testing.T, d *memDev) {
				require.Equal(t, make([]byte, 8192), d.bytes(8192, 8192))
				_, fua := d.stats()
				require.Equal(t, []bool{false, true}, fua)
			},
		},
		{
			name: "write past the end is ENOSPC",
			run:  func(ctx context.Context, c *Client) error { return c.WriteAt(ctx, pattern[:4096], size-2048, 0) },
			want: ENOSPC,
		},
		{
			name: "read past the end is EINVAL",
			run:  func(ctx context.Context, c *Client) error { return c.ReadAt(ctx, make([]byte, 4096), size) },
			want: EINVAL,
		},
		{
			name: "misaligned write after asking for block sizes is EINVAL",
			opts: Options{BlockSizes: true},
			run:  func(ctx context.Context, c *Client) error { return c.WriteAt(ctx, pattern[:100], 3, 0) },
			want: EINVAL,
		},
		{
			name: "write to a read-only export is EPERM",
			dev:  func(d *memDev) blockdev.Device { return roDev{d} },
			run:  func(ctx context.Context, c *Client) error { return c.WriteAt(ctx, pattern[:4096], 0, 0) },
			want: EPERM,
		},
		{
			name: "trim on a read-only export is refused before sending",
			dev:  func(d *memDev) blockdev.Device { return roDev{d} },
			run:  func(ctx context.Context, c *Client) error { return c.Trim(ctx, 0, 4096, 0) },
			want: ErrUnsupported,
		},
		{
			name: "device EIO",
			dev: func(d *memDev) blockdev.Device {
				d.hold = func(op string, _ int64) error {
					if op == "write" {
						return fmt.Errorf("disk on fire: %w", syscall.EIO)
					}
					return nil
				}
				return d
			},
			run:  func(ctx context.Context, c *Client) error { return c.WriteAt(ctx, pattern[:4096], 0, 0) },
			want: EIO,
		},
		{
			name: "device ENOSPC on flush",
			dev: func(d *memDev) blockdev.Device {
				d.hold = func(op string, _ int64) error {
					if op == "flush" {
						return syscall.ENOSPC
					}
					return nil
				}
				return d
			},
			run:  func(ctx context.Context, c *Client) error { return c.Flush(ctx) },
			want: ENOSPC,
		},
		{
			name: "length beyond 32 bits is refused before sending",
			run:  func(ctx context.Context, c *Client) error { return c.WriteZeroes(ctx, 0, 1<<33, 0) },
			want: ErrInvalid,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newMemDev(size)
			var dev blockdev.Device = d
			if tc.dev != nil {
				dev = tc.dev(d)
			}
			_, addr := serve(t, dev, blockdev.Options{})
			c := dial(t, addr, tc.opts)
			err := tc.run(ctxT(t), c)
			if tc.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.want)
				if e, ok := tc.want.(Errno); ok {
					require.ErrorIs(t, err, syscall.Errno(e), "an NBD errno matches the syscall errno")
					require.False(t, IsUnknownOutcome(err))
				}
			}
			if tc.check != nil {
				tc.check(t, d)
			}
			// The connection survives every refusal.
			require.NoError(t, c.ReadAt(ctxT(t), make([]byte, 512), 0))
		})
	}
}

// TestOutOfOrderReplies: a READ issued after a WRITE that the device holds
// completes first, on the same connection.
func TestOutOfOrderReplies(t *testing.T) {
	d, g, c := gatedClient(t)
	wrote := heldWrite(t, c, g, 0, bytes.Repeat([]byte{7}, 4096))
	require.NoError(t, c.ReadAt(ctxT(t), make([]byte, 4096), 8192), "a later read completes while the write is held")
	select {
	case err := <-wrote:
		t.Fatalf("held write completed early: %v", err)
	default:
	}
	g.release(0)
	require.NoError(t, <-wrote)
	require.Equal(t, bytes.Repeat([]byte{7}, 4096), d.bytes(0, 4096))
}

// TestManyInFlight: 32 goroutines share one connection, each writing and
// reading back its own blocks.
func TestManyInFlight(t *testing.T) {
	d := newMemDev(4 << 20)
	s, addr := serve(t, d, blockdev.Options{MaxInFlight: 16})
	c := dial(t, addr, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			buf, got := make([]byte, 4096), make([]byte, 4096)
			for i := range 20 {
				off := int64((w*20 + i) * 4096)
				for j := range buf {
					buf[j] = byte(w*31 + i + j)
				}
				if err := c.WriteAt(ctxT(t), buf, off, 0); err != nil {
					errs <- err
					return
				}
				if err := c.ReadAt(ctxT(t), got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, got) {
					errs <- fmt.Errorf("worker %d block %d read back differs", w, i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, uint64(1), s.Stats().Connections)
}

// TestDeadlineAbandonsRequest: a request whose context expires returns the
// context error at once; its late reply (with READ data) is consumed and the
// connection keeps working.
func TestDeadlineAbandonsRequest(t *testing.T) {
	_, g, c := gatedClient(t)
	require.NoError(t, c.WriteAt(ctxT(t), bytes.Repeat([]byte{9}, 4096), 4096, 0))

	g.hold(4096)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	dest := make([]byte, 4096)
	err := c.ReadAt(ctx, dest, 4096)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, IsUnknownOutcome(err))
	g.release(4096)

	// The abandoned reply must neither land in dest nor desynchronise the
	// stream.
	got := make([]byte, 4096)
	require.NoError(t, c.WriteAt(ctxT(t), bytes.Repeat([]byte{3}, 4096), 0, 0))
	require.NoError(t, c.ReadAt(ctxT(t), got, 0))
	require.Equal(t, bytes.Repeat([]byte{3}, 4096), got)
	require.Equal(t, make([]byte, 4096), dest, "abandoned read wrote into the caller's buffer")
}

// TestConnectionLost: when the server goes away, requests in flight and later
// ones fail with ErrConnLost (outcome unknown).
func TestConnectionLost(t *testing.T) {
	d := newMemDev(1 << 20)
	g := newGate(t)
	d.hold = g.wait
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s, err := blockdev.NewServer(d, blockdev.Options{})
	require.NoError(t, err)
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := l.Accept()
		if err == nil {
			accepted <- conn
			_ = s.ServeConn(conn)
		}
	}()
	c := dial(t, l.Addr().String(), Options{})
	conn := <-accepted
	inflight := heldWrite(t, c, g, 0, make([]byte, 4096))
	require.NoError(t, conn.Close())
	err = <-inflight
	require.ErrorIs(t, err, ErrConnLost)
	require.True(t, IsUnknownOutcome(err))
	require.ErrorIs(t, c.Flush(ctxT(t)), ErrConnLost)
	require.ErrorIs(t, c.Err(), ErrConnLost)
	g.releaseAll()
	require.NoError(t, s.Close())
}

// TestCloseWaitsForInFlight: Close sends DISC; the server answers what it
// already read, so a held write still completes successfully.
func TestCloseWaitsForInFlight(t *testing.T) {
	d := newMemDev(1 << 20)
	g := newGate(t)
	d.hold = g.wait
	_, addr := serve(t, d, blockdev.Options{})
	c, err := Dial(ctxT(t), addr, Options{})
	require.NoError(t, err)
	inflight := heldWrite(t, c, g, 0, bytes.Repeat([]byte{5}, 4096))
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	time.Sleep(20 * time.Millisecond)
	g.release(0)
	require.NoError(t, <-inflight)
	require.NoError(t, <-closed)
	require.ErrorIs(t, c.ReadAt(ctxT(t), make([]byte, 512), 0), ErrClosed)
	require.Equal(t, bytes.Repeat([]byte{5}, 4096), d.bytes(0, 4096))
}

func TestParseURI(t *testing.T) {
	cases := []struct {
		uri, addr, export string
		bad               bool
	}{
		{uri: "nbd://127.0.0.1:10809", addr: "127.0.0.1:10809"},
		{uri: "nbd://127.77.1.1:2000/vol0", addr: "127.77.1.1:2000", export: "vol0"},
		{uri: "nbd://localhost", addr: "localhost:10809"},
		{uri: "nbd+unix:///x?socket=/tmp/s", bad: true},
		{uri: "nbd://:1234", bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.uri, func(t *testing.T) {
			addr, export, err := ParseURI(tc.uri)
			if tc.bad {
				require.ErrorIs(t, err, ErrInvalid)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.addr, addr)
			require.Equal(t, tc.export, export)
		})
	}
}

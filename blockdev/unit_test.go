package blockdev

import (
	"testing"
	"time"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/pojntfx/go-nbd/pkg/protocol"
	"github.com/stretchr/testify/require"
)

func TestDecodeRequest(t *testing.T) {
	valid := encodeRequest(nbdproto.CmdWriteZeroes, nbdproto.CmdFlagFUA|nbdproto.CmdFlagNoHole, 0x0102030405060708, 1<<40, 4096, nil)
	for _, tc := range []struct {
		name string
		in   []byte
		want protocol.TransmissionRequestHeader
		err  error
	}{
		{"valid", valid, protocol.TransmissionRequestHeader{
			RequestMagic: protocol.TRANSMISSION_MAGIC_REQUEST, CommandFlags: 3, Type: nbdproto.CmdWriteZeroes,
			Handle: 0x0102030405060708, Offset: 1 << 40, Length: 4096}, nil},
		{"short", valid[:27], protocol.TransmissionRequestHeader{}, ErrShortHeader},
		{"empty", nil, protocol.TransmissionRequestHeader{}, ErrShortHeader},
		{"bad magic", append([]byte{0x67, 0x44, 0x66, 0x98}, valid[4:]...), protocol.TransmissionRequestHeader{}, ErrBadRequestMagic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h protocol.TransmissionRequestHeader
			err := decodeRequest(tc.in, &h)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, h)
		})
	}
}

func TestNewServerOptions(t *testing.T) {
	dev := newMemDev(1 << 20)
	for _, tc := range []struct {
		name string
		opts Options
		dev  Device
		ok   bool
	}{
		{"defaults", Options{}, dev, true},
		{"min 1", Options{MinBlockSize: 1}, dev, true},
		{"min 4k", Options{MinBlockSize: 4096}, dev, true},
		{"min not power of two", Options{MinBlockSize: 1000}, dev, false},
		{"min over 64k", Options{MinBlockSize: 1 << 17}, dev, false},
		{"preferred below 512", Options{MinBlockSize: 1, PreferredBlockSize: 256}, dev, false},
		{"preferred below min", Options{MinBlockSize: 8192, PreferredBlockSize: 4096}, dev, false},
		{"max below preferred", Options{MaxBlockSize: 2048}, dev, false},
		{"max not multiple of min", Options{MinBlockSize: 4096, MaxBlockSize: 6000}, dev, false},
		{"max over limit", Options{MaxBlockSize: maxBlockSizeLimit + 512}, dev, false},
		{"negative in flight", Options{MaxInFlight: -1}, dev, false},
		{"byte budget below max block", Options{MaxInFlightBytes: 1024}, dev, false},
		{"negative handshake timeout", Options{HandshakeTimeout: -time.Second}, dev, false},
		{"long export name", Options{ExportName: string(make([]byte, 4097))}, dev, false},
		{"size not multiple of min", Options{MinBlockSize: 4096}, newMemDev(4096 + 512), false},
		{"nil device", Options{}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewServer(tc.dev, tc.opts)
			if !tc.ok {
				require.ErrorIs(t, err, ErrInvalidOptions)
				return
			}
			require.NoError(t, err)
			require.NotZero(t, s.opts.MinBlockSize)
			require.LessOrEqual(t, s.opts.MinBlockSize, s.opts.PreferredBlockSize)
			require.LessOrEqual(t, s.opts.PreferredBlockSize, s.opts.MaxBlockSize)
			require.NotNil(t, s.opts.Logger)
		})
	}
	s, err := NewServer(dev, Options{})
	require.NoError(t, err)
	require.Equal(t, uint32(512), s.opts.MinBlockSize)
	require.Equal(t, uint32(4096), s.opts.PreferredBlockSize)
	require.Equal(t, uint32(32<<20), s.opts.MaxBlockSize)
	require.Equal(t, 128, s.opts.MaxInFlight)
	require.Equal(t, 10*time.Second, s.opts.HandshakeTimeout)
}

func TestFlushTracker(t *testing.T) {
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	var ft flushTracker
	ft.init()
	require.Nil(t, ft.seal(), "no writes: flush need not wait")

	w1 := ft.begin()
	f1 := ft.seal()
	w2 := ft.begin()
	f2 := ft.seal()
	w3 := ft.begin()
	require.False(t, closed(f1))

	ft.end(w2) // a later epoch completing first does not release earlier flushes
	require.False(t, closed(f1))
	require.False(t, closed(f2), "f2 also covers w1")

	ft.end(w1)
	require.True(t, closed(f1))
	require.True(t, closed(f2))

	f3 := ft.seal()
	require.NotNil(t, f3)
	require.False(t, closed(f3))
	ft.end(w3)
	require.True(t, closed(f3))
	require.Nil(t, ft.seal())
}

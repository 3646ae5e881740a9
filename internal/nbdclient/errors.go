package nbdclient

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/grbd/grbd/internal/nbdproto"
)

// Errors callers branch on. A request that fails with ErrConnLost or with its
// context's error has an unknown outcome: the server may or may not have
// executed it.
var (
	// ErrClosed is returned for requests issued after Close.
	ErrClosed = errors.New("nbdclient: client closed")
	// ErrConnLost wraps the first transport error of a connection; every
	// request in flight then and every later one fails with it.
	ErrConnLost = errors.New("nbdclient: connection lost")
	// ErrProtocol reports bytes from the server that break the protocol
	// (bad magic, unknown cookie, structured reply never negotiated).
	ErrProtocol = errors.New("nbdclient: protocol violation")
	// ErrUnsupported is returned, without sending anything, for a command or
	// flag the export did not advertise (FLUSH without NBD_FLAG_SEND_FLUSH,
	// ...), and for a server that is not fixed newstyle.
	ErrUnsupported = errors.New("nbdclient: not supported by the server")
	// ErrUnknownExport is returned by the handshake when the server does not
	// know the export name.
	ErrUnknownExport = errors.New("nbdclient: unknown export")
	// ErrOptionRefused is returned by the handshake for any other option
	// error reply; the message carries the reply type and the server's text.
	ErrOptionRefused = errors.New("nbdclient: option refused")
	// ErrInvalid is returned, without sending anything, for a request the
	// protocol cannot express (length above 2^32-1, negative offset).
	ErrInvalid = errors.New("nbdclient: invalid request")
)

// Errno is an error value of an NBD simple reply (NetworkBlockDevice/nbd
// doc/proto.md, "Error values"). Compare with errors.Is against the constants
// below or against the syscall.Errno of the same number:
//
//	errors.Is(err, nbdclient.EIO)  // true
//	errors.Is(err, syscall.EIO)    // true as well
type Errno uint32

// NBD error values, as nbdproto defines them for the server.
const (
	EPERM           = Errno(nbdproto.EPERM)
	EIO             = Errno(nbdproto.EIO)
	ENOMEM          = Errno(nbdproto.ENOMEM)
	EINVAL          = Errno(nbdproto.EINVAL)
	ENOSPC          = Errno(nbdproto.ENOSPC)
	EOVERFLOW       = Errno(nbdproto.EOVERFLOW)
	ENOTSUP   Errno = 95 // NBD_ENOTSUP: only for FAST_ZERO, which grbd's server does not advertise
	ESHUTDOWN       = Errno(nbdproto.ESHUTDOWN)
)

var errnoNames = map[Errno]string{
	EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL", ENOSPC: "ENOSPC",
	EOVERFLOW: "EOVERFLOW", ENOTSUP: "ENOTSUP", ESHUTDOWN: "ESHUTDOWN",
}

// Name is the symbolic name (EIO), or "errno N" for values the spec does not
// define.
func (e Errno) Name() string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", uint32(e))
}

func (e Errno) Error() string { return "nbd: server error " + e.Name() }

// Is makes errors.Is(err, syscall.EXXX) true for the NBD error of the same
// number.
func (e Errno) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	return ok && uint32(t) == uint32(e)
}

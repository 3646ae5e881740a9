package blockdev

import (
	"errors"
	"github.com/grbd/grbd/internal/nbdproto"
	"syscall"
)

// Errors returned by the server. Connection-level errors are wrapped with
// context; test for them with errors.Is.
var (
	// ErrServerClosed is returned by Serve and ServeConn after Close.
	ErrServerClosed = errors.New("blockdev: server closed")
	// ErrInvalidOptions is returned by NewServer for options that break the
	// NBD size constraints or are otherwise unusable.
	ErrInvalidOptions = errors.New("blockdev: invalid options")

	// ErrBadClientFlags: the client set a handshake flag we do not know
	// (the spec says the server MUST drop the connection).
	ErrBadClientFlags = errors.New("blockdev: unknown client flags")
	// ErrBadOptionMagic: an option did not start with IHAVEOPT.
	ErrBadOptionMagic = errors.New("blockdev: bad option magic")
	// ErrOptionTooLarge: an option's data is longer than maxOptionLength.
	ErrOptionTooLarge = errors.New("blockdev: option data too large")
	// ErrTooManyOptions: the client sent more than maxOptions options.
	ErrTooManyOptions = errors.New("blockdev: too many options")
	// ErrUnknownExport: NBD_OPT_EXPORT_NAME named an export we do not serve;
	// that option cannot return an error, so the connection is closed.
	ErrUnknownExport = errors.New("blockdev: unknown export")
	// ErrTLSRequired: with Options.TLSRequired, the client entered
	// transmission with NBD_OPT_EXPORT_NAME before STARTTLS; that option
	// cannot return an error, so the connection is closed.
	ErrTLSRequired = errors.New("blockdev: TLS required")
	// ErrTLS: the TLS handshake after NBD_OPT_STARTTLS failed, or the client
	// sent bytes before the server's acknowledgement.
	ErrTLS = errors.New("blockdev: TLS negotiation failed")
	// ErrTooManyConnections: the connection was refused at accept because
	// MaxConnections connections are open or MaxHandshakes are
	// negotiating.
	ErrTooManyConnections = errors.New("blockdev: too many connections")

	// ErrShortHeader: fewer than 28 bytes given to the request decoder.
	ErrShortHeader = errors.New("blockdev: short request header")
	// ErrBadRequestMagic: a request did not start with NBD_REQUEST_MAGIC; the
	// stream is desynchronised and the connection is closed.
	ErrBadRequestMagic = errors.New("blockdev: bad request magic")
	// ErrPayloadTooLarge: a WRITE announced a payload too large to drain; the
	// connection is closed (see docs/nbd.md, "Oversized writes").
	ErrPayloadTooLarge = errors.New("blockdev: write payload too large")
)

// nbdErrno maps the errnos NBD has a value for; every other errno is sent as
// EIO. ENOTSUP is deliberately not passed through: the spec reserves it for
// FAST_ZERO.
var nbdErrno = map[syscall.Errno]uint32{
	syscall.EPERM:     nbdproto.EPERM,
	syscall.EACCES:    nbdproto.EPERM,
	syscall.EROFS:     nbdproto.EPERM,
	syscall.ENOMEM:    nbdproto.ENOMEM,
	syscall.EINVAL:    nbdproto.EINVAL,
	syscall.ENOSPC:    nbdproto.ENOSPC,
	syscall.EDQUOT:    nbdproto.ENOSPC,
	syscall.EFBIG:     nbdproto.ENOSPC,
	syscall.EOVERFLOW: nbdproto.EOVERFLOW,
	syscall.ESHUTDOWN: nbdproto.ESHUTDOWN,
}

// errnoOf maps an error returned by a Device to the NBD error value sent to
// the client. Errors wrapping a syscall.Errno keep their meaning where NBD
// has one (nbdErrno); everything else is EIO.
func errnoOf(err error) uint32 {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		if v, ok := nbdErrno[en]; ok {
			return v
		}
	}
	return nbdproto.EIO
}

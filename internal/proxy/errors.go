package proxy

import "errors"

// Errors of the proxy.
var (
	// ErrNoPrimary: no data node served as primary within the hold timeout.
	// It wraps syscall.EIO, which the NBD server sends to the client.
	ErrNoPrimary = errors.New("proxy: no serving primary")
	// ErrNotPrimary is returned by a Locator or Dialer for a node that does
	// not serve as primary (secondary, fenced, read-only export).
	ErrNotPrimary = errors.New("proxy: node does not serve as primary")
)

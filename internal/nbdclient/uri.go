package nbdclient

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultPort is the IANA port of NBD.
const DefaultPort = "10809"

// ParseURI splits an nbd://host[:port][/export] URI (the NBD URI
// specification's TCP form) into a dialable address and an export name.
func ParseURI(uri string) (addr, export string, err error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", "", fmt.Errorf("%w: URI %q: %w", ErrInvalid, uri, err)
	}
	if u.Scheme != "nbd" {
		return "", "", fmt.Errorf("%w: URI %q: only nbd:// is supported", ErrInvalid, uri)
	}
	if u.Hostname() == "" {
		return "", "", fmt.Errorf("%w: URI %q has no host", ErrInvalid, uri)
	}
	port := u.Port()
	if port == "" {
		port = DefaultPort
	}
	return net.JoinHostPort(u.Hostname(), port), strings.TrimPrefix(u.Path, "/"), nil
}

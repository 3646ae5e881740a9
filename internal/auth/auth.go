// Package auth turns the security section of a cluster config into what a
// member and the CLI need: the member-link credentials (internal/mesh), the
// admin endpoint's HTTPS listener and request authentication, the NBD
// export's TLS configuration, and the CLI's admin client. docs/security.md
// describes the model.
//
// Admin endpoints authenticate with what the config enables: with
// security.tls they serve HTTPS and accept a client certificate that chains
// to the cluster CA; with security.shared-secret-file they accept a request
// token (an HMAC of the request under a key derived from the secret, bound
// to the member, fresh within MaxTokenAge and never accepted twice). By
// default only mutating requests (POST) need either, so monitoring can GET
// /status and /healthz; security.admin-auth: all covers every request.
//
// Credentials and Client are safe for concurrent use.
package auth

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/mesh"
	"github.com/grbd/grbd/internal/pki"
)

// Errors callers branch on.
var (
	// ErrCredentials: the configured credentials cannot be used (missing
	// file, key readable by others, short secret, certificate that does
	// not name the member).
	ErrCredentials = errors.New("auth: unusable credentials")
	// ErrUnauthorized: an admin endpoint refused a request for want of
	// credentials.
	ErrUnauthorized = errors.New("auth: admin request not authenticated")
)

// MinSecret is the shortest shared secret accepted, in bytes.
const MinSecret = 16

// Credentials are one member's: see the package documentation.
type Credentials struct {
	cluster, name string
	// Mesh authenticates the member's links.
	Mesh mesh.Security
	// NBD is the export's TLS configuration (nil: no STARTTLS), NBDRequired
	// the spec's FORCEDTLS mode.
	NBD         *tls.Config
	NBDRequired bool

	adminTLS *tls.Config // nil without security.tls
	adminKey []byte      // nil without a shared secret
	adminAll bool
	replay   replayCache
	log      *slog.Logger
}

// Load reads the credentials of member name. Without a security section it
// returns empty credentials and logs a warning: the member's links and
// admin endpoint are then open to anyone who can reach them.
func Load(cfg *config.Config, name string, log *slog.Logger) (*Credentials, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Credentials{cluster: cfg.Cluster, name: name, log: log}
	m, witness, err := cfg.Member(name)
	if err != nil {
		return nil, err
	}
	s := cfg.Security
	if s == nil {
		log.Warn("member links and the admin endpoint are NOT authenticated: anyone who can reach "+m.Address+
			" can join the control plane and overwrite the device; configure security (docs/security.md)",
			"member", name)
	} else {
		if s.TLS != nil {
			if err := c.loadTLS(s.TLS); err != nil {
				return nil, err
			}
		}
		if s.SharedSecretFile != "" {
			secret, err := ReadSecret(s.SharedSecretFile)
			if err != nil {
				return nil, err
			}
			c.Mesh.Secret = secret
			c.adminKey = adminKey(secret)
		}
		c.adminAll = s.AdminAuth == config.AdminAuthAll
	}
	if !witness && cfg.NBD.TLS != nil {
		if c.NBD, err = nbdTLS(cfg.NBD.TLS, name); err != nil {
			return nil, err
		}
		c.NBDRequired = cfg.NBD.TLSRequired
	}
	return c, nil
}

func (c *Credentials) loadTLS(t *config.MemberTLS) error {
	roots, err := pki.LoadPool(t.CA)
	if err != nil {
		return fmt.Errorf("%w: security.tls.ca: %w", ErrCredentials, err)
	}
	certFile, keyFile := config.MemberPath(t.Cert, c.name), config.MemberPath(t.Key, c.name)
	pair, err := pki.LoadKeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("%w: security.tls: %w", ErrCredentials, err)
	}
	// Refuse a certificate that the other members would refuse, with a
	// message that names the file.
	if err := pki.MemberOf([]*x509.Certificate{pair.Leaf}, roots, c.cluster, c.name); err != nil {
		return fmt.Errorf("%w: security.tls.cert %s: %w", ErrCredentials, certFile, err)
	}
	c.Mesh.Roots, c.Mesh.Cert = roots, &pair
	c.adminTLS = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    roots,
	}
	return nil
}

// nbdTLS is the export's TLS configuration for data node name.
func nbdTLS(t *config.NBDTLS, name string) (*tls.Config, error) {
	pair, err := pki.LoadKeyPair(config.MemberPath(t.Cert, name), config.MemberPath(t.Key, name))
	if err != nil {
		return nil, fmt.Errorf("%w: nbd.tls: %w", ErrCredentials, err)
	}
	// TLS 1.2 is the spec's MUST; older versions are not offered.
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if t.CA != "" {
		roots, err := pki.LoadPool(t.CA)
		if err != nil {
			return nil, fmt.Errorf("%w: nbd.tls.ca: %w", ErrCredentials, err)
		}
		tc.ClientAuth, tc.ClientCAs = tls.RequireAndVerifyClientCert, roots
	}
	return tc, nil
}

// ReadSecret reads a shared-secret file: mode 0600 (or stricter), at least
// MinSecret bytes once surrounding white space is removed.
func ReadSecret(file string) ([]byte, error) {
	if err := pki.CheckPrivate(file); err != nil {
		return nil, fmt.Errorf("%w: security.shared-secret-file: %w", ErrCredentials, err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: security.shared-secret-file: %w", ErrCredentials, err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < MinSecret {
		return nil, fmt.Errorf("%w: security.shared-secret-file %s: %d bytes, want at least %d", ErrCredentials, file, len(b), MinSecret)
	}
	return b, nil
}

// AdminListener wraps the admin endpoint's listener in TLS when the
// cluster uses TLS.
func (c *Credentials) AdminListener(ln net.Listener) net.Listener {
	if c.adminTLS == nil {
		return ln
	}
	return tls.NewListener(ln, c.adminTLS)
}

// AdminScheme is "https" when the admin endpoint serves TLS, else "http".
func (c *Credentials) AdminScheme() string {
	if c.adminTLS != nil {
		return "https"
	}
	return "http"
}

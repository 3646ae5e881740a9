package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/pki"
)

// Admin request tokens. Part of the admin API: do not change.
//
//	Authorization: GRBD-HMAC t=<unix seconds>,n=<nonce, 32 hex digits>,mac=<64 hex digits>
//	mac = HMAC-SHA256(K, "grbd-admin-v1\n" cluster "\n" member "\n" METHOD "\n"
//	                     request-URI "\n" t "\n" n)
//	K   = HMAC-SHA256(shared secret, "grbd admin key v1")
//
// member is the name of the member the request is for, request-URI the path
// and query exactly as in the request line. Admin requests carry no body.
const (
	tokenScheme = "GRBD-HMAC"
	tokenLabel  = "grbd-admin-v1"
	// MaxTokenAge bounds the clock difference between the CLI and a member
	// and how long a token's nonce is remembered to refuse replays.
	MaxTokenAge = 5 * time.Minute
	// maxReplay bounds the remembered nonces (only valid tokens are
	// remembered: a stranger cannot fill it).
	maxReplay = 1 << 16
)

func adminKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("grbd admin key v1"))
	return m.Sum(nil)
}

func tokenMAC(key []byte, cluster, member, method, uri, t, n string) string {
	m := hmac.New(sha256.New, key)
	for _, s := range []string{tokenLabel, cluster, member, method, uri, t} {
		m.Write([]byte(s))
		m.Write([]byte{'\n'})
	}
	m.Write([]byte(n))
	return hex.EncodeToString(m.Sum(nil))
}

// token returns the Authorization value for a request to member.
func token(key []byte, cluster, member, method, uri string, now time.Time) string {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	t, n := strconv.FormatInt(now.Unix(), 10), hex.EncodeToString(nonce[:])
	return fmt.Sprintf("%s t=%s,n=%s,mac=%s", tokenScheme, t, n, tokenMAC(key, cluster, member, method, uri, t, n))
}

// replayCache remembers the nonces of accepted tokens until they expire.
type replayCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // nonce -> expiry
}

// add records nonce; false if it was seen (a replay) or the cache is full.
func (c *replayCache) add(nonce string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	if exp, ok := c.seen[nonce]; ok && now.Before(exp) {
		return false
	}
	if len(c.seen) >= maxReplay {
		for n, exp := range c.seen {
			if !now.Before(exp) {
				delete(c.seen, n)
			}
		}
		if len(c.seen) >= maxReplay {
			return false
		}
	}
	c.seen[nonce] = now.Add(2 * MaxTokenAge)
	return true
}

// checkToken verifies an Authorization header value for r.
func (c *Credentials) checkToken(r *http.Request, now time.Time) error {
	v, ok := strings.CutPrefix(r.Header.Get("Authorization"), tokenScheme+" ")
	if !ok {
		return errors.New("no token")
	}
	f := map[string]string{}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		f[k] = val
	}
	ts, err := strconv.ParseInt(f["t"], 10, 64)
	if err != nil || len(f["n"]) != 32 {
		return errors.New("malformed token")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > MaxTokenAge || d < -MaxTokenAge {
		return fmt.Errorf("token time is %v off (max %v): check the clocks", d.Round(time.Second), MaxTokenAge)
	}
	want := tokenMAC(c.adminKey, c.cluster, c.name, r.Method, r.RequestURI, f["t"], f["n"])
	if !hmac.Equal([]byte(want), []byte(f["mac"])) {
		return errors.New("bad token (wrong shared secret, member or request)")
	}
	if !c.replay.add(f["n"], now) {
		return errors.New("token replayed")
	}
	return nil
}

// AdminHandler wraps the admin endpoint's handler h: requests that need
// authentication (see the package documentation) without a valid client
// certificate or token get 401, and the refusal is logged with the
// client's address.
func (c *Credentials) AdminHandler(h http.Handler) http.Handler {
	return c.adminHandler(h, time.Now)
}

func (c *Credentials) adminHandler(h http.Handler, now func() time.Time) http.Handler {
	open := c.adminTLS == nil && c.adminKey == nil
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if open || (r.Method == http.MethodGet || r.Method == http.MethodHead) && !c.adminAll {
			h.ServeHTTP(w, r)
			return
		}
		// A client certificate was verified against the cluster CA by the
		// TLS layer (VerifyClientCertIfGiven).
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			h.ServeHTTP(w, r)
			return
		}
		reason := "no client certificate"
		if c.adminKey != nil {
			err := c.checkToken(r, now())
			if err == nil {
				h.ServeHTTP(w, r)
				return
			}
			reason = err.Error()
		}
		c.log.Warn("refused admin request", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "reason", reason)
		w.Header().Set("WWW-Authenticate", tokenScheme)
		http.Error(w, "grbd: authentication required: "+reason, http.StatusUnauthorized)
	})
}

// Admin requests give up connecting after adminDialer's timeout (a host that
// is down never answers a SYN) and waiting for response headers after
// adminHeaderTimeout, but let a stream (GET /events) run as long as it lasts.
var (
	adminDialer        = &net.Dialer{Timeout: 5 * time.Second}
	adminHeaderTimeout = 30 * time.Second
	plainClient        = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment,
		DialContext: adminDialer.DialContext, ResponseHeaderTimeout: adminHeaderTimeout}}
)

// Client is the CLI's view of the admin endpoints of a cluster.
type Client struct {
	cfg    *config.Config
	roots  *x509.CertPool   // nil: plain HTTP
	cert   *tls.Certificate // client certificate, if any
	key    []byte           // admin token key, if the secret is readable
	keyErr error            // why there is no key
}

// DefaultAdminCert is the client certificate `grbd certs init` writes next
// to the CA; the CLI uses it when --cert is not given.
const (
	DefaultAdminCert = "admin.pem"
	DefaultAdminKey  = "admin-key.pem"
)

// NewClient prepares requests to cfg's admin endpoints. certFile and
// keyFile name a client certificate (by default admin.pem and
// admin-key.pem beside the CA, when present).
func NewClient(cfg *config.Config, certFile, keyFile string) (*Client, error) {
	c := &Client{cfg: cfg}
	s := cfg.Security
	if s == nil {
		return c, nil
	}
	if s.TLS != nil {
		roots, err := pki.LoadPool(s.TLS.CA)
		if err != nil {
			return nil, fmt.Errorf("%w: security.tls.ca: %w", ErrCredentials, err)
		}
		c.roots = roots
		explicit := certFile != "" || keyFile != ""
		if !explicit {
			dir := filepath.Dir(s.TLS.CA)
			certFile, keyFile = filepath.Join(dir, DefaultAdminCert), filepath.Join(dir, DefaultAdminKey)
		}
		pair, err := pki.LoadKeyPair(certFile, keyFile)
		switch {
		case err == nil:
			c.cert = &pair
		case explicit || !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%w: client certificate: %w", ErrCredentials, err)
		}
	}
	if s.SharedSecretFile != "" {
		secret, err := ReadSecret(s.SharedSecretFile)
		if err != nil {
			c.keyErr = err
		} else {
			c.key = adminKey(secret)
		}
	}
	return c, nil
}

// Do sends a request to member m's admin endpoint. A 401 answer is returned
// as an error wrapping ErrUnauthorized, with what the CLI lacked.
func (c *Client) Do(ctx context.Context, m config.Member, method, path string) (*http.Response, error) {
	scheme := "http"
	hc := plainClient
	if c.roots != nil {
		scheme = "https"
		tc := &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: true, // replaced by VerifyConnection: members are named, not addressed
			VerifyConnection: func(cs tls.ConnectionState) error {
				return pki.MemberOf(cs.PeerCertificates, c.roots, c.cfg.Cluster, m.Name)
			},
		}
		if c.cert != nil {
			tc.Certificates = []tls.Certificate{*c.cert}
		}
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment,
			DialContext: adminDialer.DialContext, ResponseHeaderTimeout: adminHeaderTimeout}}
	}
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+m.Admin+path, nil)
	if err != nil {
		return nil, err
	}
	if c.key != nil {
		req.Header.Set("Authorization", token(c.key, c.cfg.Cluster, m.Name, method, req.URL.RequestURI(), time.Now()))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		hint := "pass --cert and --key (a client certificate of the cluster CA, e.g. admin.pem from grbd certs init)"
		if c.keyErr != nil {
			hint += " or make the shared secret readable: " + c.keyErr.Error()
		}
		return nil, fmt.Errorf("%w by %s: %s", ErrUnauthorized, m.Name, hint)
	}
	return resp, nil
}

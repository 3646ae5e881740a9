package auth

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/stretchr/testify/require"
)

const baseConfig = `cluster: c1
device:
  size: 1MiB
nodes:
  - {name: alpha, address: '127.0.0.1:7700', nbd: '127.0.0.1:10809', admin: '127.0.0.1:7800', data-dir: alpha}
  - {name: beta, address: '127.0.0.1:7701', nbd: '127.0.0.1:10810', admin: '127.0.0.1:7801', data-dir: beta}
witness: {name: w, address: '127.0.0.1:7702', admin: '127.0.0.1:7802', data-dir: w}
`

const tlsSection = `security:
  tls: {ca: pki/ca.pem, cert: 'pki/{name}.pem', key: 'pki/{name}-key.pem'}
nbd:
  tls: {cert: 'pki/nbd/{name}.pem', key: 'pki/nbd/{name}-key.pem'}
`

const secretSection = `security:
  shared-secret-file: pki/secret
`

// testCluster writes a config with the given extra sections into a fresh
// directory, runs InitCerts for it under pki/ and loads it.
func testCluster(t *testing.T, extra string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "grbd.yaml")
	require.NoError(t, os.WriteFile(p, []byte(baseConfig+extra), 0o644))
	cfg, err := config.Load(p)
	require.NoError(t, err)
	_, err = InitCerts(cfg, filepath.Join(dir, "pki"), InitOptions{Secret: true})
	require.NoError(t, err)
	return cfg
}

type logBuf struct{ bytes.Buffer }

func (b *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

func TestInitCertsFiles(t *testing.T) {
	cfg := testCluster(t, "")
	dir := filepath.Join(filepath.Dir(cfg.Path), "pki")
	for _, f := range []string{"ca.pem", "alpha.pem", "beta.pem", "w.pem", "admin.pem", "nbd/alpha.pem", "nbd/beta.pem",
		"nbd-client/ca-cert.pem", "nbd-client/client-cert.pem"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
		require.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), f)
	}
	for _, f := range []string{"ca-key.pem", "alpha-key.pem", "w-key.pem", "admin-key.pem", "nbd/beta-key.pem", "nbd-client/client-key.pem", "secret"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), f)
	}
	_, err := os.Stat(filepath.Join(dir, "nbd/w.pem"))
	require.ErrorIs(t, err, os.ErrNotExist, "the witness exports no device")

	// A second run keeps everything; a removed member certificate is
	// issued again by the same CA.
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.NoError(t, os.Remove(filepath.Join(dir, "beta.pem")))
	require.NoError(t, os.Remove(filepath.Join(dir, "beta-key.pem")))
	wrote, err := InitCerts(cfg, dir, InitOptions{Secret: true})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{filepath.Join(dir, "beta.pem"), filepath.Join(dir, "beta-key.pem")}, wrote)
	ca2, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.Equal(t, ca, ca2)
	// Half a pair is an error, not a silent overwrite.
	require.NoError(t, os.Remove(filepath.Join(dir, "alpha-key.pem")))
	_, err = InitCerts(cfg, dir, InitOptions{})
	require.ErrorContains(t, err, "some exist and some do not")
}

func TestLoad(t *testing.T) {
	t.Run("unauthenticated warns", func(t *testing.T) {
		cfg := testCluster(t, "")
		var b logBuf
		c, err := Load(cfg, "alpha", b.logger())
		require.NoError(t, err)
		require.False(t, c.Mesh.Enabled())
		require.Contains(t, b.String(), "NOT authenticated")
		require.Equal(t, "http", c.AdminScheme())
	})
	t.Run("tls", func(t *testing.T) {
		cfg := testCluster(t, tlsSection)
		var b logBuf
		c, err := Load(cfg, "alpha", b.logger())
		require.NoError(t, err)
		require.NotNil(t, c.Mesh.Cert)
		require.NotNil(t, c.NBD)
		require.Empty(t, b.String())
		w, err := Load(cfg, "w", nil)
		require.NoError(t, err)
		require.Nil(t, w.NBD, "the witness has no export")
	})
	t.Run("another member's certificate", func(t *testing.T) {
		cfg := testCluster(t, tlsSection)
		dir := filepath.Join(filepath.Dir(cfg.Path), "pki")
		b, _ := os.ReadFile(filepath.Join(dir, "beta.pem"))
		k, _ := os.ReadFile(filepath.Join(dir, "beta-key.pem"))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "alpha.pem"), b, 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "alpha-key.pem"), k, 0o600))
		_, err := Load(cfg, "alpha", nil)
		require.ErrorIs(t, err, ErrCredentials)
		require.ErrorContains(t, err, "alpha.pem")
	})
	t.Run("key readable by others", func(t *testing.T) {
		cfg := testCluster(t, tlsSection)
		require.NoError(t, os.Chmod(filepath.Join(filepath.Dir(cfg.Path), "pki", "alpha-key.pem"), 0o644))
		_, err := Load(cfg, "alpha", nil)
		require.ErrorIs(t, err, ErrCredentials)
		require.ErrorContains(t, err, "chmod 600")
	})
	t.Run("short secret", func(t *testing.T) {
		cfg := testCluster(t, secretSection)
		require.NoError(t, os.WriteFile(cfg.Security.SharedSecretFile, []byte("short\n"), 0o600))
		_, err := Load(cfg, "alpha", nil)
		require.ErrorIs(t, err, ErrCredentials)
		require.ErrorContains(t, err, "at least 16")
	})
}

// adminServer serves a handler recording POSTs behind member's credentials.
func adminServer(t *testing.T, cfg *config.Config, member string) (addr string, posts func() int) {
	t.Helper()
	creds, err := Load(cfg, member, nil)
	require.NoError(t, err)
	n := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("POST /primary", func(w http.ResponseWriter, _ *http.Request) { n++ })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: creds.AdminHandler(mux)}
	go func() { _ = srv.Serve(creds.AdminListener(ln)) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), func() int { return n }
}

func TestAdminAuth(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []string{"tls", "secret"} {
		t.Run(mode, func(t *testing.T) {
			section := map[string]string{"tls": tlsSection, "secret": secretSection}[mode]
			cfg := testCluster(t, section)
			addr, posts := adminServer(t, cfg, "alpha")
			alpha, _, _ := cfg.Member("alpha")
			alpha.Admin = addr
			beta, _, _ := cfg.Member("beta")
			beta.Admin = addr // beta's name, alpha's endpoint

			anon := &Client{cfg: cfg}
			if mode == "tls" {
				c, err := NewClient(cfg, "", "")
				require.NoError(t, err)
				anon.roots = c.roots
			}
			resp, err := anon.Do(ctx, alpha, http.MethodGet, "/status")
			require.NoError(t, err, "GET /status stays open")
			resp.Body.Close()
			_, err = anon.Do(ctx, alpha, http.MethodPost, "/primary")
			require.ErrorIs(t, err, ErrUnauthorized)
			require.Zero(t, posts())

			cli, err := NewClient(cfg, "", "")
			require.NoError(t, err)
			resp, err = cli.Do(ctx, alpha, http.MethodPost, "/primary")
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, 1, posts())

			if mode == "tls" {
				// The endpoint's certificate names alpha: a CLI that
				// wants beta there refuses it.
				_, err = cli.Do(ctx, beta, http.MethodGet, "/status")
				require.ErrorContains(t, err, "does not name the member")
			} else {
				// A token for beta does not open alpha.
				_, err = cli.Do(ctx, beta, http.MethodPost, "/primary")
				require.ErrorIs(t, err, ErrUnauthorized)
			}
			require.Equal(t, 1, posts())
		})
	}
}

func TestAdminTokens(t *testing.T) {
	cfg := testCluster(t, secretSection)
	creds, err := Load(cfg, "alpha", nil)
	require.NoError(t, err)
	now := time.Unix(1_800_000_000, 0)
	h := creds.adminHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), func() time.Time { return now })
	post := func(auth string) int {
		r := httptest.NewRequest(http.MethodPost, "/primary?force=1", nil)
		r.Header.Set("Authorization", auth)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	good := token(creds.adminKey, "c1", "alpha", http.MethodPost, "/primary?force=1", now)
	cases := []struct {
		name, auth string
		code       int
	}{
		{"valid", good, http.StatusOK},
		{"replayed", good, http.StatusUnauthorized},
		{"other query", token(creds.adminKey, "c1", "alpha", http.MethodPost, "/primary", now), http.StatusUnauthorized},
		{"other member", token(creds.adminKey, "c1", "beta", http.MethodPost, "/primary?force=1", now), http.StatusUnauthorized},
		{"other cluster", token(creds.adminKey, "c2", "alpha", http.MethodPost, "/primary?force=1", now), http.StatusUnauthorized},
		{"other method", token(creds.adminKey, "c1", "alpha", http.MethodGet, "/primary?force=1", now), http.StatusUnauthorized},
		{"wrong secret", token(adminKey([]byte("another secret of 32 bytes......")), "c1", "alpha", http.MethodPost, "/primary?force=1", now), http.StatusUnauthorized},
		{"too old", token(creds.adminKey, "c1", "alpha", http.MethodPost, "/primary?force=1", now.Add(-MaxTokenAge-time.Second)), http.StatusUnauthorized},
		{"from the future", token(creds.adminKey, "c1", "alpha", http.MethodPost, "/primary?force=1", now.Add(MaxTokenAge+time.Second)), http.StatusUnauthorized},
		{"slightly skewed", token(creds.adminKey, "c1", "alpha", http.MethodPost, "/primary?force=1", now.Add(time.Minute)), http.StatusOK},
		{"garbage", "GRBD-HMAC t=x,n=y,mac=z", http.StatusUnauthorized},
		{"other scheme", "Bearer abc", http.StatusUnauthorized},
		{"none", "", http.StatusUnauthorized},
	}
	for _, c := range cases {
		require.Equal(t, c.code, post(c.auth), c.name)
	}
	require.True(t, strings.HasPrefix(good, "GRBD-HMAC t=1800000000,n="))
}

func TestAdminAuthAll(t *testing.T) {
	cfg := testCluster(t, secretSection+"  admin-auth: all\n")
	addr, _ := adminServer(t, cfg, "alpha")
	alpha, _, _ := cfg.Member("alpha")
	alpha.Admin = addr
	_, err := (&Client{cfg: cfg}).Do(context.Background(), alpha, http.MethodGet, "/status")
	require.ErrorIs(t, err, ErrUnauthorized)
	cli, err := NewClient(cfg, "", "")
	require.NoError(t, err)
	resp, err := cli.Do(context.Background(), alpha, http.MethodGet, "/status")
	require.NoError(t, err)
	resp.Body.Close()
}

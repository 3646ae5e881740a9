package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var now = time.Now()

func parse(t *testing.T, certPEM []byte) []*x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	require.NotNil(t, b)
	c, err := x509.ParseCertificate(b.Bytes)
	require.NoError(t, err)
	return []*x509.Certificate{c}
}

func pool(a *Authority) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.Cert)
	return p
}

func TestMemberOf(t *testing.T) {
	ca, err := NewAuthority("prod", now, 24*time.Hour)
	require.NoError(t, err)
	other, err := NewAuthority("prod", now, 24*time.Hour)
	require.NoError(t, err)
	issue := func(a *Authority, req Request) []*x509.Certificate {
		c, _, err := a.Issue(req, now)
		require.NoError(t, err)
		return parse(t, c)
	}
	alpha := issue(ca, MemberRequest("prod", "alpha", time.Hour))
	cases := []struct {
		name    string
		chain   []*x509.Certificate
		cluster string
		member  string
		ok      bool
	}{
		{"own certificate", alpha, "prod", "alpha", true},
		{"another member's name", alpha, "prod", "beta", false},
		{"another cluster", alpha, "test", "alpha", false},
		{"another CA", issue(other, MemberRequest("prod", "alpha", time.Hour)), "prod", "alpha", false},
		{"server-only certificate", issue(ca, Request{CommonName: "alpha", DNSNames: []string{"alpha"}, Usage: UsageServer, Validity: time.Hour}), "prod", "alpha", false},
		{"client-only certificate", issue(ca, Request{CommonName: "alpha", Usage: UsageClient, Validity: time.Hour}), "prod", "alpha", false},
		{"foreign certificate by CN", issue(ca, Request{CommonName: "alpha", Usage: UsageMember, Validity: time.Hour}), "prod", "alpha", true},
		{"foreign certificate by DNS SAN", issue(ca, Request{CommonName: "x", DNSNames: []string{"alpha"}, Usage: UsageMember, Validity: time.Hour}), "prod", "alpha", true},
		{"grbd URI wins over CN", issue(ca, Request{CommonName: "alpha", URIs: []*url.URL{MemberURI("prod", "beta")}, Usage: UsageMember, Validity: time.Hour}), "prod", "alpha", false},
		{"expired", func() []*x509.Certificate {
			c, _, err := ca.Issue(MemberRequest("prod", "alpha", time.Hour), now.Add(-48*time.Hour))
			require.NoError(t, err)
			return parse(t, c)
		}(), "prod", "alpha", false},
		{"no certificate", nil, "prod", "alpha", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := MemberOf(c.chain, pool(ca), c.cluster, c.member)
			if c.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ErrNotMember)
			}
		})
	}
}

func TestFilesAndPermissions(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewAuthority("prod", time.Now(), time.Hour)
	require.NoError(t, err)
	keyPEM, err := EncodeKey(ca.Key)
	require.NoError(t, err)
	cf, kf := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	require.NoError(t, os.WriteFile(cf, ca.CertPEM(), 0o644))
	require.NoError(t, os.WriteFile(kf, keyPEM, 0o644))
	_, err = LoadAuthority(cf, kf)
	require.ErrorIs(t, err, ErrKeyPermissions)
	require.NoError(t, os.Chmod(kf, 0o600))
	back, err := LoadAuthority(cf, kf)
	require.NoError(t, err)
	require.True(t, back.Cert.Equal(ca.Cert))

	_, err = LoadKeyPair(cf, kf)
	require.NoError(t, err)
	p, err := LoadPool(cf)
	require.NoError(t, err)
	require.NotNil(t, p)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("junk"), 0o644))
	_, err = LoadPool(filepath.Join(dir, "junk.pem"))
	require.ErrorIs(t, err, ErrPEM)
	_, err = LoadPool(filepath.Join(dir, "missing.pem"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

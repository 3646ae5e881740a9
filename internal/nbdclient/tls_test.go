package nbdclient

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/grbd/grbd/internal/pki"
	"github.com/stretchr/testify/require"
)

// TestStartTLS: with Options.TLS the client upgrades before NBD_OPT_GO and
// works against a FORCEDTLS server requiring client certificates; without
// it, such a server refuses the handshake.
func TestStartTLS(t *testing.T) {
	ca, err := pki.NewAuthority("t", time.Now(), time.Hour)
	require.NoError(t, err)
	sc, sk, err := ca.Issue(pki.Request{CommonName: "nbd", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: pki.UsageServer, Validity: time.Hour}, time.Now())
	require.NoError(t, err)
	cc, ck, err := ca.Issue(pki.Request{CommonName: "client", Usage: pki.UsageClient, Validity: time.Hour}, time.Now())
	require.NoError(t, err)
	spair, err := tls.X509KeyPair(sc, sk)
	require.NoError(t, err)
	cpair, err := tls.X509KeyPair(cc, ck)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)

	dev := newMemDev(1 << 20)
	_, addr := serve(t, dev, blockdev.Options{TLSRequired: true, TLS: &tls.Config{MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{spair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}})

	c := dial(t, addr, Options{TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cpair}}})
	require.EqualValues(t, 1<<20, c.Size())
	require.NoError(t, c.WriteAt(ctxT(t), []byte("over tls"), 4096, 0))
	got := make([]byte, 8)
	require.NoError(t, c.ReadAt(ctxT(t), got, 4096))
	require.Equal(t, "over tls", string(got))

	_, err = Dial(ctxT(t), addr, Options{})
	require.ErrorIs(t, err, ErrOptionRefused, "plain text against FORCEDTLS")
	_, err = Dial(ctxT(t), addr, Options{TLS: &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1"}})
	require.Error(t, err, "a server the client cannot verify")
}

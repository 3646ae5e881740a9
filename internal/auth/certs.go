package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/pki"
)

// Files written by InitCerts under its directory. The member and NBD file
// names follow the {name} convention of the config.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	MemberCert    = "{name}.pem"
	MemberKey     = "{name}-key.pem"
	NBDCert       = "nbd/{name}.pem"
	NBDKey        = "nbd/{name}-key.pem"
	NBDClientDir  = "nbd-client" // libnbd's tls-certificates layout
	SecretFile    = "secret"
	DefaultExpiry = 10 * 365 * 24 * time.Hour
)

// InitOptions tune InitCerts.
type InitOptions struct {
	Validity time.Duration // of the CA and every certificate; default DefaultExpiry
	Secret   bool          // also write a random shared secret
	Now      time.Time     // default time.Now()
}

// InitCerts creates, under dir, a CA for cfg's cluster and the certificates
// its members, the CLI and the NBD exports use (docs/security.md, "grbd certs
// init"). Files that exist already are kept (an existing CA issues the
// missing certificates, e.g. for a member added later). It returns the files
// it wrote. Keys and the secret are written with mode 0600.
func InitCerts(cfg *config.Config, dir string, o InitOptions) ([]string, error) {
	if o.Validity == 0 {
		o.Validity = DefaultExpiry
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	w := &certWriter{dir: dir, o: o}
	ca, err := w.authority(cfg.Cluster)
	if err == nil {
		err = w.memberCerts(cfg, ca)
	}
	if err == nil {
		err = w.clientCerts(ca)
	}
	if err == nil && o.Secret {
		err = w.secret()
	}
	return w.wrote, err
}

// certWriter creates the files of InitCerts in dir, never over an existing
// one, and lists what it wrote.
type certWriter struct {
	dir   string
	o     InitOptions
	wrote []string
}

// write creates dir/name with b.
func (w *certWriter) write(name string, b []byte, mode os.FileMode) error {
	p := filepath.Join(w.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	w.wrote = append(w.wrote, p)
	return nil
}

// exists reports whether all of names exist; some but not all is an error
// (a certificate without its key, say).
func (w *certWriter) exists(names ...string) (bool, error) {
	n := 0
	for _, name := range names {
		_, err := os.Stat(filepath.Join(w.dir, name))
		switch {
		case err == nil:
			n++
		case !errors.Is(err, fs.ErrNotExist):
			return false, err
		}
	}
	if n != 0 && n != len(names) {
		return false, fmt.Errorf("auth: %v: some exist and some do not: remove the rest or restore them", names)
	}
	return n == len(names), nil
}

// issue writes a certificate and key for req unless both exist.
func (w *certWriter) issue(certName, keyName string, req pki.Request, ca *pki.Authority) error {
	ok, err := w.exists(certName, keyName)
	if err != nil || ok {
		return err
	}
	c, k, err := ca.Issue(req, w.o.Now)
	if err != nil {
		return err
	}
	if err := w.write(certName, c, 0o644); err != nil {
		return err
	}
	return w.write(keyName, k, 0o600)
}

// authority loads the cluster's CA, or creates it.
func (w *certWriter) authority(cluster string) (*pki.Authority, error) {
	haveCA, err := w.exists(CAFile, CAKeyFile)
	if err != nil {
		return nil, err
	}
	if haveCA {
		return pki.LoadAuthority(filepath.Join(w.dir, CAFile), filepath.Join(w.dir, CAKeyFile))
	}
	ca, err := pki.NewAuthority(cluster, w.o.Now, w.o.Validity)
	if err != nil {
		return nil, err
	}
	key, err := pki.EncodeKey(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := w.write(CAFile, ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	if err := w.write(CAKeyFile, key, 0o600); err != nil {
		return nil, err
	}
	return ca, nil
}

// memberCerts issues each member's certificate and each data node's NBD
// server certificate.
func (w *certWriter) memberCerts(cfg *config.Config, ca *pki.Authority) error {
	members := append([]config.Member(nil), cfg.Nodes...)
	if cfg.Witness != nil {
		members = append(members, *cfg.Witness)
	}
	for _, m := range members {
		req := pki.MemberRequest(cfg.Cluster, m.Name, w.o.Validity)
		// The admin endpoint serves HTTPS with the member certificate;
		// clients that check addresses find them here.
		req.IPs, req.DNSNames = hostSANs(req.DNSNames, m.Admin)
		if err := w.issue(config.MemberPath(MemberCert, m.Name), config.MemberPath(MemberKey, m.Name), req, ca); err != nil {
			return err
		}
	}
	for _, m := range cfg.Nodes {
		ips, dns := hostSANs(nil, m.NBD)
		req := pki.Request{CommonName: m.Name + " nbd", DNSNames: dns, IPs: ips, Usage: pki.UsageServer, Validity: w.o.Validity}
		if err := w.issue(config.MemberPath(NBDCert, m.Name), config.MemberPath(NBDKey, m.Name), req, ca); err != nil {
			return err
		}
	}
	return nil
}

// clientCerts issues the CLI's admin client certificate and the NBD
// clients' certificate, with a copy of the CA for the NBD clients.
func (w *certWriter) clientCerts(ca *pki.Authority) error {
	admin := pki.Request{CommonName: "admin", Usage: pki.UsageClient, Validity: w.o.Validity}
	if err := w.issue(DefaultAdminCert, DefaultAdminKey, admin, ca); err != nil {
		return err
	}
	nbdClient := pki.Request{CommonName: "nbd client", Usage: pki.UsageClient, Validity: w.o.Validity}
	if err := w.issue(filepath.Join(NBDClientDir, "client-cert.pem"), filepath.Join(NBDClientDir, "client-key.pem"), nbdClient, ca); err != nil {
		return err
	}
	caCopy := filepath.Join(NBDClientDir, "ca-cert.pem")
	if ok, err := w.exists(caCopy); err != nil || ok {
		return err
	}
	return w.write(caCopy, ca.CertPEM(), 0o644)
}

// secret writes a new shared secret unless one exists.
func (w *certWriter) secret() error {
	if ok, err := w.exists(SecretFile); err != nil || ok {
		return err
	}
	p := filepath.Join(w.dir, SecretFile)
	if err := NewSecretFile(p); err != nil {
		return err
	}
	w.wrote = append(w.wrote, p)
	return nil
}

// NewSecretFile writes a new random shared secret (32 bytes, hex) to path
// with mode 0600; an existing file is an error.
func NewSecretFile(path string) error {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	_, err = f.Write([]byte(hex.EncodeToString(b[:]) + "\n"))
	return errors.Join(err, f.Close())
}

// hostSANs adds the host of addr (host:port) to dns, or returns it as an IP.
func hostSANs(dns []string, addr string) ([]net.IP, []string) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return nil, dns
	}
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, dns
	}
	return nil, append(dns, host)
}

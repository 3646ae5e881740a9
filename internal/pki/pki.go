// Package pki is grbd's small certificate authority: it creates a cluster CA
// and the certificates `grbd certs init` hands out (one per member, one for
// the CLI, one per NBD export), loads them for TLS, and decides whether a
// peer's certificate names a given member of a given cluster.
//
// Keys are ECDSA P-256 and written as PKCS#8 PEM with mode 0600; loading a
// key file that others may read is refused, as ssh does.
//
// A member certificate carries, for member NAME of cluster CLUSTER:
//
//	Subject CN     NAME
//	DNS SAN        NAME
//	URI SAN        grbd://CLUSTER/NAME
//	ExtKeyUsage    ServerAuth and ClientAuth (any member may dial or accept)
//
// MemberOf accepts a certificate for NAME when it chains to the cluster CA,
// has both key usages, and either carries the URI SAN above or, if it has no
// grbd URI SAN at all (certificates made by another tool), a DNS SAN or CN
// equal to NAME. The usages keep the CLI's and the NBD exports' certificates
// (one usage each) from passing as members.
//
// The package has no state; everything is safe for concurrent use.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotMember: a certificate does not name the expected member of the
	// cluster (or does not chain to the cluster CA).
	ErrNotMember = errors.New("pki: certificate does not name the member")
	// ErrKeyPermissions: a private key or secret file is readable by others.
	ErrKeyPermissions = errors.New("pki: file permissions too open")
	// ErrPEM: a file holds no usable PEM block.
	ErrPEM = errors.New("pki: bad PEM file")
)

// URIScheme is the scheme of the member URI SAN.
const URIScheme = "grbd"

// MemberURI is the URI SAN of member name in cluster: grbd://cluster/name.
func MemberURI(cluster, name string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: cluster, Path: "/" + name}
}

// Authority is a cluster CA: its certificate and private key.
type Authority struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Usage selects the extended key usages of an issued certificate.
type Usage int

// Usages.
const (
	UsageMember Usage = iota // ServerAuth and ClientAuth
	UsageServer              // ServerAuth only (an NBD export)
	UsageClient              // ClientAuth only (the CLI, NBD clients)
)

// Request describes a certificate to issue.
type Request struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	URIs       []*url.URL
	Usage      Usage
	Validity   time.Duration
}

// MemberRequest is the request for member name of cluster.
func MemberRequest(cluster, name string, validity time.Duration) Request {
	return Request{CommonName: name, DNSNames: []string{name}, URIs: []*url.URL{MemberURI(cluster, name)},
		Usage: UsageMember, Validity: validity}
}

// NewAuthority creates a self-signed CA for cluster, valid from now.
func NewAuthority(cluster string, now time.Time, validity time.Duration) (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "grbd CA " + cluster, Organization: []string{"grbd " + cluster}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &Authority{Cert: cert, Key: key}, nil
}

// Issue creates a key and a certificate signed by a, valid from now; it
// returns both as PEM.
func (a *Authority) Issue(req Request, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	var usages []x509.ExtKeyUsage
	switch req.Usage {
	case UsageMember:
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	case UsageServer:
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case UsageClient:
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	notAfter := now.Add(req.Validity)
	if notAfter.After(a.Cert.NotAfter) {
		notAfter = a.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: req.CommonName, Organization: a.Cert.Subject.Organization},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPs,
		URIs:         req.URIs,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, &key.PublicKey, a.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %q: %w", req.CommonName, err)
	}
	keyPEM, err = EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// CertPEM is a's certificate as PEM.
func (a *Authority) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Cert.Raw})
}

// EncodeKey returns key as PKCS#8 PEM.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// LoadAuthority reads a CA certificate and its key (as written by
// `grbd certs init`).
func LoadAuthority(certFile, keyFile string) (*Authority, error) {
	pair, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("%w: %s is not an ECDSA CA", ErrPEM, certFile)
	}
	return &Authority{Cert: pair.Leaf, Key: key}, nil
}

// LoadPool reads the PEM certificates of file into a pool.
func LoadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w: %s holds no certificate", ErrPEM, file)
	}
	return pool, nil
}

// LoadKeyPair reads a certificate (chain) and its private key; the key file
// must not be accessible to group or others.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if err := CheckPrivate(keyFile); err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: %s, %s: %w", ErrPEM, certFile, keyFile, err)
	}
	return pair, nil // Leaf is set by LoadX509KeyPair since Go 1.23
}

// CheckPrivate refuses a file (key or secret) that group or others may
// access.
func CheckPrivate(file string) error {
	fi, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o: chmod 600 it", ErrKeyPermissions, file, perm)
	}
	return nil
}

// MemberOf checks that chain (the peer's certificates, leaf first) chains
// to roots, allows both server and client authentication, and names member
// name of cluster (see the package documentation).
func MemberOf(chain []*x509.Certificate, roots *x509.CertPool, cluster, name string) error {
	leaf, err := verify(chain, roots, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	if !names(leaf, cluster, name) {
		return fmt.Errorf("%w: certificate %q is not %q of cluster %q", ErrNotMember, leaf.Subject.CommonName, name, cluster)
	}
	return nil
}

// Chains checks that chain chains to roots for every usage given and returns
// its leaf; the caller decides which names it accepts.
func Chains(chain []*x509.Certificate, roots *x509.CertPool, usages ...x509.ExtKeyUsage) (*x509.Certificate, error) {
	return verify(chain, roots, usages...)
}

// Names reports whether leaf names member name of cluster.
func Names(leaf *x509.Certificate, cluster, name string) bool { return names(leaf, cluster, name) }

func verify(certs []*x509.Certificate, roots *x509.CertPool, usages ...x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrNotMember)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	// x509 accepts a chain valid for any one of KeyUsages; each usage is
	// required here, so verify once per usage.
	for _, u := range usages {
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotMember, err)
		}
	}
	return certs[0], nil
}

func names(leaf *x509.Certificate, cluster, name string) bool {
	want := MemberURI(cluster, name).String()
	hasGrbd := false
	for _, u := range leaf.URIs {
		if u.Scheme == URIScheme {
			hasGrbd = true
			if u.String() == want {
				return true
			}
		}
	}
	if hasGrbd {
		return false // a grbd certificate for another member or cluster
	}
	return leaf.Subject.CommonName == name || slices.Contains(leaf.DNSNames, name)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

package config

import (
	"errors"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser: it must never panic, every
// rejection must be ErrInvalid, and whatever it accepts must survive a
// Marshal/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("cluster: a\ndevice:\n  size: 4KiB\nnodes:\n  - {name: a, address: 'h:1', nbd: 'h:2', admin: 'h:3', data-dir: d}\n"))
	f.Add([]byte("cluster: [\n"))
	f.Add([]byte("nodes: !!binary AAAA\n"))
	f.Add([]byte("device: {size: 99999999999TiB}\n"))
	f.Add([]byte(good + "security:\n  tls: {ca: ca.pem, cert: '{name}.pem', key: '{name}-key.pem'}\n  shared-secret-file: s\n  admin-auth: all\n" +
		"nbd:\n  tls: {cert: n.pem, key: n-key.pem, ca: c.pem}\n  tls-required: true\n  max-connections: 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("rejection is not ErrInvalid: %v", err)
			}
			return
		}
		b, err := c.Marshal()
		if err != nil {
			t.Fatalf("marshal accepted config: %v", err)
		}
		c2, err := Parse("fuzz.yaml", b)
		if err != nil {
			t.Fatalf("re-parse of marshalled config: %v\n%s", err, b)
		}
		if c2.Cluster != c.Cluster || c2.Device != c.Device || len(c2.Nodes) != len(c.Nodes) ||
			(c.Security == nil) != (c2.Security == nil) || c2.NBD.MaxConnections != c.NBD.MaxConnections {
			t.Fatalf("round trip changed the config:\n%s", b)
		}
	})
}

package mesh

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/stretchr/testify/require"
)

// FuzzSessionHandshake plays the other side of a session handshake with
// arbitrary bytes, against an acceptor ("b", which "a" dials, and which
// takes direct streams from "a" and "c") or a dialer ("a" dialing "b"),
// with or without a shared secret. The handshake must
// never panic or hang, must never take more than its frame limit from a
// peer, and with a secret no byte string may pass: a valid proof needs the
// secret and the fresh nonce of this handshake.
func FuzzSessionHandshake(f *testing.F) {
	helloOf := func(kind uint8, from, to string) []byte {
		return wire.AppendFrame(nil, &wire.StreamOpen{Kind: kind, Cluster: "c1", From: from, To: to})
	}
	hello := func(from, to string) []byte { return helloOf(wire.StreamControl, from, to) }
	challenge := wire.AppendFrame(nil, &wire.AuthChallenge{Method: wire.AuthHMACSHA256})
	proof := wire.AppendFrame(nil, &wire.AuthProof{})
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	for _, dialer := range []bool{false, true} {
		for _, secret := range []bool{false, true} {
			f.Add(hello("a", "b"), dialer, secret)
			f.Add(hello("b", "a"), dialer, secret)
			f.Add(cat(hello("a", "b"), challenge, proof), dialer, secret)
			f.Add(cat(challenge, proof, hello("b", "a")), dialer, secret)
			f.Add(cat(hello("a", "b"), wire.AppendFrame(nil, &wire.Control{Kind: wire.ControlRaft, Data: make([]byte, 2000)})), dialer, secret)
			f.Add([]byte("GRBD\x01\x0f\x00\x00"), dialer, secret)
			// Direct streams (direct.go): any member may dial one.
			f.Add(cat(helloOf(wire.StreamData, "a", "b"), challenge, proof), dialer, secret)
			f.Add(helloOf(wire.StreamResync, "c", "b"), dialer, secret)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, dialer, secret bool) {
		cfg := Config{Cluster: "c1", Self: "b", Peers: map[string]string{"a": "127.0.0.1:1", "c": "127.0.0.1:1"}, HandshakeTimeout: 2 * time.Second,
			DirectKinds: []uint8{wire.StreamData, wire.StreamResync}}
		if dialer {
			cfg.Self, cfg.Peers = "a", map[string]string{"b": "127.0.0.1:1"}
		}
		if secret {
			cfg.Security.Secret = []byte("a secret of at least 16 bytes")
		}
		m, err := New(cfg)
		require.NoError(t, err)
		defer m.Close()
		local, remote := net.Pipe()
		defer remote.Close()
		go func() { _, _ = io.Copy(io.Discard, remote) }()
		go func() { _, _ = remote.Write(in); remote.Close() }()
		_ = local.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
		var p *peer
		if dialer {
			p = m.peers["b"]
		}
		done := make(chan error, 1)
		go func() {
			c, _, _, err := m.sessionHandshake(local, p, dialer, wire.StreamControl)
			if c != nil {
				c.Close()
			}
			done <- err
		}()
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("handshake hung on %q", in)
		}
		local.Close()
		if secret {
			require.Error(t, err, "bytes without the secret passed the handshake")
		}
	})
}

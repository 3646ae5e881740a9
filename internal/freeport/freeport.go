// Package freeport hands out TCP ports for the servers that tests,
// benchmarks and the chaos harness start on loopback: the one place for a
// flake that was fixed twice, separately.
//
// Ports come from below the kernel's ephemeral range (32768 and up by
// default): a port picked by listening on ":0" comes from that range, and
// the source port of any outgoing connection (a member dialling its peer)
// may take it between the pick and the bind, or while a stopped node is
// restarted on it ("address already in use"). Each port is handed out once
// per process, so two servers of one test never share one.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// The range ports are picked from: below net.ipv4.ip_local_port_range's
// default start, above the well-known and most registered service ports.
const (
	low  = 20000
	high = 32000
)

// ErrNone: no port of the range could be bound.
var ErrNone = errors.New("freeport: no free port below the ephemeral range")

var (
	mu        sync.Mutex
	handedOut = map[string]bool{} // host:port
)

// Port returns a TCP port on host (an IP address) that was free a moment ago
// and that this process has not handed out before.
func Port(host string) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		port := low + rand.IntN(high-low)
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		if handedOut[addr] {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		handedOut[addr] = true
		return port, nil
	}
	return 0, fmt.Errorf("%w on %s", ErrNone, host)
}

// Addr is Port on 127.0.0.1, as host:port.
func Addr() (string, error) {
	p, err := Port("127.0.0.1")
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// Loopback is Addr for tests: it fails tb when no port is free.
func Loopback(tb testing.TB) string {
	tb.Helper()
	a, err := Addr()
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// LoopbackPort is Loopback's port.
func LoopbackPort(tb testing.TB) int {
	tb.Helper()
	p, err := Port("127.0.0.1")
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// Ports is n distinct Ports on host.
func Ports(host string, n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		p, err := Port(host)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// Package racetest lets compute-heavy tests run a sample under the race
// detector and in full without it. The race detector makes such tests 10-30x
// slower (a torn record cut at every byte, 150 power-loss seeds, maximal
// frames) while what it checks, the goroutines, is covered by the sample.
// make unit runs every package with -race and, alongside, the packages that
// use this one without it (NORACE_PKGS in the Makefile; internal/lint checks
// the list), so every case still runs on every make test.
package racetest

import "testing"

// Sample is n without the race detector and about n/8 with it (at least 1 when n > 0).
func Sample(n int) int {
	if Enabled && n > 0 {
		return max(1, n/8)
	}
	return n
}

// FullOnly skips t under the race detector: it runs in make unit's pass
// without it (a single-goroutine sweep, or one that builds and runs a planted
// bug in a child go test, which never has the race detector anyway).
func FullOnly(t testing.TB) {
	t.Helper()
	if Enabled {
		t.Skip("runs without -race, in make unit's second pass (NORACE_PKGS)")
	}
}

package racetest

import "testing"

func TestSample(t *testing.T) {
	for _, tc := range []struct{ n, race, plain int }{{0, 0, 0}, {1, 1, 1}, {7, 1, 7}, {150, 18, 150}} {
		want := tc.plain
		if Enabled {
			want = tc.race
		}
		if got := Sample(tc.n); got != want {
			t.Errorf("Sample(%d) = %d, want %d (race %v)", tc.n, got, want, Enabled)
		}
	}
}

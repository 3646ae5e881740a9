package quorum

import (
	"testing"
	"testing/quick"

	"github.com/stretchr/testify/require"
)

// naiveLeaseValid counts, at tick now, the voters whose acknowledgement is
// recent enough.
func naiveLeaseValid(acked []int64, q int, lease, now int64) bool {
	n := 0
	for _, a := range acked {
		if a != never && a > now-lease {
			n++
		}
	}
	return n >= q
}

func TestLeaseExpiryMatchesNaive(t *testing.T) {
	f := func(raw []int8, qRaw uint8, leaseRaw uint8, nowRaw int8) bool {
		acked := make([]int64, len(raw)%7)
		for i := range acked {
			if raw[i] < -100 {
				acked[i] = never
			} else {
				acked[i] = int64(raw[i])
			}
		}
		q := Majority(len(acked))
		if qRaw%3 == 0 {
			q = int(qRaw) % (len(acked) + 2)
		}
		lease, now := int64(leaseRaw%50)+1, int64(nowRaw)
		want := q > 0 && naiveLeaseValid(acked, q, lease, now)
		return (now < LeaseExpiry(acked, q, lease)) == want
	}
	require.NoError(t, quick.Check(f, &quick.Config{MaxCount: 20000}))
}

func TestLeaseExpiry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		acked []int64
		q     int
		want  int64
	}{
		{"all recent", []int64{10, 9, 8}, 2, 19},
		{"one silent", []int64{10, never, 8}, 2, 18},
		{"two silent", []int64{10, never, never}, 2, never},
		{"too few voters", []int64{10}, 2, never},
		{"no quorum size", []int64{10, 9}, 0, never},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, LeaseExpiry(tc.acked, tc.q, 10))
		})
	}
	require.Equal(t, 2, Majority(3))
	require.Equal(t, 3, Majority(4))
	require.Equal(t, 3, Majority(5))
}

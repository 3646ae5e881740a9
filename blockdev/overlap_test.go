package blockdev

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRangeOrder(t *testing.T) {
	type req struct {
		off, n int64
		write  bool
	}
	for _, tc := range []struct {
		name    string
		earlier []req
		next    req
		waits   []int // indexes into earlier
	}{
		{"no overlap", []req{{0, 4096, true}}, req{4096, 4096, true}, nil},
		{"write after write", []req{{0, 8192, true}}, req{4096, 4096, true}, []int{0}},
		{"read after write", []req{{0, 8192, true}}, req{4096, 512, false}, []int{0}},
		{"write after read", []req{{0, 8192, false}}, req{0, 1, true}, []int{0}},
		{"read after read", []req{{0, 8192, false}}, req{0, 8192, false}, nil},
		{"several", []req{{0, 4096, true}, {4096, 4096, false}, {100000, 1, true}, {0, 10000, true}}, req{0, 8192, true}, []int{0, 1, 3}},
		{"touching ends", []req{{0, 4096, true}, {8192, 4096, true}}, req{4096, 4096, true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o rangeOrder
			var entries []*rangeEntry
			for _, r := range tc.earlier {
				e, _ := o.add(r.off, r.n, r.write)
				entries = append(entries, e)
			}
			_, before := o.add(tc.next.off, tc.next.n, tc.next.write)
			var want []*rangeEntry
			for _, i := range tc.waits {
				want = append(want, entries[i])
			}
			require.Equal(t, want, before)
			for _, e := range entries {
				o.end(e)
			}
			waitEntries(before) // all ended: must not block
			require.Len(t, o.live, 1)
		})
	}
}

package ecpeer

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPlanTakeover(t *testing.T) {
	t.Parallel()
	sv := func(name string, shard int, last, applied uint64) shardSurvivor {
		return shardSurvivor{Name: name, Shard: shard, Reached: true, Consistent: true, Last: last, Applied: applied}
	}
	names := func(p takeoverPlan) []string {
		var out []string
		for _, s := range p.Usable {
			out = append(out, s.Name)
		}
		return out
	}
	cases := []struct {
		name   string
		k      int
		in     []shardSurvivor
		d      uint64
		usable []string
		err    error
	}{
		{"all equal", 2, []shardSurvivor{sv("a", 0, 10, 10), sv("b", 1, 10, 10), sv("c", 2, 10, 9)}, 10, []string{"a", "b", "c"}, nil},
		{"write hole: D is the lowest journal", 2, []shardSurvivor{sv("a", 0, 106, 104), sv("b", 1, 105, 104), sv("c", 2, 104, 104)}, 104, []string{"a", "b", "c"}, nil},
		{"image past D is unusable", 2, []shardSurvivor{sv("a", 0, 106, 106), sv("b", 1, 105, 103), sv("c", 2, 104, 104)}, 104, []string{"b", "c"}, nil},
		{"too few at D", 2, []shardSurvivor{sv("a", 0, 106, 106), sv("b", 1, 105, 105), sv("c", 2, 104, 104)}, 0, nil, ErrTooFewShards},
		{"outdated, unreached, inconsistent do not count", 2, []shardSurvivor{
			sv("a", 0, 50, 50),
			{Name: "b", Shard: 1, Reached: true, Outdated: true, Consistent: true, Last: 10, Applied: 10},
			{Name: "c", Shard: 2, Reached: false},
			{Name: "d", Shard: 3, Reached: true, Consistent: false, Last: 5, Applied: 5},
		}, 0, nil, ErrTooFewShards},
		{"outdated laggard does not lower D", 2, []shardSurvivor{
			sv("a", 0, 50, 49), sv("c", 2, 51, 50),
			{Name: "b", Shard: 1, Reached: true, Outdated: true, Consistent: true, Last: 10, Applied: 10},
		}, 50, []string{"a", "c"}, nil},
		{"nobody", 1, nil, 0, nil, ErrTooFewShards},
		{"k=1 alone", 1, []shardSurvivor{sv("a", 3, 0, 0)}, 0, []string{"a"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := planTakeover(c.k, c.in)
			if c.err != nil {
				require.ErrorIs(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.d, p.D)
			require.Equal(t, c.usable, names(p))
		})
	}
}

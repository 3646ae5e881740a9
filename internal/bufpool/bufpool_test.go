package bufpool

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClasses(t *testing.T) {
	for _, tc := range []struct{ n, class int }{
		{1, 0}, {4096, 0}, {4097, 1}, {8192, 1}, {1 << 20, 8}, {1<<20 + 1, 9}, {Max, numClasses - 1},
	} {
		require.Equal(t, tc.class, classOf(tc.n), "n=%d", tc.n)
		if tc.n > 1<<21 {
			continue // do not allocate 256 MiB in a unit test
		}
		p := Get(tc.n)
		require.Len(t, *p, tc.n)
		require.Equal(t, 1<<(tc.class+minClassShift), cap(*p))
		Put(p)
	}
}

// Under the race detector a returned buffer is poisoned: a use after Put
// shows as bytes no test writes.
func TestPutPoisonsUnderRace(t *testing.T) {
	p := Get(4096)
	b := *p
	clear(b)
	Put(p)
	if poison {
		require.Equal(t, byte(poisonByte), b[0])
		require.Equal(t, byte(poisonByte), b[4095])
	} else {
		require.Equal(t, byte(0), b[0], "no cost without the race detector")
	}
}

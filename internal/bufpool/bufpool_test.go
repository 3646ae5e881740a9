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

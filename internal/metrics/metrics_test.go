package metrics

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistogramBuckets(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{0, time.Microsecond, 8192, 8193, 100 * time.Microsecond, time.Millisecond, time.Hour} {
		h.Observe(d)
	}
	s := h.Snapshot()
	require.Equal(t, uint64(7), s.Count())
	require.Equal(t, uint64(3), s.Buckets[0], "0, 1 µs and 8192 ns are <= 8.192 µs")
	require.Equal(t, uint64(1), s.Buckets[1], "8193 ns")
	require.Equal(t, uint64(1), s.Buckets[4], "100 µs <= 131.072 µs")
	require.Equal(t, uint64(1), s.Buckets[7], "1 ms <= 1.048576 ms")
	require.Equal(t, uint64(1), s.Buckets[numBounds], "an hour is +Inf")
	require.Greater(t, s.Sum, time.Hour)
	for i := range numBounds {
		require.Equal(t, time.Duration(8192)<<i, BucketBound(i))
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	var h Histogram
	require.Zero(t, testing.AllocsPerRun(1000, func() { h.Observe(123 * time.Microsecond) }))
}

func BenchmarkObserve(b *testing.B) {
	var h Histogram
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.Observe(50 * time.Microsecond)
		}
	})
}

func TestWriterRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Gauge("grbd_a", "a gauge\nwith a newline", 1.5)
	w.Counter("grbd_b_total", "a counter", 3, "op", "read")
	w.Counter("grbd_b_total", "a counter", 4, "op", `wr"ite\`)
	w.Bool("grbd_c", "a bool", true, "peer", "beta")
	var h Histogram
	h.Observe(time.Millisecond)
	w.Histogram("grbd_d_seconds", "a histogram", h.Snapshot(), "op", "read")
	require.NoError(t, w.Err())
	fams, err := Parse(&buf)
	require.NoError(t, err, buf.String())
	require.Equal(t, "gauge", fams["grbd_a"].Type)
	require.Equal(t, `a gauge\nwith a newline`, fams["grbd_a"].Help)
	require.Len(t, fams["grbd_b_total"].Samples, 2)
	require.Equal(t, `wr\"ite\\`, fams["grbd_b_total"].Samples[1].Labels["op"])
	require.Equal(t, 1.0, fams["grbd_c"].Samples[0].Value)
	d := fams["grbd_d_seconds"]
	require.Equal(t, "histogram", d.Type)
	require.Len(t, d.Samples, numBounds+3)
	last := d.Samples[numBounds]
	require.Equal(t, "+Inf", last.Labels["le"])
	require.Equal(t, 1.0, last.Value)
	require.Equal(t, "read", last.Labels["op"])
}

func TestParseRejects(t *testing.T) {
	for name, text := range map[string]string{
		"no type":       "grbd_x 1\n",
		"twice":         "# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\nb 1\n# HELP a x\n# TYPE a gauge\na 2\n",
		"bad value":     "# HELP a x\n# TYPE a gauge\na one\n",
		"bad label":     "# HELP a x\n# TYPE a gauge\na{op=read} 1\n",
		"foreign":       "# HELP a x\n# TYPE a gauge\nb 1\n",
		"bad type name": "# HELP a x\n# TYPE a meter\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(text))
			require.ErrorIs(t, err, ErrFormat)
		})
	}
}

func TestFormatValue(t *testing.T) {
	require.Equal(t, "67108864", formatValue(64<<20))
	require.Equal(t, "0", formatValue(0))
	require.Equal(t, "1.5", formatValue(1.5))
	require.Equal(t, "1e+20", formatValue(1e20))
}

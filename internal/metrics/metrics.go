// Package metrics writes Prometheus metrics in the text exposition format
// (version 0.0.4) and keeps latency histograms cheap enough for the I/O
// path: Observe is a few atomic adds, with no lock and no allocation.
//
// A Writer is used by one goroutine (one scrape); a Histogram is safe for
// concurrent use.
package metrics

import (
	"fmt"
	"io"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// ContentType is the media type of the text format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Histogram buckets: upper bounds of 8.192 µs doubled up to ~4.3 s, in
// nanoseconds, plus +Inf. Powers of two make Observe a shift and a bit
// count.
const (
	firstBoundShift = 13 // 8192 ns
	numBounds       = 20 // 8.192 µs .. 4.295 s
)

// Histogram counts durations into fixed buckets.
type Histogram struct {
	buckets [numBounds + 1]atomic.Uint64 // the last one is +Inf
	sumNs   atomic.Uint64
}

// Observe records d.
func (h *Histogram) Observe(d time.Duration) {
	ns := uint64(max(d, 1))
	i := min(bits.Len64((ns-1)>>firstBoundShift), numBounds)
	h.buckets[i].Add(1)
	h.sumNs.Add(ns)
}

// HistogramSnapshot is a histogram's counts at one moment.
type HistogramSnapshot struct {
	Buckets [numBounds + 1]uint64 // per bucket, not cumulative
	Sum     time.Duration
}

// Count is the number of observations.
func (s HistogramSnapshot) Count() uint64 {
	var n uint64
	for _, b := range s.Buckets {
		n += b
	}
	return n
}

// Snapshot reads the histogram. Buckets are read one by one: a snapshot
// taken during Observe calls may be off by those calls, never corrupt.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.buckets {
		s.Buckets[i] = h.buckets[i].Load()
	}
	s.Sum = time.Duration(h.sumNs.Load())
	return s
}

// BucketBound is the upper bound of bucket i (+Inf for the last).
func BucketBound(i int) time.Duration {
	if i >= numBounds {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(1) << (firstBoundShift + i)
}

// Writer writes metric families. Samples of one family must be written
// one after another: HELP and TYPE are written before the first sample of
// each family name.
type Writer struct {
	w    io.Writer
	last string
	err  error
}

// NewWriter writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Err is the first write error.
func (w *Writer) Err() error { return w.err }

// Gauge writes one sample of gauge name; labels are name, value pairs.
func (w *Writer) Gauge(name, help string, v float64, labels ...string) {
	w.family(name, help, "gauge")
	w.sample(name, labels, "", "", v)
}

// Counter writes one sample of counter name.
func (w *Writer) Counter(name, help string, v float64, labels ...string) {
	w.family(name, help, "counter")
	w.sample(name, labels, "", "", v)
}

// Bool writes a 0/1 gauge.
func (w *Writer) Bool(name, help string, b bool, labels ...string) {
	v := 0.0
	if b {
		v = 1
	}
	w.Gauge(name, help, v, labels...)
}

// Histogram writes histogram name in seconds.
func (w *Writer) Histogram(name, help string, s HistogramSnapshot, labels ...string) {
	w.family(name, help, "histogram")
	var cum uint64
	for i, b := range s.Buckets {
		cum += b
		le := "+Inf"
		if i < numBounds {
			le = strconv.FormatFloat(BucketBound(i).Seconds(), 'g', -1, 64)
		}
		w.sample(name+"_bucket", labels, "le", le, float64(cum))
	}
	w.sample(name+"_sum", labels, "", "", s.Sum.Seconds())
	w.sample(name+"_count", labels, "", "", float64(cum))
}

func (w *Writer) family(name, help, typ string) {
	if name == w.last {
		return
	}
	w.last = name
	w.printf("# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

func (w *Writer) sample(name string, labels []string, k, v string, val float64) {
	var b strings.Builder
	b.WriteString(name)
	if k != "" {
		labels = append(labels[:len(labels):len(labels)], k, v)
	}
	if len(labels) >= 2 {
		b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=\"%s\"", labels[i], escapeLabel(labels[i+1]))
		}
		b.WriteByte('}')
	}
	w.printf("%s %s\n", b.String(), formatValue(val))
}

// formatValue writes integers in full (readable: 67108864, not 6.7108864e+07)
// and other values in the shortest form that parses back exactly.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func (w *Writer) printf(format string, args ...any) {
	if w.err == nil {
		_, w.err = fmt.Fprintf(w.w, format, args...)
	}
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

package wire

import (
	"io"
	"testing"

	"github.com/grbd/grbd/internal/benchsize"
)

// BenchmarkWriteMsg frames Write messages into a discarding stream, building
// each message afresh as a driver would.
func BenchmarkWriteMsg(b *testing.B) {
	for _, size := range benchsize.Sizes {
		b.Run(benchsize.Name(size), func(b *testing.B) {
			data := fill(size)
			w := NewWriter(io.Discard)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			var seq uint64
			for b.Loop() {
				seq++
				if err := w.WriteMsg(&Write{Seq: seq, Epoch: 1, Offset: seq * 4096, Data: data}); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkReadMsg decodes Write messages from an endless stream.
func BenchmarkReadMsg(b *testing.B) {
	for _, size := range benchsize.Sizes {
		b.Run(benchsize.Name(size), func(b *testing.B) {
			var stream []byte
			for seq := uint64(1); len(stream) < 1<<20; seq++ {
				stream = AppendFrame(stream, &Write{Seq: seq, Epoch: 1, Offset: seq * 4096, Data: fill(size)})
			}
			r := NewReader(&cycleReader{b: stream})
			if _, err := r.ReadMsg(); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				m, err := r.ReadMsg()
				if err != nil {
					b.Fatal(err)
				}
				if w, ok := m.(*Write); !ok || len(w.Data) != size {
					b.Fatalf("read %v", m)
				}
			}
		})
	}
}

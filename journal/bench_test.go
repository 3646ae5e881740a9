package journal

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/grbd/grbd/internal/benchsize"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

func benchJournal(b *testing.B) *Journal {
	b.Helper()
	j, err := Open(Options{Dir: b.TempDir(), FS: vfs.Default, DeviceSize: 1 << 30})
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, j.Close()) })
	return j
}

// BenchmarkAppend: journal write + data-file write, no fdatasync (the NBD
// write path without FUA), on the OS file system.
func BenchmarkAppend(b *testing.B) {
	for _, size := range benchsize.Sizes {
		b.Run(benchsize.Name(size), func(b *testing.B) {
			j := benchJournal(b)
			data := make([]byte, size)
			slots := int64(256 << 20 / size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := j.Append(Write{Offset: int64(i) % slots * int64(size), Data: data}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendSync: every write made durable (FUA / sync: always), many
// concurrent writers sharing fdatasyncs through group commit.
func BenchmarkAppendSync(b *testing.B) {
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("size=4KiB/writers=%d", par*2), func(b *testing.B) {
			j := benchJournal(b)
			var next atomic.Int64
			b.SetBytes(4 << 10)
			b.ReportAllocs()
			b.SetParallelism(par)
			before := j.Stats().Syncs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				data := make([]byte, 4<<10)
				for pb.Next() {
					off := next.Add(1) % 65536 * 4096
					seq, err := j.Append(Write{Offset: off, Data: data})
					if err == nil {
						err = j.Sync(seq)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(j.Stats().Syncs-before)/float64(b.N), "fdatasyncs/op")
		})
	}
}

func BenchmarkEncodeRecord(b *testing.B) {
	r := Record{Write: Write{Seq: 1, Data: make([]byte, 4<<10)}}
	buf := make([]byte, 0, 8<<10)
	b.SetBytes(4 << 10)
	b.ReportAllocs()
	for range b.N {
		buf, _ = EncodeRecord(buf[:0], r)
	}
}

// BenchmarkAppendParallel: 4 KiB appends from many writers (the NBD server
// at QD32), no fdatasync.
func BenchmarkAppendParallel(b *testing.B) {
	j := benchJournal(b)
	data := make([]byte, 4<<10)
	var next atomic.Int64
	b.SetBytes(4 << 10)
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			if _, err := j.Append(Write{Offset: i % 65536 * 4096, Data: data}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReadAt: reads from the page cache, each block checked against
// its checksum (the cost of issue 5's checks on the read path); an
// unaligned read reads and checks the whole block around it.
func BenchmarkReadAt(b *testing.B) {
	for _, tc := range []struct {
		name string
		size int
		off  int64
	}{{"4KiB", 4 << 10, 0}, {"64KiB", 64 << 10, 0}, {"1MiB", 1 << 20, 0}, {"512B-unaligned", 512, 512}} {
		b.Run(tc.name, func(b *testing.B) {
			j := benchJournal(b)
			if _, err := j.Append(Write{Offset: 0, Data: make([]byte, 16<<20)}); err != nil {
				b.Fatal(err)
			}
			p := make([]byte, tc.size)
			slots := int64(16<<20) / int64(max(tc.size, 4096))
			b.SetBytes(int64(tc.size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := j.ReadAt(p, int64(i)%slots*int64(max(tc.size, 4096))+tc.off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

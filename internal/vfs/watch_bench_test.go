package vfs

import (
	"os"
	"path/filepath"
	"testing"
)

// The cost a watched file adds to a write: the start and end of the
// operation kept in a slot (a clock read and three atomic stores).
func BenchmarkWatchedWrite(b *testing.B) {
	for _, tc := range []struct {
		name string
		fs   FS
	}{{"plain", Default}, {"watched", Watch(Default)}} {
		b.Run(tc.name, func(b *testing.B) {
			f, err := tc.fs.OpenFile(filepath.Join(b.TempDir(), "f"), os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				off := int64(0)
				for pb.Next() {
					if _, err := f.WriteAt(buf, off); err != nil {
						b.Error(err)
						return
					}
					off = (off + 4096) % (64 << 20)
				}
			})
		})
	}
}

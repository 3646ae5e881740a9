package node

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkDeviceWrite: 4 KiB writes through the node's device (the NBD
// server's view) from 32 concurrent writers, single node and 2 data nodes +
// witness with protocol C.
func BenchmarkDeviceWrite(b *testing.B) {
	for _, shape := range []struct {
		name    string
		nodes   int
		witness bool
	}{{"nodes=1", 1, false}, {"nodes=2+w", 2, true}} {
		b.Run(shape.name, func(b *testing.B) {
			c := newTestCluster(b, shape.nodes, shape.witness, "")
			p := c.primary()
			data := make([]byte, 4096)
			var next atomic.Int64
			b.SetBytes(4096)
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1)
					if err := p.dev.WriteAt(data, i%1024*4096, false); err != nil {
						panic(fmt.Sprint(err))
					}
				}
			})
		})
	}
}

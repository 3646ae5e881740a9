// Package benchsize holds the write sizes the micro-benchmarks of the
// journal and the wire codec run at, and their names, so that the results
// of both line up (docs/benchmarks.md).
package benchsize

import "fmt"

// Sizes are a small write, a page, a large write in place and a 1 MiB one.
var Sizes = []int{512, 4 << 10, 64 << 10, 1 << 20}

// Name is a sub-benchmark's name for n bytes, e.g. "size=64KiB".
func Name(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("size=%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("size=%dKiB", n>>10)
	}
	return fmt.Sprintf("size=%dB", n)
}

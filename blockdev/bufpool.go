package blockdev

import (
	"math/bits"
	"sync"
)

// Payload buffers are pooled by power-of-two size class, from 4 KiB to
// 256 MiB (maxBlockSizeLimit). The pools hold *[]byte so that Put does not
// allocate; the pointer travels with its buffer for its whole life.
const (
	minClassShift = 12
	maxClassShift = 28
	numClasses    = maxClassShift - minClassShift + 1
)

var payloadPools [numClasses]sync.Pool

// classOf returns the index of the smallest class that holds n bytes.
func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// getBuf returns a buffer of length n (n <= 1<<maxClassShift). Its contents
// are whatever the previous user left.
func getBuf(n int) *[]byte {
	c := classOf(n)
	if p, ok := payloadPools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(c+minClassShift))
	return &b
}

// putBuf returns a buffer obtained from getBuf. The caller must not use it
// afterwards.
func putBuf(p *[]byte) {
	*p = (*p)[:cap(*p)]
	payloadPools[classOf(cap(*p))].Put(p)
}

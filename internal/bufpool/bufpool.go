// Package bufpool pools byte buffers by power-of-two size class, from 4 KiB
// to 256 MiB, for the I/O path: NBD request payloads (blockdev) and the
// copies of client writes the primary ships to its peers. A fresh 1 MiB
// buffer per write costs its page faults again and again; a pooled one is
// warm.
package bufpool

import (
	"math/bits"
	"sync"
)

// The pools hold *[]byte so that Put does not allocate; the pointer travels
// with its buffer for its whole life.
const (
	minClassShift = 12
	maxClassShift = 28
	numClasses    = maxClassShift - minClassShift + 1
)

// Max is the largest buffer Get returns.
const Max = 1 << maxClassShift

var pools [numClasses]sync.Pool

// classOf returns the index of the smallest class that holds n bytes.
func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// Get returns a buffer of length n (n <= Max). Its contents are whatever
// the previous user left.
func Get(n int) *[]byte {
	c := classOf(n)
	if p, ok := pools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(c+minClassShift))
	return &b
}

// poisonByte fills returned buffers under the race detector (poison).
const poisonByte = 0xdb

// Put returns a buffer obtained from Get. Nothing may use it afterwards.
func Put(p *[]byte) {
	*p = (*p)[:cap(*p)]
	if poison {
		for i := range *p {
			(*p)[i] = poisonByte
		}
	}
	pools[classOf(cap(*p))].Put(p)
}

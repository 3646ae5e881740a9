//go:build !linux

package journal

const oDirect = 0 // in-place writes go through the page cache

//go:build !grbd_plantbug_flush

package blockdev

// plantFlushBug is true only in binaries built with the tag
// grbd_plantbug_flush (see internal/proxy): a FLUSH then no longer waits for
// the writes received before it. Tests build it to show they catch that.
const plantFlushBug = false

//go:build grbd_plantbug_flush

package blockdev

// plantFlushBug: see plantbug_off.go. Never build a release with this tag.
const plantFlushBug = true

package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/primary"
)

// Online grow (grbd resize). The new size is a journal record in the write
// stream (docs/cli.md, "resize"): the primary appends it under the write
// lock with the next sequence number and ships it like a write, so every
// peer grows before any later write past the old end reaches it; it
// completes once every counted peer journaled and synced it. A peer that
// was away gets it through catch-up (a record like any other) or, in a
// region resync, from the primary's size re-announced first.

// ResizeAlign is the granularity of a device size (the config's
// device.size rule): NBD clients see whole 4 KiB blocks.
const ResizeAlign = 4096

// Errors of Resize callers branch on (besides ErrReadOnly and ErrFenced).
var (
	// ErrResizeNotLarger is returned for a size not above the current one:
	// the device only grows.
	ErrResizeNotLarger = primary.ErrResizeNotLarger
	// ErrResizeSize is returned for a size that is not a positive multiple
	// of ResizeAlign or is above journal.MaxDeviceSize.
	ErrResizeSize = errors.New("node: resize: invalid size")
)

// Resize grows the device to size bytes on every data node. Only the
// serving primary accepts it.
func (n *Node) Resize(size int64) error {
	switch {
	case size <= 0 || size%ResizeAlign != 0:
		return fmt.Errorf("%w: %d bytes is not a positive multiple of %d", ErrResizeSize, size, ResizeAlign)
	case size > journal.MaxDeviceSize:
		return fmt.Errorf("%w: %d bytes is above the limit of %d", ErrResizeSize, size, int64(journal.MaxDeviceSize))
	}
	if n.ec != nil {
		return fmt.Errorf("%w: resize (the shard layout is fixed by device.size)", ErrECUnsupported)
	}
	if n.currentPrimary() == nil {
		return fmt.Errorf("%s: %w: send resize to the primary (grbd status names it)", n.me.Name, ErrReadOnly)
	}
	prim, err := n.dev.serving()
	if err != nil {
		return err
	}
	if err := n.dev.complete(prim, prim.Resize(size)); err != nil {
		return err
	}
	n.grown("grbd resize completed on every counted peer")
	return nil
}

// grown records that the device grew (status shows the new size; events).
func (n *Node) grown(cause string) { n.resized(slog.LevelInfo, "device grown", cause) }

// shrunk records that a secondary took its primary's smaller size: it
// dropped bytes past it that no acknowledged write put there
// (docs/cli.md, "resize").
func (n *Node) shrunk(cause string) {
	n.resized(slog.LevelWarn, "device shrunk to the primary's size", cause)
}

// resized logs the store's new size at level with msg, and adds a resize
// event.
func (n *Node) resized(level slog.Level, msg, cause string) {
	size := n.store.Size()
	n.log.Log(context.Background(), level, msg, "size", size, "cause", cause)
	n.events.Add(Event{Type: events.TypeResize, Bytes: size, Cause: cause, Detail: fmt.Sprintf("device is %d bytes", size)})
}

// checkSize compares the store's size with device.size, which only names
// the size a store is created with. Larger: the device was grown (grbd
// resize) and the config is stale. Smaller: this node missed a grow while
// it was away (the primary's resize reaches it through catch-up or resync
// before any write past its end), or device.size was raised by hand, which
// grows nothing. Neither stops the node: the size that counts is the one
// in the write stream.
func (n *Node) checkSize() {
	size, want := n.store.Size(), int64(n.cfg.Device.Size)
	if n.shardPeer() {
		want = n.ec.Coder().G.ShardSize()
	}
	switch {
	case size > want:
		n.log.Warn("device is larger than device.size: it was grown with grbd resize; set device.size to the new size in the config on every host",
			"size", size, "device_size", want)
	case size < want:
		n.log.Warn("device is smaller than device.size: this node missed a grow and gets it from the primary, or device.size was raised by hand (use grbd resize to grow)",
			"size", size, "device_size", want)
	}
}

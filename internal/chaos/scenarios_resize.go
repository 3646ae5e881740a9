package chaos

import (
	"context"
	"fmt"
	"time"
)

// resizeStep is the unit of a round's grow: small, so that the thick
// provisioning of each grow stays quick; a run stops growing at
// resizeLimit (a soak's rounds would fill the disk).
const (
	resizeStep  = 4 << 20
	resizeLimit = 256 << 20
)

// injectResizeFailover grows the device under load with `grbd resize` and
// kills the primary at a random moment: 0-300 ms after the command started
// (a third of the rounds: before, during or right after its grow), right
// after it returned (a third), or not at all. A grow the
// command reported done must be on the node that takes over; any node's
// size is the old or the new one; the nodes end in sync with identical
// images (sizes included).
func injectResizeFailover(ctx context.Context, r *Run) error {
	for i := 0; r.Round(i, 1); i++ {
		prim, _, err := r.C.Primary(ctx)
		if err != nil {
			return err
		}
		st, err := r.C.Status(ctx, prim)
		if err != nil {
			return err
		}
		if st.DeviceSize >= resizeLimit {
			r.Note("device at %d bytes after %d rounds: no more grows", st.DeviceSize, i)
			return nil
		}
		old, grown := st.DeviceSize, st.DeviceSize+int64(1+r.Rand.IntN(4))*resizeStep
		mode := r.Rand.IntN(3)
		done := make(chan error, 1)
		go func() {
			_, err := r.grbd(ctx, "resize", "--size", fmt.Sprint(grown))
			done <- err
		}()
		var cmdErr error
		switch mode {
		case 0: // the command takes 0.1-0.3 s here, most of it to start
			t := time.NewTimer(time.Duration(r.Rand.Int64N(int64(300 * time.Millisecond))))
			select {
			case cmdErr = <-done:
				r.C.Kill(prim)
			case <-t.C:
				r.C.Kill(prim)
				cmdErr = <-done
			}
			t.Stop()
		default:
			cmdErr = <-done
			if mode == 1 {
				r.C.Kill(prim)
			}
		}
		r.C.Events().Add("resize", prim, "%d -> %d bytes: %v (mode %d)", old, grown, cmdErr, mode)
		if mode == 2 && cmdErr != nil {
			r.Anomaly("grbd resize to %d bytes failed with no fault: %v", grown, cmdErr)
		}
		next := prim
		if mode != 2 {
			if next, _, err = r.awaitFailover(ctx, prim, time.Now(), "in %v after a resize (status)"); err != nil {
				r.Anomaly("no failover after killing primary %s during a resize: %v", prim, err)
				return r.C.Start(ctx, prim)
			}
		}
		r.checkSize(ctx, next, old, grown, cmdErr == nil)
		if mode != 2 {
			if err := r.rejoin(ctx, prim); err != nil {
				return err
			}
		} else {
			r.WaitInSync(ctx, 60*time.Second)
		}
		for _, m := range r.C.DataNodes() {
			r.checkSize(ctx, m.Name, old, grown, cmdErr == nil)
		}
		r.expectWrites(ctx, 200, "no writes after a resize")
	}
	return nil
}

// checkSize: node's device is old or grown bytes, grown if the resize was
// reported done.
func (r *Run) checkSize(ctx context.Context, node string, old, grown int64, acked bool) {
	st, err := r.C.Status(ctx, node)
	switch {
	case err != nil:
		r.Note("size of %s unknown: %v", node, err)
	case acked && st.DeviceSize != grown:
		r.Anomaly("%s has %d bytes after a resize to %d was reported done", node, st.DeviceSize, grown)
	case st.DeviceSize != old && st.DeviceSize != grown:
		r.Anomaly("%s has %d bytes: neither the old size %d nor the new %d", node, st.DeviceSize, old, grown)
	}
}

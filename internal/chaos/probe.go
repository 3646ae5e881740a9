package chaos

import (
	"context"
	"errors"
	"time"

	"github.com/grbd/grbd/internal/nbdclient"
)

// probeResult is what probeWrites saw.
type probeResult struct {
	acked           int           // writes acknowledged
	ackedAfterFence int           // of those, after the first EIO
	fencedAt        time.Duration // first EIO, from the start; -1 if none
	lastErr         error         // last error other than EIO
}

// probeWrites writes one block at off on uri over and over (fresh
// connections as needed) for dur, to see when a member starts refusing
// writes with EIO and whether it ever acknowledges one afterwards.
func probeWrites(ctx context.Context, uri string, off int64, dur time.Duration) probeResult {
	res := probeResult{fencedAt: -1}
	start := time.Now()
	buf := make([]byte, BlockSize)
	var c *nbdclient.Client
	defer func() {
		if c != nil {
			go c.Close()
		}
	}()
	for time.Since(start) < dur && ctx.Err() == nil {
		if c == nil {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			var err error
			c, err = nbdclient.DialURI(dctx, uri, nbdclient.Options{CloseTimeout: 200 * time.Millisecond})
			cancel()
			if err != nil {
				res.lastErr, c = err, nil
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.WriteAt(wctx, buf, off, 0)
		cancel()
		switch {
		case err == nil:
			res.acked++
			if res.fencedAt >= 0 {
				res.ackedAfterFence++
			}
		case errors.Is(err, nbdclient.EIO):
			if res.fencedAt < 0 {
				res.fencedAt = time.Since(start)
			}
		default:
			res.lastErr = err
			go c.Close()
			c = nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return res
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"
)

// Outcome says how a measurement ended when it produced no figure.
type Outcome struct {
	Skipped string `json:"skipped,omitempty"` // why it could not run here
	Error   string `json:"error,omitempty"`   // why it failed
}

// outcome classifies err: ErrSkip is a skip, anything else a failure.
func outcome(err error) Outcome {
	switch {
	case err == nil:
		return Outcome{}
	case errors.Is(err, ErrSkip):
		return Outcome{Skipped: skipReason(err)}
	default:
		return Outcome{Error: err.Error()}
	}
}

// skipReason is the reason an ErrSkip error carries: its text after
// "bench: skipped: ".
func skipReason(err error) string {
	s := err.Error()
	marker := ErrSkip.Error() + ": "
	if i := strings.LastIndex(s, marker); i >= 0 {
		return s[i+len(marker):]
	}
	return s
}

// ResyncResult is a secondary's catch-up after it was away (SIGKILL) while
// the primary kept writing.
type ResyncResult struct {
	System       string  `json:"system"`
	Job          string  `json:"workload"`      // what the primary ran while the peer was away
	AwaySeconds  float64 `json:"away_seconds"`  // writing time while the peer was down
	BytesWritten uint64  `json:"bytes_written"` // NBD bytes written on the primary meanwhile
	BytesMoved   uint64  `json:"bytes_moved"`   // catchup_bytes the primary sent the peer
	// StartSeconds is the restarted peer's start-up (its own journal replay
	// included) until it printed its ready line; Seconds runs from then
	// until the primary reports it UpToDate with nothing behind.
	StartSeconds   float64 `json:"start_seconds"`
	Seconds        float64 `json:"seconds"`
	BytesPerSecond float64 `json:"bytes_per_second"`  // BytesMoved / Seconds
	Amplification  float64 `json:"moved_per_written"` // BytesMoved / BytesWritten
	Outcome
}

// measureResync kills a secondary of the running cluster cl, runs job on the
// primary (rendered in jobsDir), restarts the secondary and times its resync.
func measureResync(ctx context.Context, cl *GrbdCluster, jobsDir, job string) (ResyncResult, error) {
	r := ResyncResult{System: cl.Label, Job: job}
	p, _, ok := cl.primary(ctx, "")
	if !ok {
		return r, fmt.Errorf("%w: %s: no primary", ErrCluster, cl.Label)
	}
	var peer *member
	for _, m := range cl.dataNodes() {
		if m != p {
			peer = m
			break
		}
	}
	if peer == nil {
		return r, fmt.Errorf("%w: resync needs two data nodes", ErrSkip)
	}
	if err := cl.kill9(peer.name); err != nil {
		return r, err
	}
	// Wait until the primary noticed, so every write below is one the peer
	// misses.
	var before nodeStatus
	err := poll(ctx, 30*time.Second, 20*time.Millisecond, "the primary to notice the killed peer", func() (bool, error) {
		st, err := fetchStatus(ctx, p.admin)
		if err != nil {
			return false, err
		}
		ps, _ := st.peer(peer.name)
		before = st
		return ps.Connection != connConnected, nil
	})
	if err != nil {
		return r, err
	}
	start := time.Now()
	if _, err := runFio(ctx, jobsDir, job, before.NBD); err != nil {
		return r, err
	}
	r.AwaySeconds = time.Since(start).Seconds()
	after, err := fetchStatus(ctx, p.admin)
	if err != nil {
		return r, err
	}
	r.BytesWritten = after.IO.BytesWritten - before.IO.BytesWritten

	start = time.Now()
	if err := cl.restart(ctx, peer.name); err != nil {
		return r, err
	}
	ready := time.Now()
	r.StartSeconds = ready.Sub(start).Seconds()
	final, err := cl.waitInSync(ctx, 10*time.Minute)
	if err != nil {
		return r, err
	}
	r.Seconds = time.Since(ready).Seconds()
	fp, _ := final.peer(peer.name)
	bp, _ := before.peer(peer.name)
	r.BytesMoved = fp.CatchupBytes - bp.CatchupBytes
	r.BytesPerSecond = float64(r.BytesMoved) / r.Seconds
	if r.BytesWritten > 0 {
		r.Amplification = float64(r.BytesMoved) / float64(r.BytesWritten)
	}
	if r.BytesMoved == 0 {
		return r, fmt.Errorf("%w: %s: the peer came back UpToDate but the primary reports 0 catch-up bytes", ErrCluster, cl.Label)
	}
	return r, nil
}

// FailoverResult is the time from a SIGKILL of the primary, under queue
// depth 1 writes, to the first write acknowledged by a new primary.
type FailoverResult struct {
	System     string  `json:"system"`
	OldPrimary string  `json:"old_primary,omitempty"`
	NewPrimary string  `json:"new_primary,omitempty"`
	Seconds    float64 `json:"seconds"`     // kill -> first write acked by the new primary
	GapSeconds float64 `json:"gap_seconds"` // last ack by the old primary -> that write
	Outcome
}

// Failover limits: a node other than the killed primary must report role
// Primary within promoteTimeout, else the cluster has no automatic failover
// and the measurement is skipped; the new primary must then acknowledge a
// write within ackTimeout.
const (
	promoteTimeout = 10 * time.Second
	ackTimeout     = 30 * time.Second
)

// measureFailover writes 4 KiB blocks at queue depth 1 to the primary of
// the running cluster cl, kills it with SIGKILL, and times the first write
// a new primary acknowledges.
func measureFailover(ctx context.Context, cl *GrbdCluster, size int64) (FailoverResult, error) {
	r := FailoverResult{System: cl.Label}
	old, st, ok := cl.primary(ctx, "")
	if !ok {
		return r, fmt.Errorf("%w: %s: no primary", ErrCluster, cl.Label)
	}
	r.OldPrimary = old.name
	conn, err := dialNBD(st.NBD, 5*time.Second)
	if err != nil {
		return r, err
	}
	block := make([]byte, 4096)
	offset := func() uint64 { return uint64(rand.Int64N(size/4096)) * 4096 }
	var lastAck atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for conn.write(offset(), block, 5*time.Second) == nil {
			lastAck.Store(time.Now().UnixNano())
		}
	}()
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
	}
	if lastAck.Load() == 0 {
		conn.Close()
		<-done
		return r, fmt.Errorf("%w: %s: no write acknowledged before the kill", ErrCluster, cl.Label)
	}
	killed := time.Now()
	if err := cl.kill9(old.name); err != nil {
		return r, err
	}
	conn.Close()
	<-done

	var next *member
	err = poll(ctx, promoteTimeout, 20*time.Millisecond, "another node to become primary", func() (bool, error) {
		next, st, ok = cl.primary(ctx, old.name)
		return ok, nil
	})
	if errors.Is(err, ErrCluster) {
		return r, fmt.Errorf("%w: needs automatic failover (no node but the killed %s reported role Primary within %v)",
			ErrSkip, old.name, promoteTimeout)
	} else if err != nil {
		return r, err
	}
	r.NewPrimary = next.name
	var lastErr error
	err = poll(ctx, ackTimeout, 10*time.Millisecond, "a write acknowledged by the new primary "+next.name, func() (bool, error) {
		c, err := dialNBD(st.NBD, time.Second)
		if err != nil {
			lastErr = err
			return false, nil
		}
		defer c.Close()
		if lastErr = c.write(offset(), block, time.Second); lastErr != nil {
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return r, fmt.Errorf("%w (last error: %v)", err, lastErr)
	}
	acked := time.Now()
	r.Seconds = acked.Sub(killed).Seconds()
	r.GapSeconds = acked.Sub(time.Unix(0, lastAck.Load())).Seconds()
	return r, nil
}

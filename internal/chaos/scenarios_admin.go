package chaos

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// injectAdminOps runs, under load, what an operator runs on a live
// cluster, one command per round (each once in a short run, then at
// random): `grbd verify` must find the in-sync copies equal while writes
// go on; `grbd disconnect` must Outdate the secondary before it cuts its
// data path, and `grbd invalidate` must leave it Inconsistent until its
// full resync ends: half of those rounds kill the primary meanwhile, and
// the secondary must then not take over (it misses writes) until the old
// primary returns.
func injectAdminOps(ctx context.Context, r *Run) error {
	for i := 0; r.Round(i, 3); i++ {
		if !r.WaitInSync(ctx, 60*time.Second) {
			return nil
		}
		prim, sec, err := r.pair(ctx)
		if err != nil {
			return err
		}
		op := i
		if i >= 3 {
			op = r.Rand.IntN(3)
		}
		switch op {
		case 0:
			r.adminVerify(ctx)
		case 1:
			err = r.adminDisconnect(ctx, prim, sec)
		default:
			err = r.adminInvalidate(ctx, prim, sec)
		}
		if err != nil {
			return err
		}
		r.expectWrites(ctx, 200, "no writes after the round's command")
	}
	return nil
}

// grbd runs the grbd CLI against the cluster's config; a success is an
// event, a failure an error with the output's last line.
func (r *Run) grbd(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	args = append(args, "--config", r.C.ConfigPath())
	out, err := exec.CommandContext(ctx, r.C.cfg.Bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("grbd %s: %w: %s", strings.Join(args[:len(args)-2], " "), err, lastLine(string(out)))
	}
	r.C.Events().Add("admin", args[0], "%s", lastLine(string(out)))
	return string(out), nil
}

func (r *Run) adminVerify(ctx context.Context) {
	if out, err := r.grbd(ctx, "verify"); err != nil {
		r.Anomaly("online verify of in-sync copies under load: %v\n%s", err, out)
	}
}

// adminDisconnect runs disconnect on the primary (for the secondary) or on
// the secondary, at random.
func (r *Run) adminDisconnect(ctx context.Context, prim, sec string) error {
	on := []string{prim, "--peer", sec}
	if r.Rand.IntN(2) == 0 {
		on = []string{sec}
	}
	if _, err := r.grbd(ctx, append([]string{"disconnect"}, on...)...); err != nil {
		r.Anomaly("%v", err)
		return nil
	}
	if !r.awaitOutdated(ctx, prim, sec) {
		return nil
	}
	r.Sleep(ctx, 200*time.Millisecond, 2*time.Second)
	if r.Rand.IntN(2) == 0 {
		if err := r.noTakeoverWhileDown(ctx, prim, sec, "disconnected"); err != nil {
			return err
		}
		if on[0] == prim {
			return nil // restarted: a disconnect does not persist
		}
	}
	if _, err := r.grbd(ctx, append([]string{"connect"}, on...)...); err != nil {
		r.Anomaly("%v", err)
	}
	r.WaitInSync(ctx, 60*time.Second)
	return nil
}

func (r *Run) adminInvalidate(ctx context.Context, prim, sec string) error {
	if _, err := r.grbd(ctx, "invalidate", sec); err != nil {
		r.Anomaly("%v", err)
		return nil
	}
	if r.Rand.IntN(2) == 0 {
		r.Sleep(ctx, 0, 3*time.Second) // a full resync here takes about 4 s
		if err := r.noTakeoverWhileDown(ctx, prim, sec, "invalidated"); err != nil {
			return err
		}
	}
	r.WaitInSync(ctx, 60*time.Second)
	return nil
}

// noTakeoverWhileDown kills the primary while sec misses writes (how
// says why) and pauses the workload: sec must not become primary within
// 5 s; the primary returns, its reads go into the history, writes resume.
func (r *Run) noTakeoverWhileDown(ctx context.Context, prim, sec, how string) error {
	r.C.Kill(prim)
	r.W.Pause()
	defer r.W.Resume()
	if r.takesOver(ctx, sec) {
		r.Anomaly("the %s secondary %s took over from the killed %s", how, sec, prim)
	}
	return r.primaryReturns(ctx, prim)
}

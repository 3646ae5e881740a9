package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/events"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type eventsOptions struct {
	clusterOptions
	now bool
}

func (o *eventsOptions) AddFlags(fs *pflag.FlagSet) {
	o.clusterOptions.AddFlags(fs)
	fs.BoolVar(&o.now, "now", false, "print the events the members keep and exit (default: keep streaming)")
}

// eventsRetry is how long `grbd events` waits before it reconnects to a
// member whose stream ended.
const eventsRetry = time.Second

func newEventsCommand() *cobra.Command {
	o := &eventsOptions{}
	cmd := &cobra.Command{
		Use:   "events --config FILE [--name MEMBER] [--now]",
		Short: "Stream the members' state changes as JSON lines",
		Long: `Reads GET /events of every member (or of --name) and prints one JSON object
per line, like drbdsetup events2: first the events each member keeps (its
latest 256), then new ones as they happen, merged, until interrupted. Every
line names the member that logged it ("member"), its type, the new state and
its cause. With --now it prints what the members keep, oldest first, and exits.

When a member stops answering, a line {"type":"unreachable","member":...}
is printed, and {"type":"reachable",...} when it answers again; the stream
resumes without repeating events (each member numbers its events: "seq").
Exits non-zero with --now when no member answered.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, members, err := o.members()
			if err != nil {
				return err
			}
			out := &eventWriter{enc: json.NewEncoder(cmd.OutOrStdout())}
			client, err := o.client(cfg)
			if err != nil {
				return err
			}
			if o.now {
				return o.snapshot(cmd.Context(), client, members, out)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var wg sync.WaitGroup
			for _, m := range members {
				wg.Go(func() { o.follow(ctx, client, m, out) })
			}
			wg.Wait()
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// eventWriter prints events from several goroutines, one line each.
type eventWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *eventWriter) write(e events.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.enc.Encode(e)
}

// snapshot prints every member's kept events, oldest first.
func (o *eventsOptions) snapshot(ctx context.Context, client *auth.Client, members []config.Member, out *eventWriter) error {
	var (
		mu        sync.Mutex
		all       []events.Event
		reachable int
		wg        sync.WaitGroup
	)
	for _, m := range members {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, o.timeout)
			defer cancel()
			var got []events.Event
			err := readEvents(ctx, client, m, &streamPos{}, true, func(e events.Event) { got = append(got, e) })
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				all = append(all, unreachable(m, err))
				return
			}
			reachable++
			all = append(all, got...)
		})
	}
	wg.Wait()
	slices.SortStableFunc(all, func(a, b events.Event) int { return a.Time.Compare(b.Time) })
	for _, e := range all {
		out.write(e)
	}
	if reachable == 0 {
		return errors.New("events: no member answered")
	}
	return nil
}

// follow streams one member's events until ctx ends, reconnecting.
func (o *eventsOptions) follow(ctx context.Context, client *auth.Client, m config.Member, out *eventWriter) {
	pos := &streamPos{}
	up := true // assume reachable: say so only when it is not
	for ctx.Err() == nil {
		connected := false
		err := readEvents(ctx, client, m, pos, false, func(e events.Event) {
			if !connected {
				connected = true
				if !up {
					up = true
					out.write(events.Event{Time: time.Now(), Member: m.Name, Type: events.TypeReachable, Cause: "its admin endpoint answers again"})
				}
			}
			out.write(e)
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("event stream ended")
		}
		if up && !connected {
			up = false
			out.write(unreachable(m, err))
		} else if connected {
			// A stream that ended after it worked: reconnect at once; a
			// refused reconnect reports the member unreachable.
			up = true
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(eventsRetry):
		}
	}
}

func unreachable(m config.Member, err error) events.Event {
	return events.Event{Time: time.Now(), Member: m.Name, Type: events.TypeUnreachable, Cause: err.Error()}
}

// streamPos is where a reader of one member's events stands: the run of
// the member and the last Seq read in it.
type streamPos struct {
	run  string
	last uint64
}

// readEvents reads GET /events of member m from pos (with now, only the
// kept events) and calls fn for each, moving pos along.
func readEvents(ctx context.Context, client *auth.Client, m config.Member, pos *streamPos, now bool, fn func(events.Event)) error {
	path := fmt.Sprintf("/events?since=%d&run=%s", pos.last, pos.run)
	if now {
		path += "&now=1"
	}
	resp, err := client.Do(ctx, m, http.MethodGet, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin endpoint answered %s", resp.Status)
	}
	pos.run = resp.Header.Get(events.RunHeader)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("bad event line: %w", err)
		}
		if e.Member == "" {
			e.Member = m.Name // a member from before the field existed
		}
		pos.last = e.Seq
		fn(e)
	}
	return sc.Err()
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

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
			_, members, err := o.members()
			if err != nil {
				return err
			}
			out := &eventWriter{enc: json.NewEncoder(cmd.OutOrStdout())}
			client := adminClient(o.timeout)
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
func (o *eventsOptions) snapshot(ctx context.Context, client *http.Client, members []config.Member, out *eventWriter) error {
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
			_, err := readEvents(ctx, client, m, 0, true, func(e events.Event) { got = append(got, e) })
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
func (o *eventsOptions) follow(ctx context.Context, client *http.Client, m config.Member, out *eventWriter) {
	var since uint64
	up := true // assume reachable: say so only when it is not
	for ctx.Err() == nil {
		connected := false
		last, err := readEvents(ctx, client, m, since, false, func(e events.Event) {
			if !connected {
				connected = true
				if !up {
					up = true
					out.write(events.Event{Time: time.Now(), Member: m.Name, Type: events.TypeReachable, Cause: "its admin endpoint answers again"})
				}
			}
			out.write(e)
		})
		if last > 0 {
			since = last
		}
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

// readEvents reads GET /events of member m (events after since; with now,
// only the kept ones) and calls fn for each; it returns the last Seq read.
func readEvents(ctx context.Context, client *http.Client, m config.Member, since uint64, now bool, fn func(events.Event)) (uint64, error) {
	url := fmt.Sprintf("http://%s/events?since=%d", m.Admin, since)
	if now {
		url += "&now=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("admin endpoint answered %s", resp.Status)
	}
	var last uint64
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<40))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return last, fmt.Errorf("bad event line: %w", err)
		}
		if e.Member == "" {
			e.Member = m.Name // a member from before the field existed
		}
		last = e.Seq
		fn(e)
	}
	return last, sc.Err()
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type waitSyncOptions struct {
	clusterOptions
	interval time.Duration
	maxWait  time.Duration
}

func (o *waitSyncOptions) AddFlags(fs *pflag.FlagSet) {
	o.clusterOptions.AddFlags(fs)
	fs.Lookup("name").Usage = "only this peer (default: every data node but the primary)"
	fs.DurationVar(&o.interval, "interval", 500*time.Millisecond, "how often to ask the primary")
	fs.DurationVar(&o.maxWait, "max-wait", 0, "give up (exit 1) after this long (0: wait until in sync or interrupted)")
}

// errNotInSync is returned when --max-wait passes first.
var errNotInSync = errors.New("wait-sync: peers not in sync")

func newWaitSyncCommand() *cobra.Command {
	o := &waitSyncOptions{}
	cmd := &cobra.Command{
		Use:   "wait-sync --config FILE [--name PEER] [--max-wait D]",
		Short: "Wait until every peer is UpToDate, showing resync progress",
		Long: `Watches the serving primary until every other data node (or --name) is
UpToDate with no write outstanding, then exits 0. On a terminal it draws a
progress bar per resyncing peer (percent, bytes, ETA), redrawn in place;
otherwise it prints a plain line whenever a peer's state changes or its
resync passes another 10%. Exits 1 after --max-wait.

Typical use: after replacing a disk (grbd invalidate NODE) or bringing a
node back, before taking the next one down for maintenance.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(o.configPath)
			if err != nil {
				return err
			}
			if o.name != "" {
				if _, witness, err := cfg.Member(o.name); err != nil {
					return err
				} else if witness {
					return fmt.Errorf("%s is the witness: it holds no data to sync", o.name)
				}
			}
			if o.interval <= 0 {
				return errors.New("--interval must be positive")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if o.maxWait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeoutCause(ctx, o.maxWait, errNotInSync)
				defer cancel()
			}
			return o.wait(ctx, cmd.OutOrStdout(), cfg)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// wait polls the primary and draws progress until every watched peer is
// in sync.
func (o *waitSyncOptions) wait(ctx context.Context, out io.Writer, cfg *config.Config) error {
	view := newProgressView(out)
	width := 0
	if view.tty {
		width = max(10, min(40, termWidth(out)-60))
	}
	for {
		items, done := o.poll(ctx, cfg, width)
		view.show(items)
		if done {
			fmt.Fprintln(out, "in sync: every peer is UpToDate")
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), errNotInSync) {
				return fmt.Errorf("%w after %v", errNotInSync, o.maxWait)
			}
			return context.Cause(ctx)
		case <-time.After(o.interval):
		}
	}
}

// poll asks every data node, finds the serving primary and describes each
// watched peer; done when all are UpToDate with nothing outstanding.
func (o *waitSyncOptions) poll(ctx context.Context, cfg *config.Config, width int) ([]progressItem, bool) {
	cli, err := o.client(cfg)
	if err != nil {
		return []progressItem{{id: "primary", key: "credentials", text: err.Error()}}, false
	}
	prim := servingRow(fetchAll(ctx, cli, cfg.Nodes, o.timeout))
	if prim == nil {
		return []progressItem{{id: "primary", key: "none", text: "waiting for a serving primary"}}, false
	}
	done := true
	var items []progressItem
	for _, p := range prim.Peers {
		if o.name != "" && p.Name != o.name {
			continue
		}
		label := fmt.Sprintf("%-12s", p.Name)
		it := progressItem{id: p.Name}
		switch {
		case p.Disk == node.DiskUpToDate && p.Behind == 0:
			it.key, it.text = "uptodate", label+" UpToDate"
		case p.Disk == node.DiskInconsistent && p.ResyncTotal > 0:
			pc := percent(p.ResyncDone, p.ResyncTotal)
			it.key = fmt.Sprintf("resync %d", decile(pc))
			it.text = progressText(label+" resync", p.ResyncDone, p.ResyncTotal, p.SyncETA, width)
		case p.Connection == node.ConnConnected:
			it.key = "catchup"
			it.text = fmt.Sprintf("%s %s, catching up: %d writes behind", label, p.Disk, p.Behind)
		default:
			it.key = p.Connection + "/" + p.Disk
			it.text = fmt.Sprintf("%s %s, disk %s: waiting for it to connect", label, p.Connection, p.Disk)
		}
		done = done && it.key == "uptodate"
		items = append(items, it)
	}
	if o.name != "" && len(items) == 0 {
		items = append(items, progressItem{id: o.name, key: "primary", text: o.name + " is the primary"})
	}
	return items, done
}

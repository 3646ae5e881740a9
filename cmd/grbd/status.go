package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/member"
	"github.com/grbd/grbd/node"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type statusOptions struct {
	clusterOptions
	json     bool
	watch    bool
	interval time.Duration
}

func (o *statusOptions) AddFlags(fs *pflag.FlagSet) {
	o.clusterOptions.AddFlags(fs)
	fs.BoolVar(&o.json, "json", false, "print JSON (an array, one object per member; with --watch one array per line)")
	fs.BoolVar(&o.watch, "watch", false, "redraw every --interval until interrupted")
	fs.DurationVar(&o.interval, "interval", time.Second, "refresh interval of --watch")
}

// memberStatus is one row of `grbd status`: the node's own report, or why it
// could not be had. Field names are part of the CLI's JSON output: add
// fields, never rename them.
type memberStatus struct {
	Member    string `json:"member"`
	Admin     string `json:"admin"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	*node.Status
}

// errNoMember is returned when no member answers.
var errNoMember = errors.New("status: no member answered")

func newStatusCommand() *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status --config FILE [--name NAME] [--json] [--watch]",
		Short: "Show roles, quorum, disk states, replication and sync progress of the cluster",
		Long: `Asks every member's admin endpoint (in parallel) for its state and prints
one view of the cluster: the epoch and the primary (serving or fenced),
whether a majority of the members is linked (without it writes stop), the
raft leader, then one row per member (role, disk state, member links,
journal position) and the primary's view of each peer: connection, disk
state, replication lag and sync progress with ETA.

--json prints the members' own reports (GET /status) as an array, with
"member", "admin", "reachable" and "error" added; fields are only ever added.
--watch redraws every --interval (on a terminal, in place, with progress
bars). Exits non-zero when no member answers (without --watch).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, members, err := o.members()
			if err != nil {
				return err
			}
			cli, err := o.client(cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !o.watch {
				return o.print(out, cfg, fetchAll(cmd.Context(), cli, members, o.timeout), false)
			}
			if o.interval <= 0 {
				return errors.New("--interval must be positive")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			tty := isTerminal(out)
			for {
				rows := fetchAll(ctx, cli, members, o.timeout)
				if ctx.Err() != nil {
					return nil
				}
				switch {
				case tty && !o.json:
					fmt.Fprintf(out, "\x1b[H\x1b[2Jgrbd status  every %v  %s  (Ctrl-C to stop)\n\n", o.interval, time.Now().Format(time.TimeOnly))
				case !o.json:
					fmt.Fprintf(out, "--- %s\n", time.Now().Format(time.RFC3339))
				}
				if err := o.print(out, cfg, rows, true); err != nil && !errors.Is(err, errNoMember) {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(o.interval):
				}
			}
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// print writes rows as JSON or as the human view; compact JSON puts one
// array on a line (--watch).
func (o *statusOptions) print(out io.Writer, cfg *config.Config, rows []memberStatus, compact bool) error {
	if o.json {
		enc := json.NewEncoder(out)
		if !compact {
			enc.SetIndent("", "  ")
		}
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else {
		v := statusView{}
		if isTerminal(out) {
			v.barWidth = 20
		}
		printStatus(out, cfg, rows, v)
	}
	for _, r := range rows {
		if r.Reachable {
			return nil
		}
	}
	return errNoMember
}

// servingRow is the row of the data node serving as primary, or nil.
func servingRow(rows []memberStatus) *memberStatus {
	for i, r := range rows {
		if r.Reachable && r.Role == node.RolePrimary && r.Quorum.Serving {
			return &rows[i]
		}
	}
	return nil
}

// fetchAll asks every member at once, so that members that are down cost
// one timeout, not one each.
func fetchAll(ctx context.Context, cli *auth.Client, members []config.Member, timeout time.Duration) []memberStatus {
	rows := make([]memberStatus, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() { rows[i] = fetchStatus(ctx, cli, m, timeout) })
	}
	wg.Wait()
	return rows
}

func fetchStatus(ctx context.Context, cli *auth.Client, m config.Member, timeout time.Duration) memberStatus {
	row := memberStatus{Member: m.Name, Admin: m.Admin}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cli.Do(ctx, m, http.MethodGet, "/status")
	if err != nil {
		row.Error = err.Error()
		return row
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		row.Error = "admin endpoint answered " + resp.Status
		return row
	}
	var st node.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		row.Error = "bad status reply: " + err.Error()
		return row
	}
	row.Reachable, row.Status = true, &st
	return row
}

// statusView is how printStatus draws: with bars (and how wide) or not.
type statusView struct {
	barWidth int // 0: no bars
}

// printStatus writes the one-glance view of the cluster: headline (epoch,
// primary, quorum), one row per member, and the primary's view of each
// peer with sync progress.
func printStatus(w io.Writer, cfg *config.Config, rows []memberStatus, v statusView) {
	fmt.Fprintf(w, "cluster %s  device %s  protocol %s", cfg.Cluster, deviceText(cfg, rows), cfg.Replication.Protocol)
	if e, ok := cfg.EC(); ok {
		fmt.Fprintf(w, "  redundancy ec %d+%d", e.K, e.M)
	}
	fmt.Fprintln(w)
	printQuorum(w, cfg, rows)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tDISK\tIDENTITY\tSIZE\tLINKS\tNBD\tLAST-SEQ\tDURABLE\tCHECKPOINT\tJOURNAL")
	for _, r := range rows {
		switch {
		case !r.Reachable:
			fmt.Fprintf(tw, "%s\tUnknown\t-\t-\t-\t-\t-\t-\t-\t-\tunreachable: %s\n", r.Member, r.Error)
			continue
		case r.Role == "Witness":
			fmt.Fprintf(tw, "%s\tWitness\t-\t-\t-\t%s\t-\t-\t-\t-\t-\n", r.Member, linksText(r.Members))
			continue
		}
		role := r.Role
		switch {
		case role == node.RolePrimary && !r.Quorum.Serving:
			role += " (fenced)"
		case role == node.RolePrimary && r.AwaitingPeers:
			role += " (awaiting peers)"
		}
		j := r.Journal
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s in %d segments\n", r.Member, role, r.Disk, identityText(r.Identity), config.Size(r.DeviceSize), linksText(r.Members), r.NBD,
			j.LastSeq, j.DurableSeq, j.CheckpointSeq, humanBytes(j.Bytes), j.Segments)
	}
	tw.Flush()
	printMembership(w, rows)
	for _, r := range rows {
		if r.Reachable && r.Role == node.RoleSecondary && r.Identity != nil && !r.Identity.Promotable {
			fmt.Fprintf(w, "%s: not promotable: %s\n", r.Member, r.Identity.NotPromotable)
		}
	}
	for _, r := range rows {
		if r.Reachable && r.Journal.SuspectBytes > 0 {
			fmt.Fprintf(w, "%s: %s left in doubt by a power loss, not yet made equal to the peers (resync or rewrite in progress)\n",
				r.Member, humanBytes(int64(r.Journal.SuspectBytes)))
		}
	}
	for _, r := range rows {
		if r.Reachable && r.Status != nil && r.DiskStall != nil {
			s := r.DiskStall
			fmt.Fprintf(w, "%s: DISK NOT ANSWERING: a %s of %s has not returned for %.0f s; requests that need the disk wait; check the disk (it is detached after device.disk-timeout, 20 s unless set)\n",
				r.Member, s.Op, s.File, s.Seconds)
		}
	}
	for _, r := range rows {
		if !r.Reachable || r.Role == "Witness" || r.Checksums.Errors == 0 {
			continue
		}
		if c := r.Checksums; c.Errors > 0 {
			fmt.Fprintf(w, "%s: CORRUPT BLOCKS found on read: %d repaired from a peer, %d unrepaired (reads failed with EIO); check its disk\n",
				r.Member, c.Repaired, c.Unrepaired)
		}
	}
	for _, r := range rows {
		if r.Reachable && r.Role == node.RolePrimary {
			printPeers(w, r, v)
		}
	}
}

// identityText is a data node's identity in short form: disk/epoch:seq,
// with the recorded disk when the node's disk is another one.
func identityText(id *node.Identity) string {
	switch {
	case id == nil:
		return "-"
	case id.Recorded != "-" && id.Recorded != id.Disk:
		return id.String() + " (recorded " + id.Recorded + ")"
	}
	return id.String()
}

// printMembership names every member that takes no part in the control
// plane, and why (docs/quorum.md, "Membership and replaced members").
func printMembership(w io.Writer, rows []memberStatus) {
	for _, r := range rows {
		if !r.Reachable || r.Status == nil || r.Quorum.Phase == "" || r.Quorum.Phase == "member" {
			continue
		}
		q := r.Quorum
		fmt.Fprintf(w, "%s: %s", r.Member, q.Phase)
		if q.PhaseReason != "" && q.PhaseReason != q.Phase {
			fmt.Fprintf(w, ": %s", q.PhaseReason)
		}
		fmt.Fprintln(w)
	}
}

// deviceText is the device size the primary reports (the config's
// device.size is only the size the cluster was created with; after grbd
// resize they differ until the config is updated).
func deviceText(cfg *config.Config, rows []memberStatus) string {
	for _, r := range rows {
		if r.Reachable && r.Role == node.RolePrimary && r.DeviceSize > 0 && r.DeviceSize != int64(cfg.Device.Size) {
			return fmt.Sprintf("%s (config device.size %s)", config.Size(r.DeviceSize), cfg.Device.Size)
		}
	}
	return cfg.Device.Size.String()
}

// printQuorum writes the headline: epoch and primary as the freshest
// member sees them, and whether a majority of the members is reachable.
func printQuorum(w io.Writer, cfg *config.Config, rows []memberStatus) {
	voters := len(cfg.Nodes)
	if cfg.Witness != nil {
		voters++
	}
	var best *memberStatus
	reach, answering := 0, 0
	for i, r := range rows {
		if !r.Reachable {
			continue
		}
		answering++
		if best == nil || r.Quorum.Epoch > best.Quorum.Epoch {
			best = &rows[i]
		}
		up := 1
		for _, l := range r.Members {
			if l.Connected {
				up++
			}
		}
		reach = max(reach, up)
	}
	if best == nil {
		fmt.Fprintf(w, "quorum: unknown: no member answers\n")
		return
	}
	reach = max(reach, answering)
	q := best.Quorum
	primary := "none"
	if q.Primary != "" {
		primary = q.Primary
		for _, r := range rows {
			if r.Reachable && r.Member == q.Primary {
				primary += map[bool]string{true: " (serving)", false: " (fenced: no lease)"}[r.Quorum.Serving]
				if r.Quorum.Serving && r.AwaitingPeers {
					primary = q.Primary + " (took its role back: awaiting its peers' positions before I/O)"
				}
			}
		}
	}
	need := voters/2 + 1
	majority := fmt.Sprintf("majority reachable (%d of %d members linked, %d needed)", reach, voters, need)
	if reach < need {
		majority = fmt.Sprintf("NO MAJORITY (%d of %d members linked, %d needed): writes stop", reach, voters, need)
	}
	leader := "no raft leader"
	if q.RaftLeader != "" {
		leader = fmt.Sprintf("raft leader %s (term %d)", q.RaftLeader, q.RaftTerm)
	}
	outdated := "none"
	if len(q.Outdated) > 0 {
		outdated = strings.Join(q.Outdated, ", ")
	}
	fmt.Fprintf(w, "epoch %d  primary %s  outdated %s\n", q.Epoch, primary, outdated)
	fmt.Fprintf(w, "quorum: %s; %s\n", majority, leader)
}

// linksText summarises a member's links: "2/2 up" or "1/2 up (beta down)".
func linksText(links []member.LinkStatus) string {
	if len(links) == 0 {
		return "-"
	}
	up := 0
	var down []string
	for _, l := range links {
		if l.Connected {
			up++
		} else {
			down = append(down, l.Name)
		}
	}
	s := fmt.Sprintf("%d/%d up", up, len(links))
	if len(down) > 0 {
		s += " (" + strings.Join(down, ",") + " down)"
	}
	return s
}

// printPeers writes the primary's view of its peers, with sync progress.
func printPeers(w io.Writer, r memberStatus, v statusView) {
	if len(r.Peers) == 0 && r.Verify == nil {
		return
	}
	fmt.Fprintf(w, "\nreplication from %s:\n", r.Member)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	shards := len(r.Peers) > 0 && r.Peers[0].Shard != nil // erasure-coded: per-shard health
	head := "PEER\tCONNECTION\tDISK\tACKED-SEQ\tBEHIND\tCAUGHT-UP\tSYNC"
	if shards {
		head = "PEER\tSHARD\tCONNECTION\tDISK\tACKED-SEQ\tBEHIND\tCAUGHT-UP\tSYNC"
	}
	fmt.Fprintln(tw, head)
	for _, p := range r.Peers {
		conn := p.Connection
		if p.Disconnected {
			conn += " (by operator)"
		}
		name := p.Name
		if shards {
			shard := "-"
			if p.Shard != nil {
				shard = fmt.Sprint(*p.Shard)
			}
			name += "\t" + shard
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", name, conn, p.Disk, p.AckedSeq, p.Behind, config.Size(p.CatchupBytes), syncText(p, v))
	}
	tw.Flush()
	if vp := r.Verify; vp != nil {
		fmt.Fprintln(w, progressText("verify "+vp.Peer+":", vp.Done, vp.Total, 0, v.barWidth))
	}
}

// syncText is the SYNC column: resync progress, catch-up or nothing.
func syncText(p node.PeerStatus, v statusView) string {
	switch {
	case p.Disk == node.DiskInconsistent && p.ResyncTotal > 0:
		return progressText("resync", p.ResyncDone, p.ResyncTotal, p.SyncETA, v.barWidth)
	case p.Disk == node.DiskUpToDate && p.Behind == 0:
		return "in sync"
	case p.Connection == node.ConnConnected:
		return fmt.Sprintf("catching up: %d writes behind", p.Behind)
	}
	return "-"
}

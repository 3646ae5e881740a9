package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type statusOptions struct {
	configPath string
	name       string
	json       bool
	timeout    time.Duration
	admin      adminOptions
}

func (o *statusOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.StringVar(&o.name, "name", "", "only this member (default: every member)")
	fs.BoolVar(&o.json, "json", false, "print JSON (an array, one object per member)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Second, "how long to wait for each member")
	o.admin.AddFlags(fs)
}

// memberStatus is one row of `grbd status`: the node's own report, or why it
// could not be had.
type memberStatus struct {
	Member    string `json:"member"`
	Admin     string `json:"admin"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	*node.Status
}

func newStatusCommand() *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status --config FILE [--name NAME] [--json]",
		Short: "Show roles, quorum, disk states and journal positions of the cluster's members",
		Long: `Asks each member's admin endpoint for its state. Exits non-zero when no
member answers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.configPath == "" {
				return errors.New("--config is required")
			}
			cfg, err := config.Load(o.configPath)
			if err != nil {
				return err
			}
			members := append([]config.Member(nil), cfg.Nodes...)
			if cfg.Witness != nil {
				members = append(members, *cfg.Witness)
			}
			if o.name != "" {
				m, _, err := cfg.Member(o.name)
				if err != nil {
					return err
				}
				members = []config.Member{m}
			}
			cli, err := o.admin.client(cfg)
			if err != nil {
				return err
			}
			rows := make([]memberStatus, len(members))
			reachable := 0
			for i, m := range members {
				rows[i] = fetchStatus(cmd.Context(), cli, m, o.timeout)
				if rows[i].Reachable {
					reachable++
				}
			}
			if o.json {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rows); err != nil {
					return err
				}
			} else {
				printStatus(cmd.OutOrStdout(), cfg, rows)
			}
			if reachable == 0 {
				return errors.New("status: no member answered")
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
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

func printStatus(w io.Writer, cfg *config.Config, rows []memberStatus) {
	fmt.Fprintf(w, "cluster %s  device %s  protocol %s\n", cfg.Cluster, cfg.Device.Size, cfg.Replication.Protocol)
	for _, r := range rows {
		if r.Reachable {
			q := r.Quorum
			fmt.Fprintf(w, "quorum: epoch %d  primary %q  outdated %v  raft leader %q (term %d)  as seen by %s\n",
				q.Epoch, q.Primary, q.Outdated, q.RaftLeader, q.RaftTerm, r.Member)
			break
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tDISK\tNBD\tLAST-SEQ\tDURABLE\tCHECKPOINT\tJOURNAL")
	for _, r := range rows {
		switch {
		case !r.Reachable:
			fmt.Fprintf(tw, "%s\tUnknown\t-\t-\t-\t-\t-\tunreachable: %s\n", r.Member, r.Error)
			continue
		case r.Role == "Witness":
			fmt.Fprintf(tw, "%s\tWitness\t-\t-\t-\t-\t-\t-\n", r.Member)
			continue
		}
		role := r.Role
		if role == node.RolePrimary && !r.Quorum.Serving {
			role += " (fenced)"
		}
		j := r.Journal
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s in %d segments\n", r.Member, role, r.Disk, r.NBD,
			j.LastSeq, j.DurableSeq, j.CheckpointSeq, config.Size(j.Bytes), j.Segments)
	}
	tw.Flush()
	var peers []string
	for _, r := range rows {
		if r.Reachable && r.Role == node.RolePrimary {
			for _, p := range r.Peers {
				peers = append(peers, fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d\t%s", r.Member, p.Name, p.Connection, p.Disk,
					p.AckedSeq, p.Behind, config.Size(p.CatchupBytes)))
			}
		}
	}
	if len(peers) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PRIMARY\tPEER\tCONNECTION\tDISK\tACKED-SEQ\tBEHIND\tCAUGHT-UP")
	for _, l := range peers {
		fmt.Fprintln(tw, l)
	}
	tw.Flush()
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/member"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// memberOptions are the flags of grbd member replace.
type memberOptions struct{ roleOptions }

func (o *memberOptions) AddFlags(fs *pflag.FlagSet) {
	o.addFlags(fs, 30*time.Second, "how long to wait for the change, per member asked")
}

func newMemberCommand() *cobra.Command {
	return commandGroup("member", "Change the control plane's membership", newMemberReplaceCommand())
}

func newMemberReplaceCommand() *cobra.Command {
	o := &memberOptions{}
	cmd := &cobra.Command{
		Use:   "replace NAME --config FILE",
		Short: "Let NAME, a member that lost its control-plane state, join again as a new member",
		Long: `A member whose data directory (raft.state) was lost or replaced must never vote
as if it remembered: it starts, finds that the others hold the cluster's log,
logs "control-plane state lost: this member must be replaced" and waits,
announcing a new random identity. "member replace NAME" asks a surviving member
to commit the change that removes NAME's old identity and adds the new one as a
learner (a majority must be up); NAME then receives the log, and the raft leader
makes it a voter once it caught up. Refused while NAME is the primary (move the
primary first: grbd primary OTHER), when NAME is not connected or still has its
state, and while another replace is under way. A data node joined this way has
no data yet: it resyncs from the primary before it may be promoted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.replace(cmd, args[0]) },
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// replace asks the surviving members in turn; one that cannot act (it has
// no state itself, no majority, unreachable) passes the request on to the
// next, a refusal (409/400) ends it.
func (o *memberOptions) replace(cmd *cobra.Command, name string) error {
	cfg, err := loadConfig(o.configPath)
	if err != nil {
		return err
	}
	if _, _, err := cfg.Member(name); err != nil {
		return err
	}
	cli, err := o.admin.client(cfg)
	if err != nil {
		return err
	}
	all := append([]config.Member(nil), cfg.Nodes...)
	if cfg.Witness != nil {
		all = append(all, *cfg.Witness)
	}
	var errs []error
	for _, m := range all {
		if m.Name == name {
			continue
		}
		res, code, err := o.ask(cmd, cli, m, name)
		if err == nil {
			state := "a learner: it becomes a voter once it caught up"
			if res.Voter {
				state = "a voter"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "replaced %s: it joined as raft id %s (via %s), now %s\n", name, res.ID, m.Name, state)
			return nil
		}
		if code == http.StatusConflict || code == http.StatusBadRequest {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
	}
	return fmt.Errorf("no member could replace %s: %w", name, errors.Join(errs...))
}

// ask posts the replace to member m; it returns the HTTP status of a
// refusal (0 when m did not answer).
func (o *memberOptions) ask(cmd *cobra.Command, cli *auth.Client, m config.Member, name string) (member.ReplaceResult, int, error) {
	body, status, err := adminPostStatus(cmd.Context(), cli, m, "/member/replace?name="+url.QueryEscape(name), o.timeout)
	if err != nil {
		return member.ReplaceResult{}, status, err
	}
	var res member.ReplaceResult
	if err := json.Unmarshal(body, &res); err != nil {
		return res, 0, fmt.Errorf("bad reply: %w", err)
	}
	return res, 0, nil
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/grbd/grbd/node"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// roleOptions are the flags of the commands that ask members' admin
// endpoints for a change: primary, secondary, resolve, the data-path
// operations, resize and member replace.
type roleOptions struct {
	configPath string
	timeout    time.Duration
	admin      adminOptions
}

// AddFlags registers the flags; --timeout bounds one change (15s).
func (o *roleOptions) AddFlags(fs *pflag.FlagSet) {
	o.addFlags(fs, 15*time.Second, "how long to wait for the change")
}

// addFlags registers the flags with --timeout's default and usage.
func (o *roleOptions) addFlags(fs *pflag.FlagSet, timeout time.Duration, usage string) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	o.admin.AddFlags(fs)
	fs.DurationVar(&o.timeout, "timeout", timeout, usage)
}

// nodeRequestCommand completes cmd into one that asks the data node named
// by its one argument for a change: it posts path and query() (nil: none)
// to the node's admin endpoint and prints the node's status line.
func nodeRequestCommand(cmd *cobra.Command, path string, query func() string) *cobra.Command {
	o := &roleOptions{}
	cmd.Args = cobra.ExactArgs(1)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if query != nil {
			return o.post(cmd, args[0], path+query())
		}
		return o.post(cmd, args[0], path)
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func newPrimaryCommand() *cobra.Command {
	var force bool
	cmd := nodeRequestCommand(&cobra.Command{
		Use:   "primary NODE --config FILE [--force]",
		Short: "Make NODE the primary (through the control plane)",
		Long: `Asks NODE to become primary: its promotion is committed through the
control-plane log (a majority of the members must agree), the current primary is
deposed, and NODE serves once the old primary's lease has run out. An Outdated
node (one that may lack acknowledged writes) is refused unless --force is given:
--force is for disaster recovery only and loses the writes NODE missed.`,
	}, "/primary", func() string {
		if force {
			return "?force=1"
		}
		return ""
	})
	cmd.Flags().BoolVar(&force, "force", false, "DANGEROUS: promote even an Outdated node; writes it missed are lost and the other nodes' newer data becomes a split brain")
	return cmd
}

func newSecondaryCommand() *cobra.Command {
	return nodeRequestCommand(&cobra.Command{
		Use:   "secondary NODE --config FILE",
		Short: "Make NODE stop being primary",
		Long: `Asks NODE to give up the primary role. With quorum.auto-failover on, the
cluster elects a primary again after failover-timeout; to move the role to a
given node, run "grbd primary OTHER" instead.`,
	}, "/secondary", nil)
}

func newResolveCommand() *cobra.Command {
	o := &roleOptions{}
	var discard string
	cmd := &cobra.Command{
		Use:   "resolve --discard NODE --config FILE",
		Short: "Resolve a split brain by discarding NODE's divergent writes",
		Long: `After a split brain (data written on both sides of a forced promotion), NODE
refuses to resync until told which side loses. "resolve --discard NODE" makes
NODE discard its writes since the divergence point at its next connect and
take the primary's data instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if discard == "" {
				return errors.New("--discard NODE is required")
			}
			return o.post(cmd, discard, "/resolve")
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&discard, "discard", "", "the data node whose divergent writes are discarded")
	return cmd
}

// post sends a role request to the admin endpoint of the data node name and
// prints the node's status line.
func (o *roleOptions) post(cmd *cobra.Command, name, path string) error {
	cfg, err := loadConfig(o.configPath)
	if err != nil {
		return err
	}
	m, isWitness, err := cfg.Member(name)
	if err != nil {
		return err
	}
	if isWitness {
		return fmt.Errorf("%s is the witness: it holds no data and has no role to change", name)
	}
	cli, err := o.admin.client(cfg)
	if err != nil {
		return err
	}
	body, err := adminPost(cmd.Context(), cli, m, path, o.timeout)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var st node.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("%s: bad reply: %w", name, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: role %s, epoch %d, primary %q, disk %s\n", name, st.Role, st.Quorum.Epoch, st.Quorum.Primary, st.Disk)
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/grbd/grbd/internal/extent"
	"net/url"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
	"github.com/spf13/cobra"
)

func newConnectCommands() []*cobra.Command {
	var cmds []*cobra.Command
	for _, verb := range []string{"connect", "disconnect"} {
		var peer string
		short := map[string]string{
			"connect":    "Restore NODE's data path to its peers (after disconnect)",
			"disconnect": "Cut NODE's data path to a peer (or all): the peer is Outdated and catches up after connect",
		}[verb]
		cmd := nodeRequestCommand(&cobra.Command{
			Use:   verb + " NODE --config FILE [--peer PEER]",
			Short: short,
			Long: short + `.
As drbdadm: on the primary, "disconnect" stops replicating to the peer (which is
first marked Outdated through the control plane, so it can never be promoted
while it misses writes); on a secondary, it refuses the primary's stream. The
control plane stays connected. "connect" undoes it; the peer then catches up.
The setting is not persistent: a restarted node connects.`,
		}, "/"+verb, func() string {
			if peer != "" {
				return "?peer=" + url.QueryEscape(peer)
			}
			return ""
		})
		cmd.Flags().StringVar(&peer, "peer", "", "only this peer (default: every peer)")
		cmds = append(cmds, cmd)
	}
	return cmds
}

func newInvalidateCommand() *cobra.Command {
	return nodeRequestCommand(&cobra.Command{
		Use:   "invalidate NODE --config FILE",
		Short: "Discard a secondary's data and resync it fully from the primary",
		Long: `Marks the secondary NODE Inconsistent (persistently) and reconnects it: the
primary copies the whole device to it. NODE cannot be promoted until the copy
is complete. Refused on the primary.`,
	}, "/invalidate", nil)
}

func newVerifyCommand() *cobra.Command {
	o := &roleOptions{}
	var resync bool
	cmd := &cobra.Command{
		Use:   "verify --config FILE [--resync]",
		Short: "Compare every block of the peers with the primary's",
		Long: `Asks the primary to compare a hash (the block ID) of every 64 KiB chunk of the
device on each connected peer with its own (online: chunks written during the pass are
rechecked), and prints the out-of-sync regions. With --resync the primary
rewrites those regions so the peers get them again. Exits 1 when regions are
out of sync (and were not resynced) or a peer could not be verified.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, cli, err := loadClient(o.configPath, o.admin)
			if err != nil {
				return err
			}
			prim, err := findPrimary(cmd.Context(), cli, cfg)
			if err != nil {
				return err
			}
			path := "/verify"
			if resync {
				path += "?resync=1"
			}
			stopProgress := showVerifyProgress(cmd.Context(), cmd.ErrOrStderr(), cli, prim)
			body, err := adminPost(cmd.Context(), cli, prim, path, o.timeout)
			stopProgress()
			if err != nil {
				return fmt.Errorf("%s: %w", prim.Name, err)
			}
			var res []node.VerifyResult
			if err := json.Unmarshal(body, &res); err != nil {
				return fmt.Errorf("%s: bad reply: %w", prim.Name, err)
			}
			failed := false
			w := cmd.OutOrStdout()
			for _, r := range res {
				switch {
				case r.Error != "":
					failed = true
					fmt.Fprintf(w, "%s -> %s: error: %s\n", prim.Name, r.Peer, r.Error)
				case len(r.OutOfSync) == 0:
					fmt.Fprintf(w, "%s -> %s: in sync (%s compared in %d ms)\n", prim.Name, r.Peer, config.Size(r.Bytes), r.DurationMs)
				default:
					n := int64(extent.Bytes(r.OutOfSync))
					state := "OUT OF SYNC"
					if r.Resynced {
						state = "resynced"
					} else {
						failed = true
					}
					fmt.Fprintf(w, "%s -> %s: %s: %d regions, %s\n", prim.Name, r.Peer, state, len(r.OutOfSync), config.Size(n))
					for _, e := range r.OutOfSync {
						fmt.Fprintf(w, "  [%d, %d)\n", e.Offset, e.End())
					}
				}
			}
			if failed {
				return errors.New("verify: peers differ from the primary or could not be verified")
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&resync, "resync", false, "rewrite out-of-sync regions from the primary")
	cmd.Flags().Lookup("timeout").DefValue = "10m"
	_ = cmd.Flags().Set("timeout", "10m")
	return cmd
}

// findPrimary asks every data node for its status and returns the one that
// serves as primary.
func findPrimary(ctx context.Context, cli *auth.Client, cfg *config.Config) (config.Member, error) {
	for _, m := range cfg.Nodes {
		row := fetchStatus(ctx, cli, m, 3*time.Second)
		if row.Reachable && row.Role == node.RolePrimary {
			return m, nil
		}
	}
	return config.Member{}, errors.New("no data node answers as primary")
}

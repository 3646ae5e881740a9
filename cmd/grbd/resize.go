package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
	"github.com/spf13/cobra"
)

func newResizeCommand() *cobra.Command {
	o := &roleOptions{}
	var size string
	cmd := &cobra.Command{
		Use:   "resize [NODE] --config FILE --size SIZE",
		Short: "Grow the device online on every data node (as drbdadm resize)",
		Long: `Asks the primary (or NODE, which must be the primary) to grow the device to
SIZE. The grow is ordered with the writes: every data node grows before any
write past the old end reaches it, a node that is away gets it when it
catches up, and the command returns once every counted peer journaled and
synced it. Shrinking is refused. New NBD connections see the new size; a
connected client must reconnect (NBD has no size-change notice). Then set
device.size to SIZE in the config on every host (a node starts with the size
on its disk either way).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.resize(cmd, args, size) },
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&size, "size", "", "the new device size, larger than the current one, a multiple of 4KiB (e.g. 2GiB) (required)")
	return cmd
}

// resize asks the primary, or the node in args, to grow the device to
// sizeFlag (--size).
func (o *roleOptions) resize(cmd *cobra.Command, args []string, sizeFlag string) error {
	if sizeFlag == "" {
		return errors.New("--size is required")
	}
	size, err := config.ParseSize(sizeFlag)
	if err != nil {
		return fmt.Errorf("--size %q: %w", sizeFlag, err)
	}
	if size <= 0 || size%node.ResizeAlign != 0 {
		return fmt.Errorf("--size %s: must be a positive multiple of %d bytes", size, node.ResizeAlign)
	}
	cfg, cli, err := loadClient(o.configPath, o.admin)
	if err != nil {
		return err
	}
	var m config.Member
	if len(args) == 1 {
		var isWitness bool
		if m, isWitness, err = cfg.Member(args[0]); err != nil {
			return err
		}
		if isWitness {
			return fmt.Errorf("%s is the witness: it holds no data; resize goes to the primary", args[0])
		}
	} else if m, err = findPrimary(cmd.Context(), cli, cfg); err != nil {
		return err
	}
	body, err := adminPost(cmd.Context(), cli, m, "/resize?size="+strconv.FormatInt(int64(size), 10), o.timeout)
	if err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	var st node.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("%s: bad reply: %w", m.Name, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: device grown to %s (%d bytes); new NBD connections see it; set device.size: %s in the config on every host\n",
		m.Name, config.Size(st.DeviceSize), st.DeviceSize, config.Size(st.DeviceSize))
	return nil
}

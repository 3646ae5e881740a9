package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/nbdkernel"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type attachOptions struct {
	configPath     string
	device         string
	timeout        time.Duration
	requestTimeout time.Duration
	admin          adminOptions
}

func (o *attachOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.StringVar(&o.device, "device", "", "NBD device to attach, e.g. /dev/nbd0 (required)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Second, "how long to wait for each member and for the NBD handshake")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 0, "kernel timeout of one request (0: the kernel's default)")
	o.admin.AddFlags(fs)
}

func newAttachCommand() *cobra.Command {
	o := &attachOptions{}
	cmd := &cobra.Command{
		Use:   "attach --device /dev/nbdX --config FILE",
		Short: "Attach the cluster's device to /dev/nbdX with the kernel NBD client (Linux, nbd module)",
		Long: `Finds the serving primary through the members' admin endpoints, connects to
its NBD export, negotiates (NBD_OPT_GO) and hands the connection to the
kernel, telling it what the export supports (NBD_SET_FLAGS: FLUSH, FUA,
TRIM, WRITE_ZEROES), so that file system barriers reach the cluster. Then it
stays in the foreground while the device is attached (run it under systemd,
or with &) and detaches on SIGINT or SIGTERM.

Needs root (or write access to the device) and the nbd kernel module
(modprobe nbd); without it, it says so and changes nothing. Use the device
like any disk: mkfs.ext4 /dev/nbd0 && mount /dev/nbd0 /mnt.

After a failover the kernel's connection to the old primary ends and grbd
attach exits (status 1): the kernel's ioctl interface cannot move a device to
another server. Unmount, run grbd attach again and mount. nbd-client works
as well: nbd-client PRIMARY-HOST PORT /dev/nbd0 -N EXPORT.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.device == "" {
				return errors.New("--device is required")
			}
			cfg, err := loadConfig(o.configPath)
			if err != nil {
				return err
			}
			dev, err := nbdkernel.Host.Check(o.device, true)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			cli, err := o.admin.client(cfg)
			if err != nil {
				return err
			}
			prim, err := servingPrimary(ctx, cli, cfg, o.timeout)
			if err != nil {
				return err
			}
			conn, x, err := dialExport(ctx, prim.NBD, cfg.NBD.Export, o.timeout)
			if err != nil {
				return fmt.Errorf("%s: %w", prim.Name, err)
			}
			defer conn.Close()
			// SIGINT/SIGTERM detach; the kernel then ends NBD_DO_IT.
			attached := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				select {
				case <-ctx.Done():
					_ = nbdkernel.Detach(dev)
				case <-attached:
				}
			})
			err = nbdkernel.Attach(dev, conn, x, nbdkernel.AttachOptions{
				Timeout: o.requestTimeout,
				OnReady: func() {
					fmt.Fprintf(cmd.OutOrStdout(), "attached %s to nbd://%s (%s, %s, %s)\n", dev.Path, prim.NBD, prim.Name,
						config.Size(x.Size), flagNames(x.Flags))
				},
			})
			close(attached)
			wg.Wait()
			if err != nil {
				return err
			}
			if ctx.Err() == nil {
				return fmt.Errorf("attach: %s: the connection to %s ended (failover or shutdown): run grbd attach again", dev.Path, prim.Name)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "detached %s\n", dev.Path)
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// servingPrimary asks every data node and returns the one serving as
// primary (holding its lease).
func servingPrimary(ctx context.Context, cli *auth.Client, cfg *config.Config, timeout time.Duration) (config.Member, error) {
	rows := fetchAll(ctx, cli, cfg.Nodes, timeout)
	if r := servingRow(rows); r != nil {
		m, _, err := cfg.Member(r.Member)
		return m, err
	}
	var why []string
	for _, r := range rows {
		switch {
		case !r.Reachable:
			why = append(why, r.Member+": unreachable")
		default:
			why = append(why, fmt.Sprintf("%s: %s, serving %v", r.Member, r.Role, r.Quorum.Serving))
		}
	}
	return config.Member{}, fmt.Errorf("no data node serves as primary (%s)", strings.Join(why, "; "))
}

// dialExport connects to an NBD export and negotiates.
func dialExport(ctx context.Context, addr, export string, timeout time.Duration) (*net.TCPConn, nbdkernel.Export, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nbdkernel.Export{}, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	x, err := nbdkernel.Negotiate(c, export)
	_ = c.SetDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, nbdkernel.Export{}, err
	}
	return c.(*net.TCPConn), x, nil
}

// flagNames lists the transmission flags an operator cares about.
func flagNames(f uint16) string {
	var out []string
	for _, n := range []struct {
		bit  uint16
		name string
	}{{nbdkernel.FlagReadOnly, "READ_ONLY"}, {nbdkernel.FlagSendFlush, "FLUSH"}, {nbdkernel.FlagSendFUA, "FUA"},
		{nbdkernel.FlagSendTrim, "TRIM"}, {nbdkernel.FlagSendWriteZeroes, "WRITE_ZEROES"}, {nbdkernel.FlagCanMultiConn, "MULTI_CONN"}} {
		if f&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return strings.Join(out, " ")
}

type detachOptions struct {
	device string
}

func (o *detachOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.device, "device", "", "NBD device to detach, e.g. /dev/nbd0 (required)")
}

func newDetachCommand() *cobra.Command {
	o := &detachOptions{}
	cmd := &cobra.Command{
		Use:   "detach --device /dev/nbdX",
		Short: "Detach an NBD device (after unmounting it)",
		Long: `Tells the kernel to disconnect /dev/nbdX (NBD_DISCONNECT): requests still
queued fail, and the grbd attach (or nbd-client) serving it exits. Unmount
the file system first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.device == "" {
				return errors.New("--device is required")
			}
			dev, err := nbdkernel.Host.Check(o.device, false)
			if err != nil {
				return err
			}
			if _, attached := nbdkernel.Host.Owner(dev); !attached {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s is not attached\n", dev.Path)
			}
			if err := nbdkernel.Detach(dev); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "detached %s\n", dev.Path)
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

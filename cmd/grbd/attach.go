package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/nbdkernel"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

type attachOptions struct {
	configPath     string
	device         string
	timeout        time.Duration
	requestTimeout time.Duration
	direct         bool
	follow         followOptions
}

func (o *attachOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.configPath, "config", "", "cluster config file (required)")
	fs.StringVar(&o.device, "device", "", "NBD device to attach, e.g. /dev/nbd0 (required)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Second, "how long to wait for each member and for the NBD handshake")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 0, "kernel timeout of one request (0: the kernel's default); keep it above --hold-timeout")
	fs.BoolVar(&o.direct, "direct", false, "hand the kernel a connection to the primary itself: no proxy in between, but the device fails at a failover")
	o.follow.AddFlags(fs)
}

func newAttachCommand(g *globalOptions) *cobra.Command {
	o := &attachOptions{}
	cmd := &cobra.Command{
		Use:   "attach --device /dev/nbdX --config FILE [--direct]",
		Short: "Attach the cluster's device to /dev/nbdX with the kernel NBD client (Linux, nbd module), following the primary",
		Long: `Attaches /dev/nbdX to the cluster and keeps it attached across failovers.
The kernel's connection ends in this process, which forwards every request
to the data node serving as primary exactly as grbd proxy does (found
through the members' admin endpoints; unanswered requests are re-sent to
the new primary after a failover, requests wait up to --hold-timeout while
no primary serves). A mounted file system sees a pause, not an error. The
kernel is told what the export supports (NBD_SET_FLAGS: FLUSH, FUA, TRIM,
WRITE_ZEROES), so that file system barriers reach the cluster. attach stays
in the foreground while the device is attached (run it under systemd, or
with &) and detaches on SIGINT or SIGTERM; if it is killed the device fails.

--direct hands the kernel a TCP connection to the primary itself instead:
at a failover that connection ends, the device's requests fail and attach
exits (status 1); unmount, attach again and mount.

Needs root (or write access to the device) and the nbd kernel module
(modprobe nbd); without it, it says so and changes nothing. Use the device
like any disk: mkfs.ext4 /dev/nbd0 && mount /dev/nbd0 /mnt.`,
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
			conn, x, target, closeConn, err := o.kernelConn(ctx, cfg, g)
			if err != nil {
				return err
			}
			defer closeConn()
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
					fmt.Fprintf(cmd.OutOrStdout(), "attached %s to %s (%s, %s)\n", dev.Path, target,
						config.Size(x.Size), flagNames(x.Flags))
				},
			})
			close(attached)
			wg.Wait()
			if err != nil {
				return err
			}
			if ctx.Err() == nil {
				return fmt.Errorf("attach: %s: the connection to %s ended (failover or shutdown): run grbd attach again", dev.Path, target)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "detached %s\n", dev.Path)
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// kernelConn returns the connection to hand to the kernel, negotiated:
// one end of a local socket pair served by a proxy that follows the
// primary, or with --direct a TCP connection to the primary itself.
func (o *attachOptions) kernelConn(ctx context.Context, cfg *config.Config, g *globalOptions) (nbdkernel.Conn, nbdkernel.Export, string, func(), error) {
	var none nbdkernel.Export
	if o.direct {
		cli, err := o.follow.creds.client(cfg)
		if err != nil {
			return nil, none, "", nil, err
		}
		prim, err := servingPrimary(ctx, cli, cfg, o.timeout)
		if err != nil {
			return nil, none, "", nil, err
		}
		tc, x, err := dialExport(ctx, prim.NBD, cfg.NBD.Export, o.timeout)
		if err != nil {
			return nil, none, "", nil, fmt.Errorf("%s: %w", prim.Name, err)
		}
		return tc, x, fmt.Sprintf("nbd://%s (%s)", prim.NBD, prim.Name), func() { tc.Close() }, nil
	}
	log, err := g.logger()
	if err != nil {
		return nil, none, "", nil, err
	}
	p, srv, stopRun, err := o.follow.start(ctx, cfg, log, "attach")
	if err != nil {
		return nil, none, "", nil, err
	}
	uc, x, err := localExport(srv, cfg.NBD.Export, o.timeout)
	if err != nil {
		srv.Close()
		stopRun()
		return nil, none, "", nil, err
	}
	target := fmt.Sprintf("cluster %s (following the primary, now %s)", cfg.Cluster, p.Status().Primary)
	return uc, x, target, func() { uc.Close(); srv.Close(); stopRun() }, nil
}

// localExport serves srv on one end of a Unix socket pair and negotiates
// on the other as the kernel's client would: that end is what attach hands
// to the kernel, so the kernel's connection never leaves this process and
// survives every failover the proxy behind srv follows.
func localExport(srv *blockdev.Server, export string, timeout time.Duration) (*net.UnixConn, nbdkernel.Export, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nbdkernel.Export{}, fmt.Errorf("attach: socketpair: %w", err)
	}
	serverEnd, err := fileConn(fds[0], "grbd-attach-server")
	if err != nil {
		unix.Close(fds[1])
		return nil, nbdkernel.Export{}, err
	}
	kernelEnd, err := fileConn(fds[1], "grbd-attach-kernel")
	if err != nil {
		serverEnd.Close()
		return nil, nbdkernel.Export{}, err
	}
	go func() { _ = srv.ServeConn(serverEnd) }()
	_ = kernelEnd.SetDeadline(time.Now().Add(timeout))
	x, err := nbdkernel.Negotiate(kernelEnd, export)
	_ = kernelEnd.SetDeadline(time.Time{})
	if err != nil {
		kernelEnd.Close()
		return nil, nbdkernel.Export{}, fmt.Errorf("attach: local export: %w", err)
	}
	return kernelEnd.(*net.UnixConn), x, nil
}

// fileConn turns a socket descriptor into a net.Conn (which dups it) and
// closes the descriptor.
func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("attach: %s: %w", name, err)
	}
	return c, nil
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
func flagNames(f nbdproto.Flags) string {
	var out []string
	for _, n := range []struct {
		bit  nbdproto.Flags
		name string
	}{{nbdproto.FlagReadOnly, "READ_ONLY"}, {nbdproto.FlagSendFlush, "FLUSH"}, {nbdproto.FlagSendFUA, "FUA"},
		{nbdproto.FlagSendTrim, "TRIM"}, {nbdproto.FlagSendWriteZeroes, "WRITE_ZEROES"}, {nbdproto.FlagCanMultiConn, "MULTI_CONN"}} {
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

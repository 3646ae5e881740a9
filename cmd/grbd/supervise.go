package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/config"
)

// localMember is one child process of `grbd local`.
type localMember struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	// started: the member printed its first line ("listening ..." from a
	// node, "ready witness ..." from the witness): its start is over.
	started atomic.Bool
}

// superviseLocal runs every member of cfg as a child process of self, in
// this process group, relays their role lines as "member ..." lines and a
// "ready" line per serving primary, and stops them when ctx ends. A member
// that exits before its start is over (its data directory is locked, its
// disk is full, its port is taken) stops every member and makes
// superviseLocal fail: a cluster missing a member from the start is not
// what the user asked for. A member that dies later (kill -9 of the
// primary to watch a failover) is reported and the others go on.
//
// With proxyPort > 0 it also runs `grbd proxy` on 127.0.0.1:proxyPort and
// relays its "proxy nbd://..." line: the URI that survives failovers.
func superviseLocal(ctx context.Context, stdout io.Writer, self string, cfg *config.Config, g *globalOptions, log *slog.Logger, proxyPort int) error {
	out := &lockedWriter{w: stdout}
	var members []*localMember
	defer func() {
		for _, m := range members {
			select {
			case <-m.done:
			default:
				_ = m.cmd.Process.Kill()
				<-m.done
			}
		}
	}()
	start := func(name string, args ...string) error {
		args = append(args, "--config", cfg.Path, "--log-level", g.logLevel, "--log-format", g.logFormat)
		c := exec.Command(self, args...)
		c.Stderr = os.Stderr
		// Children die with this process even after a kill -9 of it.
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		pipe, err := c.StdoutPipe()
		if err != nil {
			return err
		}
		if err := c.Start(); err != nil {
			return fmt.Errorf("local: start %s: %w", name, err)
		}
		m := &localMember{name: name, cmd: c, done: make(chan struct{})}
		members = append(members, m)
		relayed := make(chan struct{})
		go func() { relayMember(out, m, pipe); close(relayed) }()
		// Wait closes the pipe: only once every line was read (and
		// started set from them).
		go func() { <-relayed; m.err = c.Wait(); close(m.done) }()
		return nil
	}
	if cfg.Witness != nil {
		if err := start(cfg.Witness.Name, "witness", "--name", cfg.Witness.Name); err != nil {
			return err
		}
	}
	for _, n := range cfg.Nodes {
		if err := start(n.Name, "node", "--name", n.Name); err != nil {
			return err
		}
	}
	if proxyPort > 0 {
		if err := start("proxy", "proxy", "--listen", fmt.Sprintf("127.0.0.1:%d", proxyPort)); err != nil {
			return err
		}
	}
	exited := make(chan *localMember, len(members))
	for _, m := range members {
		go func() { <-m.done; exited <- m }()
	}
	alive := len(members)
	for alive > 0 {
		select {
		case <-ctx.Done():
			log.Info("stopping the local cluster", "cause", context.Cause(ctx))
			return stopMembers(members)
		case m := <-exited:
			alive--
			if !m.started.Load() {
				out.printf("member %s pid %d exited during start (%v): stopping every member\n", m.name, m.cmd.Process.Pid, exitText(m.err))
				log.Error("a member exited during start: stopping the local cluster", "member", m.name, "err", exitText(m.err))
				if err := stopMembers(members); err != nil {
					log.Error("stopping the local cluster", "err", err)
				}
				return fmt.Errorf("local: member %s exited during start (%s); see its log above", m.name, exitText(m.err))
			}
			out.printf("member %s pid %d exited (%v)\n", m.name, m.cmd.Process.Pid, exitText(m.err))
		}
	}
	return errors.New("local: every member exited")
}

// relayMember turns a child's stdout lines into member lines.
func relayMember(out *lockedWriter, m *localMember, r io.Reader) {
	pid := m.cmd.Process.Pid
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		m.started.Store(true)
		switch {
		case len(f) == 3 && f[0] == "ready" && f[1] == "witness":
			out.printf("member %s pid %d role Witness\n", m.name, pid)
		case len(f) == 2 && f[0] == "ready":
			out.printf("ready %s\n", f[1])
		case len(f) == 2 && f[0] == "proxy":
			out.printf("proxy %s\n", f[1])
			out.printf("member %s pid %d role Proxy\n", m.name, pid)
		case len(f) == 6 && f[0] == "role":
			// role ROLE epoch N STATE URI
			out.printf("member %s pid %d role %s %s epoch %s %s\n", m.name, pid, f[1], f[5], f[3], f[4])
		}
	}
}

// stopMembers sends SIGTERM to every live member and waits, killing those
// that do not stop within 30 s.
func stopMembers(members []*localMember) error {
	for _, m := range members {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	var errs []error
	for _, m := range members {
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
			errs = append(errs, fmt.Errorf("local: %s did not stop within 30s", m.name))
		}
	}
	return errors.Join(errs...)
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/grbd/grbd/internal/child"
	"github.com/grbd/grbd/internal/config"
)

// localMember is one child process of `grbd local`. Its start is over at
// its first line ("listening ..." from a node, "ready witness ..." from the
// witness, "proxy ..." from the proxy).
type localMember struct {
	name string
	proc *child.Process
}

func (m *localMember) pid() int { return m.proc.PID() }

func (m *localMember) started() bool {
	select {
	case <-m.proc.Started():
		return true
	default:
		return false
	}
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
			m.proc.Kill()
		}
	}()
	start := func(name string, args ...string) error {
		args = append(args, "--config", cfg.Path, "--log-level", g.logLevel, "--log-format", g.logFormat)
		m := &localMember{name: name}
		var relay func(string) // set once the PID is known, before any line is read
		ready := make(chan struct{})
		p, err := child.Start(child.Spec{
			Name: name, Path: self, Args: args, Stderr: os.Stderr,
			OnLine: func(line string) { <-ready; relay(line) },
		})
		if err != nil {
			return fmt.Errorf("local: %w", err)
		}
		m.proc = p
		relay = relayMember(out, name, p.PID())
		close(ready)
		members = append(members, m)
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
		go func() { <-m.proc.Done(); exited <- m }()
	}
	alive := len(members)
	for alive > 0 {
		select {
		case <-ctx.Done():
			log.Info("stopping the local cluster", "cause", context.Cause(ctx))
			return stopMembers(members)
		case m := <-exited:
			alive--
			_, exitErr := m.proc.Exited()
			if !m.started() {
				out.printf("member %s pid %d exited during start (%v): stopping every member\n", m.name, m.pid(), child.ExitText(exitErr))
				log.Error("a member exited during start: stopping the local cluster", "member", m.name, "err", child.ExitText(exitErr))
				if err := stopMembers(members); err != nil {
					log.Error("stopping the local cluster", "err", err)
				}
				return fmt.Errorf("local: member %s exited during start (%s); see its log above", m.name, child.ExitText(exitErr))
			}
			out.printf("member %s pid %d exited (%v)\n", m.name, m.pid(), child.ExitText(exitErr))
		}
	}
	return errors.New("local: every member exited")
}

// relayMember turns a child's stdout lines into member lines.
func relayMember(out *lockedWriter, name string, pid int) func(line string) {
	return func(line string) {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "ready" && f[1] == "witness":
			out.printf("member %s pid %d role Witness\n", name, pid)
		case len(f) == 2 && f[0] == "ready":
			out.printf("ready %s\n", f[1])
		case len(f) == 2 && f[0] == "proxy":
			out.printf("proxy %s\n", f[1])
			out.printf("member %s pid %d role Proxy\n", name, pid)
		case len(f) == 6 && f[0] == "role":
			// role ROLE epoch N STATE URI
			out.printf("member %s pid %d role %s %s epoch %s %s\n", name, pid, f[1], f[5], f[3], f[4])
		}
	}
}

// stopMembers sends SIGTERM to every live member at once and waits, killing
// those that do not stop within 30 s.
func stopMembers(members []*localMember) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	procs := make([]*child.Process, len(members))
	for i, m := range members {
		procs[i] = m.proc
	}
	var errs []error
	for i, err := range child.TerminateAll(ctx, procs...) {
		if errors.Is(err, child.ErrTimeout) {
			errs = append(errs, fmt.Errorf("local: %s did not stop within 30s", members[i].name))
		}
	}
	return errors.Join(errs...)
}

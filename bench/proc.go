package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startTimeout bounds how long a child may take to become ready.
const startTimeout = 60 * time.Second

// child is one server process the harness started. Its stderr (and stdout)
// go to LOGDIR/NAME.log.
type child struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid after done is closed
}

// readiness says when a child is ready: it printed a stdout line starting
// with Line (the rest of the line is returned), or a TCP dial of Addr
// succeeded. At least one must be set.
type readiness struct {
	Line string
	Addr string
}

// startChild runs argv, logging to logDir/name.log, and waits until it is
// ready. The child is killed if the harness dies (Pdeathsig).
func startChild(ctx context.Context, logDir, name string, argv []string, ready readiness) (*child, string, error) {
	if err := requireTool(argv[0]); err != nil {
		return nil, "", fmt.Errorf("bench: %s: %w", name, err)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	c := &child{name: name, log: filepath.Join(logDir, name+".log"), done: make(chan struct{})}
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Stderr = logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return nil, "", fmt.Errorf("bench: start %s: %w", name, err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(logf, "stdout:", sc.Text())
			if rest, ok := strings.CutPrefix(sc.Text(), ready.Line); ok && ready.Line != "" {
				select {
				case lines <- strings.TrimSpace(rest):
				default:
				}
			}
		}
	}()
	go func() { c.err = c.cmd.Wait(); logf.Close(); close(c.done) }()

	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready.Addr != "" && dialOK(ready.Addr) {
			return c, ready.Addr, nil
		}
		select {
		case l := <-lines:
			return c, l, nil
		case <-c.done:
			return nil, "", fmt.Errorf("bench: %s exited before ready (%v): %s", name, c.err, c.logTail())
		case <-deadline.C:
			c.kill()
			return nil, "", fmt.Errorf("bench: %s not ready after %v; see %s", name, startTimeout, c.log)
		case <-ctx.Done():
			c.kill()
			return nil, "", ctx.Err()
		case <-tick.C:
		}
	}
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM and waits; SIGKILL after 10 s.
func (c *child) stop() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.kill()
		return fmt.Errorf("bench: %s ignored SIGTERM for 10s; killed", c.name)
	}
	return nil
}

// kill sends SIGKILL (no cleanup: a crash) and waits for the exit.
func (c *child) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// logTail is the end of the child's log, for error messages.
func (c *child) logTail() string {
	b, _ := os.ReadFile(c.log)
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// ProcStats is the resource use of one server process over the whole run.
type ProcStats struct {
	System     string  `json:"system"`
	Process    string  `json:"process"`
	PID        int     `json:"pid"`
	PeakRSS    int64   `json:"peak_rss_bytes"` // VmHWM
	CPUSeconds float64 `json:"cpu_seconds"`    // utime + stime
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (sysconf would need cgo).
const clockTicks = 100

// readProcStats reads VmHWM from /proc/PID/status and utime+stime from
// /proc/PID/stat. The process must still be running.
func readProcStats(pid int) (rss int64, cpu float64, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %w", err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %w", err)
	}
	return parseProcStats(string(status), string(stat))
}

// parseProcStats parses the two /proc files; see proc(5).
func parseProcStats(status, stat string) (rss int64, cpu float64, err error) {
	found := false
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v) // "123456 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, 0, fmt.Errorf("bench: bad VmHWM line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("bench: bad VmHWM line %q: %w", line, err)
			}
			rss, found = kb<<10, true
		}
	}
	if !found {
		return 0, 0, fmt.Errorf("bench: no VmHWM in /proc/PID/status")
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself: fields are counted after the last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("bench: bad /proc/PID/stat %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("bench: short /proc/PID/stat %q", stat)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("bench: bad utime/stime in /proc/PID/stat %q", stat)
	}
	return rss, float64(utime+stime) / clockTicks, nil
}

func splitHostPort(addr string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("bench: address %q: %w", addr, err)
	}
	return host, port, nil
}

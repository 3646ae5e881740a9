package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/grbd/grbd/internal/child"
)

// startTimeout bounds how long a child may take to become ready.
const startTimeout = 60 * time.Second

// serverProc is one server process the harness started. Its stderr (and
// stdout) go to LOGDIR/NAME.log.
type serverProc struct{ *child.Process }

// readiness says when a child is ready: it printed a stdout line starting
// with Line (the rest of the line is returned), or a TCP dial of Addr
// succeeded. At least one must be set.
type readiness struct {
	Line string
	Addr string
}

// startChild runs argv, logging to logDir/name.log, and waits until it is
// ready. The child is killed if the harness dies (Pdeathsig).
func startChild(ctx context.Context, logDir, name string, argv []string, ready readiness) (*serverProc, string, error) {
	if err := requireTool(argv[0]); err != nil {
		return nil, "", fmt.Errorf("bench: %s: %w", name, err)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	spec := child.Spec{Name: name, Path: argv[0], Args: argv[1:], Log: filepath.Join(logDir, name+".log")}
	if ready.Line != "" {
		spec.Started = []string{ready.Line}
	} else {
		spec.Started = []string{} // only a dial ends the start
	}
	cp, err := child.Start(spec)
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	c := &serverProc{cp}
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready.Addr != "" && dialOK(ready.Addr) {
			return c, ready.Addr, nil
		}
		select {
		case <-c.Started():
			return c, strings.TrimSpace(strings.TrimPrefix(c.StartLine(), ready.Line)), nil
		case <-c.Done():
			_, exitErr := c.Exited()
			return nil, "", fmt.Errorf("bench: %s exited before ready (%v): %s", name, exitErr, c.LogTail(600))
		case <-deadline.C:
			c.Kill()
			return nil, "", fmt.Errorf("bench: %s not ready after %v; see %s", name, startTimeout, c.Log)
		case <-ctx.Done():
			c.Kill()
			return nil, "", ctx.Err()
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM and waits; SIGKILL after 10 s. How a server ends on
// SIGTERM is its own business: only a kill is an error.
func (c *serverProc) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Terminate(ctx); errors.Is(err, child.ErrTimeout) {
		return fmt.Errorf("bench: %s ignored SIGTERM for 10s; killed", c.Name)
	}
	return nil
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

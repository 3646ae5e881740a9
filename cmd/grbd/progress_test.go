package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestProgressText(t *testing.T) {
	t.Parallel()
	require.Equal(t, "[##########..........]", bar(50, 100, 20))
	require.Equal(t, "[....]", bar(0, 0, 4))
	require.Equal(t, "[####]", bar(200, 100, 4), "clamped")
	require.Equal(t, "512B", humanBytes(512))
	require.Equal(t, "1.5KiB", humanBytes(1536))
	require.Equal(t, "2.0GiB", humanBytes(2<<30))
	require.Equal(t, "1m20s", eta(80.4))
	require.Equal(t, "beta resync [##..]  50.0% 1.0MiB/2.0MiB ETA 3s", progressText("beta resync", 1<<20, 2<<20, 3, 4))
	require.Equal(t, "beta  25.0% 1.0KiB/4.0KiB", progressText("beta", 1024, 4096, 0, 0), "no bar, no ETA")
}

func TestProgressViewPlainPrintsChanges(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	v := newProgressView(&b)
	require.False(t, v.tty)
	v.show([]progressItem{{id: "a", key: "resync 10", text: "a 12%"}})
	v.show([]progressItem{{id: "a", key: "resync 10", text: "a 15%"}}) // same decile: quiet
	v.show([]progressItem{{id: "a", key: "resync 20", text: "a 21%"}})
	v.show([]progressItem{{id: "a", key: "uptodate", text: "a UpToDate"}})
	require.Equal(t, "a 12%\na 21%\na UpToDate\n", b.String())
}

func TestProgressViewTerminalRedraws(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	v := &progressView{w: &b, tty: true, keys: map[string]string{}}
	v.show([]progressItem{{text: "one"}, {text: "two"}})
	v.show([]progressItem{{text: "uno"}})
	require.Equal(t, "\r\x1b[2Kone\n\r\x1b[2Ktwo\n"+"\x1b[2A\r\x1b[2Kuno\n\r\x1b[2K\n\x1b[1A", b.String())
}

// openPTY opens a pseudo-terminal: what the user's terminal would be.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	require.NoError(t, unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	require.NoError(t, unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}))
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// capture copies what a terminal shows into a buffer.
func capture(r io.Reader) (*syncBuffer, <-chan struct{}) {
	var b syncBuffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(&b, r)
	}()
	return &b, done
}

// startResync makes the secondary of a cluster take a full resync that
// lasts a few seconds (rate-limited) and returns its name.
func startResync(t *testing.T) (*cluster, string) {
	c := startCluster(t, 2, true, "8MiB", "replication:\n  resync-rate: 2MiB\n")
	pn, sn := c.roles()
	c.post(sn, "/invalidate")
	// The invalidate takes effect when the secondary reconnects: until the
	// primary sees it, its status still says UpToDate and wait-sync would
	// be done at its first look.
	require.Eventually(t, func() bool {
		for _, ps := range c.nodes[pn].Status().Peers {
			if ps.Name == sn && ps.Disk != node.DiskUpToDate {
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond, "the primary never saw %s leave UpToDate", sn)
	return c, sn
}

// TestWaitSyncBarOnTerminal is the terminal recording: wait-sync attached
// to a pseudo-terminal draws a bar for the resyncing peer, redrawn in
// place, until the peer is UpToDate.
func TestWaitSyncBarOnTerminal(t *testing.T) {
	t.Parallel()
	master, tty := openPTY(t)
	require.True(t, isTerminal(tty))
	require.Equal(t, 120, termWidth(tty))
	screen, _ := capture(master)
	c, sn := startResync(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	require.NoError(t, runCLITo(ctx, tty, tty, "wait-sync", "--config", c.path, "--interval", "100ms"))
	var got string
	require.Eventually(t, func() bool {
		got = screen.String()
		return strings.Contains(got, "in sync: every peer is UpToDate")
	}, 5*time.Second, 10*time.Millisecond)
	t.Logf("terminal showed:\n%q", got)
	require.Contains(t, got, sn)
	require.Contains(t, got, " resync [#", "a bar with progress")
	require.Contains(t, got, "MiB/8.0MiB")
	require.Contains(t, got, "ETA ")
	require.Contains(t, got, "\x1b[1A\r\x1b[2K", "redrawn in place")
	require.Contains(t, got, "UpToDate")
	// Bars grow: some frame shows less than the last one.
	require.Regexp(t, `resync \[#+\.+\]`, got)
}

// TestWaitSyncPlainLines: the same resync off a terminal is a few plain
// lines, in steps of 10%.
func TestWaitSyncPlainLines(t *testing.T) {
	t.Parallel()
	c, sn := startResync(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var out, errb syncBuffer
	require.NoError(t, runCLITo(ctx, &out, &errb, "wait-sync", "--config", c.path, "--interval", "50ms"))
	got := out.String()
	require.NotContains(t, got, "\x1b[")
	require.NotContains(t, got, "[#")
	lines := strings.Split(strings.TrimSpace(got), "\n")
	require.Equal(t, "in sync: every peer is UpToDate", lines[len(lines)-1])
	require.Contains(t, got, sn)
	require.Contains(t, got, "% ")
	require.Less(t, len(lines), 20, "one line per state or 10%% step: %q", got)
}

func TestWaitSyncGivesUp(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, true, "4MiB", "")
	_, sn := c.roles()
	c.stop(sn)
	// Until the primary has noticed the stopped peer it still reports it
	// UpToDate; from then on wait-sync must give up.
	var out string
	require.Eventually(t, func() bool {
		var err error
		out, _, err = runCLI(t.Context(), "wait-sync", "--config", c.path, "--max-wait", "1s", "--timeout", "300ms")
		return errors.Is(err, errNotInSync)
	}, 20*time.Second, 100*time.Millisecond, "wait-sync never gave up")
	require.Contains(t, out, "waiting for")
	_, _, err := runCLI(t.Context(), "wait-sync", "--config", c.path, "--name", "w")
	require.ErrorContains(t, err, "witness")
}

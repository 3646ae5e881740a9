package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"golang.org/x/sys/unix"
)

// isTerminal reports whether w is a terminal: progress is drawn as bars
// redrawn in place there, and as plain lines everywhere else.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// termWidth is the terminal's width in columns (80 when unknown).
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 80
}

// bar draws done of total as [#####.....] with width cells inside.
func bar(done, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(math.Round(float64(width) * float64(min(max(done, 0), total)) / float64(total)))
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

// percent is done of total in percent (100 for an empty total).
func percent(done, total int64) float64 {
	if total <= 0 {
		return 100
	}
	return 100 * float64(min(max(done, 0), total)) / float64(total)
}

// humanBytes formats n with one decimal in the largest binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, u := float64(n), -1
	for v >= unit && u < 4 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f%ciB", v, "KMGTP"[u])
}

// eta formats an estimate of seconds left ("-" when unknown).
func eta(seconds float64) string {
	if seconds <= 0 || math.IsInf(seconds, 0) || math.IsNaN(seconds) {
		return "-"
	}
	return (time.Duration(seconds * float64(time.Second))).Round(time.Second).String()
}

// progressText is one progress line: label, bar (when width > 0),
// percent, bytes and ETA.
func progressText(label string, done, total int64, etaSeconds float64, width int) string {
	var b strings.Builder
	b.WriteString(label)
	if width > 0 {
		b.WriteString(" " + bar(done, total, width))
	}
	fmt.Fprintf(&b, " %5.1f%% %s/%s", percent(done, total), humanBytes(done), humanBytes(total))
	if etaSeconds > 0 {
		b.WriteString(" ETA " + eta(etaSeconds))
	}
	return b.String()
}

// progressView shows a block of lines that changes over time: on a
// terminal it redraws them in place; elsewhere it prints a line only when
// its key (the part that matters: state, percent in steps of 10) changes,
// so that logs stay short.
type progressView struct {
	w     io.Writer
	tty   bool
	drawn int               // lines on screen (tty)
	keys  map[string]string // last key per line id (plain)
}

func newProgressView(w io.Writer) *progressView {
	return &progressView{w: w, tty: isTerminal(w), keys: map[string]string{}}
}

// progressItem is one line of a progressView: id names it, key decides
// when plain output prints it again.
type progressItem struct {
	id, key, text string
}

// show draws items.
func (v *progressView) show(items []progressItem) {
	if !v.tty {
		for _, it := range items {
			if v.keys[it.id] != it.key {
				v.keys[it.id] = it.key
				fmt.Fprintln(v.w, it.text)
			}
		}
		return
	}
	var b strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", v.drawn) // back to the first line drawn
	}
	for _, it := range items {
		b.WriteString("\r\x1b[2K" + it.text + "\n")
	}
	for i := len(items); i < v.drawn; i++ {
		b.WriteString("\r\x1b[2K\n") // clear what is left of a longer block
	}
	if extra := v.drawn - len(items); extra > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", extra)
	}
	v.drawn = len(items)
	_, _ = io.WriteString(v.w, b.String())
}

// clear removes the block from a terminal (for transient progress).
func (v *progressView) clear() {
	if v.tty && v.drawn > 0 {
		v.show(nil)
	}
}

// decile is p rounded down to a multiple of 10, for plain-line keys.
func decile(p float64) int { return int(p/10) * 10 }

// verifyPoll is how often a running verify's progress is asked for.
const verifyPoll = 250 * time.Millisecond

// showVerifyProgress draws the progress of the verify running on the
// primary prim on w while it runs, when w is a terminal (a verify's
// output is its result; plain progress lines would clutter scripts). The
// returned function stops it and clears the bar.
func showVerifyProgress(ctx context.Context, w io.Writer, cli *auth.Client, prim config.Member) (stop func()) {
	view := newProgressView(w)
	if !view.tty {
		return func() {}
	}
	width := max(10, min(40, termWidth(w)-50))
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				view.clear()
				return
			case <-time.After(verifyPoll):
			}
			row := fetchStatus(ctx, cli, prim, verifyPoll)
			if row.Reachable && row.Verify != nil {
				v := row.Verify
				view.show([]progressItem{{id: "verify", text: progressText("verify "+v.Peer, v.Done, v.Total, 0, width)}})
			}
		}
	}()
	return func() { close(done); <-finished }
}

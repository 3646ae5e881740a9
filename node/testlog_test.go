package node

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

// logRing keeps the last lines a test cluster logged, so that a test that
// fails (often only under CI's load) shows what the nodes did before it.
type logRing struct {
	mu    sync.Mutex
	lines []string
	next  int // where the next line goes once the ring is full
	part  bytes.Buffer
	size  int // lines kept
}

// The ring keeps logRingLines lines at info level, or debugRingLines with
// debug lines too (GRBD_TEST_DEBUG=1: raft's elections and transfers).
const (
	logRingLines   = 60
	debugRingLines = 3000
)

func (r *logRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.part.Write(p)
	for {
		line, err := r.part.ReadString('\n')
		if err != nil { // no newline yet: keep the fragment
			r.part.Reset()
			r.part.WriteString(line)
			return len(p), nil
		}
		line = strings.TrimSuffix(line, "\n")
		if len(r.lines) < r.size {
			r.lines = append(r.lines, line)
			continue
		}
		r.lines[r.next] = line
		r.next = (r.next + 1) % r.size
	}
}

func (r *logRing) tail() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(append([]string(nil), r.lines[r.next:]...), r.lines[:r.next]...)
}

// clusterLogger logs to stderr with GRBD_TEST_LOG set, otherwise into a
// ring that is printed if t fails.
func clusterLogger(t testing.TB) *slog.Logger {
	if os.Getenv("GRBD_TEST_LOG") != "" {
		return testLogger()
	}
	r, level := &logRing{size: logRingLines}, slog.LevelInfo
	if os.Getenv("GRBD_TEST_DEBUG") != "" {
		r.size, level = debugRingLines, slog.LevelDebug
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("the cluster's last %d log lines (all of them: GRBD_TEST_LOG=1; with debug lines: GRBD_TEST_DEBUG=1):", r.size)
		for _, l := range r.tail() {
			t.Log(l)
		}
	})
	return slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: level}))
}

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
}

const logRingLines = 60

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
		if len(r.lines) < logRingLines {
			r.lines = append(r.lines, line)
			continue
		}
		r.lines[r.next] = line
		r.next = (r.next + 1) % logRingLines
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
	r := &logRing{}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("the cluster's last %d log lines (all of them: GRBD_TEST_LOG=1):", logRingLines)
		for _, l := range r.tail() {
			t.Log(l)
		}
	})
	return slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

package events

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAddFillsAndBoundsTheRing(t *testing.T) {
	l := NewLog("alpha", 3)
	var seen []uint64
	l.OnAdd(func(e Event) { seen = append(seen, e.Seq) })
	for i := range 5 {
		e := l.Add(Event{Type: TypePeer, Peer: fmt.Sprint("p", i)})
		require.Equal(t, uint64(i+1), e.Seq)
		require.Equal(t, "alpha", e.Member)
		require.Equal(t, "alpha", e.Node)
		require.False(t, e.Time.IsZero())
	}
	require.Equal(t, []uint64{1, 2, 3, 4, 5}, seen)
	recent := l.Recent(0)
	require.Len(t, recent, 3)
	require.Equal(t, uint64(3), recent[0].Seq)
	require.Len(t, l.Recent(4), 1, "since")
	require.Len(t, l.Recent(99), 3, "a since above the newest seq means the member restarted: everything")
}

func TestChangeLogsOnce(t *testing.T) {
	l := NewLog("alpha", 0)
	require.True(t, l.Change("peer/beta", "Connected", Event{Type: TypePeer, State: "Connected"}))
	require.False(t, l.Change("peer/beta", "Connected", Event{Type: TypePeer, State: "Connected"}))
	require.True(t, l.Change("peer/gamma", "Connected", Event{Type: TypePeer, State: "Connected"}))
	require.True(t, l.Change("peer/beta", "Disconnected", Event{Type: TypePeer, State: "Disconnected"}))
	require.Len(t, l.Recent(0), 3)
}

func TestSlowSubscriberIsCutOff(t *testing.T) {
	l := NewLog("alpha", 0)
	_, ch, cancel := l.Subscribe(0)
	defer cancel()
	for range subscriberBuffer + 1 {
		l.Add(Event{Type: TypeRole})
	}
	n := 0
	for range ch {
		n++
	}
	require.Equal(t, subscriberBuffer, n, "the channel closes after what fit")
	cancel() // idempotent after the cut
}

// TestStreamShape checks the JSON lines GET /events writes: the kept events
// at once, new ones as they happen, and ?now=1 / ?since=N.
func TestStreamShape(t *testing.T) {
	l := NewLog("alpha", 0)
	l.Add(Event{Type: TypeRole, Role: "Primary", Epoch: 3, Primary: "alpha", Cause: "promoted in epoch 3"})
	srv := httptest.NewServer(l)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "?now=1")
	require.NoError(t, err)
	var lines []map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		lines = append(lines, m)
	}
	resp.Body.Close()
	require.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
	require.Len(t, lines, 1)
	for _, k := range []string{"seq", "time", "member", "type", "node", "role", "epoch", "primary", "cause"} {
		require.Contains(t, lines[0], k)
	}
	require.Equal(t, "role", lines[0]["type"])
	require.Equal(t, "alpha", lines[0]["member"])
	require.NotContains(t, lines[0], "peer", "empty fields are left out")

	resp, err = http.Get(srv.URL + "?since=1")
	require.NoError(t, err)
	defer resp.Body.Close()
	got := make(chan Event, 4)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var e Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				got <- e
			}
		}
		close(got)
	}()
	require.Eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.subs) == 1
	}, 5*time.Second, time.Millisecond)
	l.Add(Event{Type: TypePeer, Peer: "beta", State: "Connected", Cause: "handshake done"})
	select {
	case e := <-got:
		require.Equal(t, uint64(2), e.Seq, "event 1 was before since")
		require.Equal(t, TypePeer, e.Type)
		require.Equal(t, "beta", e.Peer)
		require.Equal(t, "Connected", e.State)
	case <-time.After(5 * time.Second):
		t.Fatal("no streamed event")
	}
}

func TestCloseEndsStreams(t *testing.T) {
	l := NewLog("alpha", 0)
	l.Add(Event{Type: TypeRole})
	_, ch, cancel := l.Subscribe(0)
	defer cancel()
	l.Close()
	_, ok := <-ch
	require.False(t, ok)
	recent, ch, _ := l.Subscribe(0)
	require.Len(t, recent, 1)
	_, ok = <-ch
	require.False(t, ok, "a subscription after Close ends after the kept events")
}

// TestSinceFromAnotherRun: a reader that resumes after the member restarted
// (its run changed, Seq started over) gets every kept event, not those
// above its old position only.
func TestSinceFromAnotherRun(t *testing.T) {
	l := NewLog("alpha", 0)
	for range 5 {
		l.Add(Event{Type: TypeRole})
	}
	srv := httptest.NewServer(l)
	defer srv.Close()
	count := func(query string) (int, string) {
		resp, err := http.Get(srv.URL + "?now=1&" + query)
		require.NoError(t, err)
		defer resp.Body.Close()
		n := 0
		for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
			n++
		}
		return n, resp.Header.Get(RunHeader)
	}
	n, run := count("")
	require.Equal(t, 5, n)
	require.NotEmpty(t, run)
	n, _ = count("since=3&run=" + run)
	require.Equal(t, 2, n, "same run: after since")
	n, _ = count("since=3&run=an-older-run")
	require.Equal(t, 5, n, "another run: everything")
}

package node

import (
	"bufio"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/events"
	"github.com/stretchr/testify/require"
)

// waitEvent waits until get returns an event that match accepts and
// returns it.
func waitEvent(t *testing.T, what string, get func() []Event, match func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := get()
		if i := slices.IndexFunc(evs, match); i >= 0 {
			return evs[i]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event in %+v", what, evs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// other is the name of a running data node other than p: under load the
// second node may win the first election, so tests name nodes by role.
func (c *testCluster) other(p *Node) string {
	for name := range c.nodes {
		if name != p.me.Name {
			return name
		}
	}
	c.t.Fatal("no other node")
	return ""
}

// adminEvents reads GET /events?now=1 from an admin address.
func adminEvents(t *testing.T, admin string) []Event {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/events?now=1")
	require.NoError(t, err)
	defer resp.Body.Close()
	var out []Event
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var e Event
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e), sc.Text())
		out = append(out, e)
	}
	return out
}

// TestEventsRecordStateChanges drives a cluster through promotion, a full
// resync and a lost secondary, and checks that each member logged each
// change once, with its cause.
func TestEventsRecordStateChanges(t *testing.T) {
	t.Parallel()
	c, p := newSyncedPair(t, 20)
	pn, sn := p.me.Name, c.other(p)
	sec := c.nodes[sn]
	pev := func() []Event { return p.events.Recent(0) }
	sev := func() []Event { return sec.events.Recent(0) }

	role := waitEvent(t, "primary role", pev, func(e Event) bool { return e.Type == events.TypeRole && e.Role == RolePrimary })
	require.Equal(t, pn, role.Member)
	require.Equal(t, pn, role.Primary)
	require.Positive(t, role.Epoch)
	require.Contains(t, role.Cause, "epoch")
	waitEvent(t, "unfenced", pev, func(e Event) bool { return e.Type == events.TypeUnfenced && e.Cause != "" })
	waitEvent(t, "peer connected", pev, func(e Event) bool {
		return e.Type == events.TypePeer && e.Peer == sn && e.State == ConnConnected && strings.HasPrefix(e.Cause, "handshake done")
	})
	waitEvent(t, "secondary role", sev, func(e Event) bool {
		return e.Type == events.TypeRole && e.Role == RoleSecondary && e.Primary == pn
	})
	waitEvent(t, "primary connected", sev, func(e Event) bool {
		return e.Type == events.TypePeer && e.Peer == pn && e.State == ConnConnected
	})
	waitEvent(t, "member link", sev, func(e Event) bool {
		return e.Type == events.TypeMember && e.Peer == "w" && e.State == ConnConnected
	})

	require.NoError(t, sec.Invalidate())
	waitEvent(t, "invalidate", sev, func(e Event) bool { return e.Type == events.TypeInvalidate && e.Cause != "" })
	started := waitEvent(t, "resync started", pev, func(e Event) bool {
		return e.Type == events.TypeResync && e.Peer == sn && e.State == events.StateStarted
	})
	require.Equal(t, int64(4<<20), started.Bytes)
	require.Contains(t, started.Cause, "every region")
	waitEvent(t, "resync done", pev, func(e Event) bool {
		return e.Type == events.TypeResync && e.Peer == sn && e.State == events.StateDone && e.Bytes == 4<<20
	})
	waitEvent(t, "peer UpToDate", pev, func(e Event) bool {
		return e.Type == events.TypeDisk && e.Peer == sn && e.State == DiskUpToDate && e.Seq > started.Seq
	})
	// The invalidate event itself reports the disk Inconsistent.
	waitEvent(t, "own disk consistent", sev, func(e Event) bool { return e.Type == events.TypeDisk && e.State == DiskConsistent })

	c.stop(sn)
	writeBlocks(t, p, 20, 30) // completes once d1 is Outdated
	waitEvent(t, "peer lost", pev, func(e Event) bool {
		return e.Type == events.TypePeer && e.Peer == sn && e.State == ConnDisconnected && strings.HasPrefix(e.Cause, "data stream ended")
	})
	out := waitEvent(t, "outdated", pev, func(e Event) bool { return e.Type == events.TypeOutdated && e.Peer == sn })
	require.Contains(t, out.Cause, "lost its data path")

	// Each state change once: one Connected per connection of d1 since p
	// became primary (the test cluster may have switched the first
	// primary over to d0).
	var connected int
	evs := pev()
	since := 0
	for i, e := range evs {
		if e.Type == events.TypeRole && e.Role == RolePrimary {
			since = i
		}
	}
	for _, e := range evs[since:] {
		if e.Type == events.TypePeer && e.Peer == sn && e.State == ConnConnected {
			connected++
		}
	}
	require.LessOrEqual(t, connected, 2, "the invalidate reconnects d1 once")
	for i, e := range pev() {
		require.Equal(t, uint64(i+1), e.Seq, "consecutive sequence numbers")
	}

	// The witness sees the same cluster, through its own GET /events.
	wev := func() []Event { return adminEvents(t, c.cfg.Witness.Admin) }
	waitEvent(t, "witness role", wev, func(e Event) bool {
		return e.Type == events.TypeRole && e.Member == "w" && e.Role == "Witness" && e.Primary == pn
	})
	waitEvent(t, "witness outdated", wev, func(e Event) bool { return e.Type == events.TypeOutdated && e.Peer == sn })
	waitEvent(t, "witness member lost", wev, func(e Event) bool {
		return e.Type == events.TypeMember && e.Peer == sn && e.State == ConnDisconnected
	})
}

func TestFencedEvent(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 2, true, "")
	p := c.primary()
	require.NoError(t, c.wit.Close())
	c.wit = nil
	c.stop(c.other(p))
	e := waitEvent(t, "fenced", func() []Event { return p.events.Recent(0) }, func(e Event) bool { return e.Type == events.TypeFenced })
	require.Contains(t, e.Cause, "lease")
	require.Equal(t, uint64(1), p.events.Counts()[events.TypeFenced])
}

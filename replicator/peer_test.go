package replicator

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// ctl is a control-plane state for one peer, as quorum.State answers it.
type ctl struct {
	outdated bool
	gen      uint64
	disk     uint64 // recorded disk
}

func (c ctl) IsOutdated(string) bool { return c.outdated }
func (c ctl) GenOf(string) uint64    { return c.gen }
func (c ctl) NeedsClear(_ string, disk uint64) bool {
	return c.outdated || (disk != 0 && c.disk != disk)
}

// TestPeerTransitions drives the tracker of peer "b" through events. Each
// step says how the tracker changes (from the one before) and what Ready
// hands back.
func TestPeerTransitions(t *testing.T) {
	type step struct {
		do     func(*Primary) error
		change func(*Peer)
		ready  Ready
	}
	const b = "b"
	var (
		outdated = func(gen uint64) ctl { return ctl{outdated: true, gen: gen} }
		connect  = func(acked, disk uint64) func(*Primary) error {
			return func(p *Primary) error { return p.PeerConnected(b, acked, disk) }
		}
		live = func(target, head uint64) func(*Primary) error {
			return func(p *Primary) error { _, err := p.PeerLive(b, target, head); return err }
		}
		ack = func(seq uint64, l Level, head uint64) func(*Primary) error {
			return func(p *Primary) error { _, err := p.PeerAcked(b, seq, l, head); return err }
		}
		lost  = func(p *Primary) error { return p.PeerLost(b) }
		apply = func(st ctl) func(*Primary) error {
			return func(p *Primary) error { p.ApplyState(st); return nil }
		}
		cleared = func(gen uint64, ok bool) func(*Primary) error {
			return func(p *Primary) error { p.ClearDone(b, gen, ok); return nil }
		}
		write = func(seq uint64) func(*Primary) error {
			return func(p *Primary) error { return p.Write(ReqID(seq), seq) }
		}
		outdate = []Request{{Kind: Outdate, Peer: b}}
		clearOf = func(disk uint64) []Request { return []Request{{Kind: Clear, Peer: b, Disk: disk}} }
		none    = func(*Peer) {}
	)
	tests := []struct {
		name  string
		begin ctl
		init  func(*Peer) // the tracker after Begin, from {Name: b, ClearGen: -1}
		steps []step
	}{
		{"not Outdated: counted from the start, writes wait for it", ctl{}, func(p *Peer) { p.Counted = true }, []step{
			{write(1), none, Ready{}},
			{connect(0, 7), func(p *Peer) { p.Disk = 7 }, Ready{}},
			{ack(1, Journaled, 1), func(p *Peer) { p.Acked = 1 }, Ready{Released: []ReqID{1}}},
		}},
		{"Outdated: counted once caught up, Cleared once it acked what was appended before", outdated(1), none, []step{
			{write(1), none, Ready{Released: []ReqID{1}}},
			{connect(0, 7), func(p *Peer) { p.Disk = 7 }, Ready{}},
			{live(1, 1), func(p *Peer) { p.Awaiting, p.Target = true, 1 }, Ready{}},
			{write(2), none, Ready{Released: []ReqID{2}}},
			{ack(1, Received, 2), none, Ready{}},
			{ack(1, Journaled, 2), func(p *Peer) {
				p.Acked, p.Awaiting, p.CaughtUp, p.Counted, p.ClearAt = 1, false, true, true, 2
			}, Ready{}},
			{write(3), none, Ready{}},
			{ack(2, Journaled, 3), func(p *Peer) { p.Acked, p.Clearing = 2, true }, Ready{Requests: clearOf(7)}},
			{ack(3, Journaled, 3), func(p *Peer) { p.Acked = 3 }, Ready{Released: []ReqID{3}}},
			{cleared(1, true), func(p *Peer) { p.Clearing, p.ClearGen = false, 1 }, Ready{}},
			{apply(ctl{gen: 2, disk: 7}), none, Ready{}},
		}},
		{"live holding its target already: caught up at once", outdated(3), none, []step{
			{connect(4, 7), func(p *Peer) { p.Acked, p.Disk = 4, 7 }, Ready{}},
			{live(4, 4), func(p *Peer) { p.Target, p.CaughtUp, p.Counted, p.ClearAt, p.Clearing = 4, true, true, 4, true },
				Ready{Requests: clearOf(7)}},
			{cleared(0, false), func(p *Peer) { p.Clearing = false }, Ready{}},
		}},
		{"lost counted peer: Outdate requested, counted until it is applied", ctl{}, func(p *Peer) { p.Counted = true }, []step{
			{write(1), none, Ready{}},
			{lost, none, Ready{Requests: outdate}},
			{lost, none, Ready{Requests: outdate}},
			{apply(ctl{}), none, Ready{}},
			{apply(outdated(1)), func(p *Peer) { p.Counted = false }, Ready{Released: []ReqID{1}}},
			{lost, none, Ready{}},
		}},
		{"an Outdate at or below its Clear's generation does not uncount", outdated(1), none, []step{
			{connect(0, 7), func(p *Peer) { p.Disk = 7 }, Ready{}},
			{live(1, 1), func(p *Peer) { p.Awaiting, p.Target = true, 1 }, Ready{}},
			{ack(1, Journaled, 1), func(p *Peer) {
				p.Acked, p.Awaiting, p.CaughtUp, p.Counted, p.ClearAt, p.Clearing = 1, false, true, true, 1, true
			}, Ready{Requests: clearOf(7)}},
			{cleared(1, true), func(p *Peer) { p.Clearing, p.ClearGen = false, 1 }, Ready{}},
			{lost, func(p *Peer) { p.CaughtUp = false }, Ready{Requests: outdate}},
			{apply(outdated(1)), none, Ready{}},
			{apply(outdated(2)), func(p *Peer) { p.Counted = false }, Ready{}},
		}},
		{"caught up: an applied Outdate does not uncount it, a Clear follows", ctl{}, func(p *Peer) { p.Counted = true }, []step{
			{live(0, 5), func(p *Peer) { p.Target, p.CaughtUp, p.ClearAt = 0, true, 5 }, Ready{}},
			{ack(5, Journaled, 5), func(p *Peer) { p.Acked = 5 }, Ready{}},
			{apply(outdated(3)), func(p *Peer) { p.Clearing = true }, Ready{Requests: clearOf(0)}},
			{apply(outdated(3)), none, Ready{}},
			{cleared(3, true), func(p *Peer) { p.Clearing, p.ClearGen = false, 3 }, Ready{}},
			{lost, func(p *Peer) { p.CaughtUp = false }, Ready{Requests: outdate}},
			{apply(outdated(4)), func(p *Peer) { p.Counted = false }, Ready{}},
		}},
		{"lost while Outdated above its last Clear: uncounted at once", ctl{}, func(p *Peer) { p.Counted = true }, []step{
			{live(0, 0), func(p *Peer) { p.CaughtUp = true }, Ready{}},
			{cleared(0, false), none, Ready{}},
			{apply(ctl{outdated: true, gen: 2}), func(p *Peer) { p.Clearing = true }, Ready{Requests: clearOf(0)}},
			{cleared(0, false), func(p *Peer) { p.Clearing = false }, Ready{}},
			{write(1), none, Ready{}},
			{lost, func(p *Peer) { p.CaughtUp, p.Counted = false, false }, Ready{Released: []ReqID{1}}},
		}},
		// The Clear is requested but not yet proposed: it will name the
		// applied generation and overtake it, so the lost peer is Outdated
		// above the Clear before writes complete without it.
		{"lost while its Clear is in flight: Outdated above the Clear first", ctl{}, func(p *Peer) { p.Counted = true }, []step{
			{live(0, 0), func(p *Peer) { p.CaughtUp = true }, Ready{}},
			{apply(ctl{outdated: true, gen: 2}), func(p *Peer) { p.Clearing = true }, Ready{Requests: clearOf(0)}},
			{write(1), none, Ready{}},
			{lost, func(p *Peer) { p.CaughtUp = false }, Ready{Requests: outdate}},
			{cleared(2, true), func(p *Peer) { p.Clearing, p.ClearGen = false, 2 }, Ready{}},
			{apply(ctl{gen: 2}), none, Ready{}},
			{apply(outdated(3)), func(p *Peer) { p.Counted = false }, Ready{Released: []ReqID{1}}},
		}},
		{"lost while its Clear is in flight, Outdated above it before ClearDone", ctl{}, func(p *Peer) { p.Counted = true }, []step{
			{live(0, 0), func(p *Peer) { p.CaughtUp = true }, Ready{}},
			{apply(ctl{outdated: true, gen: 2}), func(p *Peer) { p.Clearing = true }, Ready{Requests: clearOf(0)}},
			{write(1), none, Ready{}},
			{lost, func(p *Peer) { p.CaughtUp = false }, Ready{Requests: outdate}},
			{apply(outdated(3)), none, Ready{}},
			{cleared(2, true), func(p *Peer) { p.Clearing, p.ClearGen, p.Counted = false, 2, false }, Ready{Released: []ReqID{1}}},
		}},
		{"disk not recorded: Cleared though not Outdated", ctl{disk: 5}, func(p *Peer) { p.Counted = true }, []step{
			{connect(0, 9), func(p *Peer) { p.Disk = 9 }, Ready{}},
			{live(0, 0), func(p *Peer) { p.CaughtUp, p.Clearing = true, true }, Ready{Requests: clearOf(9)}},
		}},
		{"recorded disk, not Outdated: no Clear", ctl{disk: 9}, func(p *Peer) { p.Counted = true }, []step{
			{connect(0, 9), func(p *Peer) { p.Disk = 9 }, Ready{}},
			{live(0, 0), func(p *Peer) { p.CaughtUp = true }, Ready{}},
		}},
		{"lost while awaiting: its later acks do not catch it up", outdated(1), none, []step{
			{connect(0, 0), none, Ready{}},
			{live(3, 3), func(p *Peer) { p.Awaiting, p.Target = true, 3 }, Ready{}},
			{lost, func(p *Peer) { p.Awaiting = false }, Ready{}},
			{ack(3, Journaled, 3), func(p *Peer) { p.Acked = 3 }, Ready{}},
		}},
		{"a new session starts from its Hello position", outdated(1), none, []step{
			{connect(8, 1), func(p *Peer) { p.Acked, p.Disk = 8, 1 }, Ready{}},
			{connect(6, 2), func(p *Peer) { p.Acked, p.Disk = 6, 2 }, Ready{}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPrimary(ProtocolC)
			p.Begin(tc.begin, []string{b})
			want := Peer{Name: b, ClearGen: -1}
			tc.init(&want)
			got, ok := p.Peer(b)
			require.True(t, ok)
			require.Equal(t, want, got, "after Begin")
			require.Equal(t, Ready{}, p.Ready(), "after Begin")
			for i, s := range tc.steps {
				require.NoError(t, s.do(p), "step %d", i)
				s.change(&want)
				got, _ := p.Peer(b)
				require.Equal(t, want, got, "step %d", i)
				require.Equal(t, s.ready, p.Ready(), "step %d", i)
			}
		})
	}
}

func TestPeerUnknown(t *testing.T) {
	p := NewPrimary(ProtocolC)
	p.Begin(ctl{}, []string{"b"})
	_, ok := p.Peer("x")
	require.False(t, ok)
	require.ErrorIs(t, p.PeerConnected("x", 0, 0), ErrUnknownPeer)
	_, err := p.PeerLive("x", 0, 0)
	require.ErrorIs(t, err, ErrUnknownPeer)
	_, err = p.PeerAcked("x", 1, Journaled, 1)
	require.ErrorIs(t, err, ErrUnknownPeer)
	require.ErrorIs(t, p.PeerLost("x"), ErrUnknownPeer)
	p.ClearDone("x", 1, true) // ignored
	require.Equal(t, Ready{}, p.Ready())
}

// PeerLive and PeerAcked report the moment the peer catches up, once.
func TestPeerCaughtUpReportedOnce(t *testing.T) {
	p := NewPrimary(ProtocolC)
	p.Begin(ctl{outdated: true, gen: 1}, []string{"b"})
	require.NoError(t, p.PeerConnected("b", 0, 0))
	caught, err := p.PeerLive("b", 2, 2)
	require.NoError(t, err)
	require.False(t, caught)
	caught, err = p.PeerAcked("b", 1, Journaled, 2)
	require.NoError(t, err)
	require.False(t, caught)
	caught, _ = p.PeerAcked("b", 2, Journaled, 2)
	require.True(t, caught)
	caught, _ = p.PeerAcked("b", 3, Journaled, 3)
	require.False(t, caught)
}

// The rules run in Begin order: requests for several peers come out in it.
func TestPeerRequestOrder(t *testing.T) {
	p := NewPrimary(ProtocolC)
	names := []string{"d", "b", "c"}
	p.Begin(ctl{}, names)
	for _, n := range names {
		require.NoError(t, p.PeerLost(n))
	}
	var got []string
	for _, r := range p.Ready().Requests {
		require.Equal(t, Outdate, r.Kind)
		got = append(got, r.Peer)
	}
	require.Equal(t, names, got)
	require.Equal(t, "Clear", Clear.String())
}

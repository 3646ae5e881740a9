package replicator

import (
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPrimaryProtocols(t *testing.T) {
	type step struct {
		do   func(p *Primary)
		want []ReqID
	}
	w := func(id ReqID, seq uint64) func(*Primary) {
		return func(p *Primary) { require.NoError(t, p.Write(id, seq)) }
	}
	ack := func(peer string, seq uint64, l Level) func(*Primary) {
		return func(p *Primary) { require.NoError(t, p.Ack(peer, seq, l)) }
	}
	up := func(peer string, ok bool, seq uint64) func(*Primary) {
		return func(p *Primary) { require.NoError(t, p.SetUpToDate(peer, ok, seq)) }
	}
	tests := []struct {
		name  string
		proto Protocol
		steps []step
	}{
		{"A completes at once", ProtocolA, []step{{up("b", true, 0), nil}, {w(1, 1), []ReqID{1}}}},
		{"B waits for received", ProtocolB, []step{
			{up("b", true, 0), nil}, {w(1, 1), nil}, {w(2, 2), nil},
			{ack("b", 1, Received), []ReqID{1}}, {ack("b", 2, Journaled), []ReqID{2}},
		}},
		{"C ignores received", ProtocolC, []step{
			{up("b", true, 0), nil}, {w(1, 1), nil}, {ack("b", 1, Received), nil}, {ack("b", 1, Journaled), []ReqID{1}},
		}},
		{"C waits for every peer", ProtocolC, []step{
			{up("b", true, 0), nil}, {up("c", true, 0), nil}, {w(1, 1), nil}, {w(2, 2), nil},
			{ack("b", 2, Journaled), nil}, {ack("c", 1, Journaled), []ReqID{1}}, {ack("c", 2, Journaled), []ReqID{2}},
		}},
		{"C cumulative ack completes many", ProtocolC, []step{
			{up("b", true, 0), nil}, {w(1, 1), nil}, {w(2, 2), nil}, {w(3, 5), nil}, {ack("b", 5, Durable), []ReqID{1, 2, 3}},
		}},
		{"peer not up to date is not waited for", ProtocolC, []step{
			{up("b", false, 0), nil}, {w(1, 1), []ReqID{1}},
		}},
		{"peer leaving releases waiting writes", ProtocolC, []step{
			{up("b", true, 0), nil}, {up("c", true, 0), nil}, {w(1, 1), nil}, {ack("b", 1, Journaled), nil}, {up("c", false, 0), []ReqID{1}},
		}},
		{"peer rejoining counts again", ProtocolC, []step{
			{up("b", false, 0), nil}, {w(1, 1), []ReqID{1}}, {up("b", true, 1), nil}, {w(2, 2), nil}, {ack("b", 2, Journaled), []ReqID{2}},
		}},
		{"flush waits for local sync and durable peers", ProtocolC, []step{
			{up("b", true, 0), nil}, {w(1, 1), nil}, {ack("b", 1, Journaled), []ReqID{1}},
			{func(p *Primary) { p.Flush(10, 1) }, nil},
			{func(p *Primary) { p.LocalSynced(1) }, nil},
			{ack("b", 1, Durable), []ReqID{10}},
		}},
		{"flush released when its peer leaves", ProtocolC, []step{
			{up("b", true, 0), nil}, {w(1, 1), nil}, {ack("b", 1, Journaled), []ReqID{1}},
			{func(p *Primary) { p.Flush(10, 1); p.LocalSynced(1) }, nil}, {up("b", false, 0), []ReqID{10}},
		}},
		{"flush with no peers needs only local", ProtocolA, []step{
			{func(p *Primary) { p.Flush(10, 3) }, nil}, {func(p *Primary) { p.LocalSynced(2) }, nil}, {func(p *Primary) { p.LocalSynced(3) }, []ReqID{10}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPrimary(tc.proto)
			p.AddPeer("b")
			p.AddPeer("c")
			require.NoError(t, p.SetUpToDate("c", false, 0))
			for i, s := range tc.steps {
				s.do(p)
				require.Equal(t, s.want, p.Ready().Released, "step %d", i)
			}
		})
	}
}

func TestPrimaryErrors(t *testing.T) {
	p := NewPrimary(ProtocolC)
	require.ErrorIs(t, p.Ack("x", 1, Received), ErrUnknownPeer)
	require.ErrorIs(t, p.SetUpToDate("x", true, 0), ErrUnknownPeer)
	require.NoError(t, p.Write(1, 5))
	require.ErrorIs(t, p.Write(2, 5), ErrSeqOrder)
	_, err := ParseProtocol("D")
	require.Error(t, err)
	pr, err := ParseProtocol("B")
	require.NoError(t, err)
	require.Equal(t, ProtocolB, pr)
}

// TestPrimaryQuick cross-checks Ready against a naive model over random event
// sequences: a write completes exactly when every peer that was UpToDate
// continuously since it was written has acked it at the protocol's level.
func TestPrimaryQuick(t *testing.T) {
	for seed := int64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewSource(seed))
		proto := []Protocol{ProtocolA, ProtocolB, ProtocolC}[rng.Intn(3)]
		p := NewPrimary(proto)
		names := []string{"b", "c", "d"}
		up := map[string]bool{}
		acked := map[string]uint64{} // at the required level
		for _, n := range names {
			p.AddPeer(n)
		}
		type w struct {
			seq  uint64
			done bool
		}
		var writes []*w
		var seq uint64
		for step := 0; step < 200; step++ {
			switch rng.Intn(4) {
			case 0:
				seq++
				writes = append(writes, &w{seq: seq})
				require.NoError(t, p.Write(ReqID(seq), seq))
			case 1:
				n := names[rng.Intn(3)]
				if up[n] && acked[n] < seq {
					a := acked[n] + 1 + uint64(rng.Intn(int(seq-acked[n])))
					acked[n] = a
					require.NoError(t, p.Ack(n, a, max(proto.required(), Received)))
				}
			case 2:
				n := names[rng.Intn(3)]
				up[n] = !up[n]
				if up[n] {
					acked[n] = seq
				}
				require.NoError(t, p.SetUpToDate(n, up[n], seq))
			case 3:
			}
			for _, id := range p.Ready().Released {
				writes[id-1].done = true
			}
			for _, x := range writes {
				want := true
				if proto != ProtocolA {
					for _, n := range names {
						if up[n] && acked[n] < x.seq {
							want = false
						}
					}
				}
				if want {
					require.True(t, x.done, "seed %d: write %d should be complete", seed, x.seq)
				} else {
					require.False(t, x.done, "seed %d: write %d completed early", seed, x.seq)
				}
			}
		}
	}
}

// FlushWaitingOn names the flushes a peer still owes a Durable ack: the
// driver sends them again when the peer's session is live again (a flush
// that started while it had none was never sent to it).
func TestFlushWaitingOn(t *testing.T) {
	p := NewPrimary(ProtocolC)
	p.AddPeer("a")
	p.AddPeer("b")
	require.NoError(t, p.SetUpToDate("a", true, 0))
	require.NoError(t, p.Write(1, 1))
	require.NoError(t, p.Write(2, 2))
	p.Flush(3, 1)
	p.Flush(4, 2)
	require.Equal(t, uint64(2), p.FlushWaitingOn("a"))
	require.Zero(t, p.FlushWaitingOn("b"), "b is not UpToDate: no flush waits for it")
	require.NoError(t, p.Ack("a", 1, Durable))
	require.Equal(t, uint64(2), p.FlushWaitingOn("a"))
	require.NoError(t, p.Ack("a", 2, Durable))
	require.Zero(t, p.FlushWaitingOn("a"))

	p.Flush(5, 2)
	require.Zero(t, p.FlushWaitingOn("a"), "a has acked 2 already")
	require.NoError(t, p.Write(6, 3))
	p.Flush(7, 3)
	require.Equal(t, uint64(3), p.FlushWaitingOn("a"))
	require.NoError(t, p.SetUpToDate("a", false, 0))
	require.Zero(t, p.FlushWaitingOn("a"), "a peer that stops counting is owed nothing")
}

package quorum

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var dataNodes = []string{"a", "b", "c"}

func TestApply(t *testing.T) {
	base := State{Epoch: 3, Primary: "a", Outdated: []string{"c"}, Gen: map[string]uint64{"c": 1}}
	g := func(kv ...any) map[string]uint64 {
		out := map[string]uint64{}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i].(string)] = uint64(kv[i+1].(int))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		cmd     Command
		applied bool
		want    State
	}{
		{"promote", Command{Type: CmdPromote, Node: "b", Epoch: 3}, true, State{Epoch: 4, Primary: "b", Outdated: []string{"c"}, Gen: g("c", 1)}},
		{"promote stale epoch", Command{Type: CmdPromote, Node: "b", Epoch: 2}, false, base},
		{"promote future epoch", Command{Type: CmdPromote, Node: "b", Epoch: 4}, false, base},
		{"promote outdated", Command{Type: CmdPromote, Node: "c", Epoch: 3}, false, base},
		{"promote outdated forced", Command{Type: CmdPromote, Node: "c", Epoch: 3, Force: true}, true, State{Epoch: 4, Primary: "c", Forced: true, Gen: g("c", 1)}},
		{"promote witness", Command{Type: CmdPromote, Node: "w", Epoch: 3}, false, base},
		{"re-promote self", Command{Type: CmdPromote, Node: "a", Epoch: 3}, true, State{Epoch: 4, Primary: "a", Outdated: []string{"c"}, Gen: g("c", 1)}},
		{"demote", Command{Type: CmdDemote, Node: "a", Epoch: 3}, true, State{Epoch: 3, Outdated: []string{"c"}, Gen: g("c", 1)}},
		{"demote other", Command{Type: CmdDemote, Node: "b", Epoch: 3}, false, base},
		{"demote stale", Command{Type: CmdDemote, Node: "a", Epoch: 2}, false, base},
		{"outdate", Command{Type: CmdOutdate, Node: "b", By: "a", Epoch: 3}, true, State{Epoch: 3, Primary: "a", Outdated: []string{"b", "c"}, Gen: g("b", 1, "c", 1)}},
		{"outdate by non-primary", Command{Type: CmdOutdate, Node: "b", By: "c", Epoch: 3}, false, base},
		{"outdate stale epoch", Command{Type: CmdOutdate, Node: "b", By: "a", Epoch: 2}, false, base},
		{"outdate stale generation", Command{Type: CmdOutdate, Node: "b", By: "a", Epoch: 3, Gen: 1}, false, base},
		{"outdate the primary", Command{Type: CmdOutdate, Node: "a", By: "a", Epoch: 3}, false, base},
		{"outdate again voids a pending clear", Command{Type: CmdOutdate, Node: "c", By: "a", Epoch: 3, Gen: 1}, true, State{Epoch: 3, Primary: "a", Outdated: []string{"c"}, Gen: g("c", 2)}},
		{"clear", Command{Type: CmdClear, Node: "c", By: "a", Epoch: 3, Gen: 1}, true, State{Epoch: 3, Primary: "a", Outdated: []string{}, Gen: g("c", 2)}},
		{"clear stale generation", Command{Type: CmdClear, Node: "c", By: "a", Epoch: 3, Gen: 0}, false, base},
		{"clear stale", Command{Type: CmdClear, Node: "c", By: "a", Epoch: 1, Gen: 1}, false, base},
		{"durable", Command{Type: CmdDurable, By: "a", Epoch: 3, Seq: 40}, true, State{Epoch: 3, Primary: "a", Outdated: []string{"c"}, Gen: g("c", 1), Durable: 40}},
		{"durable by non-primary", Command{Type: CmdDurable, By: "b", Epoch: 3, Seq: 40}, false, base},
		{"durable stale epoch", Command{Type: CmdDurable, By: "a", Epoch: 2, Seq: 40}, false, base},
		{"durable zero", Command{Type: CmdDurable, By: "a", Epoch: 3}, false, base},
		{"unknown type", Command{Type: 9}, false, base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base.Clone()
			require.Equal(t, tc.applied, s.Apply(tc.cmd, dataNodes))
			if len(tc.want.Outdated) == 0 {
				tc.want.Outdated, s.Outdated = nil, nil
				if len(s.Outdated) == 0 {
					s.Outdated = nil
				}
			}
			require.Equal(t, tc.want, s)
		})
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range seedCommands() {
		b, err := c.Encode()
		require.NoError(t, err)
		got, err := DecodeCommand(b)
		require.NoError(t, err)
		require.Equal(t, c, got)
		for i := range b {
			bad := append([]byte(nil), b...)
			bad[i] ^= 0x10
			_, err := DecodeCommand(bad)
			require.ErrorIs(t, err, ErrCorrupt, "flipped byte %d", i)
		}
		for n := range len(b) {
			_, err := DecodeCommand(b[:n])
			require.ErrorIs(t, err, ErrCorrupt, "truncated to %d", n)
		}
	}
	_, err := Command{Type: 0}.Encode()
	require.ErrorIs(t, err, ErrInvalid)
	_, err = Command{Type: CmdPromote, Node: string(make([]byte, 64))}.Encode()
	require.ErrorIs(t, err, ErrInvalid)
}

func TestStateRoundTrip(t *testing.T) {
	for _, s := range []State{{}, {Epoch: 7, Primary: "alpha", Forced: true, Outdated: []string{"beta", "gamma"}, Gen: map[string]uint64{"beta": 3, "gamma": 1, "alpha": 2}},
		{Epoch: 2, Primary: "beta", Disks: map[string]uint64{"alpha": 1, "beta": 0xfeed_f00d_0000_0001}},
		{Epoch: 3, Primary: "beta", Disks: map[string]uint64{"beta": 2}, Durable: 1234}} {
		b, err := s.Encode()
		require.NoError(t, err)
		got, err := DecodeState(b)
		require.NoError(t, err)
		require.Equal(t, s, got)
	}
	b, _ := State{Outdated: []string{"b", "a"}}.Encode()
	_, err := DecodeState(b)
	require.ErrorIs(t, err, ErrCorrupt, "unsorted outdated list")
}

func seedCommands() []Command {
	return []Command{
		{Type: CmdPromote, Node: "alpha", Epoch: 0},
		{Type: CmdPromote, Node: "beta", Epoch: 41, Force: true},
		{Type: CmdDemote, Node: "alpha", Epoch: 2},
		{Type: CmdOutdate, Node: "beta", By: "alpha", Epoch: 9, Gen: 4},
		{Type: CmdClear, Node: "beta", By: "alpha", Epoch: 1<<64 - 1, Gen: 1<<64 - 1},
		{Type: CmdPromote, Node: "gamma", Epoch: 5, Disk: 0x1234_5678_9abc_def0},
		{Type: CmdClear, Node: "beta", By: "alpha", Epoch: 6, Gen: 2, Disk: 1<<64 - 1},
		{Type: CmdDurable, By: "alpha", Epoch: 6, Seq: 1<<64 - 1},
	}
}

// FuzzDecodeCommand: whatever decodes re-encodes to the same bytes; anything
// else is ErrCorrupt.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range seedCommands() {
		b, _ := c.Encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkRoundTrip(t, b, DecodeCommand, Command.Encode) })
}

// FuzzDecodeState: as FuzzDecodeCommand, for snapshots.
func FuzzDecodeState(f *testing.F) {
	for _, s := range []State{{}, {Epoch: 3, Primary: "a", Outdated: []string{"b"}, Gen: map[string]uint64{"b": 1}},
		{Epoch: 4, Primary: "a", Gen: map[string]uint64{"b": 2}, Disks: map[string]uint64{"a": 7, "b": 1 << 63}},
		{Epoch: 5, Primary: "b", Durable: 99}} {
		b, _ := s.Encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkRoundTrip(t, b, DecodeState, State.Encode) })
}

// checkRoundTrip is the property both fuzzers check: what decode refuses is
// ErrCorrupt, and what it accepts re-encodes to the same bytes, or, from
// version 1 (before data identity), to version 2 bytes of the same meaning.
func checkRoundTrip[T any](t *testing.T, b []byte, decode func([]byte) (T, error), encode func(T) ([]byte, error)) {
	v, err := decode(b)
	if err != nil {
		require.ErrorIs(t, err, ErrCorrupt)
		return
	}
	if len(b) == 0 { // an empty snapshot is the zero State
		return
	}
	again, err := encode(v)
	require.NoError(t, err)
	if b[0] == codecV1 {
		v2, err := decode(again)
		require.NoError(t, err)
		require.Equal(t, v, v2)
		return
	}
	require.Equal(t, b, again)
}

// TestPromoteNeedsTheRecordedDisk: the data-identity rules of Promote and
// Clear (docs/quorum.md, "Data identity").
func TestPromoteNeedsTheRecordedDisk(t *testing.T) {
	disks := map[string]uint64{"a": 10, "b": 20}
	running := State{Epoch: 3, Primary: "a", Disks: disks}
	for _, tc := range []struct {
		name    string
		st      State
		cmd     Command
		applied bool
		disks   map[string]uint64
	}{
		{"recorded disk", running, Command{Type: CmdPromote, Node: "b", Epoch: 3, Disk: 20}, true, disks},
		{"replaced disk", running, Command{Type: CmdPromote, Node: "b", Epoch: 3, Disk: 21}, false, disks},
		{"replaced disk forced", running, Command{Type: CmdPromote, Node: "b", Epoch: 3, Disk: 21, Force: true}, true, map[string]uint64{"a": 10, "b": 21}},
		{"unrecorded disk", running, Command{Type: CmdPromote, Node: "c", Epoch: 3, Disk: 30}, false, disks},
		{"new cluster: any disk", State{}, Command{Type: CmdPromote, Node: "c", Epoch: 0, Disk: 30}, true, map[string]uint64{"c": 30}},
		{"no disk recorded yet (older cluster)", State{Epoch: 3, Primary: "a"}, Command{Type: CmdPromote, Node: "b", Epoch: 3, Disk: 21}, true, map[string]uint64{"b": 21}},
		{"command from before data identity", running, Command{Type: CmdPromote, Node: "b", Epoch: 3}, true, disks},
		{"clear records the disk", running, Command{Type: CmdClear, Node: "b", By: "a", Epoch: 3, Disk: 21}, true, map[string]uint64{"a": 10, "b": 21}},
		{"clear of a new node", running, Command{Type: CmdClear, Node: "c", By: "a", Epoch: 3, Disk: 30}, true, map[string]uint64{"a": 10, "b": 20, "c": 30}},
		{"clear by a non-primary", running, Command{Type: CmdClear, Node: "b", By: "c", Epoch: 3, Disk: 21}, false, disks},
		{"outdate keeps the disk", running, Command{Type: CmdOutdate, Node: "b", By: "a", Epoch: 3}, true, disks},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.st.Clone()
			require.Equal(t, tc.applied, s.Apply(tc.cmd, dataNodes))
			if len(tc.disks) == 0 {
				require.Empty(t, s.Disks)
			} else {
				require.Equal(t, tc.disks, s.Disks)
			}
			require.Equal(t, tc.st.Disks, State(tc.st).Disks, "Apply must not change the state it was cloned from")
		})
	}
}

func TestPromotableSaysWhy(t *testing.T) {
	st := State{Epoch: 2, Primary: "a", Outdated: []string{"c"}, Disks: map[string]uint64{"a": 1 << 40, "b": 2 << 40}}
	for _, tc := range []struct {
		node string
		disk uint64
		ok   bool
		why  string
	}{
		{"b", 2 << 40, true, ""},
		{"b", 3 << 40, false, "not the recorded disk 00000200"},
		{"c", 5, false, "Outdated"},
		{"d", 5, false, "not recorded"},
		// Disks swapped between hosts: each holds the other's.
		{"b", 1 << 40, false, "the recorded disk of a, not of this node"},
		{"a", 2 << 40, false, "the recorded disk of b, not of this node"},
		{"c", 2 << 40, false, "the recorded disk of b"}, // Outdated, but the disk says more
		{"d", 1 << 40, false, "moved or copied from a"},
	} {
		ok, why := st.Promotable(tc.node, tc.disk)
		require.Equal(t, tc.ok, ok, tc.node)
		if tc.disk != st.Disks[tc.node] {
			require.Equal(t, st.DiskOwner(tc.disk, tc.node) != "", strings.Contains(why, "recorded disk of"), tc.node)
		}
		require.Contains(t, why, tc.why, tc.node)
	}
}

// A host cloned with its data directory keeps the disk's ID through its
// full sync, and the primary's Clear then records one disk for two nodes:
// both stay promotable.
func TestPromotableWithADiskRecordedTwice(t *testing.T) {
	st := State{Epoch: 3, Primary: "a", Disks: map[string]uint64{"a": 7 << 40, "b": 7 << 40}}
	for _, n := range []string{"a", "b"} {
		ok, why := st.Promotable(n, 7<<40)
		require.True(t, ok, "%s: %s", n, why)
	}
	ok, why := st.Promotable("c", 7<<40)
	require.False(t, ok)
	require.Contains(t, why, "the recorded disk of a")
}

// TestDurableWatermark: the watermark grows only, a forced promotion resets
// it (the new primary may lack writes before it), and version 3 is written
// only for what needs it, so older members read everything else; a
// version-3 encoding of anything else is corrupt (not canonical).
func TestDurableWatermark(t *testing.T) {
	s := State{Epoch: 3, Primary: "a", Durable: 50}
	require.False(t, s.Apply(Command{Type: CmdDurable, By: "a", Epoch: 3, Seq: 50}, dataNodes), "not above")
	require.True(t, s.Apply(Command{Type: CmdDurable, By: "a", Epoch: 3, Seq: 60}, dataNodes))
	require.True(t, s.Apply(Command{Type: CmdPromote, Node: "b", Epoch: 3}, dataNodes))
	require.Equal(t, uint64(60), s.Durable, "a failover keeps it: the new primary holds every acknowledged write")
	require.True(t, s.Apply(Command{Type: CmdPromote, Node: "c", Epoch: 4, Force: true}, dataNodes))
	require.Zero(t, s.Durable, "a forced promotion resets it")

	for _, c := range seedCommands() {
		b, err := c.Encode()
		require.NoError(t, err)
		require.Equal(t, c.Type == CmdDurable, b[0] == codecV3, "%v", c)
	}
	b, _ := State{Epoch: 1}.Encode()
	require.Equal(t, byte(codecVersion), b[0])
	b, _ = State{Epoch: 1, Durable: 1}.Encode()
	require.Equal(t, byte(codecV3), b[0])
	eight := make([]byte, 8)
	b, _ = Command{Type: CmdOutdate, Node: "b", By: "a", Epoch: 1}.Encode()
	_, err := DecodeCommand(frame(codecV3, b[1], append(b[codecHeader:len(b)-codecTrailer:len(b)-codecTrailer], 1, 0, 0, 0, 0, 0, 0, 0)))
	require.ErrorIs(t, err, ErrCorrupt, "a version-3 Outdate")
	b, _ = Command{Type: CmdDurable, By: "a", Epoch: 1, Seq: 1}.Encode()
	_, err = DecodeCommand(frame(codecVersion, b[1], b[codecHeader:len(b)-codecTrailer-8]))
	require.ErrorIs(t, err, ErrCorrupt, "a version-2 Durable")
	b, _ = State{Epoch: 1}.Encode()
	_, err = DecodeState(frame(codecV3, stateType, append(b[codecHeader:len(b)-codecTrailer:len(b)-codecTrailer], eight...)))
	require.ErrorIs(t, err, ErrCorrupt, "a version-3 state without a watermark")
}

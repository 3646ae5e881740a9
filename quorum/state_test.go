package quorum

import (
	"testing"

	"github.com/stretchr/testify/require"
)

var dataNodes = []string{"a", "b", "c"}

func TestApply(t *testing.T) {
	base := State{Epoch: 3, Primary: "a", Outdated: []string{"c"}}
	for _, tc := range []struct {
		name    string
		cmd     Command
		applied bool
		want    State
	}{
		{"promote", Command{Type: CmdPromote, Node: "b", Epoch: 3}, true, State{Epoch: 4, Primary: "b", Outdated: []string{"c"}}},
		{"promote stale epoch", Command{Type: CmdPromote, Node: "b", Epoch: 2}, false, base},
		{"promote future epoch", Command{Type: CmdPromote, Node: "b", Epoch: 4}, false, base},
		{"promote outdated", Command{Type: CmdPromote, Node: "c", Epoch: 3}, false, base},
		{"promote outdated forced", Command{Type: CmdPromote, Node: "c", Epoch: 3, Force: true}, true, State{Epoch: 4, Primary: "c", Forced: true}},
		{"promote witness", Command{Type: CmdPromote, Node: "w", Epoch: 3}, false, base},
		{"re-promote self", Command{Type: CmdPromote, Node: "a", Epoch: 3}, true, State{Epoch: 4, Primary: "a", Outdated: []string{"c"}}},
		{"demote", Command{Type: CmdDemote, Node: "a", Epoch: 3}, true, State{Epoch: 3, Outdated: []string{"c"}}},
		{"demote other", Command{Type: CmdDemote, Node: "b", Epoch: 3}, false, base},
		{"demote stale", Command{Type: CmdDemote, Node: "a", Epoch: 2}, false, base},
		{"outdate", Command{Type: CmdOutdate, Node: "b", By: "a", Epoch: 3}, true, State{Epoch: 3, Primary: "a", Outdated: []string{"b", "c"}}},
		{"outdate by non-primary", Command{Type: CmdOutdate, Node: "b", By: "c", Epoch: 3}, false, base},
		{"outdate stale epoch", Command{Type: CmdOutdate, Node: "b", By: "a", Epoch: 2}, false, base},
		{"outdate the primary", Command{Type: CmdOutdate, Node: "a", By: "a", Epoch: 3}, false, base},
		{"outdate twice", Command{Type: CmdOutdate, Node: "c", By: "a", Epoch: 3}, true, base},
		{"clear", Command{Type: CmdClear, Node: "c", By: "a", Epoch: 3}, true, State{Epoch: 3, Primary: "a", Outdated: []string{}}},
		{"clear stale", Command{Type: CmdClear, Node: "c", By: "a", Epoch: 1}, false, base},
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
	for _, s := range []State{{}, {Epoch: 7, Primary: "alpha", Forced: true, Outdated: []string{"beta", "gamma"}}} {
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
		{Type: CmdOutdate, Node: "beta", By: "alpha", Epoch: 9},
		{Type: CmdClear, Node: "beta", By: "alpha", Epoch: 1<<64 - 1},
	}
}

// FuzzDecodeCommand: whatever decodes re-encodes to the same bytes; anything
// else is ErrCorrupt.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range seedCommands() {
		b, _ := c.Encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			return
		}
		again, err := c.Encode()
		require.NoError(t, err)
		require.Equal(t, b, again)
	})
}

// FuzzDecodeState: as FuzzDecodeCommand, for snapshots.
func FuzzDecodeState(f *testing.F) {
	for _, s := range []State{{}, {Epoch: 3, Primary: "a", Outdated: []string{"b"}}} {
		b, _ := s.Encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			return
		}
		if len(b) == 0 {
			return
		}
		again, err := s.Encode()
		require.NoError(t, err)
		require.Equal(t, b, again)
	})
}

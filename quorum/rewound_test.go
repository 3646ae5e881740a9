package quorum

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A member's data directory restored from an older copy while the others
// run: the raft leader remembers that the member acknowledged entries its
// log no longer holds. Before rewoundBy, raft panicked on the leader's next
// heartbeat ("tocommit out of range"). Now the member drops its state,
// awaits a replace under a new join identity (which it keeps across a
// restart), and joins again; the primary serves throughout.
func TestRestoredLogAwaitsReplace(t *testing.T) {
	for _, name := range []string{"b", "w"} {
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, true, dataAndWitness()...)
			c.tick(100)
			require.Equal(t, []string{"a"}, c.servers())
			require.Equal(t, "a", c.members["a"].Status().RaftLeader, "the primary leads raft (maybeLead)")
			backup := copyOf(t, c.disks[name])

			// A plain restart is not taken for a restore.
			c.crash(name)
			c.start(name)
			c.tick(30)
			require.Equal(t, PhaseMember, c.members[name].Phase())

			// Entries past the copy, acknowledged by every member.
			c.members["a"].RequestOutdate("b")
			c.tick(20)
			_, ok := c.members["a"].RequestClear("b", 0)
			require.True(t, ok)
			c.tick(20)
			last, _ := backup.LastIndex()
			require.Greater(t, c.members[name].Status().Applied, last)

			c.crash(name)
			c.disks[name] = backup
			c.start(name)
			c.tick(60)
			m := c.members[name]
			require.Equal(t, PhaseAwaitReplace, m.Phase())
			require.Contains(t, m.Status().PhaseReason, "control-plane log rewound")
			require.Contains(t, m.Status().PhaseReason, `run "grbd member replace `+name)
			require.Equal(t, []string{"a"}, c.servers(), "the primary keeps serving")
			require.Equal(t, []string{name}, c.members["a"].Status().LostState)
			require.Zero(t, m.ID())
			join := m.JoinID()
			require.Equal(t, join, c.joinIDs[name], "the announced identity is persisted")
			empty, err := (&Member{storage: c.disks[name]}).emptyStorage()
			require.NoError(t, err)
			require.True(t, empty, "the rewound state is dropped on disk too")

			c.crash(name)
			c.start(name)
			c.tick(30)
			require.Equal(t, PhaseAwaitReplace, c.members[name].Phase())
			require.Equal(t, join, c.members[name].JoinID(), "a restart keeps the announced identity")

			require.Equal(t, join, c.replaceAndJoin("a", name))
			want, _ := c.members["a"].State().Encode()
			got, _ := c.members[name].State().Encode()
			require.Equal(t, want, got, "caught up with the cluster's state")
			require.Equal(t, []string{"a"}, c.servers())
		})
	}
}

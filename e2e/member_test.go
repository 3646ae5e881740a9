package e2e

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// logContains waits until the member's log (stderr) contains s.
func logContains(t *testing.T, p *proc, s string, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(p.Log)
		return strings.Contains(string(b), s)
	}, timeout, 50*time.Millisecond, "%s never logged %q", p.name, s)
}

// Issue 14, a wiped witness: it restarts empty while both data nodes run.
// Before the fix it voted as if it remembered (and with the primary up,
// panicked in raft); now it is refused, says how to fix it, is replaced and
// joins, and the primary serves throughout.
func TestWipedWitnessIsReplaced(t *testing.T) {
	t.Parallel()
	c := newReplCluster(t, "C", "16MiB")
	prim, _ := c.startPair()

	c.witness.kill9()
	require.NoError(t, os.RemoveAll(c.cfg.Witness.DataDir))
	c.witness = startMember(t, c.dir, "w-wiped", "ready witness", "witness", "--config", c.cfgPath, "--name", "w")
	logContains(t, c.witness, `control-plane state lost: this member must be replaced: run \"grbd member replace w --config FILE\"`, 10*time.Second)
	require.Eventually(t, func() bool {
		st, err := c.status("w")
		return err == nil && st.Quorum.Phase == "awaiting replace (control-plane state lost)"
	}, 10*time.Second, 50*time.Millisecond)
	out := run(t, time.Minute, grbdBin, "status", "--config", c.cfgPath)
	require.Contains(t, out, "w: awaiting replace (control-plane state lost)")
	// The primary learns of the loss from the witness's next probe, which
	// may come after the witness already reports its own phase.
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && slices.Equal(st.Quorum.LostState, []string{"w"})
	}, 10*time.Second, 50*time.Millisecond, "n0 never listed w as lost")
	st, err := c.status("n0")
	require.NoError(t, err)
	require.True(t, st.Quorum.Serving, "the primary keeps serving")

	out = memberReplace(t, c.cfgPath, "w")
	require.Contains(t, out, "replaced w: it joined as raft id")
	require.Eventually(t, func() bool {
		st, err := c.status("w")
		return err == nil && st.Quorum.Phase == "member" && st.Quorum.Epoch > 0
	}, 15*time.Second, 50*time.Millisecond, "w never joined")

	// The new witness votes: the primary keeps its lease without n1.
	out = run(t, time.Minute, "fio", "--name=w", "--ioengine=nbd", "--uri="+prim.uri(), "--rw=write", "--bs=4k", "--size=256k")
	require.NotContains(t, out, "error")
	out, err = runErr(time.Minute, grbdBin, "member", "replace", "n0", "--config", c.cfgPath)
	require.Error(t, err)
	require.Contains(t, out, "move the primary first")
}

// Issue 14, case 2: beta is Outdated; the witness is wiped; alpha is down.
// Beta and the empty witness are no majority: beta is never promoted.
// Alpha's return restores the majority; then the witness is replaced.
func TestWipedWitnessDoesNotPromoteOutdatedNode(t *testing.T) {
	t.Parallel()
	c, prim, sec := startFioPair(t, "16MiB")

	sec.kill9()
	run(t, time.Minute, "fio", "--name=w", "--ioengine=nbd", "--uri="+prim.uri(), "--rw=write", "--bs=4k", "--size=256k")
	require.Eventually(t, func() bool {
		st, err := c.status("w")
		return err == nil && len(st.Quorum.Outdated) == 1 && st.Quorum.Outdated[0] == "n1"
	}, 10*time.Second, 50*time.Millisecond, "n1 never Outdated")
	c.witness.kill9()
	require.NoError(t, os.RemoveAll(c.cfg.Witness.DataDir))
	prim.kill9()

	c.witness = startMember(t, c.dir, "w-wiped", "ready witness", "witness", "--config", c.cfgPath, "--name", "w")
	sec = startMember(t, c.dir, "n1-again", "listening ", "node", "--config", c.cfgPath, "--name", "n1")
	time.Sleep(3 * time.Second) // well past failover-timeout and a lease
	st, err := c.status("n1")
	require.NoError(t, err)
	require.NotEqual(t, "n1", st.Quorum.Primary, "an Outdated node was promoted with an empty witness")
	require.Equal(t, "Secondary", st.Role)
	wst, err := c.status("w")
	require.NoError(t, err)
	require.Equal(t, "awaiting replace (control-plane state lost)", wst.Quorum.Phase)

	prim = startMember(t, c.dir, "n0-back", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	require.Equal(t, "n0", c.servingPrimary(20*time.Second))
	out := memberReplace(t, c.cfgPath, "w")
	require.Contains(t, out, "replaced w")
	require.Eventually(t, func() bool {
		st, err := c.status("w")
		return err == nil && st.Quorum.Phase == "member"
	}, 15*time.Second, 50*time.Millisecond, "w never joined")
}

package e2e

import (
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLargeWritesSurviveSecondaryKills: 1 MiB writes, which both nodes
// write once, in place, behind an extent record (docs/journal.md, "Large
// writes in place"), while the secondary is killed with SIGKILL twice in
// the middle of them and restarted. fio verifies every block on the
// primary, the secondary comes back UpToDate (resyncing whatever its
// replay could not vouch for), and the two images are identical.
func TestLargeWritesSurviveSecondaryKills(t *testing.T) {
	t.Parallel()
	c, prim, sec := startFioPair(t, "256MiB")
	// 4 jobs x 24 writes/s of 1 MiB: about 2 s of writing, which the
	// kills fall into.
	fioWait := startFioVerify(t, prim.uri(), "--bs=1m", "--size=48m", "--offset_increment=48m", "--rate_iops=,24")
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && st.Journal.LastSeq > 0
	}, 30*time.Second, 10*time.Millisecond, "fio does not write")
	for i := range 2 {
		time.Sleep(400 * time.Millisecond)
		sec.kill9()
		time.Sleep(200 * time.Millisecond)
		sec = c.start("n1", fmt.Sprintf("n1-restart%d", i))
	}
	fioWait()
	c.waitPeer(60 * time.Second)
	c.stopAndCompare(prim, sec)
}

// TestLargeWritesSurvivePrimaryKill: the primary is killed with SIGKILL in
// the middle of 1 MiB writes. The secondary takes over, the old primary
// comes back as its secondary (resyncing whatever its replay could not
// vouch for, and whatever it held that the new primary never got), and
// the two images are identical.
func TestLargeWritesSurvivePrimaryKill(t *testing.T) {
	t.Parallel()
	c, prim, sec := startFioPair(t, "256MiB")
	// --thread: one process to kill (forked job processes outlived the
	// parent's kill and kept spinning on the dead server).
	fio := exec.Command("fio", fioVerifyArgs(prim.uri(), "--bs=1m", "--size=48m", "--offset_increment=48m", "--rate_iops=,24", "--thread")...)
	fio.Dir = t.TempDir() // fio leaves verify state files there
	require.NoError(t, fio.Start())
	done := make(chan error, 1)
	go func() { done <- fio.Wait() }()
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && st.Journal.LastSeq > 0
	}, 30*time.Second, 10*time.Millisecond, "fio does not write")
	time.Sleep(400 * time.Millisecond)
	prim.kill9()
	// fio only made the writes; it sometimes hangs once its server is gone.
	_ = fio.Process.Kill()
	<-done
	require.Equal(t, "n1", c.servingPrimary(30*time.Second), "the secondary takes over")
	n0 := startMember(t, c.dir, "n0-restarted", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	c.waitPeersOf("n1", 60*time.Second, true)
	c.stopAndCompare(n0, sec)
}

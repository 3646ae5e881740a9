package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/chaos"
	"github.com/stretchr/testify/require"
)

// TestProxyExt4FioSurvivesIsolatedPrimary: nbdfuse -> grbd proxy -> 2 data
// nodes + witness (each member on its own loopback address), ext4 mounted,
// fio with verify=crc32c; mid-run the primary is cut off from its peer and
// the witness with nftables. It is fenced, not crashed: it still answers
// the proxy, which must leave it for the new primary. fio finishes without
// an I/O error, with no remount, and fio --verify_only passes after the
// network heals and the old primary has rejoined as a secondary.
func TestProxyExt4FioSurvivesIsolatedPrimary(t *testing.T) {
	requireMountPrivileges(t)
	requireTools(t, "fio")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := chaos.NewCluster(chaos.ClusterConfig{Bin: grbdBin, Dir: dir, DataNodes: 2, Witness: true})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.StartAll(ctx))
	fw, err := c.Firewall(ctx)
	if chaos.IsSkip(err) {
		t.Skip(err)
	}
	require.NoError(t, err)
	require.NoError(t, c.WaitInSync(ctx))
	pname, _, err := c.Primary(ctx)
	require.NoError(t, err)

	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startBin(t, grbdBin, dir, "proxy", "proxy ", "proxy", "--config", c.ConfigPath(),
		"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--admin", admin)
	var uri string
	for _, l := range p.stdout() {
		if u, ok := strings.CutPrefix(l, "proxy "); ok {
			uri = u
		}
	}
	require.NotEmpty(t, uri, "no proxy line")

	m := attach(t, dir, uri)
	run(t, 2*time.Minute, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", m.loop)
	m.mount()
	args := []string{"--name=v", "--directory=" + m.mnt, "--filename=fio.dat", "--size=40m", "--rw=randwrite",
		"--bs=4k", "--ioengine=libaio", "--direct=1", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1",
		"--randrepeat=1", "--output-format=json"}
	stopProbe := make(chan struct{})
	probe := pauseProbe(t, m.mnt, stopProbe)
	fio := exec.Command("fio", args...)
	fio.Dir = dir
	var fioOut strings.Builder
	fio.Stdout, fio.Stderr = &fioOut, &fioOut
	require.NoError(t, fio.Start())
	time.Sleep(3 * time.Second)

	isolated := c.Member(pname)
	for _, other := range c.Members() {
		if other.Name != pname {
			require.NoError(t, fw.Partition(ctx, isolated.Endpoint(), other.Endpoint()))
		}
	}
	cut := time.Now()
	fioErr := fio.Wait()
	close(stopProbe)
	longestProbe := <-probe
	t.Logf("fio ran %.1fs after the primary %s was isolated", time.Since(cut).Seconds(), pname)
	if fioErr != nil {
		if b, err := os.ReadFile(p.log); err == nil {
			t.Logf("proxy log:\n%s", tail(string(b), 8000))
		}
	}
	require.NoError(t, fioErr, "fio failed:\n%s", tail(fioOut.String(), 8192))
	out := fioOut.String()
	var res fioLatency
	require.NoError(t, json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res), tail(out, 4096))
	require.Len(t, res.Jobs, 1)
	require.Zero(t, res.Jobs[0].Error, "fio job error")
	require.NotContains(t, out, "verify: bad")
	fioMax := time.Duration(res.Jobs[0].Write.LatNs.Max)
	t.Logf("longest client pause across the isolation: fio write latency max %v (%d writes), fsync probe %v",
		fioMax.Round(time.Millisecond), res.Jobs[0].Write.IOs, longestProbe.Round(time.Millisecond))
	// Fencing waits for the lease to lapse, so the bound is looser than
	// the kill -9 case's.
	require.Less(t, max(fioMax, longestProbe), 5*time.Second, "pause too long")

	resp, err := httpGetJSON(admin)
	require.NoError(t, err)
	t.Logf("proxy status: %s", resp)
	require.NotContains(t, resp, fmt.Sprintf(`"primary":%q`, pname), "the proxy still follows the isolated node")

	require.NoError(t, fw.Heal(ctx))
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	require.NoError(t, c.WaitInSync(wctx), "the old primary rejoins after the heal")
	verifyArgs := append(slices.Clone(args[:len(args)-1]), "--verify_only")
	verify := run(t, 2*time.Minute, "fio", verifyArgs...)
	require.NotContains(t, verify, "verify: bad", verify)
	require.Contains(t, verify, "READ:", verify)
	m.umount()
	run(t, 2*time.Minute, "e2fsck", "-f", "-n", m.loop)
}

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

	"github.com/grbd/grbd/internal/freeport"

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
	c, fw := firewalledCluster(ctx, t, chaos.ClusterConfig{Bin: grbdBin, Dir: dir, DataNodes: 2, Witness: true})
	require.NoError(t, c.WaitInSync(ctx))
	pname, _, err := c.Primary(ctx)
	require.NoError(t, err)

	admin := fmt.Sprintf("127.0.0.1:%d", freeport.LoopbackPort(t))
	p := startBin(t, grbdBin, dir, "proxy", "proxy ", "proxy", "--config", c.ConfigPath(),
		"--listen", fmt.Sprintf("127.0.0.1:%d", freeport.LoopbackPort(t)), "--admin", admin)
	var uri string
	for _, l := range p.stdout() {
		if u, ok := strings.CutPrefix(l, "proxy "); ok {
			uri = u
		}
	}
	require.NotEmpty(t, uri, "no proxy line")

	m := attachExt4(t, dir, uri)
	fio := startFio(t, dir, m.mnt, "fio.dat", "40m")
	time.Sleep(3 * time.Second)

	isolated := c.Member(pname)
	for _, other := range c.Members() {
		if other.Name != pname {
			require.NoError(t, fw.Partition(ctx, isolated.Endpoint(), other.Endpoint()))
		}
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(p.Log); err == nil && t.Failed() {
			t.Logf("proxy log:\n%s", tail(string(b), 8000))
		}
	})
	pause := fio.finish("longest client pause across the isolation of " + pname)
	// Fencing waits for the lease to lapse, so the bound is looser than
	// the kill -9 case's.
	require.Less(t, pause, 5*time.Second, "pause too long")

	resp, err := httpGetJSON(admin)
	require.NoError(t, err)
	t.Logf("proxy status: %s", resp)
	require.NotContains(t, resp, fmt.Sprintf(`"primary":%q`, pname), "the proxy still follows the isolated node")

	require.NoError(t, fw.Heal(ctx))
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	require.NoError(t, c.WaitInSync(wctx), "the old primary rejoins after the heal")
	fio.verifyOnly()
	m.unmountAndCheck()
}

// firewalledCluster starts every member of a chaos cluster and its nftables
// firewall; the test is skipped where nftables cannot run. The cluster is
// closed when the test ends.
func firewalledCluster(ctx context.Context, t *testing.T, cfg chaos.ClusterConfig) (*chaos.Cluster, *chaos.Firewall) {
	t.Helper()
	c, err := chaos.NewCluster(cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.NoError(t, c.StartAll(ctx))
	fw, err := c.Firewall(ctx)
	if chaos.IsSkip(err) {
		t.Skip(err)
	}
	require.NoError(t, err)
	return c, fw
}

// fioResult checks that a single-job fio run with --output-format=json
// ended without an error or a bad verify, and returns its figures.
func fioResult(t *testing.T, fioErr error, out string) fioLatency {
	t.Helper()
	require.NoError(t, fioErr, "fio failed:\n%s", tail(out, 8192))
	var res fioLatency
	require.NoError(t, json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res), tail(out, 4096))
	require.Len(t, res.Jobs, 1)
	require.Zero(t, res.Jobs[0].Error, "fio job error")
	require.NotContains(t, out, "verify: bad")
	return res
}

// attachExt4 is attach followed by mkfs.ext4 and mount.
func attachExt4(t *testing.T, dir, uri string) *mountedFS {
	t.Helper()
	m := attach(t, dir, uri)
	run(t, 2*time.Minute, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", m.loop)
	m.mount()
	return m
}

// fioRun is fio writing a crc32c-verified file in a mounted file system
// while pauseProbe measures the longest pause the file system's user sees.
type fioRun struct {
	t         *testing.T
	args      []string
	cmd       *exec.Cmd
	out       strings.Builder
	stopProbe chan struct{}
	probe     <-chan time.Duration
}

// startFio starts fio: 4 KiB random writes at queue depth 8 with direct
// I/O over a file of size bytes, verified as it goes.
func startFio(t *testing.T, dir, mnt, file, size string) *fioRun {
	t.Helper()
	f := &fioRun{t: t, stopProbe: make(chan struct{})}
	f.args = []string{"--name=v", "--directory=" + mnt, "--filename=" + file, "--size=" + size, "--rw=randwrite",
		"--bs=4k", "--ioengine=libaio", "--direct=1", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1",
		"--randrepeat=1", "--output-format=json"}
	f.probe = pauseProbe(t, mnt, f.stopProbe)
	f.cmd = exec.Command("fio", f.args...)
	f.cmd.Dir = dir
	f.cmd.Stdout, f.cmd.Stderr = &f.out, &f.out
	require.NoError(t, f.cmd.Start())
	return f
}

// wait waits for fio to end and returns its figures (unchecked: see
// fioResult), the longest probe pause and fio's exit error.
func (f *fioRun) wait() (fioLatency, time.Duration, error) {
	err := f.cmd.Wait()
	close(f.stopProbe)
	longest := <-f.probe
	var res fioLatency
	out := f.out.String()
	if i := strings.Index(out, "{"); i >= 0 {
		_ = json.Unmarshal([]byte(out[i:]), &res)
	}
	return res, longest, err
}

// verifyOnly reads the file back with fio --verify_only and requires every
// block to verify.
func (f *fioRun) verifyOnly() {
	f.t.Helper()
	args := append(slices.Clone(f.args[:len(f.args)-1]), "--verify_only")
	verify := run(f.t, 2*time.Minute, "fio", args...)
	require.NotContains(f.t, verify, "verify: bad", verify)
	require.Contains(f.t, verify, "READ:", verify)
}

// finish waits for fio, requires a clean run, logs the longest pause the
// client saw (fio's write latency and the fsync probe) and returns it.
func (f *fioRun) finish(what string) time.Duration {
	f.t.Helper()
	res, longestProbe, err := f.wait()
	res = fioResult(f.t, err, f.out.String())
	fioMax := time.Duration(res.Jobs[0].Write.LatNs.Max)
	f.t.Logf("%s: fio write latency max %v (%d writes), fsync probe %v", what,
		fioMax.Round(time.Millisecond), res.Jobs[0].Write.IOs, longestProbe.Round(time.Millisecond))
	return max(fioMax, longestProbe)
}

// unmountAndCheck unmounts the file system and requires e2fsck to find no
// error in it.
func (m *mountedFS) unmountAndCheck() {
	m.umount()
	run(m.t, 2*time.Minute, "e2fsck", "-f", "-n", m.loop) // exit 0: no errors found
}

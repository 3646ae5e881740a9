package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/freeport"

	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

// startProxy runs `grbd proxy` (binary bin) for the cluster and returns it
// with its NBD URI.
func (c *replCluster) startProxy(bin string, args ...string) (*proc, string) {
	c.t.Helper()
	admin := fmt.Sprintf("127.0.0.1:%d", freeport.LoopbackPort(c.t))
	p := startBin(c.t, bin, c.dir, "proxy", "proxy ", append([]string{"proxy", "--config", c.cfgPath,
		"--listen", fmt.Sprintf("127.0.0.1:%d", freeport.LoopbackPort(c.t)), "--admin", admin}, args...)...)
	c.proxyAdmin = admin
	for _, l := range p.stdout() {
		if uri, ok := strings.CutPrefix(l, "proxy "); ok {
			return p, uri
		}
	}
	c.t.Fatal("no proxy line")
	return nil, ""
}

// resendReport is what testdata/proxy_resend.py prints.
type resendReport struct {
	Errors          []int    `json:"errors"`
	FlushPending    []int    `json:"flush_pending"`
	DirectMismatch  []int    `json:"direct_mismatch"`
	ProxyMismatch   []int    `json:"proxy_mismatch"`
	InflightAtKill  int      `json:"inflight_at_kill"`
	IssuedBeforeKil int      `json:"issued_before_kill"`
	Issued          int      `json:"issued"`
	Unanswered      int      `json:"unanswered"`
	FlushErr        *int     `json:"flush_err"`
	FlushAfterKill  *float64 `json:"flush_after_kill_s"`
	DirectNode      string   `json:"direct_node"`
}

// runResendScenario: 2 data nodes + witness behind grbd proxy (binary
// bin); libnbd keeps 16 writes in flight, the primary n0 is killed with
// SIGKILL, then 32 more writes, a FLUSH and 8 writes follow.
func runResendScenario(t *testing.T, bin string) resendReport {
	requireTools(t, "nbdsh")
	c := newReplCluster(t, "C", "64MiB")
	n0, _ := c.startPair()
	_, uri := c.startProxy(bin)

	py := exec.Command("/usr/bin/python3", "testdata/proxy_resend.py", uri, c.uri("n0"), c.uri("n1"))
	stdin, err := py.StdinPipe()
	require.NoError(t, err)
	stdout, err := py.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	py.Stderr = &stderr
	require.NoError(t, py.Start())
	t.Cleanup(func() { _ = py.Process.Kill(); _ = py.Wait() })
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 16<<20)
	require.True(t, lines.Scan(), "script: %s", stderr.String())
	require.Equal(t, "started", lines.Text())
	time.Sleep(500 * time.Millisecond)
	n0.kill9()
	_, err = fmt.Fprintln(stdin, "killed")
	require.NoError(t, err)
	require.True(t, lines.Scan(), "script: %s", stderr.String())
	var r resendReport
	require.NoError(t, json.Unmarshal(lines.Bytes(), &r), lines.Text())
	require.NoError(t, py.Wait(), stderr.String())
	t.Logf("%d writes, %d in flight at the kill; FLUSH answered %.2fs after the kill; direct read from %s",
		r.Issued, r.InflightAtKill, deref(r.FlushAfterKill), r.DirectNode)
	return r
}

// TestProxyFollowsPastAHungPrimary: the primary hangs (SIGSTOP: its ports
// accept connections and nothing answers, as a node stuck in its disk) and
// the cluster fails over; writes through the proxy go on at the new
// primary while the old one still hangs. (The proxy dialled the new
// primary with the time its locate had spent waiting for the hung node,
// and so stayed without a primary for as long as that node hung.)
func TestProxyFollowsPastAHungPrimary(t *testing.T) {
	t.Parallel()
	c := newReplCluster(t, "C", "64MiB")
	n0, _ := c.startPair()
	_, uri := c.startProxy(grbdBin)
	run(t, time.Minute, "fio", "--name=w", "--ioengine=nbd", "--uri="+uri, "--rw=write", "--bs=64k", "--size=1m")

	require.NoError(t, n0.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = n0.Signal(syscall.SIGCONT) }) // before the harness stops it
	stopped := time.Now()
	out, err := runErr(40*time.Second, "fio", "--name=w", "--ioengine=nbd", "--uri="+uri, "--rw=write", "--bs=64k", "--size=1m", "--offset=2m")
	require.NoError(t, err, "writes through the proxy while the old primary hangs:\n%s", out)
	took := time.Since(stopped)
	t.Logf("1 MiB written through the proxy %v after the primary hung", took.Round(time.Millisecond))
	require.Less(t, took, 15*time.Second, "the proxy reached the new primary only late")
	st, err := c.status("n1")
	require.NoError(t, err)
	require.Equal(t, node.RolePrimary, st.Role)
}

// httpGetJSON fetches GET /status of an admin address as text.
func httpGetJSON(admin string) (string, error) {
	resp, err := http.Get("http://" + admin + "/status")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func deref(f *float64) float64 {
	if f == nil {
		return -1
	}
	return *f
}

// checkResendRules is what a correct proxy guarantees.
func checkResendRules(r resendReport) []string {
	var bad []string
	if r.InflightAtKill == 0 {
		bad = append(bad, "no write was in flight at the kill (the scenario proves nothing)")
	}
	if len(r.Errors) > 0 || r.Unanswered > 0 {
		bad = append(bad, fmt.Sprintf("writes failed %v or unanswered %d", r.Errors, r.Unanswered))
	}
	if r.FlushErr == nil || *r.FlushErr != 0 {
		bad = append(bad, "the FLUSH failed or never returned")
	}
	if len(r.FlushPending) > 0 {
		bad = append(bad, fmt.Sprintf("FLUSH answered while %d writes sent before it were unanswered: %v", len(r.FlushPending), r.FlushPending))
	}
	if r.DirectNode == "" {
		bad = append(bad, "no node served the direct read after the FLUSH")
	}
	if len(r.DirectMismatch) > 0 {
		bad = append(bad, fmt.Sprintf("right after the FLUSH the serving node lacks %d writes sent before it: %v", len(r.DirectMismatch), r.DirectMismatch))
	}
	if len(r.ProxyMismatch) > 0 {
		bad = append(bad, fmt.Sprintf("%d answered writes not readable afterwards: %v", len(r.ProxyMismatch), r.ProxyMismatch))
	}
	return bad
}

// TestProxyResendRules: writes in flight through grbd proxy at the kill -9
// of the primary are answered with success and readable afterwards; a FLUSH
// sent after the kill returns only after every write sent before it was
// answered, and the new primary holds them all the moment it returns.
func TestProxyResendRules(t *testing.T) {
	t.Parallel()
	r := runResendScenario(t, grbdBin)
	require.Empty(t, checkResendRules(r))
}

// TestProxyPlantedFlushBugIsCaught builds grbd with the planted bug
// (grbd_plantbug_flush: the proxy answers a FLUSH before re-sending the
// unanswered writes) and requires TestProxyResendRules' checks to fail.
func TestProxyPlantedFlushBugIsCaught(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "grbd-plantbug")
	build := exec.Command("go", "build", "-tags", "grbd_plantbug_flush", "-o", bin, "../cmd/grbd")
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))
	r := runResendScenario(t, bin)
	bad := checkResendRules(r)
	t.Logf("with the planted bug the checks report: %v", bad)
	require.NotEmpty(t, bad, "the planted flush bug went unnoticed")
	require.True(t, len(r.FlushPending) > 0 || len(r.DirectMismatch) > 0, "caught for another reason: %v", bad)
	_ = os.Remove(bin)
}

// fioLatency is the part of fio's JSON output the test reads.
type fioLatency struct {
	Jobs []struct {
		Error int `json:"error"`
		Write struct {
			IOs   int64 `json:"total_ios"`
			LatNs struct {
				Max float64 `json:"max"`
			} `json:"lat_ns"`
		} `json:"write"`
	} `json:"jobs"`
}

// pauseProbe writes and fdatasyncs 4 KiB in the mounted file system every
// 10 ms and keeps the longest time one round took: the pause the file
// system's user sees.
func pauseProbe(t *testing.T, dir string, stop <-chan struct{}) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	f, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_CREATE|os.O_RDWR, 0o644)
	require.NoError(t, err)
	go func() {
		defer f.Close()
		var longest time.Duration
		buf := make([]byte, 4096)
		for i := 0; ; i++ {
			select {
			case <-stop:
				out <- longest
				return
			case <-time.After(10 * time.Millisecond):
			}
			start := time.Now()
			buf[0] = byte(i)
			_, werr := f.WriteAt(buf, int64(i%256)*4096)
			serr := f.Sync()
			if werr != nil || serr != nil {
				t.Errorf("probe I/O error: %v %v", werr, serr)
				out <- longest
				return
			}
			longest = max(longest, time.Since(start))
		}
	}()
	return out
}

// TestProxyExt4FioSurvivesKill: nbdfuse -> grbd proxy -> 2 data nodes +
// witness, a loop device, ext4 mounted; fio with verify=crc32c on a file in
// it; the primary is killed with SIGKILL mid-run. fio finishes without an
// I/O error, with no remount, and fio --verify_only passes; the longest
// pause a client saw is logged and must stay under 3 s (goal 1.5 s). Then
// the old primary comes back as the new primary's secondary and is killed
// and restarted in the middle of a second fio run: no error either.
func TestProxyExt4FioSurvivesKill(t *testing.T) {
	requireMountPrivileges(t)
	requireTools(t, "fio")
	c := newReplCluster(t, "C", "64MiB")
	n0, _ := c.startPair()
	_, uri := c.startProxy(grbdBin)

	m := attachExt4(t, c.dir, uri)
	fio := startFio(t, c.dir, m.mnt, "fio.dat", "48m")
	time.Sleep(3 * time.Second)
	killed := time.Now()
	n0.kill9()
	clusterGap := c.waitServing("n1", 10*time.Second)
	pause := fio.finish("longest client pause across the failover")
	t.Logf("fio ran %.1fs after the kill; n1 served %v after it", time.Since(killed).Seconds(), clusterGap.Round(time.Millisecond))
	require.Less(t, pause, 3*time.Second, "pause too long")

	fio.verifyOnly()

	resp, err := httpGetJSON(c.proxyAdmin)
	require.NoError(t, err)
	t.Logf("proxy status: %s", resp)
	require.Contains(t, resp, `"primary":"n1"`)

	// The old primary comes back as n1's secondary, catches up, and is
	// killed again mid-run and restarted: the client sees no error either.
	n0again := startMember(t, c.dir, "n0-again", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	require.Eventually(t, func() bool {
		st, err := c.status("n1")
		return err == nil && len(st.Peers) == 1 && st.Peers[0].Disk == node.DiskUpToDate && st.Peers[0].Behind == 0
	}, 30*time.Second, 50*time.Millisecond, "n0 never caught up")
	fio = startFio(t, c.dir, m.mnt, "fio2.dat", "24m")
	time.Sleep(2 * time.Second)
	n0again.kill9()
	time.Sleep(time.Second)
	startMember(t, c.dir, "n0-third", "listening ", "node", "--config", c.cfgPath, "--name", "n0")
	fio.finish("secondary killed and restarted")
	fio.verifyOnly()
	m.unmountAndCheck()
}

// TestProxyOverTLS: a cluster that requires TLS on NBD (and authenticates
// admin requests with a secret) behind grbd proxy --nbd-certs: fio verifies
// its writes through the proxy, the primary is killed, and fio
// --verify_only through the same proxy URI reads them from the new primary.
func TestProxyOverTLS(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio")
	c := newSecureCluster(t, "security:\n  shared-secret-file: pki/secret\n  admin-auth: all\n"+
		"nbd:\n  tls:\n    cert: pki/nbd/{name}.pem\n    key: pki/nbd/{name}-key.pem\n  tls-required: true\n")
	listen := fmt.Sprintf("127.0.0.1:%d", freeport.LoopbackPort(t))
	startMember(t, c.dir, "proxy", "proxy ", "proxy", "--config", c.cfgPath, "--listen", listen,
		"--nbd-certs", filepath.Join(c.dir, "pki", "nbd-client"))
	args := []string{"--size=4m", "--offset_increment=4m", "--numjobs=2"}
	out := fioVerify(t, 2*time.Minute, "nbd://"+listen, args...)
	// n1 must hold the writes (not Outdated) before the primary dies, or no
	// failover can happen and the proxy rightly holds the reads until EIO.
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && len(st.Peers) == 1 && st.Peers[0].Disk == node.DiskUpToDate && st.Peers[0].Behind == 0 && len(st.Quorum.Outdated) == 0
	}, 30*time.Second, 50*time.Millisecond, "n1 never in sync")
	c.procs["n0"].kill9()
	out = fioVerify(t, 2*time.Minute, "nbd://"+listen, append(args, "--verify_only")...)
	require.Contains(t, out, "READ:", out)
}

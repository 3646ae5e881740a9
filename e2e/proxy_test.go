package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startProxy runs `grbd proxy` (binary bin) for the cluster and returns it
// with its NBD URI.
func (c *replCluster) startProxy(bin string, args ...string) (*proc, string) {
	c.t.Helper()
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(c.t))
	p := startBin(c.t, bin, c.dir, "proxy", "proxy ", append([]string{"proxy", "--config", c.cfgPath,
		"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(c.t)), "--admin", admin}, args...)...)
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
	n0 := c.start("n0", "n0")
	c.start("n1", "n1")
	c.waitPeer(10 * time.Second)
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
	r := runResendScenario(t, grbdBin)
	require.Empty(t, checkResendRules(r))
}

// TestProxyPlantedFlushBugIsCaught builds grbd with the planted bug
// (grbd_plantbug_flush: the proxy answers a FLUSH before re-sending the
// unanswered writes) and requires TestProxyResendRules' checks to fail.
func TestProxyPlantedFlushBugIsCaught(t *testing.T) {
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

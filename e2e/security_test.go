package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/freeport"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

// secureCluster is 2 data nodes and a witness with credentials made by
// `grbd certs init` and a security section.
type secureCluster struct {
	t       *testing.T
	dir     string
	cfgPath string
	cfg     *config.Config
	cli     *auth.Client
	procs   map[string]*proc
}

func newSecureCluster(t *testing.T, security string) *secureCluster {
	t.Helper()
	dir := t.TempDir()
	p := clusterConfig(t, dir, 2, "64MiB", security)
	run(t, time.Minute, grbdBin, "certs", "init", "--config", p, "--dir", filepath.Join(dir, "pki"), "--secret")
	cfg, err := config.Load(p)
	require.NoError(t, err)
	cli, err := auth.NewClient(cfg, "", "")
	require.NoError(t, err)
	c := &secureCluster{t: t, dir: dir, cfgPath: p, cfg: cfg, cli: cli, procs: map[string]*proc{}}
	c.procs["w"] = startMember(t, dir, "w", "ready witness", "witness", "--config", p, "--name", "w")
	c.procs["n0"] = startMember(t, dir, "n0", "ready ", "node", "--config", p, "--name", "n0")
	c.procs["n1"] = startMember(t, dir, "n1", "listening ", "node", "--config", p, "--name", "n1")
	return c
}

// status is a member's /status through the authenticating client; the
// witness's fits in node.Status too (role and quorum).
func (c *secureCluster) status(name string) (node.Status, error) {
	m, _, err := c.cfg.Member(name)
	require.NoError(c.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.cli.Do(ctx, m, http.MethodGet, "/status")
	if err != nil {
		return node.Status{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return node.Status{}, err
	}
	var st node.Status
	return st, json.Unmarshal(b, &st)
}

func (c *secureCluster) mustStatus(name string) node.Status {
	c.t.Helper()
	st, err := c.status(name)
	require.NoError(c.t, err, name)
	return st
}

// impostorConfig writes a config in which member name has other
// credentials (edit changes the security section), its own data directory
// (a copy of from's, if from is set) and, unless keepAddress, free ports.
func (c *secureCluster) impostorConfig(name, from string, keepAddress bool, edit func(*config.Security)) string {
	c.t.Helper()
	cfg, err := config.Load(c.cfgPath)
	require.NoError(c.t, err)
	sec := *cfg.Security
	edit(&sec)
	cfg.Security = &sec
	dataDir := filepath.Join(c.dir, "impostor-"+name)
	if from != "" {
		m, _, err := cfg.Member(from)
		require.NoError(c.t, err)
		out, err := exec.Command("cp", "-a", "--sparse=always", m.DataDir, dataDir).CombinedOutput()
		require.NoError(c.t, err, "%s", out)
	}
	set := func(m *config.Member) {
		m.DataDir = dataDir
		if !keepAddress {
			m.Address = "127.0.0.1:" + strconv.Itoa(freeport.LoopbackPort(c.t))
		}
		m.Admin = "127.0.0.1:" + strconv.Itoa(freeport.LoopbackPort(c.t))
		if m.NBD != "" {
			m.NBD = "127.0.0.1:" + strconv.Itoa(freeport.LoopbackPort(c.t))
		}
	}
	for i := range cfg.Nodes {
		if cfg.Nodes[i].Name == name {
			set(&cfg.Nodes[i])
		}
	}
	if cfg.Witness.Name == name {
		set(cfg.Witness)
	}
	b, err := cfg.Marshal()
	require.NoError(c.t, err)
	p := filepath.Join(c.dir, "impostor-"+name+".yaml")
	require.NoError(c.t, os.WriteFile(p, b, 0o644))
	return p
}

// requireRefusedLogged waits until member's log shows a refused peer
// connection claiming to be claimed.
func requireRefusedLogged(t *testing.T, p *proc, claimed string) {
	t.Helper()
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(p.Log)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "refused peer connection") && strings.Contains(l, "remote=127.0.0.1:") && strings.Contains(l, "claimed="+claimed) {
				return true
			}
		}
		return false
	}, 15*time.Second, 100*time.Millisecond, "%s logged no refusal of %s", p.name, claimed)
}

// requireNeverLinked checks that an impostor's log never shows a member
// link coming up.
func requireNeverLinked(t *testing.T, p *proc) {
	t.Helper()
	b, err := os.ReadFile(p.Log)
	require.NoError(t, err)
	require.NotContains(t, string(b), `msg="peer link up"`, "the impostor linked with a member")
}

// TestImpostorWithWrongSecretChangesNothing: in a cluster authenticated
// with a shared secret, a process that claims to be the primary n0 (its own
// data directory, the right names and cluster, the wrong secret) dials n1
// and the witness. Both refuse it before any raft, lease or data message
// and log its address; raft terms, the epoch, the primary and n1's journal
// stay as they were, and the real primary keeps serving.
func TestImpostorWithWrongSecretChangesNothing(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio")
	c := newSecureCluster(t, "security:\n  shared-secret-file: pki/secret\n")
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && len(st.Peers) == 1 && st.Peers[0].Disk == node.DiskUpToDate && st.Peers[0].Behind == 0
	}, 15*time.Second, 50*time.Millisecond)
	uri := "nbd://" + c.cfg.Nodes[0].NBD
	run(t, time.Minute, "fio", "--name=w", "--ioengine=nbd", "--uri="+uri, "--rw=write", "--bs=64k", "--size=2m")
	require.Eventually(t, func() bool { return c.mustStatus("n0").Peers[0].Behind == 0 }, 10*time.Second, 20*time.Millisecond)
	before := map[string]node.Status{}
	for _, n := range []string{"n0", "n1", "w"} {
		before[n] = c.mustStatus(n)
	}

	bad := filepath.Join(c.dir, "pki", "wrong-secret")
	require.NoError(t, auth.NewSecretFile(bad))
	p := c.impostorConfig("n0", "", false, func(s *config.Security) { s.SharedSecretFile = bad })
	imp := startMember(t, c.dir, "impostor-n0", "listening ", "node", "--config", p, "--name", "n0")
	requireRefusedLogged(t, c.procs["n1"], "n0")
	requireRefusedLogged(t, c.procs["w"], "n0")
	time.Sleep(2 * time.Second) // let the impostor campaign and redial
	requireNeverLinked(t, imp)

	for _, n := range []string{"n0", "n1", "w"} {
		st := c.mustStatus(n)
		b := before[n]
		require.Equal(t, b.Quorum.RaftTerm, st.Quorum.RaftTerm, "%s: raft term changed", n)
		require.Equal(t, b.Quorum.Epoch, st.Quorum.Epoch, "%s: epoch changed", n)
		require.Equal(t, "n0", st.Quorum.Primary, n)
		if n != "w" {
			require.Equal(t, b.Journal.LastSeq, st.Journal.LastSeq, "%s: data written", n)
		}
	}
	st := c.mustStatus("n0")
	require.True(t, st.Quorum.Serving)
	require.Equal(t, node.ConnConnected, st.Peers[0].Connection, "the impostor disturbed the real link")
	run(t, time.Minute, "fio", "--name=w2", "--ioengine=nbd", "--uri="+uri, "--rw=write", "--bs=64k", "--size=1m", "--offset=4m")

	// Admin requests need the secret too: the impostor's view of it is
	// refused, the cluster's CLI is served.
	badCfg, err := config.Load(p)
	require.NoError(t, err)
	badCli, err := auth.NewClient(badCfg, "", "")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = badCli.Do(ctx, c.cfg.Nodes[1], http.MethodPost, "/primary")
	require.ErrorIs(t, err, auth.ErrUnauthorized)
	require.Equal(t, "n0", c.mustStatus("n1").Quorum.Primary)
	out := run(t, 30*time.Second, grbdBin, "status", "--config", c.cfgPath)
	require.Contains(t, out, "Primary")
}

// TestWitnessImpostorCannotGrantLeases: in a TLS cluster the witness and n1
// die, so the primary n0 is a minority and fences. A process takes the
// witness's address with a copy of the witness's control-plane state (so it
// would vote and acknowledge leases as the witness did) and a certificate
// for "w" from another CA. n0 refuses it at the TLS handshake: it stays
// fenced and writes fail, until the real witness returns.
func TestWitnessImpostorCannotGrantLeases(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio")
	security := "security:\n  tls:\n    ca: pki/ca.pem\n    cert: pki/{name}.pem\n    key: pki/{name}-key.pem\n"
	c := newSecureCluster(t, security)
	require.Eventually(t, func() bool {
		st, err := c.status("n0")
		return err == nil && st.Quorum.Serving && len(st.Peers) == 1 && st.Peers[0].Disk == node.DiskUpToDate
	}, 15*time.Second, 50*time.Millisecond)
	uri := "nbd://" + c.cfg.Nodes[0].NBD
	before := c.mustStatus("n0")

	c.procs["w"].kill9()
	c.procs["n1"].kill9()
	require.Eventually(t, func() bool { return !c.mustStatus("n0").Quorum.Serving }, 10*time.Second, 20*time.Millisecond, "a lone primary must fence")

	// The impostor: the witness's state, another CA's certificate for "w".
	other := filepath.Join(c.dir, "other-pki")
	run(t, time.Minute, grbdBin, "certs", "init", "--config", c.cfgPath, "--dir", other)
	p := c.impostorConfig("w", "w", true, func(s *config.Security) {
		s.TLS = &config.MemberTLS{CA: filepath.Join(other, "ca.pem"), Cert: filepath.Join(other, "{name}.pem"), Key: filepath.Join(other, "{name}-key.pem")}
	})
	imp := startMember(t, c.dir, "impostor-w", "ready witness", "witness", "--config", p, "--name", "w")
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(c.procs["n0"].Log)
		return strings.Contains(string(b), `msg="peer link refused"`) && strings.Contains(string(b), "peer=w")
	}, 15*time.Second, 100*time.Millisecond, "n0 did not refuse the impostor")
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		st := c.mustStatus("n0")
		require.False(t, st.Quorum.Serving, "the impostor granted a lease")
		require.Equal(t, before.Quorum.Epoch, st.Quorum.Epoch)
		time.Sleep(100 * time.Millisecond)
	}
	out, err := runErr(30*time.Second, "fio", "--name=fenced", "--ioengine=nbd", "--uri="+uri, "--rw=write", "--bs=4k", "--size=64k")
	require.Error(t, err, "a fenced primary acknowledged writes:\n%s", out)
	requireNeverLinked(t, imp)

	// The real witness (same state, the cluster's certificate) restores
	// the lease: the refusal above was the credentials, nothing else.
	imp.kill9()
	c.procs["w"] = startMember(t, c.dir, "w-again", "ready witness", "witness", "--config", c.cfgPath, "--name", "w")
	require.Eventually(t, func() bool { return c.mustStatus("n0").Quorum.Serving }, 15*time.Second, 50*time.Millisecond)
	run(t, time.Minute, "fio", "--name=ok", "--ioengine=nbd", "--uri="+uri, "--rw=write", "--bs=4k", "--size=64k")
}

// TestNBDOverTLS: with nbd.tls and tls-required, libnbd clients reach the
// primary's export with nbds:// and the certificates `grbd certs init` wrote
// for them (nbdinfo with tls-certificates=, fio's nbd engine from its
// default directory $HOME/.pki/libnbd, as it refuses local paths in URIs);
// a plain nbd:// client is refused.
func TestNBDOverTLS(t *testing.T) {
	t.Parallel()
	requireTools(t, "fio", "nbdinfo")
	c := newSecureCluster(t, "security:\n  shared-secret-file: pki/secret\n"+
		"nbd:\n  tls:\n    cert: pki/nbd/{name}.pem\n    key: pki/nbd/{name}-key.pem\n  tls-required: true\n")
	host := c.cfg.Nodes[0].NBD
	certs := filepath.Join(c.dir, "pki", auth.NBDClientDir)
	out := run(t, 30*time.Second, "nbdinfo", "nbds://"+host+"/?tls-certificates="+certs)
	require.Contains(t, out, "with TLS", out)
	require.Contains(t, out, "export-size: 67108864", out)
	out, err := runErr(30*time.Second, "nbdinfo", "nbd://"+host)
	require.Error(t, err, "plain text served although TLS is required:\n%s", out)

	home := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".pki"), 0o755))
	cp, err := exec.Command("cp", "-a", certs, filepath.Join(home, ".pki", "libnbd")).CombinedOutput()
	require.NoError(t, err, "%s", cp)
	fio := exec.Command("fio", fioVerifyArgs("nbds://"+host+"/", "--size=4m", "--offset_increment=4m", "--numjobs=2")...)
	fio.Dir = t.TempDir()
	fio.Env = append(os.Environ(), "HOME="+home)
	b, err := fio.CombinedOutput()
	require.NoError(t, err, "%s", b)
	require.NotContains(t, string(b), "verify: bad", string(b))
}

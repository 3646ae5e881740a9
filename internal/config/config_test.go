package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const good = `cluster: demo
device:
  size: 1GiB
journal:
  max-size: 512MiB
nodes:
  - name: alpha
    address: 127.0.0.1:7700
    nbd: 127.0.0.1:10809
    admin: 127.0.0.1:7800
    data-dir: alpha
  - name: beta
    address: 127.0.0.1:7701
    nbd: 127.0.0.1:10810
    admin: 127.0.0.1:7801
    data-dir: /var/lib/grbd/beta
witness:
  name: w
  address: 127.0.0.1:7702
  admin: 127.0.0.1:7802
  data-dir: w
`

func TestParseGood(t *testing.T) {
	c, err := Parse("/etc/grbd/demo.yaml", []byte(good))
	require.NoError(t, err)
	require.Equal(t, Size(1<<30), c.Device.Size)
	require.Equal(t, Size(512<<20), c.Journal.MaxSize)
	require.Equal(t, DefaultJournalSegment, c.Journal.SegmentSize, "default filled")
	require.Equal(t, SyncOnFlush, c.Journal.Sync)
	require.Equal(t, ProtocolC, c.Replication.Protocol)
	require.True(t, c.Quorum.AutoFailoverOn())
	require.Equal(t, OnNoQuorumIOError, c.Quorum.OnNoQuorum)
	require.Equal(t, DefaultLease, c.Quorum.Lease)
	require.Equal(t, SplitBrainDisconnect, c.Replication.AfterSplitBrain)
	require.Equal(t, CongestionBlock, c.Replication.OnCongestion)
	require.Equal(t, DefaultCongestionFill, c.Replication.CongestionFill)
	require.Equal(t, DefaultStreamWindow, c.Replication.StreamWindow)
	require.Equal(t, DefaultFlushTimeout, c.Replication.FlushTimeout)
	require.Equal(t, DefaultDiskTimeout.D(), c.Device.DiskTimeoutOrDefault())
	require.Equal(t, "/etc/grbd/alpha", c.Nodes[0].DataDir, "relative dir resolved against the file")
	require.Equal(t, "/var/lib/grbd/beta", c.Nodes[1].DataDir)
	m, witness, err := c.Member("w")
	require.NoError(t, err)
	require.True(t, witness)
	require.Equal(t, "127.0.0.1:7702", m.Address)
	_, _, err = c.Member("nope")
	require.ErrorIs(t, err, ErrUnknownMember)
}

func TestParseQuorum(t *testing.T) {
	c, err := Parse("c.yaml", []byte(good+"quorum:\n  auto-failover: false\n  on-no-quorum: suspend-io\n  lease: 1s\n"))
	require.NoError(t, err)
	require.False(t, c.Quorum.AutoFailoverOn())
	require.Equal(t, OnNoQuorumSuspend, c.Quorum.OnNoQuorum)
	require.Equal(t, time.Second, c.Quorum.Lease.D())
}

// A peer-timeout above the default flush-timeout raises the flush-timeout's
// default with it instead of making the config invalid.
func TestFlushTimeoutFollowsALongPeerTimeout(t *testing.T) {
	c, err := Parse("c.yaml", []byte(good+"replication:\n  peer-timeout: 45s\n"))
	require.NoError(t, err)
	require.Equal(t, 45*time.Second, c.Replication.FlushTimeout.D())
}

// disk-timeout: 0s turns the detach of a hung disk off; unset is the default.
func TestDiskTimeoutOff(t *testing.T) {
	c, err := Parse("c.yaml", []byte(strings.Replace(good, "size: 1GiB", "size: 1GiB\n  disk-timeout: 0s", 1)))
	require.NoError(t, err)
	require.Zero(t, c.Device.DiskTimeoutOrDefault())
}

func TestMarshalRoundTrip(t *testing.T) {
	c, err := Parse("x.yaml", []byte(good))
	require.NoError(t, err)
	b, err := c.Marshal()
	require.NoError(t, err)
	c2, err := Parse("x.yaml", b)
	require.NoError(t, err)
	require.Equal(t, c.Nodes, c2.Nodes)
	require.Equal(t, c.Device, c2.Device)
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(string) string
		want string // substring: file:line: field: message
	}{
		{"unknown key", swap("  size: 1GiB", "  size: 1GiB\n  colour: red"), `c.yaml:4: device.colour: unknown field "colour"; known fields here: size`},
		{"missing cluster", swap("cluster: demo", "cluster: \"\""), "c.yaml:1: cluster: required"},
		{"bad size", swap("size: 1GiB", "size: 1GB"), `c.yaml:3: device.size: size "1GB": want a non-negative integer`},
		{"unaligned size", swap("size: 1GiB", "size: 1000"), "c.yaml:3: device.size: 1000 is not a multiple of 4096"},
		{"zero size", swap("size: 1GiB", "size: 0"), "c.yaml:3: device.size: required"},
		{"small journal", swap("max-size: 512MiB", "max-size: 8MiB"), "c.yaml:5: journal.max-size: must be at least 4 segments"},
		{"no activity log", swap("max-size: 512MiB", "max-size: 512MiB\n  activity-extents: -1"), "c.yaml:6: journal.activity-extents: -1: must be between 1 and 65534"},
		{"huge activity log", swap("max-size: 512MiB", "max-size: 512MiB\n  activity-extents: 65535"), "c.yaml:6: journal.activity-extents: 65535: must be between 1 and 65534"},
		{"unaligned in-place-min", swap("max-size: 512MiB", "max-size: 512MiB\n  in-place-min: 1000"), "c.yaml:6: journal.in-place-min: 1000: must be a multiple of 4096 up to 32MiB"},
		{"huge in-place-min", swap("max-size: 512MiB", "max-size: 512MiB\n  in-place-min: 64MiB"), "c.yaml:6: journal.in-place-min: 67108864: must be a multiple of 4096 up to 32MiB"},
		{"bad in-place", swap("max-size: 512MiB", "max-size: 512MiB\n  in-place: sometimes"), `c.yaml:6: journal.in-place: "sometimes": want "on" or "off"`},
		{"bad sync", func(s string) string {
			return strings.Replace(s, "max-size: 512MiB", "max-size: 512MiB\n  sync: sometimes", 1)
		}, "c.yaml:6: journal.sync: \"sometimes\""},
		{"bad protocol", func(s string) string { return s + "replication:\n  protocol: D\n" }, "c.yaml:23: replication.protocol: \"D\": want A, B or C"},
		{"static primary is gone", func(s string) string { return s + "replication:\n  primary: alpha\n" }, `c.yaml:23: replication.primary: unknown field "primary"; known fields here: protocol,`},
		{"small stream window", func(s string) string { return s + "replication:\n  stream-window: 64KiB\n" }, "c.yaml:23: replication.stream-window: 64KiB: must be between 256KiB and 256MiB"},
		{"huge stream window", func(s string) string { return s + "replication:\n  stream-window: 1GiB\n" }, "c.yaml:23: replication.stream-window: 1GiB: must be between 256KiB and 256MiB"},
		{"bad congestion policy", func(s string) string { return s + "replication:\n  on-congestion: pull-ahead\n" }, `c.yaml:23: replication.on-congestion: "pull-ahead": want "block" or "disconnect"`},
		{"small congestion fill", func(s string) string { return s + "replication:\n  congestion-fill: 64KiB\n" }, "c.yaml:23: replication.congestion-fill: 64KiB: must be between 1MiB and 1GiB"},
		{"short flush timeout", func(s string) string { return s + "replication:\n  peer-timeout: 5s\n  flush-timeout: 4s\n" }, "c.yaml:24: replication.flush-timeout: must be at least replication.peer-timeout"},
		{"short disk timeout", swap("size: 1GiB", "size: 1GiB\n  disk-timeout: 10ms"), "device.disk-timeout: must be 0s (off) or at least 1s"},
		{"bad split-brain policy", func(s string) string { return s + "replication:\n  after-split-brain: coin\n" }, "c.yaml:23: replication.after-split-brain: \"coin\""},
		{"bad on-no-quorum", func(s string) string { return s + "quorum:\n  on-no-quorum: panic\n" }, "c.yaml:23: quorum.on-no-quorum: \"panic\""},
		{"short lease", func(s string) string { return s + "quorum:\n  lease: 20ms\n" }, "c.yaml:23: quorum.lease: must be at least 5 ticks"},
		{"bad tick", func(s string) string { return s + "quorum:\n  tick: 2s\n" }, "c.yaml:23: quorum.tick: must be between 1ms and 1s"},
		{"witness without data dir", swap("  data-dir: w\n", ""), "witness.data-dir: required: the directory for the control-plane log"},
		{"no nodes", func(s string) string { return s[:strings.Index(s, "nodes:")] }, "c.yaml:1: nodes: at least one data node"},
		{"duplicate name", swap("name: beta", "name: alpha"), "c.yaml:12: nodes[1].name: duplicate member name \"alpha\""},
		{"bad address", swap("address: 127.0.0.1:7701", "address: nowhere"), "c.yaml:13: nodes[1].address: \"nowhere\" is not host:port"},
		{"wildcard host", swap("nbd: 127.0.0.1:10810", "nbd: :10810"), "c.yaml:14: nodes[1].nbd: \":10810\" has no host"},
		{"bad port", swap("admin: 127.0.0.1:7801", "admin: 127.0.0.1:70000"), "c.yaml:15: nodes[1].admin: \"127.0.0.1:70000\": port must be 0-65535"},
		{"port clash", swap("nbd: 127.0.0.1:10810", "nbd: 127.0.0.1:10809"), "c.yaml:14: nodes[1].nbd: 127.0.0.1:10809 is already used by alpha.nbd"},
		{"shared data dir", swap("data-dir: w", "data-dir: alpha"), "c.yaml:21: witness.data-dir: alpha is also the data-dir of alpha on the same host"},
		{"missing data dir", swap("    data-dir: alpha\n", ""), "nodes[0].data-dir: required"},
		{"witness with nbd", func(s string) string {
			return strings.Replace(s, "  admin: 127.0.0.1:7802", "  admin: 127.0.0.1:7802\n  nbd: 127.0.0.1:1", 1)
		}, "witness.nbd: a witness holds no data"},
		{"wrong type", func(s string) string {
			return strings.Replace(s, "nodes:\n", "nodes: 3\n", 1)[:strings.Index(s, "nodes:")+9]
		}, "c.yaml:6: nodes: cannot unmarshal"},
		{"empty security", func(s string) string { return s + "security: {}\n" }, "c.yaml:22: security: needs tls, shared-secret-file or both"},
		{"tls without ca", func(s string) string {
			return s + "security:\n  tls:\n    cert: c/{name}.pem\n    key: c/{name}-key.pem\n"
		}, "c.yaml:24: security.tls.ca: required"},
		{"shared member cert", func(s string) string {
			return s + "security:\n  tls:\n    ca: ca.pem\n    cert: all.pem\n    key: c/{name}-key.pem\n"
		}, "c.yaml:25: security.tls.cert: \"all.pem\" must contain {name}"},
		{"per-member CA", func(s string) string {
			return s + "security:\n  tls:\n    ca: ca-{name}.pem\n    cert: c/{name}.pem\n    key: c/{name}-key.pem\n"
		}, "c.yaml:24: security.tls.ca: \"ca-{name}.pem\": one file for the whole cluster"},
		{"unknown placeholder", func(s string) string {
			return s + "security:\n  tls:\n    ca: ca.pem\n    cert: c/{host}{name}.pem\n    key: c/{name}-key.pem\n"
		}, "c.yaml:25: security.tls.cert: \"c/{host}{name}.pem\": the only placeholder is {name}"},
		{"bad admin-auth", func(s string) string { return s + "security:\n  shared-secret-file: s\n  admin-auth: some\n" }, "c.yaml:24: security.admin-auth: \"some\""},
		{"unknown security key", func(s string) string { return s + "security:\n  password: x\n" }, "security.password: unknown field \"password\""},
		{"tls-required without tls", func(s string) string { return s + "nbd:\n  tls-required: true\n" }, "c.yaml:23: nbd.tls-required: needs nbd.tls"},
		{"nbd tls without key", func(s string) string { return s + "nbd:\n  tls:\n    cert: n.pem\n" }, "c.yaml:24: nbd.tls.key: required"},
		{"too many handshakes", func(s string) string { return s + "nbd:\n  max-connections: 4\n  max-handshakes: 8\n" }, "c.yaml:24: nbd.max-handshakes: must be between 1 and max-connections"},
		{"not yaml", func(string) string { return "cluster: [" }, "c.yaml: config: invalid"},
		{"empty", func(string) string { return "" }, "c.yaml: config: invalid: empty file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.edit(good)
			_, err := Parse("c.yaml", []byte(src))
			require.Error(t, err)
			require.ErrorIs(t, err, ErrInvalid)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestParseSecurity(t *testing.T) {
	src := good + `security:
  tls:
    ca: pki/ca.pem
    cert: pki/{name}.pem
    key: /etc/grbd/{name}-key.pem
  shared-secret-file: secret
nbd:
  tls:
    cert: pki/nbd/{name}.pem
    key: pki/nbd/{name}-key.pem
  tls-required: true
  max-connections: 8
`
	c, err := Parse("/etc/grbd/demo.yaml", []byte(src))
	require.NoError(t, err)
	require.Equal(t, "/etc/grbd/pki/ca.pem", c.Security.TLS.CA)
	require.Equal(t, "/etc/grbd/pki/alpha.pem", MemberPath(c.Security.TLS.Cert, "alpha"))
	require.Equal(t, "/etc/grbd/beta-key.pem", MemberPath(c.Security.TLS.Key, "beta"))
	require.Equal(t, "/etc/grbd/secret", c.Security.SharedSecretFile)
	require.Equal(t, AdminAuthMutating, c.Security.AdminAuth)
	require.Equal(t, "/etc/grbd/pki/nbd/alpha.pem", MemberPath(c.NBD.TLS.Cert, "alpha"))
	require.True(t, c.NBD.TLSRequired)
	require.Equal(t, 8, c.NBD.MaxConnections)
	require.Equal(t, 8, c.NBD.MaxHandshakes, "default capped by max-connections")

	plain, err := Parse("c.yaml", []byte(good))
	require.NoError(t, err)
	require.Nil(t, plain.Security)
	require.Equal(t, DefaultMaxConnections, plain.NBD.MaxConnections)
	require.Equal(t, DefaultMaxHandshakes, plain.NBD.MaxHandshakes)
}

func TestParseReportsAllErrors(t *testing.T) {
	src := strings.Replace(strings.Replace(good, "size: 1GiB", "size: 1000", 1), "address: 127.0.0.1:7701", "address: x", 1)
	_, err := Parse("c.yaml", []byte(src))
	require.Error(t, err)
	var fe *FieldError
	require.True(t, errors.As(err, &fe))
	require.Contains(t, err.Error(), "device.size")
	require.Contains(t, err.Error(), "nodes[1].address")
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	require.NoError(t, os.WriteFile(p, []byte(good), 0o600))
	c, err := Load(p)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "alpha"), c.Nodes[0].DataDir)
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  bool
	}{
		{"4096", 4096, false}, {"64KiB", 64 << 10, false}, {"1GiB", 1 << 30, false}, {"2T", 2 << 40, false},
		{" 3 MiB ", 3 << 20, false}, {"", 0, true}, {"-1", 0, true}, {"1.5GiB", 0, true}, {"1GB", 0, true},
		{"99999999999TiB", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if tc.err {
				require.ErrorIs(t, err, ErrInvalid)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	require.Equal(t, "1GiB", Size(1<<30).String())
	require.Equal(t, "1000", Size(1000).String())
}

// swap returns a config edit that replaces the first old with new, the
// edit most table cases make to the valid sample.
func swap(old, new string) func(string) string {
	return func(s string) string { return strings.Replace(s, old, new, 1) }
}

// Package config reads and validates grbd's cluster configuration: one YAML
// file, shared by every member, that describes the whole resource (device size,
// journal, replication, the data nodes and the optional witness), in the spirit
// of a DRBD resource file.
//
// Parsing is strict: unknown keys, wrong types and bad values are errors that
// name the file, the line and the field. A Config returned by Load or Parse has
// passed Validate and has its defaults filled in. Config values are plain data
// and safe to share read-only between goroutines.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Errors callers branch on.
var (
	// ErrInvalid marks any configuration error; FieldError unwraps to it.
	ErrInvalid = errors.New("config: invalid")
	// ErrUnknownMember is returned by Member lookups for a name not in the file.
	ErrUnknownMember = errors.New("config: unknown member")
)

// Replication protocols, as in DRBD.
const (
	ProtocolA = "A" // ack after the local journal; peers asynchronous
	ProtocolB = "B" // ack after peers received the write in memory
	ProtocolC = "C" // ack after every up-to-date peer journaled it
)

// Journal in-place modes.
const (
	InPlaceOn  = "on"
	InPlaceOff = "off"
)

// Journal sync modes.
const (
	SyncOnFlush = "flush"  // durable on NBD FLUSH/FUA, as the NBD protocol requires
	SyncAlways  = "always" // every write is durable before it is acknowledged
)

// Config is one cluster resource.
type Config struct {
	Cluster     string      `yaml:"cluster"`
	Device      Device      `yaml:"device"`
	Journal     Journal     `yaml:"journal"`
	NBD         NBD         `yaml:"nbd"`
	Replication Replication `yaml:"replication"`
	Quorum      Quorum      `yaml:"quorum"`
	Security    *Security   `yaml:"security,omitempty"`
	Nodes       []Member    `yaml:"nodes"`
	Witness     *Member     `yaml:"witness,omitempty"`

	// Path is the file the config was loaded from ("" when parsed from memory).
	Path string `yaml:"-"`

	root *yaml.Node // the parsed document, to locate warnings
}

// Device describes the exported block device.
type Device struct {
	Size Size `yaml:"size"`
	// DiskTimeout: an operation on a data node's store (its data
	// directory) that has not returned for this long detaches the disk, as
	// DRBD's disk-timeout: the node is Failed, a primary gives the role
	// back so that an UpToDate peer takes over, and a secondary is never
	// promoted (docs/replication.md, "A disk that hangs"). Unset: 20 s,
	// below grbd proxy's 30 s hold timeout, so that its clients ride the
	// failover out; 0s: off (the node waits as long as the disk hangs).
	DiskTimeout *Duration `yaml:"disk-timeout,omitempty"`
}

// DiskTimeoutOrDefault is DiskTimeout with its default filled; 0: off.
func (d Device) DiskTimeoutOrDefault() time.Duration {
	if d.DiskTimeout == nil {
		return DefaultDiskTimeout.D()
	}
	return d.DiskTimeout.D()
}

// Journal tunes the write-ahead journal of every data node.
type Journal struct {
	MaxSize     Size   `yaml:"max-size,omitempty"`
	SegmentSize Size   `yaml:"segment-size,omitempty"`
	Sync        string `yaml:"sync,omitempty"`
	// ActivityExtents bounds the activity log's hot set, in 4 MiB extents
	// (docs/journal.md, "Activity log"), as DRBD's al-extents: what a node
	// resyncs at most after a power loss, and the random-write working set
	// that costs no log transaction.
	ActivityExtents int `yaml:"activity-extents,omitempty"`
	// InPlaceMin is the smallest write on whole 4 KiB blocks that goes to
	// the data file once, its journal record holding only checksums
	// (docs/journal.md, "Large writes in place"); default 64 KiB.
	InPlaceMin Size `yaml:"in-place-min,omitempty"`
	// InPlace "off" journals every byte (erasure-coded stores always do).
	InPlace string `yaml:"in-place,omitempty"`
}

// NBD tunes the NBD export of every data node.
type NBD struct {
	Export      string `yaml:"export,omitempty"`
	MaxInFlight int    `yaml:"max-in-flight,omitempty"`
	// SecondaryReads lets clients read from a secondary's export (stale
	// by up to the replication lag; never linearizable). Default false:
	// a secondary refuses reads and writes with EPERM.
	SecondaryReads bool `yaml:"secondary-reads,omitempty"`
	// MaxConnections bounds the export's client connections (more are
	// closed at accept); MaxHandshakes those still negotiating.
	MaxConnections int `yaml:"max-connections,omitempty"`
	MaxHandshakes  int `yaml:"max-handshakes,omitempty"`
	// TLS enables NBD_OPT_STARTTLS; TLSRequired refuses every option but
	// STARTTLS and ABORT before it (the spec's FORCEDTLS mode).
	TLS         *NBDTLS `yaml:"tls,omitempty"`
	TLSRequired bool    `yaml:"tls-required,omitempty"`
}

// NBDTLS is the export's TLS identity. Paths may contain {name}, the data
// node's name; relative paths are resolved against the config file.
type NBDTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CA, when set, makes client certificates signed by it mandatory.
	CA string `yaml:"ca,omitempty"`
}

// Security authenticates member links and the admin endpoints
// (docs/security.md). Without it links are unauthenticated and members warn
// at start.
type Security struct {
	// TLS: mutual TLS with the cluster CA on member links, HTTPS with
	// client certificates on admin endpoints.
	TLS *MemberTLS `yaml:"tls,omitempty"`
	// SharedSecretFile holds the cluster's shared secret (at least 16
	// bytes, mode 0600): HMAC challenge-response on member links, HMAC
	// request tokens on admin endpoints.
	SharedSecretFile string `yaml:"shared-secret-file,omitempty"`
	// AdminAuth: "mutating" (default) authenticates POST requests only,
	// so GET /status and /healthz stay open to monitoring; "all"
	// authenticates every request.
	AdminAuth string `yaml:"admin-auth,omitempty"`
}

// MemberTLS are the cluster CA and each member's certificate and key. Cert
// and Key must contain {name}, replaced by the member's name: every member
// has its own certificate. Relative paths are resolved against the config
// file.
type MemberTLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Admin authentication scopes.
const (
	AdminAuthMutating = "mutating"
	AdminAuthAll      = "all"
)

// NamePlaceholder in a certificate or key path stands for the member's name.
const NamePlaceholder = "{name}"

// MemberPath returns path (a certificate or key path of the config, already
// resolved against the config file) for member name.
func MemberPath(path, name string) string { return strings.ReplaceAll(path, NamePlaceholder, name) }

// Replication tunes the data path between data nodes.
type Replication struct {
	Protocol string `yaml:"protocol,omitempty"`
	// PeerTimeout: a connected peer that acknowledges nothing for this
	// long while writes wait for it is disconnected (and Outdated), and a
	// member link that stays silent this long is torn down (mesh keepalive).
	PeerTimeout Duration `yaml:"peer-timeout,omitempty"`
	// FlushTimeout: a counted peer that completes no flush for this long
	// while a flush waits for it (its disk hangs: it still acknowledges
	// writes, which reach its page cache) is disconnected and Outdated,
	// as DRBD's ko-count does for requests. Generous: a healthy disk may
	// take seconds to write back a large dirty cache. Default 20 s, below
	// grbd proxy's 30 s hold timeout (or peer-timeout, if longer).
	FlushTimeout Duration `yaml:"flush-timeout,omitempty"`
	// ResyncRate bounds region resync traffic per peer, bytes per second
	// (0: unlimited), so that application writes keep their bandwidth.
	ResyncRate Size `yaml:"resync-rate,omitempty"`
	// StreamWindow is each member link stream's receive window: how much
	// a peer may have in flight on one stream (protocol A's buffer ahead
	// of a secondary). Default 4 MiB; raise it on links with a long round
	// trip (bandwidth x RTT), knowing that a larger window also delays
	// control traffic behind data (docs/replication.md, "Links").
	StreamWindow Size `yaml:"stream-window,omitempty"`
	// AfterSplitBrain is the automatic split-brain policy: "disconnect"
	// (refuse and report) or "discard-secondary" (the node that is not
	// primary discards its divergent writes).
	AfterSplitBrain string `yaml:"after-split-brain,omitempty"`
	// OnCongestion is what the primary does when a peer falls
	// CongestionFill behind (protocol A, or a deep queue of large writes):
	// "block" (the default, as DRBD's) holds new writes until the peer
	// drained below it; "disconnect" cuts the peer off, to come back
	// through catch-up or resync while the primary runs ahead
	// (docs/replication.md, "Congestion").
	OnCongestion   string `yaml:"on-congestion,omitempty"`
	CongestionFill Size   `yaml:"congestion-fill,omitempty"` // default 64 MiB
	// Redundancy is "mirror" (the default: every data node a full copy) or
	// "ec K+M": the first data node keeps a full copy, the other K+M each
	// one Reed-Solomon shard (docs/erasure.md).
	Redundancy string `yaml:"redundancy,omitempty"`
}

// Quorum tunes the control plane (docs/quorum.md).
type Quorum struct {
	Tick            Duration `yaml:"tick,omitempty"`             // control-plane clock
	Lease           Duration `yaml:"lease,omitempty"`            // primary lease
	FailoverTimeout Duration `yaml:"failover-timeout,omitempty"` // silence before a failover
	// AutoFailover: promote an UpToDate secondary when the primary is
	// lost (and elect the first primary of a new cluster).
	AutoFailover *bool `yaml:"auto-failover,omitempty"`
	// OnNoQuorum: "io-error" fails requests with EIO while the primary
	// has no lease; "suspend-io" holds them up to SuspendTimeout.
	OnNoQuorum     string   `yaml:"on-no-quorum,omitempty"`
	SuspendTimeout Duration `yaml:"suspend-timeout,omitempty"`
}

// Quorum policies.
const (
	OnNoQuorumIOError = "io-error"
	OnNoQuorumSuspend = "suspend-io"

	SplitBrainDisconnect       = "disconnect"
	SplitBrainDiscardSecondary = "discard-secondary"

	CongestionBlock      = "block"
	CongestionDisconnect = "disconnect"
)

// Member is a data node or the witness. Addresses are host:port.
type Member struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`            // peer (replication and control plane) listener
	NBD     string `yaml:"nbd,omitempty"`      // NBD listener; data nodes only
	Admin   string `yaml:"admin"`              // HTTP admin/status listener; keep it local
	DataDir string `yaml:"data-dir,omitempty"` // relative paths are resolved against the config file
}

// Defaults applied by Validate to empty fields.
const (
	DefaultJournalMax     = Size(1 << 30)
	DefaultJournalSegment = Size(64 << 20)
	DefaultInPlaceMin     = Size(64 << 10)
	MaxInPlaceMin         = Size(32 << 20) // the largest NBD write
	// DefaultActivityExtents is DRBD's al-extents default: 4.8 GiB hot.
	DefaultActivityExtents = 1237
	MaxActivityExtents     = 65534
	DefaultMaxInFlight     = 128
	DefaultMaxConnections  = 64
	DefaultMaxHandshakes   = 16

	DefaultTick            = Duration(10 * time.Millisecond)
	DefaultLease           = Duration(500 * time.Millisecond)
	DefaultFailoverTimeout = Duration(250 * time.Millisecond)
	DefaultSuspendTimeout  = Duration(30 * time.Second)
	DefaultPeerTimeout     = Duration(2 * time.Second)
	DefaultFlushTimeout    = Duration(20 * time.Second)
	DefaultDiskTimeout     = Duration(20 * time.Second)
	MinDiskTimeout         = Duration(time.Second)
	DefaultStreamWindow    = Size(4 << 20) // = mesh.DefaultStreamWindow (config imports no runtime package)
	// The stream window's bounds: yamux's own initial window, and a
	// size whose buffering per stream a host can afford.
	MinStreamWindow = Size(256 << 10)
	MaxStreamWindow = Size(256 << 20)
	// The congestion fill's: below a few writes congestion is the normal
	// state; above, a primary's memory per peer.
	DefaultCongestionFill = Size(64 << 20)
	MinCongestionFill     = Size(1 << 20)
	MaxCongestionFill     = Size(1 << 30)
)

// AutoFailoverOn reports the effective auto-failover setting.
func (q Quorum) AutoFailoverOn() bool { return q.AutoFailover == nil || *q.AutoFailover }

// Load reads, parses and validates the config file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, b)
}

// Parse parses and validates a config; name is used in error messages and to
// resolve relative data directories.
func Parse(name string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", name, ErrInvalid, trimYAML(err))
	}
	if root.Kind == 0 {
		return nil, fmt.Errorf("%s: %w: empty file", name, ErrInvalid)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, decodeErrors(name, &root, err)
	}
	c.Path, c.root = name, &root
	if errs := c.validate(&root); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &c, nil
}

// trimYAML turns yaml.v3's multi-line messages into one line per problem.
func trimYAML(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	s = strings.TrimPrefix(s, "unmarshal errors:\n")
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// FieldError is one invalid value, located in the file.
type FieldError struct {
	File  string
	Line  int
	Field string // dotted path, e.g. nodes[1].nbd
	Msg   string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Member returns the data node or witness with the given name.
func (c *Config) Member(name string) (Member, bool, error) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, false, nil
		}
	}
	if c.Witness != nil && c.Witness.Name == name {
		return *c.Witness, true, nil
	}
	return Member{}, false, fmt.Errorf("%w %q in %s", ErrUnknownMember, name, c.Path)
}

// Marshal renders the config as YAML (used by `grbd local` to write its file).
func (c *Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// lineOf finds the line of the value at path (map keys and sequence indices),
// or of the closest existing ancestor.
func lineOf(root *yaml.Node, path ...any) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch k := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
			}
		}
		if next == nil {
			return line
		}
		n, line = next, next.Line
	}
	return line
}

// resolveDir makes a relative data dir relative to the config file's folder.
func (c *Config) resolveDir(d string) string {
	if d == "" || filepath.IsAbs(d) || c.Path == "" {
		return d
	}
	return filepath.Join(filepath.Dir(c.Path), d)
}

// Package node runs one grbd data node: its journaled store, its NBD export,
// its admin HTTP endpoint, its links to the other members (internal/mesh)
// and its control plane (internal/ctlplane on quorum/), and switches the
// node between the primary and secondary roles as the control plane
// decides. It is the I/O edge around the pure logic packages; all sockets
// and files live here or below.
//
// As primary (package primary, wired in primary.go) the node journals
// every write, ships it to each peer over a data stream it opens, and
// completes it when the replication core (replicator.Primary) and the
// lease (device.go) allow. As secondary (package secondary, wired in
// secondary.go) it accepts the data stream of the primary of its newest
// epoch, applies the writes in sequence order and acknowledges them; its
// export refuses writes (EPERM).
//
// A Node is safe for concurrent use. Start brings every listener up before
// it returns; Close stops them, waits for in-flight requests and
// checkpoints the journal so the next start replays nothing.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/grbd/grbd/ecpeer"
	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/ctlplane"
	"github.com/grbd/grbd/internal/datadir"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/member"
	"github.com/grbd/grbd/internal/mesh"
	"github.com/grbd/grbd/internal/sidecar"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/primary"
	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
	"github.com/grbd/grbd/secondary"
)

// Version is the grbd release; set at build time with -ldflags.
var Version = "dev"

// Errors callers branch on.
var (
	// ErrWitness is returned when Start is asked to run a witness as a data node.
	ErrWitness = errors.New("node: member is a witness, not a data node")
	// ErrReadOnly is returned for writes (and, unless secondary-reads is
	// set, reads) on a node that is not primary. It carries EPERM.
	ErrReadOnly = fmt.Errorf("node: not primary: %w", syscall.EPERM)
	// ErrFenced is returned while the primary has no lease. It carries EIO.
	ErrFenced = primary.ErrFenced
	// ErrDeposed is returned for requests a primary held when it lost the
	// role. It carries EIO: the outcome of such a write is unknown.
	ErrDeposed = fmt.Errorf("node: no longer primary: %w", syscall.EIO)
)

// Options configure Start.
type Options struct {
	Logger *slog.Logger
	// OnRole is told about every role change of this node (for the CLI's
	// "role" lines).
	OnRole func(RoleEvent)
	// NewCluster creates a brand-new cluster without hearing from every
	// member (grbd node --new-cluster; docs/quorum.md).
	NewCluster bool
	// NoShardFailover keeps an erasure-code shard peer from ever taking
	// the primary role, as before the failover to shard peers existed
	// (docs/erasure.md, "Failover"): its members wait for the full copy.
	NoShardFailover bool
	// DialOverrides dials some peers at other addresses (peer name ->
	// host:port; member.CheckDialOverrides): grbd node --dial-override.
	DialOverrides map[string]string
	// BootID names this boot of the machine for the journal's activity
	// log (default: the kernel's boot_id): an unclean stop in another boot
	// was a power loss (grbd node --boot-id; docs/journal.md).
	BootID string

	faults *faultHooks // tests only: fault injection
}

// RoleEvent describes a role change.
type RoleEvent struct {
	Role    string // Primary or Secondary
	Epoch   uint64
	Serving bool
	NBD     string
}

// Node is one running data node.
type Node struct {
	cfg     *config.Config
	me      config.Member
	log     *slog.Logger
	opts    Options
	started time.Time

	store *journal.Journal
	dev   *device
	nbd   *blockdev.Server
	nbdLn net.Listener

	admin   *http.Server
	adminLn net.Listener

	peerLn net.Listener
	mesh   *mesh.Mesh
	ctl    *ctlplane.Driver
	proto  replicator.Protocol
	ec     *ecpeer.Peer // erasure coding (docs/erasure.md); nil for mirrors
	// sa defers a shard peer's image writes until committed (secondary.ShardApply);
	// nil on a full copy.
	sa     *secondary.ShardApply
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	roleMu   sync.Mutex
	prim     *primary.Side                // the current primary instance, nil on a secondary
	primA    atomic.Pointer[primary.Side] // prim, for the I/O path
	sec      *secondary.Side
	lastRole RoleEvent
	// staleEpoch: this node found itself primary of this epoch, which its
	// disk has no record of (role.go, staleForRole); 0: none.
	staleEpoch atomic.Uint64
	stale      staleMarks // why the disk must not be promoted (SetStale)
	// lastOutdated is the Outdated set of the last reconcile (events).
	lastOutdated []string
	// lastLost: the members that announced a lost state (events).
	lastLost []string
	events   *events.Log

	meta   *sidecar.Store // the files next to the journal
	histMu sync.Mutex
	hist   replicator.History

	// Blocks that failed their checksum on a read of this primary, those
	// repaired from a peer and those no peer could repair (primary/repair.go).
	corruptBlocks, repairedBlocks, unrepairedBlocks atomic.Uint64

	// diskErr is the error that failed this node's disk (health.go);
	// diskErrors counts disk failures (metrics).
	diskErr    atomic.Pointer[error]
	diskErrors atomic.Uint64
	// disk is the file system under the data directory's store and sidecar
	// files, watched for operations that do not return (diskwatch.go);
	// lastJournal is the store's figures as last read (shown while a read
	// hangs), journalRead the read in flight.
	disk        *vfs.Watched
	lastJournal atomic.Pointer[journalFigures]
	journalRead atomic.Pointer[journalRead]

	discMu       sync.Mutex
	disconnected map[string]bool // grbd disconnect: peers without a data path

	lock      *datadir.Lock // the data directory's, held until Close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start opens the store (replaying its journal), joins the cluster and
// starts the NBD export and the admin endpoint of member name.
func Start(cfg *config.Config, name string, opts Options) (*Node, error) {
	me, isWitness, err := cfg.Member(name)
	if err != nil {
		return nil, err
	}
	if isWitness {
		return nil, fmt.Errorf("%w: %s", ErrWitness, name)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("node", name)
	n := &Node{cfg: cfg, me: me, log: log, opts: opts, started: time.Now(), events: newEventLog(name, log)}
	if n.proto, err = replicator.ParseProtocol(cfg.Replication.Protocol); err != nil {
		return nil, err
	}
	if n.ec, err = ecpeer.New(cfg, name, log, ecHost{n}); err != nil {
		return nil, err
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	// Before anything in the directory is read or written; held until Close.
	if n.lock, err = datadir.Prepare(me.DataDir, log); err != nil {
		n.cancel()
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	if err := n.open(); err != nil {
		n.cancel()
		n.abort()
		return nil, err
	}
	n.bg.Go(func() { n.ctl.Run(n.ctx) })
	n.bg.Go(func() { member.WatchLinks(n.ctx, n.cfg, name, n.mesh.Connected, n.events) })
	n.bg.Go(func() { n.watchDisk(n.ctx, time.Second, diskStallWarn, n.cfg.Device.DiskTimeoutOrDefault()) })
	n.bg.Go(func() { n.watchDurable(n.ctx) })
	n.mesh.Serve(n.peerLn)
	n.mesh.Start()
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		if err := n.nbd.Serve(n.nbdLn); err != nil && !errors.Is(err, blockdev.ErrServerClosed) {
			log.Error("nbd server stopped", "err", err)
		}
	}()
	go func() {
		defer n.wg.Done()
		member.ServeAdmin(n.admin, n.adminLn, log)
	}()
	n.reconcile()
	st := n.store.Stats()
	log.Info("node started", "nbd", n.NBDAddr(), "admin", n.AdminAddr(), "size", n.store.Size(),
		"last_seq", st.LastSeq, "checkpoint_seq", st.CheckpointSeq, "protocol", cfg.Replication.Protocol)
	return n, nil
}

// open builds every part; on error abort releases what was opened.
func (n *Node) open() error {
	exists, err := n.openDisk()
	if err != nil {
		return err
	}
	cfg, me := n.cfg, n.me
	cc := member.ControlConfig(cfg, me.Name, me.DataDir, n.log, n.reconcile)
	cc.OnFail = func(err error) { _ = n.checkDisk("persist the control-plane log", err) }
	cc.FS = n.disk // the same disk as the store: watched, and it hangs with it
	// A store without a write may join a brand-new cluster; one with data
	// but no control-plane state must not create one (docs/quorum.md).
	cc.Fresh, cc.NewCluster = !exists || n.store.Stats().LastSeq == 0, n.opts.NewCluster
	if n.ctl, err = ctlplane.Open(cc); err != nil {
		return fmt.Errorf("node %s: control plane: %w", me.Name, err)
	}
	n.ctl.SetDisk(n.store.ID())
	if owner := n.ctl.Status().DiskOwner(n.store.ID(), me.Name); owner != "" {
		n.log.Error("this data directory holds another member's disk: this node is not promoted with it; start it as that member again, or wipe it to take a full sync as this one",
			"disk_of", owner, "disk", quorum.ShortDisk(n.store.ID()), "data_dir", me.DataDir)
	}
	n.setConsistent(n.sec.Consistent())
	return n.openNetwork()
}

// inPlaceMin is the journal's InPlaceMin: never for erasure coding, whose
// shard catch-up and stripe commit read every byte back from the journal
// (docs/erasure.md).
func (n *Node) inPlaceMin() int64 {
	if n.ec != nil || n.cfg.Journal.InPlace == config.InPlaceOff {
		return -1
	}
	return int64(n.cfg.Journal.InPlaceMin)
}

// openDisk opens the store and what lies next to it (history, resync state,
// erasure-coding markers) and the secondary side; exists: the store was
// there before.
func (n *Node) openDisk() (exists bool, err error) {
	cfg, me := n.cfg, n.me
	n.disk = vfs.Watch(n.opts.faults.diskFS())
	n.meta = sidecar.New(n.disk, me.DataDir)
	if n.ec != nil {
		n.ec.OpenLayout()
	}
	// device.size is the size a store is created with; an existing store
	// has its own (it grows through grbd resize), checked below.
	exists, err = journal.StoreExists(nil, me.DataDir)
	if err != nil {
		return false, fmt.Errorf("node %s: %w", me.Name, err)
	}
	createSize := int64(cfg.Device.Size)
	if n.shardPeer() {
		createSize = n.ec.Coder().G.ShardSize() // a compact shard image
	}
	if exists {
		createSize = 0
	}
	n.store, err = journal.Open(journal.Options{
		Dir:         me.DataDir,
		DeviceSize:  createSize,
		SegmentSize: int64(cfg.Journal.SegmentSize),
		MaxSize:     int64(cfg.Journal.MaxSize),
		Logger:      n.log,
		BootID:      n.opts.BootID,
		FS:          n.disk,

		ActivityExtents: cfg.Journal.ActivityExtents,
		InPlaceMin:      n.inPlaceMin(),
	})
	if err != nil {
		return false, fmt.Errorf("node %s: open store in %s: %w", me.Name, me.DataDir, err)
	}
	if n.shardPeer() && n.store.Size() != n.ec.Coder().G.ShardSize() {
		// A store made for another layout (a mirror, another K+M or device
		// size): its bytes are not this shard and must not be served as it.
		return false, fmt.Errorf("node %s: %w: the store in %s has %d bytes, shard %d of %s needs %d (replication.redundancy or device.size changed? start from an empty data-dir)",
			me.Name, ErrECUnsupported, me.DataDir, n.store.Size(), n.ec.Shard(), cfg.Replication.Redundancy, n.ec.Coder().G.ShardSize())
	}
	n.checkSize()
	if b := extent.Bytes(n.store.Suspects()); b > 0 {
		n.events.Add(Event{Type: events.TypeSuspects, State: events.StateStarted, Bytes: int64(b),
			Cause:  "an unclean stop (a power loss, or a crash before a large write reached the image): the image may hold bytes that differ from the peers",
			Detail: "as primary it writes them again through replication; as secondary it resyncs them from the primary"})
	}
	if n.shardPeer() {
		n.sa = secondary.NewShardApply(secondary.ShardApplyConfig{Store: n.store, Log: n.log,
			IgnoresCommit:  func() bool { return n.opts.faults.ignoresCommit(n.me.Name) },
			AppliesEagerly: func() bool { return n.opts.faults.appliesEagerly(n.me.Name) }})
	}
	if err := n.loadHistory(); err != nil {
		return false, err
	}
	if n.sec, err = n.newSecondary(); err != nil {
		return false, err
	}
	if n.ec != nil {
		if err := n.ec.Recover(); err != nil {
			return false, fmt.Errorf("node %s: %w", me.Name, err)
		}
	}
	return exists, nil
}

// openNetwork builds the peer mesh, the NBD server, the admin server and
// their listeners.
func (n *Node) openNetwork() error {
	cfg, me := n.cfg, n.me
	creds, err := auth.Load(cfg, me.Name, n.log)
	if err != nil {
		return fmt.Errorf("node %s: %w", me.Name, err)
	}
	mcfg := member.MeshConfig(cfg, me.Name, n.opts.DialOverrides, n.log, n.ctl.Deliver, n.handleStream)
	mcfg.Security = creds.Mesh
	if n.mesh, err = mesh.New(mcfg); err != nil {
		return err
	}
	n.ctl.SetSender(n.mesh)
	n.dev = &device{n: n}
	if n.nbd, err = blockdev.NewServer(n.dev, blockdev.Options{
		ExportName:  cfg.NBD.Export,
		Description: fmt.Sprintf("grbd %s/%s", cfg.Cluster, me.Name),
		MaxInFlight: cfg.NBD.MaxInFlight,
		Logger:      n.log,
		// Issue 8: connection limits and NBD_OPT_STARTTLS.
		MaxConnections: cfg.NBD.MaxConnections,
		MaxHandshakes:  cfg.NBD.MaxHandshakes,
		TLS:            creds.NBD,
		TLSRequired:    creds.NBDRequired,
	}); err != nil {
		return fmt.Errorf("node %s: nbd: %w", me.Name, err)
	}
	if n.peerLn, err = net.Listen("tcp", me.Address); err != nil {
		return fmt.Errorf("node %s: peer listen: %w", me.Name, err)
	}
	if n.nbdLn, err = net.Listen("tcp", me.NBD); err != nil {
		return fmt.Errorf("node %s: nbd listen: %w", me.Name, err)
	}
	if n.adminLn, err = net.Listen("tcp", me.Admin); err != nil {
		return fmt.Errorf("node %s: admin listen: %w", me.Name, err)
	}
	n.adminLn = creds.AdminListener(n.adminLn) // HTTPS with security.tls
	n.admin = member.AdminServer(creds.AdminHandler(n.adminHandler()), n.events)
	return nil
}

// abort releases what open acquired before it failed.
func (n *Node) abort() {
	for _, ln := range []net.Listener{n.peerLn, n.nbdLn, n.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if n.mesh != nil {
		n.mesh.Close()
	}
	if n.sa != nil {
		_ = n.sa.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
	// Nothing of this start stays behind (a partly preallocated data.img
	// on a full disk, the first segments of a new journal).
	if err := n.lock.Undo(); err != nil {
		n.log.Error("failed start: cleaning up the data directory", "err", err)
	}
}

// Stopped is closed when the node's control plane stopped for good (it
// could not persist its log: a full or failed disk); Err says why. The
// process must then stop: cmd/grbd exits non-zero.
func (n *Node) Stopped() <-chan struct{} { return n.ctl.Stopped() }

// Err is why the node stopped working (Stopped), nil until then.
func (n *Node) Err() error { return member.ControlPlaneError("node "+n.me.Name, n.ctl) }

// NBDAddr is where the export listens.
func (n *Node) NBDAddr() net.Addr { return n.nbdLn.Addr() }

// AdminAddr is where the admin endpoint listens.
func (n *Node) AdminAddr() net.Addr { return n.adminLn.Addr() }

// Close stops the listeners, waits for in-flight requests and checkpoints.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.cancel()
		n.bg.Wait() // the control plane stopped: no more role changes
		n.roleMu.Lock()
		n.stopPrimaryLocked(ErrDeposed)
		n.roleMu.Unlock()
		errs := []error{n.nbd.Close(), n.admin.Shutdown(ctx)}
		n.wg.Wait()
		n.sec.Close()
		n.mesh.Close()
		if n.sa != nil {
			errs = append(errs, n.sa.Close())
		}
		errs = append(errs, n.store.Close())
		errs = append(errs, n.lock.Release())
		n.closeErr = errors.Join(errs...)
		n.log.Info("node stopped", "err", n.closeErr)
	})
	return n.closeErr
}

// handleStream serves a stream a peer opened.
func (n *Node) handleStream(peer string, kind uint8, s net.Conn) {
	switch kind {
	case wire.StreamData:
		if n.ctl.Status().Phase != quorum.PhaseMember {
			// Without control-plane state (awaiting a replace) the node
			// knows no epoch to check a primary against: no data stream.
			n.log.Warn("refusing a data stream: not a member of the control plane yet", "peer", peer)
			s.Close()
			return
		}
		n.sec.Handle(peer, s)
	case wire.StreamAdmin:
		n.serveAdmin(peer, s)
	default:
		s.Close()
	}
}

func (n *Node) loadHistory() error {
	h, err := n.meta.History()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.hist = h
	return nil
}

// setHistory persists h before it becomes the node's history.
func (n *Node) setHistory(h replicator.History) error {
	n.histMu.Lock()
	defer n.histMu.Unlock()
	if err := n.meta.SaveHistory(h); err != nil {
		return fmt.Errorf("node: persist history: %w", err)
	}
	n.hist = h
	return nil
}

func (n *Node) history() replicator.History {
	n.histMu.Lock()
	defer n.histMu.Unlock()
	return n.hist
}

// isDisconnected reports whether grbd disconnect cut the data path to peer.
func (n *Node) isDisconnected(peer string) bool {
	n.discMu.Lock()
	defer n.discMu.Unlock()
	return n.disconnected[peer] || n.disconnected["*"]
}

// SetDisconnected cuts (on) or restores the data path to peer ("*": every
// peer), as drbdadm disconnect/connect: a primary stops replicating to it
// (it is Outdated first), a secondary refuses the primary's stream. The
// control plane stays connected. Not persisted: a restart connects again.
func (n *Node) SetDisconnected(peer string, on bool) error {
	if peer != "*" {
		if _, _, err := n.cfg.Member(peer); err != nil || peer == n.me.Name {
			return fmt.Errorf("node: %q is not another member", peer)
		}
	}
	n.discMu.Lock()
	if n.disconnected == nil {
		n.disconnected = map[string]bool{}
	}
	if on {
		n.disconnected[peer] = true
	} else {
		delete(n.disconnected, peer)
	}
	n.discMu.Unlock()
	if on {
		if p := n.currentPrimary(); p != nil {
			p.Kick(peer)
		}
		n.sec.DropFrom(peer)
	}
	n.events.Add(Event{Type: events.TypeConnection, Peer: peer, State: map[bool]string{true: ConnDisconnected, false: ConnConnecting}[on],
		Cause: map[bool]string{true: "grbd disconnect", false: "grbd connect"}[on]})
	return nil
}

// Invalidate discards this secondary's data: it becomes Inconsistent and
// takes a full resync from the primary at its next connect.
func (n *Node) Invalidate() error {
	if n.currentPrimary() != nil {
		return fmt.Errorf("node: %s is primary: invalidate a secondary", n.me.Name)
	}
	if err := n.sec.Invalidate(); err != nil {
		return err
	}
	n.setConsistent(false)
	n.events.Add(Event{Type: events.TypeInvalidate, State: DiskInconsistent, Cause: "grbd invalidate: full resync from the primary"})
	return nil
}

// Package node runs one grbd data node: it owns the node's journaled store, its
// NBD export and its admin HTTP endpoint, and wires them together. It is the
// I/O edge around the pure logic packages; all sockets and files live here or
// below.
//
// The node named by replication.primary exports a writable device and ships
// every write to its peers (primary.go, link.go: one dialing goroutine per
// peer, a sender and an ack reader per session); every other data node
// listens on its address, applies the primary's writes in sequence order and
// exports a read-only device (secondary.go). The replication core
// (replicator.Primary) is driven under one mutex.
//
// A Node is safe for concurrent use. Start brings every listener up before it
// returns; Close stops them, waits for in-flight requests and checkpoints the
// journal so the next start replays nothing.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/grbd/grbd/blockdev"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/journal"
	"github.com/grbd/grbd/replicator"
)

// Version is the grbd release; set at build time with -ldflags.
var Version = "dev"

// Errors callers branch on.
var (
	// ErrWitness is returned when Start is asked to run a witness as a data node.
	ErrWitness = errors.New("node: member is a witness, not a data node")
)

// Node is one running data node.
type Node struct {
	cfg     *config.Config
	me      config.Member
	log     *slog.Logger
	started time.Time

	store *journal.Journal
	dev   *device
	nbd   *blockdev.Server
	nbdLn net.Listener

	admin   *http.Server
	adminLn net.Listener

	prim     *primary   // on the primary
	sec      *secondary // on a secondary
	peerLn   net.Listener
	stopRepl context.CancelFunc
	replWG   sync.WaitGroup

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start opens the store (replaying its journal), then starts the NBD export
// and the admin endpoint of member name.
func Start(cfg *config.Config, name string, log *slog.Logger) (*Node, error) {
	me, isWitness, err := cfg.Member(name)
	if err != nil {
		return nil, err
	}
	if isWitness {
		return nil, fmt.Errorf("%w: %s", ErrWitness, name)
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", name)
	n := &Node{cfg: cfg, me: me, log: log, started: time.Now()}

	n.store, err = journal.Open(journal.Options{
		Dir:         me.DataDir,
		DeviceSize:  int64(cfg.Device.Size),
		SegmentSize: int64(cfg.Journal.SegmentSize),
		MaxSize:     int64(cfg.Journal.MaxSize),
		Logger:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("node %s: open store in %s: %w", name, me.DataDir, err)
	}
	n.dev = &device{store: n.store, syncAlways: cfg.Journal.Sync == config.SyncAlways, epoch: 1}
	if cfg.Replication.Primary == name {
		proto, err := replicator.ParseProtocol(cfg.Replication.Protocol)
		if err != nil {
			n.store.Close()
			return nil, err
		}
		n.prim = newPrimary(n.store, proto, n.dev.epoch, log)
		for _, m := range cfg.Nodes {
			if m.Name != name {
				n.prim.addLink(newLink(n.prim, m.Name, m.Address, cfg.Cluster, name, log))
			}
		}
		n.dev.prim = n.prim
	} else {
		if n.sec, err = newSecondary(n.store, cfg.Cluster, name, me.DataDir, log); err != nil {
			n.store.Close()
			return nil, err
		}
		if n.peerLn, err = net.Listen("tcp", me.Address); err != nil {
			n.store.Close()
			return nil, fmt.Errorf("node %s: peer listen: %w", name, err)
		}
	}

	n.nbd, err = blockdev.NewServer(n.dev, blockdev.Options{
		ExportName:  cfg.NBD.Export,
		Description: fmt.Sprintf("grbd %s/%s", cfg.Cluster, name),
		MaxInFlight: cfg.NBD.MaxInFlight,
		Logger:      log,
	})
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("node %s: nbd: %w", name, err)
	}
	if n.nbdLn, err = net.Listen("tcp", me.NBD); err != nil {
		n.closePeerLn()
		n.store.Close()
		return nil, fmt.Errorf("node %s: nbd listen: %w", name, err)
	}
	if n.adminLn, err = net.Listen("tcp", me.Admin); err != nil {
		n.nbdLn.Close()
		n.closePeerLn()
		n.store.Close()
		return nil, fmt.Errorf("node %s: admin listen: %w", name, err)
	}
	n.admin = &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 5 * time.Second}

	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		if err := n.nbd.Serve(n.nbdLn); err != nil && !errors.Is(err, blockdev.ErrServerClosed) {
			log.Error("nbd server stopped", "err", err)
		}
	}()
	go func() {
		defer n.wg.Done()
		if err := n.admin.Serve(n.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server stopped", "err", err)
		}
	}()
	n.startReplication()
	st := n.store.Stats()
	log.Info("node started", "nbd", n.NBDAddr(), "admin", n.AdminAddr(), "size", cfg.Device.Size,
		"last_seq", st.LastSeq, "checkpoint_seq", st.CheckpointSeq, "role", n.role())
	return n, nil
}

// NBDAddr is where the export listens.
func (n *Node) NBDAddr() net.Addr { return n.nbdLn.Addr() }

// AdminAddr is where the admin endpoint listens.
func (n *Node) AdminAddr() net.Addr { return n.adminLn.Addr() }

// Close stops the listeners, waits for in-flight requests and checkpoints.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		errs := []error{n.nbd.Close(), n.admin.Shutdown(ctx)}
		n.wg.Wait()
		n.stopReplication()
		errs = append(errs, n.store.Close())
		n.closeErr = errors.Join(errs...)
		n.log.Info("node stopped", "err", n.closeErr)
	})
	return n.closeErr
}

func (n *Node) closePeerLn() {
	if n.peerLn != nil {
		n.peerLn.Close()
	}
}

// role is Primary or Secondary.
func (n *Node) role() string {
	if n.prim != nil {
		return RolePrimary
	}
	return RoleSecondary
}

// Roles shown in status.
const (
	RolePrimary   = "Primary"
	RoleSecondary = "Secondary"
)

// startReplication starts the peer links (primary) or the peer listener
// (secondary).
func (n *Node) startReplication() {
	ctx, cancel := context.WithCancel(context.Background())
	n.stopRepl = cancel
	if n.sec != nil {
		n.sec.serve(n.peerLn)
		return
	}
	for _, l := range n.prim.links {
		n.replWG.Go(func() { l.run(ctx) })
	}
	n.replWG.Go(func() { n.prim.retainLoop(ctx.Done()) })
}

// stopReplication ends every peer session; the NBD server has drained, so no
// write is waiting for a peer.
func (n *Node) stopReplication() {
	n.stopRepl()
	if n.sec != nil {
		n.sec.close()
	}
	n.replWG.Wait()
}

// Package witness runs grbd's witness: a voter of the control plane that
// holds no block data, only the control-plane log. With two data nodes and a
// witness, any one of the three may fail and the cluster keeps a writable
// primary (docs/quorum.md). The witness answers lease requests and votes in
// raft like any member; it never becomes primary.
//
// A Witness is safe for concurrent use.
package witness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/grbd/grbd/internal/auth"
	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/ctlplane"
	"github.com/grbd/grbd/internal/datadir"
	"github.com/grbd/grbd/internal/events"
	"github.com/grbd/grbd/internal/member"
	"github.com/grbd/grbd/internal/mesh"
	"github.com/grbd/grbd/internal/metrics"
	"github.com/grbd/grbd/quorum"
)

// ErrNotWitness is returned when Start is asked to run a data node.
var ErrNotWitness = errors.New("witness: member is not the witness")

// Version is the grbd release; set at build time with -ldflags.
var Version = "dev"

// Status is what GET /status returns. Field names are part of the admin API.
type Status struct {
	Cluster string              `json:"cluster"`
	Name    string              `json:"name"`
	Version string              `json:"version"`
	Role    string              `json:"role"` // always Witness
	Uptime  float64             `json:"uptime_seconds"`
	Quorum  member.QuorumStatus `json:"quorum"`
	Peers   []PeerStatus        `json:"peers"`
	// Members: the member links, as data nodes report them.
	Members []member.LinkStatus `json:"members"`
}

// PeerStatus is one member link.
type PeerStatus struct {
	Name       string `json:"name"`
	Connection string `json:"connection"` // Connected or Disconnected
}

// Witness is a running witness.
type Witness struct {
	cfg     *config.Config
	me      config.Member
	log     *slog.Logger
	started time.Time

	ctl     *ctlplane.Driver
	mesh    *mesh.Mesh
	peerLn  net.Listener
	adminLn net.Listener
	admin   *http.Server

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	events *events.Log
	lock   *datadir.Lock // the data directory's, held until Close
	// last is the control-plane view of the previous onChange (events);
	// onChange runs on one goroutine at a time.
	last     quorum.Status
	lastSeen bool
	lastLost []string
}

// Options are the witness's optional settings.
type Options struct {
	// NewCluster creates a brand-new cluster without hearing from every
	// member (grbd witness --new-cluster; docs/quorum.md).
	NewCluster bool
	// DialOverrides: as node.Options.DialOverrides.
	DialOverrides map[string]string
}

// Start runs the witness named name.
func Start(cfg *config.Config, name string, log *slog.Logger) (*Witness, error) {
	return StartWith(cfg, name, log, Options{})
}

// StartWith runs the witness named name with opts.
func StartWith(cfg *config.Config, name string, log *slog.Logger, opts Options) (*Witness, error) {
	me, isWitness, err := cfg.Member(name)
	if err != nil {
		return nil, err
	}
	if !isWitness {
		return nil, fmt.Errorf("%w: %s is a data node", ErrNotWitness, name)
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("witness", name)
	// Before anything in the directory is read or written; held until Close.
	lock, err := datadir.Prepare(me.DataDir, log)
	if err != nil {
		return nil, fmt.Errorf("witness %s: %w", name, err)
	}
	w, err := start(cfg, me, log, lock, opts)
	if err != nil {
		if uerr := lock.Undo(); uerr != nil { // nothing of this start stays behind
			log.Error("failed start: cleaning up the data directory", "err", uerr)
		}
		return nil, err
	}
	return w, nil
}

func start(cfg *config.Config, me config.Member, log *slog.Logger, lock *datadir.Lock, opts Options) (*Witness, error) {
	name := me.Name
	w := &Witness{cfg: cfg, me: me, log: log, started: time.Now(), events: events.NewLog(name, 0), lock: lock}
	var err error
	w.events.OnAdd(func(e events.Event) { events.Slog(log, e) })
	cc := member.ControlConfig(cfg, name, me.DataDir, log, w.onChange)
	cc.Fresh, cc.NewCluster = true, opts.NewCluster // a witness holds no block data
	if w.ctl, err = ctlplane.Open(cc); err != nil {
		return nil, fmt.Errorf("witness %s: control plane: %w", name, err)
	}
	creds, err := auth.Load(cfg, name, log)
	if err != nil {
		return nil, fmt.Errorf("witness %s: %w", name, err)
	}
	mcfg := member.MeshConfig(cfg, name, opts.DialOverrides, log, w.ctl.Deliver, func(_ string, _ uint8, s net.Conn) { s.Close() })
	mcfg.Security = creds.Mesh
	if w.mesh, err = mesh.New(mcfg); err != nil {
		return nil, err
	}
	w.ctl.SetSender(w.mesh)
	if w.peerLn, err = net.Listen("tcp", me.Address); err != nil {
		return nil, fmt.Errorf("witness %s: peer listen: %w", name, err)
	}
	if w.adminLn, err = net.Listen("tcp", me.Admin); err != nil {
		w.peerLn.Close()
		return nil, fmt.Errorf("witness %s: admin listen: %w", name, err)
	}
	w.adminLn = creds.AdminListener(w.adminLn) // HTTPS with security.tls
	w.admin = member.AdminServer(creds.AdminHandler(w.handler()), w.events)
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Go(func() { w.ctl.Run(ctx) })
	w.wg.Go(func() { member.WatchLinks(ctx, cfg, name, w.mesh.Connected, w.events) })
	w.mesh.Serve(w.peerLn)
	w.mesh.Start()
	w.wg.Go(func() { member.ServeAdmin(w.admin, w.adminLn, log) })
	log.Info("witness started", "address", w.peerLn.Addr().String(), "admin", w.adminLn.Addr().String())
	return w, nil
}

// Stopped is closed when the witness's control plane stopped for good (it
// could not persist its log); Err says why. The process must then stop.
func (w *Witness) Stopped() <-chan struct{} { return w.ctl.Stopped() }

// Err is why the witness stopped working (Stopped), nil until then.
func (w *Witness) Err() error { return member.ControlPlaneError("witness "+w.me.Name, w.ctl) }

// AdminAddr is where the admin endpoint listens.
func (w *Witness) AdminAddr() net.Addr { return w.adminLn.Addr() }

// Status reports the witness's view.
func (w *Witness) Status() Status {
	st := Status{Cluster: w.cfg.Cluster, Name: w.me.Name, Version: Version, Role: "Witness",
		Uptime: time.Since(w.started).Seconds(), Quorum: member.StatusOf(w.ctl.Status()), Peers: []PeerStatus{},
		Members: member.Links(w.cfg, w.me.Name, w.mesh.Connected)}
	for _, n := range w.cfg.Nodes {
		c := "Disconnected"
		if w.mesh.Connected(n.Name) {
			c = "Connected"
		}
		st.Peers = append(st.Peers, PeerStatus{Name: n.Name, Connection: c})
	}
	return st
}

func (w *Witness) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(rw)
		enc.SetIndent("", "  ")
		_ = enc.Encode(w.Status())
	})
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.Handle("GET /events", w.events)
	mux.HandleFunc("GET /metrics", w.serveMetrics)
	mux.HandleFunc("POST /member/replace", func(rw http.ResponseWriter, r *http.Request) {
		member.ServeReplace(w.ctl, rw, r)
	})
	return mux
}

// serveMetrics answers GET /metrics (Prometheus text format): the
// control-plane metrics every member exports.
func (w *Witness) serveMetrics(rw http.ResponseWriter, _ *http.Request) {
	var buf bytes.Buffer
	mw := metrics.NewWriter(&buf)
	st := w.Status()
	mw.Gauge("grbd_info", "Constant 1; the labels describe the member.", 1,
		"cluster", st.Cluster, "member", st.Name, "version", st.Version, "kind", "witness")
	mw.Gauge("grbd_uptime_seconds", "Seconds since the member started.", st.Uptime)
	member.WriteQuorumMetrics(mw, w.cfg, st.Quorum, st.Members)
	member.WriteEventMetrics(mw, w.events.Counts())
	rw.Header().Set("Content-Type", metrics.ContentType)
	_, _ = rw.Write(buf.Bytes())
}

// onChange logs the changes of the control plane's state the witness sees:
// the cluster's primary and epoch, and the Outdated set.
func (w *Witness) onChange() {
	st := w.ctl.Status()
	first := !w.lastSeen
	if first || st.Epoch != w.last.Epoch || st.Primary != w.last.Primary {
		cause := fmt.Sprintf("%s became the primary of epoch %d", st.Primary, st.Epoch)
		switch {
		case st.Primary == "":
			cause = fmt.Sprintf("epoch %d has no primary", st.Epoch)
		case st.Forced:
			cause += " (forced: writes it missed are lost)"
		}
		w.events.Add(events.Event{Type: events.TypeRole, Role: "Witness", Epoch: st.Epoch, Primary: st.Primary, Cause: cause})
	}
	w.last.Outdated = member.NoteOutdated(w.events, first, w.last.Outdated, st)
	w.lastLost = member.NoteLostState(w.events, w.lastLost, st)
	w.last.Epoch, w.last.Primary, w.lastSeen = st.Epoch, st.Primary, true
}

// Close stops the witness.
func (w *Witness) Close() error {
	var err error
	w.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = w.admin.Shutdown(ctx)
		w.cancel()
		w.mesh.Close()
		w.wg.Wait()
		_ = w.lock.Release()
		w.log.Info("witness stopped")
	})
	return err
}

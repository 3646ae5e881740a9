package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/journal"
	"github.com/hashicorp/yamux"
)

// resyncMarker is the file in a secondary's data directory that records
// "Inconsistent since seq N": written (and synced) before the first region
// copy is applied, removed after the primary's ResyncDone.
const resyncMarker = "resync-from"

// applyQueue bounds the messages received but not yet applied.
const applyQueue = 4096

// secondary is the peer side: it accepts the primary's connection, applies its
// writes in sequence order to the local journal and acknowledges them.
//
// One session at a time: a new connection closes the previous session and
// waits (sessMu) until its applier stopped, so the LastSeq in the new Hello
// is final. Status fields are atomics.
type secondary struct {
	store   *journal.Journal
	cluster string
	name    string
	dir     string
	log     *slog.Logger

	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex // guards sessions, closing
	sessions map[*yamux.Session]bool
	closing  bool
	sessMu   sync.Mutex // held by the running session

	epoch        atomic.Uint64 // highest epoch seen
	syncFrom     atomic.Uint64 // valid when inconsistent
	inconsistent atomic.Bool
	caughtUp     atomic.Bool // got ResyncDone in the current session
	connected    atomic.Bool
	primaryName  atomic.Value // string
	journaled    atomic.Uint64
}

func newSecondary(store *journal.Journal, cluster, name, dir string, log *slog.Logger) (*secondary, error) {
	s := &secondary{store: store, cluster: cluster, name: name, dir: dir, log: log, sessions: map[*yamux.Session]bool{}}
	s.primaryName.Store("")
	b, err := os.ReadFile(filepath.Join(dir, resyncMarker))
	switch {
	case err == nil:
		v, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			return nil, fmt.Errorf("node: %s: %w", resyncMarker, perr)
		}
		s.syncFrom.Store(v)
		s.inconsistent.Store(true)
		log.Warn("disk is Inconsistent: interrupted resync", "sync_from", v)
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("node: %w", err)
	}
	return s, nil
}

// serve accepts the primary's connections until the listener closes.
func (s *secondary) serve(ln net.Listener) {
	s.ln = ln
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.handle(c) })
		}
	})
}

func (s *secondary) close() {
	s.mu.Lock()
	s.closing = true
	for sess := range s.sessions {
		sess.Close()
	}
	s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.wg.Wait()
}

func (s *secondary) handle(c net.Conn) {
	sess, err := yamux.Server(c, yamuxConfig(s.log))
	if err != nil {
		c.Close()
		return
	}
	defer sess.Close()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.sessions[sess] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
	}()
	data, err := sess.AcceptStream()
	if err != nil {
		return
	}
	// A new primary connection replaces the old one.
	s.mu.Lock()
	for other := range s.sessions {
		if other != sess {
			other.Close()
		}
	}
	s.mu.Unlock()
	// The resync and control streams are idle in this version: drain them.
	for range 2 {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		s.wg.Go(func() { drain(st) })
	}
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if sess.IsClosed() {
		return
	}
	err = s.session(data)
	s.connected.Store(false)
	s.caughtUp.Store(false)
	s.log.Warn("primary link down", "err", err)
}

// drain reads st until it fails.
func drain(st net.Conn) {
	buf := make([]byte, 4096)
	for {
		if _, err := st.Read(buf); err != nil {
			return
		}
	}
}

// session serves one primary connection on its data stream.
func (s *secondary) session(data *yamux.Stream) error {
	r, w := wire.NewReader(data), wire.NewWriter(data)
	_ = data.SetDeadline(time.Now().Add(handshakeTimeout))
	m, err := r.ReadMsg()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h, ok := m.(*wire.Hello)
	switch {
	case !ok:
		return fmt.Errorf("%w: first message is %v", ErrHandshake, m.Type())
	case h.Cluster != s.cluster:
		return fmt.Errorf("%w: primary %q is in cluster %q, not %q", ErrHandshake, h.From, h.Cluster, s.cluster)
	case h.Epoch < s.epoch.Load():
		return fmt.Errorf("%w: primary %q has stale epoch %d < %d", ErrHandshake, h.From, h.Epoch, s.epoch.Load())
	}
	s.epoch.Store(h.Epoch)
	me := &wire.Hello{Cluster: s.cluster, From: s.name, Role: wire.RoleSecondary, Epoch: h.Epoch,
		LastSeq: s.store.LastSeq(), DurableSeq: s.store.DurableSeq()}
	if s.inconsistent.Load() {
		me.LastSeq, me.Flags = s.syncFrom.Load(), helloFlagInconsistent
	}
	if err := w.WriteMsg(me); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_ = data.SetDeadline(time.Time{})
	s.primaryName.Store(h.From)
	s.connected.Store(true)
	s.journaled.Store(s.store.LastSeq())
	s.log.Info("primary connected", "primary", h.From, "last_seq", me.LastSeq)

	a := &applier{s: s, w: w, in: make(chan wire.Message, applyQueue), wake: make(chan struct{}, 1), done: make(chan struct{})}
	a.received.Store(s.store.LastSeq())
	var wg sync.WaitGroup
	wg.Go(a.apply)
	wg.Go(a.ack)
	a.signal() // announce what this node holds at once
	err = a.read(r)
	close(a.in)
	a.stopOnce.Do(func() { close(a.done) })
	data.Close()
	a.wg.Wait()
	wg.Wait()
	return err
}

// applier is one session's pipeline: read → apply (in order) → ack (batched).
type applier struct {
	s    *secondary
	w    *wire.Writer
	in   chan wire.Message
	wake chan struct{}
	done chan struct{}

	stopOnce sync.Once
	wg       sync.WaitGroup // flush syncs

	received atomic.Uint64
	mu       sync.Mutex // guards out, failed
	out      []wire.Message
	failed   error
}

func (a *applier) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *applier) reply(m wire.Message) {
	a.mu.Lock()
	a.out = append(a.out, m)
	a.mu.Unlock()
	a.signal()
}

// fail records the first apply error; the reader then ends the session.
func (a *applier) fail(err error) {
	a.mu.Lock()
	if a.failed == nil {
		a.failed = err
	}
	a.mu.Unlock()
	a.stopOnce.Do(func() { close(a.done) })
}

func (a *applier) read(r *wire.Reader) error {
	for {
		m, err := r.ReadMsg()
		if err != nil {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.failed != nil {
				return a.failed
			}
			return err
		}
		var seq, epoch uint64
		switch m := m.(type) {
		case *wire.Write:
			seq, epoch = m.Seq, m.Epoch
		case *wire.Zero:
			seq, epoch = m.Seq, m.Epoch
		case *wire.ResyncData:
			seq = m.AsOf
		case *wire.Flush, *wire.ResyncDone:
		default:
			return fmt.Errorf("%w: unexpected %v from primary", ErrHandshake, m.Type())
		}
		if epoch != 0 && epoch < a.s.epoch.Load() {
			a.reply(&wire.Nack{Seq: seq, Code: wire.NackStaleEpoch, Reason: fmt.Sprintf("epoch %d < %d", epoch, a.s.epoch.Load())})
			continue
		}
		if seq > 0 {
			a.received.Store(seq)
			a.signal()
		}
		select {
		case a.in <- wire.Clone(m):
		case <-a.done:
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.failed
		}
	}
}

func (a *applier) apply() {
	s := a.s
	for m := range a.in {
		select {
		case <-a.done:
			continue // failed: drain
		default:
		}
		var w journal.Write
		switch m := m.(type) {
		case *wire.Write:
			w = journal.Write{Seq: m.Seq, Epoch: m.Epoch, Offset: int64(m.Offset), Data: m.Data}
		case *wire.Zero:
			w = journal.Write{Seq: m.Seq, Epoch: m.Epoch, Offset: int64(m.Offset), ZeroLength: int64(m.Length)}
		case *wire.ResyncData:
			if err := s.markInconsistent(); err != nil {
				a.nack(m.AsOf, err)
				continue
			}
			w = journal.Write{Seq: m.AsOf, Epoch: s.epoch.Load(), Offset: int64(m.Offset), Data: m.Data}
		case *wire.ResyncDone:
			if err := s.markConsistent(); err != nil {
				a.nack(m.AsOf, err)
				continue
			}
			s.caughtUp.Store(true)
			continue
		case *wire.Flush:
			a.wg.Go(func() {
				ack := &wire.FlushAck{ID: m.ID, Seq: m.Seq}
				if err := s.store.Sync(m.Seq); err != nil {
					ack.Err = uint32(syscall.EIO)
				}
				a.reply(ack)
			})
			continue
		}
		if _, err := s.store.Append(w); err != nil {
			a.nack(w.Seq, err)
			continue
		}
		s.journaled.Store(w.Seq)
		a.signal()
	}
}

func (a *applier) nack(seq uint64, err error) {
	code := wire.NackIO
	switch {
	case errors.Is(err, journal.ErrSeqOrder):
		code = wire.NackSeqOrder
	case errors.Is(err, journal.ErrOutOfRange):
		code = wire.NackOutOfRange
	}
	reason := err.Error()
	if len(reason) > wire.MaxString {
		reason = reason[:wire.MaxString]
	}
	a.s.log.Error("cannot apply primary's write", "seq", seq, "err", err)
	a.reply(&wire.Nack{Seq: seq, Code: code, Reason: reason})
	a.fail(fmt.Errorf("node: apply seq %d: %w", seq, err))
}

// ack sends cumulative acks and replies, one socket flush per burst.
func (a *applier) ack() {
	var sentRecv, sentJournal uint64
	for {
		select {
		case <-a.wake:
		case <-a.done:
			// Send what is left (a Nack explaining a failure) and stop.
			a.flushOut(&sentRecv, &sentJournal)
			return
		}
		if a.flushOut(&sentRecv, &sentJournal) != nil {
			return
		}
	}
}

func (a *applier) flushOut(sentRecv, sentJournal *uint64) error {
	a.mu.Lock()
	out := a.out
	a.out = nil
	a.mu.Unlock()
	if r := a.received.Load(); r > *sentRecv {
		if err := a.w.WriteMsg(&wire.Ack{Seq: r, Level: wire.AckReceived}); err != nil {
			return err
		}
		*sentRecv = r
	}
	if j := a.s.journaled.Load(); j > *sentJournal {
		if err := a.w.WriteMsg(&wire.Ack{Seq: j, Level: wire.AckJournaled}); err != nil {
			return err
		}
		*sentJournal = j
	}
	for _, m := range out {
		if err := a.w.WriteMsg(m); err != nil {
			return err
		}
	}
	return a.w.Flush()
}

// markInconsistent persists "Inconsistent since LastSeq" before the first
// region copy is applied; an existing marker keeps its older position.
func (s *secondary) markInconsistent() error {
	if s.inconsistent.Load() {
		return nil
	}
	from := s.store.LastSeq()
	if err := writeFileSync(filepath.Join(s.dir, resyncMarker), []byte(strconv.FormatUint(from, 10)+"\n")); err != nil {
		return err
	}
	s.syncFrom.Store(from)
	s.inconsistent.Store(true)
	s.log.Info("region resync started: disk Inconsistent", "sync_from", from)
	return nil
}

// markConsistent makes every applied record durable, then drops the marker.
func (s *secondary) markConsistent() error {
	if !s.inconsistent.Load() {
		return nil
	}
	if err := s.store.Sync(s.store.LastSeq()); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.dir, resyncMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("node: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.inconsistent.Store(false)
	s.log.Info("region resync done: disk consistent", "seq", s.store.LastSeq())
	return nil
}

func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("node: write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("node: sync %s: %w", dir, err)
	}
	return nil
}

// disk is the secondary's own view of its data.
func (s *secondary) disk() string {
	switch {
	case s.inconsistent.Load():
		return DiskInconsistent
	case s.connected.Load() && s.caughtUp.Load():
		return DiskUpToDate
	}
	return DiskOutdated
}

func (s *secondary) peerStatuses() []PeerStatus {
	name := s.primaryName.Load().(string)
	if name == "" {
		return []PeerStatus{}
	}
	conn := ConnDisconnected
	if s.connected.Load() {
		conn = ConnConnected
	}
	return []PeerStatus{{Name: name, Connection: conn, Disk: DiskUnknown, AckedSeq: s.journaled.Load()}}
}

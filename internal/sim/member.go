package sim

import (
	"slices"

	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// member is one simulated member: the real control plane and, for a data
// node, a model of the data path (primary/primary.go and link.go, the
// secondary package) reduced to its decisions.
type member struct {
	w    *world
	name string
	data bool
	up   bool

	q    *quorum.Member
	disk *raft.MemoryStorage // what survives a crash: persisted before sending
	// joinID is the driver's join-identity file (internal/ctlplane): the
	// identity a member without state announces, kept across restarts
	// until it has state; then the ID it joined under (0: initial).
	joinID uint64
	// emptySince is the tick the member lost its control-plane state, or
	// was last seen without it (awaiting a replace); -1 while it has state.
	emptySince int64

	// Durable data (a process crash keeps the journal and the history).
	journal []record // journal[i].Seq == i+1
	hist    replicator.History
	diskID  uint64 // the store's identity (journal.ID)
	// syncing: the node is in a full sync (its disk was not the recorded
	// one) and Inconsistent until its journal reaches syncTo, the last seq
	// of the primary that streams to it; the real node's persisted resync
	// state keeps it so across crashes (secondary.replacedDisk,
	// markConsistent).
	syncing bool
	syncTo  uint64

	// Volatile.
	serving bool
	prim    *primaryDriver
	sess    *session // the primary this secondary follows
	known   uint64   // newest epoch known (secondary side)
}

// session is a secondary's view of its primary's stream.
type session struct {
	from  string
	epoch uint64
}

func (m *member) start() {
	st := raft.NewMemoryStorage()
	hs, _, _ := m.disk.InitialState()
	snap, _ := m.disk.Snapshot()
	if !raft.IsEmptySnap(snap) {
		_ = st.ApplySnapshot(snap)
	}
	_ = st.SetHardState(hs)
	first, _ := m.disk.FirstIndex()
	last, _ := m.disk.LastIndex()
	if last >= first {
		ents, _ := m.disk.Entries(first, last+1, 1<<30)
		_ = st.Append(ents)
	}
	if raft.IsEmptySnap(snap) && m.joinID == 0 {
		m.joinID = quorum.NewJoinID(m.w.rng.Uint64(), m.pos())
	}
	q, err := quorum.NewMember(quorum.Config{
		Self: m.name, Members: m.w.infos, Storage: st, Timing: quorum.DefaultTiming(),
		AutoFailover: true, Seed: m.w.rng.Uint64(), JoinID: m.joinID, Fresh: !m.data || len(m.journal) == 0,
	})
	if err != nil {
		panic(err)
	}
	m.q, m.up, m.serving, m.prim, m.sess, m.known = q, true, false, nil, nil, 0
	m.q.SetDisk(m.reportedDisk())
	if m.syncing {
		m.q.SetConsistent(false)
	}
	m.flush()
}

// reportedDisk is the disk identity the node tells its control plane: 0
// (no data identity, as before it existed) under the planted bug.
func (m *member) reportedDisk() uint64 {
	if m.w.cfg.FreshStoreConsistent {
		return 0
	}
	return m.diskID
}

// replaceDisk gives a stopped data node a new, empty store.
func (m *member) replaceDisk() {
	m.journal, m.hist, m.diskID, m.syncing = nil, nil, m.w.newDiskID(), false
}

func (m *member) crash() {
	if m.prim != nil {
		m.w.res.Unknown += len(m.prim.pending)
	}
	m.up, m.q, m.prim, m.sess, m.serving = false, nil, nil, nil, false
}

// flush runs the Ready cycle: persist, send, advance, then react to the
// applied state.
func (m *member) flush() {
	for m.q.HasReady() {
		rd := m.q.Ready()
		if rd.Persist {
			hs, snap, ents := m.q.Persisted()
			d := raft.NewMemoryStorage()
			_ = d.ApplySnapshot(snap)
			_ = d.SetHardState(hs)
			_ = d.Append(ents)
			m.disk = d
			switch {
			case m.q.ID() == 0: // dropped its state (a rewound log): the identity it announces
				m.joinID = m.q.JoinID()
			case quorum.IncarnationOf(m.q.ID()) == 0:
				m.joinID = 0
			default:
				m.joinID = m.q.ID()
			}
		}
		for _, msg := range rd.Messages {
			m.w.net.sendControl(msg)
		}
		m.q.Advance()
	}
	m.reconcile()
}

// reconcile mirrors node.reconcile: start or stop the primary role, follow
// the newest epoch, apply the Outdated set.
func (m *member) reconcile() {
	if !m.data {
		return
	}
	st := m.q.State()
	m.known = max(m.known, st.Epoch)
	if m.sess != nil && m.sess.epoch < m.known {
		m.sess = nil
	}
	switch {
	case m.q.IsPrimary() && (m.prim == nil || m.prim.epoch != st.Epoch):
		m.sess = nil
		m.hist = m.hist.Enter(st.Epoch, m.last()+1, st.Forced)
		m.prim = newPrimaryDriver(m, st)
		m.w.tracef("%s becomes primary of epoch %d (outdated %v, disks %v)", m.name, st.Epoch, st.Outdated, st.Disks)
	case !m.q.IsPrimary() && m.prim != nil:
		m.w.res.Unknown += len(m.prim.pending)
		m.prim = nil
	}
	if m.prim != nil {
		m.prim.onState(st)
		if !m.q.Serving() {
			// Fenced: held requests fail (on-no-quorum: io-error).
			m.w.res.Unknown += len(m.prim.pending)
			clear(m.prim.pending)
		}
	}
}

// syncDone tells the control plane whether a full sync keeps this node
// Inconsistent: until its journal reaches the primary's.
func (m *member) syncDone() {
	if !m.syncing {
		return
	}
	if m.last() < m.syncTo {
		m.q.SetConsistent(false)
		return
	}
	m.syncing = false
	m.q.SetConsistent(true)
}

func (m *member) last() uint64 { return uint64(len(m.journal)) }

func (m *member) pos() int {
	return slices.IndexFunc(m.w.infos, func(mi quorum.MemberInfo) bool { return mi.Name == m.name }) + 1
}

// loseState is the fault "the member loses its whole control-plane state
// (raft.state and its join-identity file) and restarts empty". A data node
// keeps its journal here; the data-disk loss is a separate hook (disk).
func (m *member) loseState(disk bool) {
	if m.up {
		m.crash()
	}
	m.disk, m.joinID, m.emptySince = raft.NewMemoryStorage(), 0, m.w.now
	if disk {
		m.replaceDisk()
	}
	if m.w.cfg.BootstrapLostState {
		// The planted bug: the old implicit bootstrap, as if the member
		// remembered (initial IDs, empty log).
		var cs pb.ConfState
		for i := range m.w.infos {
			cs.Voters = append(cs.Voters, quorum.RaftID(0, i+1))
		}
		data, _ := quorum.State{}.Encode()
		_ = m.disk.ApplySnapshot(pb.Snapshot{Data: data, Metadata: pb.SnapshotMetadata{Index: 1, Term: 1, ConfState: cs}})
	}
	m.start()
}

// tickData runs the primary's per-tick work (hellos, timeouts).
func (m *member) tickData() {
	if m.prim != nil {
		m.prim.tick()
	}
}

// dataMsg is one data-path message (the model of the data stream).
type dataMsg struct {
	kind  dataKind
	epoch uint64
	hist  replicator.History // hello
	last  uint64             // hello, helloAck
	disk  uint64             // hello: the peer's recorded disk; helloAck: its own
	ok    bool               // helloAck
	rec   record             // write
	seq   uint64             // ack
}

type dataKind uint8

const (
	dHello dataKind = iota + 1
	dHelloAck
	dWrite
	dAck
	dNack
)

// onData handles a data message.
func (m *member) onData(from string, d *dataMsg) {
	if !m.data {
		return
	}
	switch d.kind {
	case dHello, dWrite:
		m.secondaryReceive(from, d)
	default:
		if m.prim != nil && d.epoch == m.prim.epoch {
			m.prim.receive(from, d)
		}
	}
}

func (m *member) reply(to string, d *dataMsg) { m.w.net.sendData(m.name, to, d) }

// secondaryReceive is the model of the secondary side (package secondary).
func (m *member) secondaryReceive(from string, d *dataMsg) {
	if m.q.Phase() != quorum.PhaseMember {
		// Without control-plane state (awaiting a replace) the node knows
		// no epoch to check a primary against: no data stream
		// (node.handleStream).
		m.reply(from, &dataMsg{kind: dNack, epoch: d.epoch})
		return
	}
	if d.epoch < m.known || m.prim != nil {
		m.reply(from, &dataMsg{kind: dNack, epoch: d.epoch})
		return
	}
	switch d.kind {
	case dHello:
		m.known = d.epoch
		if d.disk != 0 && d.disk != m.reportedDisk() {
			// Not the disk that holds this node's data: a full sync
			// (the model's store starts over; node/identity.go).
			m.w.tracef("%s: disk is not the recorded one: full sync from %s", m.name, from)
			m.journal, m.hist, m.syncing = nil, nil, true
		}
		div := replicator.Diverge(d.hist, d.last, m.hist, m.last())
		if div.Diverged {
			// Rewind: the records after the common point were never
			// acknowledged; the primary's history replaces them.
			m.w.tracef("%s diverged from %s after seq %d (last %d): rewinds", m.name, from, div.Common, m.last())
			m.journal = slices.Clone(m.journal[:div.Common])
		}
		m.hist = m.hist.Adopt(d.hist, m.last())
		if m.syncing {
			// A full sync resumes from whichever primary streams now and
			// ends where this one stands (its ResyncDone).
			m.syncTo = d.last
			m.syncDone()
		}
		m.sess = &session{from: from, epoch: d.epoch}
		m.reply(from, &dataMsg{kind: dHelloAck, epoch: d.epoch, ok: true, last: m.last(), disk: m.reportedDisk()})
	case dWrite:
		if m.sess == nil || m.sess.from != from || m.sess.epoch != d.epoch || d.rec.Seq != m.last()+1 {
			m.sess = nil
			m.reply(from, &dataMsg{kind: dNack, epoch: d.epoch})
			return
		}
		m.journal = append(m.journal, d.rec)
		m.syncDone()
		m.reply(from, &dataMsg{kind: dAck, epoch: d.epoch, seq: d.rec.Seq})
	}
}

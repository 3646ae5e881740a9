// Package sim is a seeded, deterministic simulation of a grbd cluster: the
// real control plane (quorum.Member on go.etcd.io/raft/v3), the real
// acknowledgement core (replicator.Primary) and divergence rules
// (replicator.Diverge), and a model of the data path (journals, catch-up,
// epochs on every write), on a simulated network and disk with crashes,
// restarts, partitions (one-way too), message loss, duplication, reordering
// and delays.
//
// After every tick it checks the properties grbd promises
// (docs/quorum.md):
//
//   - one server: at most one member may complete I/O at any tick, and
//     every acknowledged write of an epoch was acknowledged by one member;
//   - acked on primary: a member that starts serving holds every write
//     acknowledged before;
//   - no Outdated primary: no member is primary while the state it applied
//     says it is Outdated;
//
// and, at the end of the calm phase, that the cluster is live (checkLive):
// a primary serves whenever a majority of the voters holds its state and
// one of them may be promoted.
//
// Among the faults, a member loses its whole control-plane state and
// restarts empty; the simulated operator replaces it (grbd member replace)
// some ticks later, and it joins under a new raft ID.
//
// Run is a pure function of its Config: the same seed replays exactly.
package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/grbd/grbd/quorum"
	"github.com/grbd/grbd/replicator"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Config describes one simulation run.
type Config struct {
	Seed      uint64
	DataNodes int  // 2..4
	Witness   bool // add a dataless voter
	Ticks     int  // faulty phase; a calm phase of CalmTicks follows
	CalmTicks int
	Protocol  replicator.Protocol
	// SkipOutdate plants the bug the simulation must catch: the primary
	// stops waiting for a lost peer at once instead of committing its
	// Outdate first.
	SkipOutdate bool
	// FreshStoreConsistent plants the other bug the simulation must
	// catch: a data node on a replaced, empty disk counts as holding the
	// data (no data identity), so it may be promoted over it.
	FreshStoreConsistent bool
	// BootstrapLostState plants the old behaviour of issue 14: a member
	// that lost its control-plane state restarts with the initial
	// configuration and votes and acknowledges as if it remembered.
	BootstrapLostState bool
	// Trace, when set, receives one line per notable event.
	Trace func(string)
}

// Result is what a run observed.
type Result struct {
	Violations []string
	Writes     int // acknowledged
	Unknown    int // outcome unknown (primary lost before the ack)
	Epochs     uint64
	Failovers  int
	Faults     int
	Messages   int
	Replaces   int // members that lost their state and joined again after a replace
}

// world is one simulated cluster.
type world struct {
	cfg     Config
	rng     *rand.Rand
	now     int64
	infos   []quorum.MemberInfo
	members []*member
	byName  map[string]*member
	net     network
	res     Result

	acked      []record          // every acknowledged write, in ack order
	ackedEpoch map[uint64]string // epoch -> the member that acknowledged in it
	nextValue  uint64
	maxEpoch   uint64
}

// record is one journal record of the model: a write of Value to Block.
type record struct {
	Epoch, Seq uint64
	Block      int
	Value      uint64
}

const blocks = 8

// Run simulates one cluster and returns what it observed.
func Run(cfg Config) (res Result) {
	if cfg.DataNodes < 1 {
		cfg.DataNodes = 2
	}
	if cfg.Ticks == 0 {
		cfg.Ticks = 600
	}
	if cfg.CalmTicks == 0 {
		cfg.CalmTicks = 300
	}
	if cfg.Protocol == 0 {
		cfg.Protocol = replicator.ProtocolC
	}
	w := &world{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6772626473696d)), byName: map[string]*member{}, ackedEpoch: map[uint64]string{}}
	w.net = newNetwork(w)
	for i := range cfg.DataNodes {
		w.infos = append(w.infos, quorum.MemberInfo{Name: fmt.Sprintf("d%d", i), Data: true})
	}
	if cfg.Witness {
		w.infos = append(w.infos, quorum.MemberInfo{Name: "w"})
	}
	for _, mi := range w.infos {
		m := &member{w: w, name: mi.Name, data: mi.Data, disk: raft.NewMemoryStorage(), emptySince: -1, diskID: w.newDiskID()}
		w.members = append(w.members, m)
		w.byName[m.name] = m
		m.start()
	}
	defer func() {
		// The old implicit bootstrap can make raft itself give up (a
		// commit index beyond the forgotten log): a violation too.
		if r := recover(); r != nil {
			w.violate("panic: %v", r)
			w.res.Epochs = w.maxEpoch
			res = w.res
		}
	}()
	for w.now = 1; w.now <= int64(cfg.Ticks+cfg.CalmTicks); w.now++ {
		calm := w.now > int64(cfg.Ticks)
		if !calm {
			w.injectFaults()
		} else if w.now == int64(cfg.Ticks)+1 {
			w.healAll()
		}
		w.step()
		if len(w.res.Violations) > 0 {
			break
		}
	}
	if len(w.res.Violations) == 0 {
		w.checkLive()
	}
	w.res.Epochs = w.maxEpoch
	return w.res
}

// checkLive is the liveness property, checked once at the end of the calm
// phase: a cluster with a majority of its voters up and holding their
// state, one of them a data node that may be promoted, has a serving
// primary by then. (A cluster that lost a majority's state, or whose only
// candidates are Outdated or on replaced disks, rightly waits for an
// operator.) The configuration (current IDs, learners) is the view of the
// member that applied the most.
func (w *world) checkLive() {
	var view quorum.Status
	for _, m := range w.members {
		if st := m.q.Status(); m.up && st.Phase == quorum.PhaseMember && st.Applied >= view.Applied {
			view = st
		}
	}
	voters, candidate := 0, ""
	for i, m := range w.members {
		st := m.q.Status()
		if m.up && m.q.Serving() {
			return
		}
		if !m.up || st.Phase != quorum.PhaseMember || slices.Contains(view.Learners, m.name) || i >= len(view.IDs) || view.IDs[i] != st.ID {
			continue
		}
		voters++
		if ok, _ := m.q.Promotable(); ok && candidate == "" {
			candidate = m.name
		}
	}
	// A majority of all positions, not of the voters: during a replace the
	// configuration is joint for a moment, and its outgoing half still
	// counts the replaced member's old ID.
	if candidate != "" && 2*voters > len(w.members) {
		w.violate("live: %d of %d members are voters holding their state and %s may be promoted, yet nobody serves after %d calm ticks (raft leader %q)",
			voters, len(w.members), candidate, w.cfg.CalmTicks, view.RaftLeader)
	}
}

func (w *world) tracef(format string, args ...any) {
	if w.cfg.Trace != nil {
		w.cfg.Trace(fmt.Sprintf("%5d ", w.now) + fmt.Sprintf(format, args...))
	}
}

func (w *world) violate(format string, args ...any) {
	v := fmt.Sprintf("tick %d: ", w.now) + fmt.Sprintf(format, args...)
	w.res.Violations = append(w.res.Violations, v)
	w.tracef("VIOLATION %s", v)
}

// step advances every member by one tick, delivers due messages, lets the
// client write, and checks the invariants.
func (w *world) step() {
	for _, m := range w.members {
		if m.up {
			m.q.Tick()
			m.tickData()
			m.flush()
		}
	}
	for _, e := range w.net.due() {
		to := w.byName[e.to]
		if !to.up {
			continue
		}
		w.res.Messages++
		if e.ctl != nil {
			_ = to.q.Step(*e.ctl)
		} else {
			to.onData(e.from, e.data)
		}
		to.flush()
	}
	w.clientWrite()
	w.operate()
	w.check()
}

// replaceAfter is how long the simulated operator takes to notice a member
// that lost its state and run grbd member replace.
const replaceAfter = 40

// operate is the operator: a member awaiting a replace for replaceAfter
// ticks is replaced through an up member with state (the call the admin
// endpoint makes). A refusal (it is the primary, no leader, a change under
// way, not announced yet) is retried later.
func (w *world) operate() {
	for _, m := range w.members {
		if !m.up || m.q.Phase() != quorum.PhaseAwaitReplace {
			if m.up && m.emptySince >= 0 && m.q.Phase() == quorum.PhaseMember {
				w.res.Replaces++
				w.tracef("%s joined as %#x", m.name, m.q.ID())
				m.emptySince = -1
			}
			continue
		}
		if m.emptySince < 0 {
			m.emptySince = w.now
		}
		if w.now-m.emptySince < replaceAfter || (w.now-m.emptySince)%20 != 0 {
			continue
		}
		via := w.members[w.rng.IntN(len(w.members))]
		if !via.up || via == m {
			continue
		}
		id, err := via.q.RequestReplace(m.name)
		w.tracef("operator: grbd member replace %s via %s: %#x %v", m.name, via.name, id, err)
		via.flush()
	}
}

// clientWrite submits a write to the serving primary, if any.
func (w *world) clientWrite() {
	if w.rng.IntN(3) != 0 {
		return
	}
	for _, m := range w.members {
		if m.up && m.prim != nil && m.q.Serving() {
			w.nextValue++
			m.submit(w.rng.IntN(blocks), w.nextValue)
			m.flush()
			return
		}
	}
}

// acknowledge records a write the client saw complete.
func (w *world) acknowledge(m *member, r record) {
	if other, ok := w.ackedEpoch[r.Epoch]; ok && other != m.name {
		w.violate("one server: writes of epoch %d acknowledged by %s and %s", r.Epoch, other, m.name)
	}
	w.ackedEpoch[r.Epoch] = m.name
	w.acked = append(w.acked, r)
	w.res.Writes++
}

// check verifies the invariants that hold at every tick.
func (w *world) check() {
	var serving []string
	for _, m := range w.members {
		if !m.up {
			continue
		}
		st := m.q.State()
		if st.Primary != "" && st.IsOutdated(st.Primary) {
			w.violate("no Outdated primary: %s applied a state whose primary %s is Outdated", m.name, st.Primary)
		}
		w.maxEpoch = max(w.maxEpoch, st.Epoch)
		s := m.q.Serving()
		if s {
			serving = append(serving, m.name)
			if !m.serving {
				m.startedServing()
			}
		}
		m.serving = s
	}
	if len(serving) > 1 {
		w.violate("one server: %s serve at once", strings.Join(serving, ", "))
	}
}

// startedServing checks that a new server holds every acknowledged write.
func (m *member) startedServing() {
	w := m.w
	w.res.Failovers++
	w.tracef("%s serves epoch %d with last seq %d", m.name, m.q.State().Epoch, m.last())
	if m.q.State().IsOutdated(m.name) {
		w.violate("no Outdated primary: %s serves while Outdated", m.name)
	}
	for _, r := range w.acked {
		if !m.holds(r) {
			w.violate("acked on primary: %s serves epoch %d without acknowledged write %+v", m.name, m.q.State().Epoch, r)
			return
		}
	}
}

// holds reports whether m's journal has record r.
func (m *member) holds(r record) bool {
	i := int(r.Seq) - 1
	return i >= 0 && i < len(m.journal) && m.journal[i] == r
}

// injectFaults draws this tick's faults.
func (w *world) injectFaults() {
	r := w.rng.Float64()
	names := make([]string, len(w.members))
	for i, m := range w.members {
		names[i] = m.name
	}
	pick := func() *member { return w.members[w.rng.IntN(len(w.members))] }
	switch {
	case r < 0.008:
		if m := pick(); m.up && w.upCount() > len(w.members)/2 {
			w.res.Faults++
			w.tracef("crash %s", m.name)
			m.crash()
		}
	case r < 0.02:
		for _, m := range w.members {
			if !m.up && w.rng.IntN(2) == 0 {
				w.tracef("restart %s", m.name)
				m.start()
			}
		}
	case r < 0.026:
		m := pick()
		w.res.Faults++
		w.tracef("isolate %s", m.name)
		for _, o := range names {
			if o != m.name {
				w.net.cut(m.name, o, true)
				w.net.cut(o, m.name, true)
			}
		}
	case r < 0.032:
		a, b := pick(), pick()
		if a != b {
			w.res.Faults++
			w.tracef("cut %s -> %s", a.name, b.name)
			w.net.cut(a.name, b.name, true)
		}
	case r < 0.045:
		w.tracef("heal")
		w.net.healAll()
	case r < 0.0475:
		// Lose a member's control-plane state, one member at a time (a
		// second loss before the first was replaced needs the operator to
		// rebuild; not modelled); a data node loses its whole disk half of
		// the time (data identity).
		m := pick()
		for _, o := range w.members {
			// Up and not yet a member, or down while awaiting its replace
			// (a member that lost its state and crashed before it rejoined).
			if o.emptySince >= 0 || (o.up && o.q.Phase() != quorum.PhaseMember) {
				return
			}
		}
		w.res.Faults++
		whole := m.data && w.rng.IntN(2) == 0
		w.tracef("%s loses its control-plane state (whole disk %v) and restarts empty", m.name, whole)
		m.loseState(whole)
	case r < 0.0515:
		// An operator replaces the disk of a stopped data node: it comes
		// back empty, with a new identity (its control-plane state kept).
		if m := pick(); !m.up && m.data {
			w.res.Faults++
			w.tracef("replace the disk of %s (was %x)", m.name, m.diskID)
			m.replaceDisk()
		}
	}
}

// newDiskID draws a store identity (never 0, as journal.ID).
func (w *world) newDiskID() uint64 { return w.rng.Uint64() | 1 }

func (w *world) upCount() int {
	n := 0
	for _, m := range w.members {
		if m.up {
			n++
		}
	}
	return n
}

// healAll ends every fault: the calm phase.
func (w *world) healAll() {
	w.tracef("calm: heal all, restart all")
	w.net.healAll()
	for _, m := range w.members {
		if !m.up {
			m.start()
		}
	}
}

// network delivers control messages with loss, duplication and random
// delays (so reordering), and data messages in order per pair (a TCP
// stream), dropping them across a cut.
type network struct {
	w       *world
	queue   []envelope
	order   uint64
	cuts    map[[2]string]bool
	dataEnd map[[2]string]int64
}

type envelope struct {
	at       int64
	order    uint64
	from, to string
	ctl      *quorum.Message
	data     *dataMsg
}

func newNetwork(w *world) network {
	return network{w: w, cuts: map[[2]string]bool{}, dataEnd: map[[2]string]int64{}}
}

func (n *network) cut(from, to string, on bool) { n.cuts[[2]string{from, to}] = on }

func (n *network) healAll() { clear(n.cuts) }

func (n *network) sendControl(msg quorum.Message) {
	r := n.w.rng
	if r.IntN(50) == 0 {
		return // lost
	}
	copies := 1
	if r.IntN(50) == 0 {
		copies = 2 // duplicated
	}
	for range copies {
		c := msg
		if msg.Type == quorum.MsgRaft {
			c.Raft = cloneRaft(msg.Raft)
		}
		n.push(envelope{at: n.w.now + 1 + int64(r.IntN(4)), from: msg.From, to: msg.To, ctl: &c})
	}
}

func (n *network) sendData(from, to string, d *dataMsg) {
	k := [2]string{from, to}
	at := max(n.dataEnd[k], n.w.now+1+int64(n.w.rng.IntN(3)))
	n.dataEnd[k] = at
	n.push(envelope{at: at, from: from, to: to, data: d})
}

func (n *network) push(e envelope) {
	n.order++
	e.order = n.order
	n.queue = append(n.queue, e)
}

// due removes and returns the messages to deliver now, in order; messages
// across a cut are lost.
func (n *network) due() []envelope {
	var out []envelope
	rest := n.queue[:0]
	for _, e := range n.queue {
		if e.at <= n.w.now {
			if !n.cuts[[2]string{e.from, e.to}] {
				out = append(out, e)
			}
			continue
		}
		rest = append(rest, e)
	}
	n.queue = rest
	slices.SortFunc(out, func(a, b envelope) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return int(a.order - b.order)
	})
	return out
}

func cloneRaft(m pb.Message) pb.Message {
	b, err := m.Marshal()
	if err != nil {
		panic(err)
	}
	var c pb.Message
	if err := c.Unmarshal(b); err != nil {
		panic(err)
	}
	return c
}

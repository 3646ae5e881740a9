package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grbd/grbd/internal/nbdclient"
)

// Target finds the member that serves writes now. Cluster implements it by
// polling the admin endpoints; tests use a fixed address.
type Target interface {
	Primary(ctx context.Context) (name, uri string, err error)
}

// WorkloadConfig shapes the client load. Zero fields take the defaults.
type WorkloadConfig struct {
	Target Target
	Clock  Clock // default RealClock
	Seed   uint64
	// Conns NBD connections (default 3), each shared by Workers goroutines
	// (default 3) that issue one request at a time.
	Conns, Workers int
	// Blocks slots (default 64) of Span registers of BlockSize bytes each
	// (Span default 1): register b lives at Base + (b/Span)*Stride +
	// (b%Span)*BlockSize (Stride default Span*BlockSize, a multiple of
	// BlockSize and at least that).
	Blocks       int
	Base, Stride int64
	Span         int
	// LargePct of the reads and writes (default 0) cover a whole slot in
	// one request, each register with its own value: with Span*BlockSize
	// at least the journal's in-place-min they take the large-write path.
	// With Span > 1 small ops hit a slot's first or last block, and small
	// writes go to the first half of the slots only, so the other half sees
	// large writes alone (written in place where the journal can).
	LargePct int
	// Percentages of reads, flushes and FUA writes (defaults 30, 5, 5); the
	// rest are plain writes.
	ReadPct, FlushPct, FUAPct int
	// Think bounds the random pause before each operation (default 2ms):
	// it keeps the load light on a shared machine.
	Think time.Duration
	// OpTimeout bounds one request (default 10s); a request that times out
	// has an unknown outcome.
	OpTimeout time.Duration
	// MaxOps bounds the operations of one worker (default 1,000,000).
	MaxOps int
	// Logf receives connection changes (optional).
	Logf func(format string, args ...any)
}

func (c *WorkloadConfig) defaults() error {
	if c.Target == nil {
		return errors.New("chaos: workload needs a Target")
	}
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.Conns, 3)
	def(&c.Workers, 3)
	def(&c.Blocks, 64)
	def(&c.Span, 1)
	def(&c.ReadPct, 30)
	def(&c.FlushPct, 5)
	def(&c.FUAPct, 5)
	def(&c.MaxOps, 1_000_000)
	if c.Clock == nil {
		c.Clock = RealClock
	}
	if c.Stride <= 0 {
		c.Stride = int64(c.Span) * BlockSize
	}
	if c.Stride%BlockSize != 0 || c.Base%BlockSize != 0 {
		return fmt.Errorf("chaos: workload base %d and stride %d must be multiples of %d", c.Base, c.Stride, BlockSize)
	}
	if c.Stride < int64(c.Span)*BlockSize {
		return fmt.Errorf("chaos: workload stride %d is shorter than a slot of %d blocks", c.Stride, c.Span)
	}
	if c.LargePct < 0 || c.LargePct > 100 {
		return fmt.Errorf("chaos: workload large-op percentage %d is not in 0..100", c.LargePct)
	}
	if c.Think <= 0 {
		c.Think = 2 * time.Millisecond
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 10 * time.Second
	}
	return nil
}

// Workload writes unique values to blocks over NBD, reads them back and
// flushes, recording every operation in a History.
type Workload struct {
	cfg   WorkloadConfig
	codec Codec
	start time.Time
	hist  History

	ids       atomic.Uint64
	era       atomic.Int64
	stopped   atomic.Bool
	noFlush   atomic.Bool
	writesOK  atomic.Int64
	sessions  []*session
	verifySes *session

	mu      sync.Mutex
	outages []Outage
	resume  chan struct{} // non-nil while paused; closed by Resume
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewWorkload prepares a workload; Start runs it.
func NewWorkload(cfg WorkloadConfig) (*Workload, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	w := &Workload{cfg: cfg, codec: Codec{Run: cfg.Seed*0x9e3779b97f4a7c15 + 1}, start: cfg.Clock.Now()}
	for i := range cfg.Conns + 1 {
		s := &session{w: w, idx: i, down: -1}
		if i == cfg.Conns {
			w.verifySes = s
		} else {
			w.sessions = append(w.sessions, s)
		}
	}
	return w, nil
}

// Offset is the device offset of register b.
func (w *Workload) Offset(b int) int64 {
	return w.cfg.Base + int64(b/w.cfg.Span)*w.cfg.Stride + int64(b%w.cfg.Span)*BlockSize
}

// Blocks is the number of registers (slots times Span).
func (w *Workload) Blocks() int { return w.cfg.Blocks * w.cfg.Span }

// since is the time since the workload was created.
func (w *Workload) since() time.Duration { return w.cfg.Clock.Now().Sub(w.start) }

// Start launches the workers; they run until Stop, ctx's end or MaxOps.
func (w *Workload) Start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	for ci, s := range w.sessions {
		for k := range w.cfg.Workers {
			client := ci*w.cfg.Workers + k
			rng := rand.New(rand.NewPCG(w.cfg.Seed, uint64(client)+1))
			w.wg.Go(func() { w.worker(ctx, s, client, rng) })
		}
	}
}

// Stop ends the workers, waits for them and closes the connections.
func (w *Workload) Stop() {
	w.stopped.Store(true)
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
	for _, s := range append(w.sessions, w.verifySes) {
		s.close()
	}
}

// Pause holds the workers before their next operation (operations in
// flight go on) until Resume: scenarios pause to read every block right
// after a failover, before new writes could hide a lost one.
func (w *Workload) Pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.resume == nil {
		w.resume = make(chan struct{})
	}
}

// Resume releases paused workers.
func (w *Workload) Resume() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.resume != nil {
		close(w.resume)
		w.resume = nil
	}
}

// waitResumed blocks while the workload is paused.
func (w *Workload) waitResumed(ctx context.Context) {
	w.mu.Lock()
	ch := w.resume
	w.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
}

// Stopped reports whether Stop was called.
func (w *Workload) Stopped() bool { return w.stopped.Load() }

// NewEra marks that unsynced data may have been lost just now (a simulated
// power loss): later operations are checked for linearizability separately,
// and only durability links them to earlier ones.
func (w *Workload) NewEra() int { return int(w.era.Add(1)) }

// PauseFlushes stops (true) or resumes (false) FLUSH and FUA, so that the
// journal keeps an unsynced tail.
func (w *Workload) PauseFlushes(pause bool) { w.noFlush.Store(pause) }

// WritesOK counts acknowledged writes so far.
func (w *Workload) WritesOK() int64 { return w.writesOK.Load() }

// WaitWrites waits until n more writes are acknowledged.
func (w *Workload) WaitWrites(ctx context.Context, n int64) error {
	target := w.writesOK.Load() + n
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for w.writesOK.Load() < target {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d of %d writes acknowledged: %w", ErrTimeout, w.writesOK.Load()-target+n, n, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Ops returns the history so far, with torn reads told apart from corrupt
// ones (see ValueTorn).
func (w *Workload) Ops() []Op {
	ops := w.hist.Ops()
	markTorn(ops, w.codec)
	return ops
}

// Outages returns the connection outages seen so far.
func (w *Workload) Outages() []Outage {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Outage(nil), w.outages...)
}

// failBackoff is the least pause of a worker after a failed operation.
const failBackoff = 50 * time.Millisecond

func (w *Workload) worker(ctx context.Context, s *session, client int, rng *rand.Rand) {
	buf := make([]byte, w.cfg.Span*BlockSize)
	ops := make([]Op, 0, w.cfg.Span)
	for range w.cfg.MaxOps {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(rng.Int64N(int64(w.cfg.Think)))):
		}
		w.waitResumed(ctx)
		c, node, gen, err := s.client(ctx)
		if err != nil {
			return
		}
		op := Op{Client: client, Node: node, Era: int(w.era.Load())}
		p := rng.IntN(100)
		noFlush := w.noFlush.Load()
		switch {
		case p < w.cfg.ReadPct:
			op.Kind = OpRead
		case p < w.cfg.ReadPct+w.cfg.FlushPct && !noFlush:
			op.Kind = OpFlush
		default:
			op.Kind = OpWrite
			op.FUA = p >= 100-w.cfg.FUAPct && !noFlush
		}
		ops = w.pick(ops[:0], op, rng)
		w.do(ctx, c, ops, buf)
		for _, op := range ops {
			w.hist.Add(op)
		}
		if op = ops[0]; op.Outcome == OK {
			s.up(node, op.Return)
			continue
		}
		s.drop(gen, op.Call, op.Err)
		// Back off like a real client: an error storm helps nobody and
		// floods the history with writes of unknown outcome.
		select {
		case <-ctx.Done():
		case <-time.After(failBackoff + time.Duration(rng.Int64N(int64(failBackoff)))):
		}
	}
}

// pick appends to ops the register operations of one request like op: a
// flush, one register, or (LargePct of reads and writes, Span > 1) every
// register of a slot. Each gets its own ID, and a write its own value.
func (w *Workload) pick(ops []Op, op Op, rng *rand.Rand) []Op {
	span, slots := w.cfg.Span, w.cfg.Blocks
	switch {
	case op.Kind == OpFlush:
		return append(ops, w.numbered(op, 0))
	case span > 1 && rng.IntN(100) < w.cfg.LargePct:
		slot := rng.IntN(slots)
		for k := range span {
			ops = append(ops, w.numbered(op, slot*span+k))
		}
		return ops
	case span > 1 && op.Kind == OpWrite:
		slots = max(1, slots/2) // the other half sees large writes alone
	}
	// A small op hits a slot's first or last block: the edges of a large
	// write, and as few registers as with Span 1, so that reads often
	// meet recent writes.
	k := 0
	if span > 1 && rng.IntN(2) == 1 {
		k = span - 1
	}
	return append(ops, w.numbered(op, rng.IntN(slots)*span+k))
}

// numbered is op on register b under a new ID (a write's value).
func (w *Workload) numbered(op Op, b int) Op {
	op.ID, op.Block = w.ids.Add(1), b
	if op.Kind == OpWrite {
		op.Value = op.ID
	}
	return op
}

// do runs one request (ops: a flush, or consecutive registers of one slot)
// and fills in every op's times and outcome.
func (w *Workload) do(ctx context.Context, c *nbdclient.Client, ops []Op, buf []byte) {
	opCtx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	first := &ops[0]
	buf = buf[:len(ops)*BlockSize]
	off := w.Offset(first.Block)
	call := w.since()
	var err error
	switch first.Kind {
	case OpWrite:
		for i, op := range ops {
			w.codec.Encode(buf[i*BlockSize:(i+1)*BlockSize], op.Block, op.Value, op.Client)
		}
		var flags nbdproto.CmdFlags
		if first.FUA {
			flags = nbdproto.CmdFlagFUA
		}
		err = c.WriteAt(opCtx, buf, off, flags)
	case OpRead:
		err = c.ReadAt(opCtx, buf, off)
	case OpFlush:
		err = c.Flush(opCtx)
	}
	ret := w.since()
	if first.Kind == OpWrite && err == nil {
		w.writesOK.Add(1)
	}
	for i := range ops {
		op := &ops[i]
		op.Call, op.Return = call, ret
		switch {
		case err == nil:
			op.Outcome = OK
		case nbdclient.IsUnknownOutcome(err):
			op.Outcome, op.Err = Unknown, err.Error()
		default:
			op.Outcome, op.Err = Failed, err.Error()
		}
		if op.Kind == OpRead && op.Outcome == OK {
			b := buf[i*BlockSize : (i+1)*BlockSize]
			v, derr := w.codec.Decode(b, op.Block)
			op.Value = v
			if derr != nil {
				op.Value, op.Err, op.Raw = ValueCorrupt, derr.Error(), bytes.Clone(b)
			}
		}
	}
}

// verifyTries bounds the attempts to read one block in Verify.
const verifyTries = 20

// Verify reads every block once from the current primary, retrying a failed
// read (up to verifyTries times, reconnecting each time). The reads join the
// history, so the checks cover them; run it after the faults healed. It
// returns an error naming the blocks it could not read.
func (w *Workload) Verify(ctx context.Context) error {
	span := w.cfg.Span
	buf, ops := make([]byte, span*BlockSize), make([]Op, span)
	client := w.cfg.Conns * w.cfg.Workers
	var unread []string
	for slot := range w.cfg.Blocks {
		var last string
		for try := 0; try < verifyTries; try++ {
			c, node, gen, err := w.verifySes.client(ctx)
			if err != nil {
				return fmt.Errorf("chaos: verify block %d: %w", slot*span, err)
			}
			op := Op{Client: client, Kind: OpRead, Node: node, Era: int(w.era.Load())}
			for k := range ops {
				ops[k] = w.numbered(op, slot*span+k)
			}
			w.do(ctx, c, ops, buf)
			for _, op := range ops {
				w.hist.Add(op)
			}
			if last = ops[0].Err; ops[0].Outcome == OK {
				last = ""
				break
			}
			w.verifySes.drop(gen, ops[0].Call, ops[0].Err)
		}
		if last != "" {
			unread = append(unread, fmt.Sprintf("block %d: %s", slot*span, last))
		}
	}
	if len(unread) > 0 {
		return fmt.Errorf("chaos: %d blocks unreadable: %s", len(unread), strings.Join(unread, "; "))
	}
	return nil
}

// session is one workload connection slot: the client, the member it talks
// to, and outage tracking.
type session struct {
	w   *Workload
	idx int

	mu   sync.Mutex // held while dialing: the slot's workers wait for one dialer
	c    *nbdclient.Client
	node string
	gen  int
	last string        // member of the last success
	down time.Duration // first failure of the current outage; -1 when up
}

// client returns the slot's connection, dialing the current primary (with
// backoff, until ctx ends) when there is none.
func (s *session) client(ctx context.Context) (*nbdclient.Client, string, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	backoff := 20 * time.Millisecond
	for s.c == nil {
		if err := ctx.Err(); err != nil {
			return nil, "", 0, err
		}
		c, node, err := s.dial(ctx)
		if err == nil {
			s.c, s.node = c, node
			s.gen++
			s.logf("conn %d: connected to %s", s.idx, node)
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
	return s.c, s.node, s.gen, nil
}

func (s *session) dial(ctx context.Context) (*nbdclient.Client, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	node, uri, err := s.w.cfg.Target.Primary(ctx)
	if err != nil {
		return nil, "", err
	}
	c, err := nbdclient.DialURI(ctx, uri, nbdclient.Options{CloseTimeout: 500 * time.Millisecond})
	return c, node, err
}

// drop closes the connection of generation gen after a failure (a later
// generation is already a fresh connection) and opens an outage.
func (s *session) drop(gen int, at time.Duration, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down < 0 {
		s.down = at
	}
	if s.gen != gen || s.c == nil {
		return
	}
	c := s.c
	s.c = nil
	s.logf("conn %d: dropping connection to %s: %s", s.idx, s.node, why)
	go c.Close() // may wait for a stuck server; nobody needs the result
}

// up closes the current outage, if any, at a success on node.
func (s *session) up(node string, at time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down >= 0 && s.last != "" {
		o := Outage{Conn: s.idx, From: s.last, To: node, Start: s.down, End: at, Failover: s.last != node}
		s.w.mu.Lock()
		s.w.outages = append(s.w.outages, o)
		s.w.mu.Unlock()
	}
	s.down, s.last = -1, node
}

func (s *session) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		_ = s.c.Close()
		s.c = nil
	}
}

func (s *session) logf(format string, args ...any) {
	if s.w.cfg.Logf != nil {
		s.w.cfg.Logf(format, args...)
	}
}

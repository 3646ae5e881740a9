package secondary

import (
	"sync"
	"sync/atomic"

	"github.com/grbd/grbd/journal"
)

// copier writes a full copy's in-place resync copies behind the session's
// reader, so that the reader decodes and checks the next copy while the
// disk writes this one (the reader and the direct write took turns: the
// disk was busy 41% of a resync). A copy is logged in order on the reader
// (journal.LogInPlace); its write starts at once, up to copyBuffers of them
// at a time (a direct write waits for the disk; two or three in flight kept
// it busier: docs/journal.md), and the copies count strictly in order, each
// only once its own write and every earlier one returned: the journaled
// position, the copied range of the resync's progress, and the ack. The
// reader drains the copier before any other message (drain), so that
// nothing acked or saved overtakes a copy still on its way to the disk.
type copier struct {
	a       *applier
	jobs    chan copyJob
	written chan copyJob // the copies started, in order, for count
	free    chan []byte  // buffers the copies' data are kept in
	busy    sync.WaitGroup
	err     atomic.Pointer[error] // the first copy that failed (already nacked)
	done    chan struct{}
}

type copyJob struct {
	logged journal.Logged
	buf    []byte
	result chan error // the write's outcome
}

// copyBuffers is how many copies the reader may hand over before the
// oldest is counted: as many may be on the disk at once. With three a GiB
// took 18% less time than one at a time (docs/journal.md).
const copyBuffers = 3

func newCopier(a *applier) *copier {
	c := &copier{a: a, jobs: make(chan copyJob, copyBuffers), written: make(chan copyJob, copyBuffers),
		free: make(chan []byte, copyBuffers), done: make(chan struct{})}
	for range copyBuffers {
		c.free <- nil
	}
	go c.run()
	go c.count()
	return c
}

// submit keeps w's data in a buffer of its own (the next read overwrites
// the Reader's), logs w in place and queues it.
func (c *copier) submit(w journal.Write) error {
	if err := c.failed(); err != nil {
		return err
	}
	buf := append((<-c.free)[:0], w.Data...)
	w.Data = buf
	l, err := c.a.s.store.LogInPlace(w)
	if err != nil {
		c.free <- buf
		if ferr := c.drain(); ferr != nil {
			// A copy before it failed (the journal fails with it): that
			// one is nacked, not this one.
			return ferr
		}
		return c.a.nack(w.Seq, err)
	}
	c.busy.Add(1)
	c.jobs <- copyJob{logged: l, buf: buf, result: make(chan error, 1)}
	return nil
}

// run starts the queued copies' writes, each on a goroutine of its own
// (at most copyBuffers at once: a copy holds its buffer until counted).
// After a failure it starts no more: it drops them (journal.Drop), so that
// reads, checkpoints and Close stop waiting for them; a resumed resync
// copies them again (no progress names them).
func (c *copier) run() {
	defer close(c.written)
	store := c.a.s.store
	for j := range c.jobs {
		if c.failed() != nil {
			store.Drop(j.logged)
			c.free <- j.buf
			c.busy.Done()
			continue
		}
		go func() { j.result <- store.ApplyInPlace(j.logged) }()
		c.written <- j
	}
}

// count counts the copies in order, each once written: the journaled
// position, the copied range, the ack. After a failure it counts none.
func (c *copier) count() {
	defer close(c.done)
	a := c.a
	for j := range c.written {
		err := <-j.result
		if c.failed() == nil {
			w := &j.logged.Write
			if err == nil {
				a.s.journaled.Store(w.Seq)
				err = a.copiedRange(uint64(w.Offset), uint64(len(w.Data)))
			}
			if err != nil {
				err = a.nack(w.Seq, err)
				c.err.CompareAndSwap(nil, &err)
			}
			// The reader may be waiting for the next message: ack now,
			// unless a queued copy's turn will; a Nack at once, even with
			// copies behind it, since the primary ends the session on it
			// and may have nothing more to send.
			if err != nil || len(c.written) == 0 && len(c.jobs) == 0 {
				_ = a.flushOut()
			}
		}
		c.free <- j.buf
		c.busy.Done()
	}
}

func (c *copier) failed() error {
	if err := c.err.Load(); err != nil {
		return *err
	}
	return nil
}

// drain returns once every queued copy is applied, with the first failure.
func (c *copier) drain() error {
	c.busy.Wait()
	return c.failed()
}

// stop drains the copier and ends its goroutine.
func (c *copier) stop() error {
	err := c.drain()
	close(c.jobs)
	<-c.done
	return err
}

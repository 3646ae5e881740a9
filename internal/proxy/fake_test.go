package proxy

import (
	"context"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"sync"

	"github.com/grbd/grbd/internal/nbdclient"
)

// fakeCluster is an in-memory cluster: one shared disk (what every node
// holds, as protocol C promises for answered writes), the serving primary,
// and a log of the requests the nodes executed.
type fakeCluster struct {
	mu      sync.Mutex
	data    []byte
	nodes   map[string]*fakeNode
	primary string // "" while none serves
	epoch   uint64
	log     []string // "NODE OP OFF+LEN", in execution order
	// slowLocate: a member never answers, so Locate takes all its time.
	slowLocate bool
}

// fakeNode's mode decides what its connections do with requests.
type fakeNode struct {
	name  string
	mode  fakeMode
	errno nbdclient.Errno // modeErrno
	conns []*fakeConn
	// entered receives once per request that reached a blackholed node.
	entered chan string
}

type fakeMode int

const (
	modeServe     fakeMode = iota
	modeBlackhole          // requests never answered until the connection is aborted
	modeApplyLose          // requests executed, answer lost until the connection is aborted
	modeErrno              // requests answered with errno, not executed
)

func newFakeCluster(size int, names ...string) *fakeCluster {
	c := &fakeCluster{data: make([]byte, size), nodes: map[string]*fakeNode{}}
	for _, n := range names {
		c.nodes[n] = &fakeNode{name: n, entered: make(chan string, 1024)}
	}
	return c
}

// promote makes name the serving primary in a new epoch.
func (c *fakeCluster) promote(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.primary = name
	c.epoch++
	c.nodes[name].mode = modeServe
}

// set changes a node's behaviour for requests arriving from now on.
func (c *fakeCluster) set(name string, m fakeMode, errno nbdclient.Errno) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[name].mode, c.nodes[name].errno = m, errno
}

// kill ends the node: it stops serving and its connections close.
func (c *fakeCluster) kill(name string) {
	c.mu.Lock()
	n := c.nodes[name]
	conns := n.conns
	n.conns = nil
	if c.primary == name {
		c.primary = ""
	}
	c.mu.Unlock()
	for _, fc := range conns {
		fc.closeOnce.Do(func() { close(fc.closed) })
	}
}

func (c *fakeCluster) logged() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

func (c *fakeCluster) Locate(ctx context.Context) (Primary, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slowLocate {
		// A member that never answers: the answers of the others count
		// once the locate's time is up (as ClusterLocator's).
		c.mu.Unlock()
		<-ctx.Done()
		c.mu.Lock()
	}
	if c.primary == "" {
		return Primary{}, fmt.Errorf("%w: fake: none", ErrNotPrimary)
	}
	return Primary{Name: c.primary, Addr: c.primary + ":10809", Epoch: c.epoch, Size: int64(len(c.data))}, nil
}

func (c *fakeCluster) Dial(ctx context.Context, p Primary) (Backend, error) {
	if err := ctx.Err(); err != nil { // as net.Dialer with a context that ended
		return nil, fmt.Errorf("fake: dial %s: %w", p.Name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.primary != p.Name {
		return nil, fmt.Errorf("fake: %s: connection refused", p.Name)
	}
	n := c.nodes[p.Name]
	fc := &fakeConn{c: c, n: n, closed: make(chan struct{})}
	n.conns = append(n.conns, fc)
	return fc, nil
}

// fakeConn is one proxy connection to a fake node.
type fakeConn struct {
	c         *fakeCluster
	n         *fakeNode
	closed    chan struct{}
	closeOnce sync.Once
}

func (f *fakeConn) Info() nbdclient.ExportInfo {
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	return nbdclient.ExportInfo{Size: int64(len(f.c.data)), Flags: nbdproto.FlagHasFlags | nbdproto.FlagSendFlush |
		nbdproto.FlagSendFUA | nbdproto.FlagSendTrim | nbdproto.FlagSendWriteZeroes}
}

func (f *fakeConn) Abort() { f.closeOnce.Do(func() { close(f.closed) }) }

// run executes one request per the node's mode; apply runs under c.mu.
func (f *fakeConn) run(ctx context.Context, what string, apply func()) error {
	select {
	case <-f.closed:
		return fmt.Errorf("%w: fake: closed", nbdclient.ErrConnLost)
	default:
	}
	f.c.mu.Lock()
	mode, errno := f.n.mode, f.n.errno
	switch mode {
	case modeServe, modeApplyLose:
		apply()
		f.c.log = append(f.c.log, f.n.name+" "+what)
	}
	f.c.mu.Unlock()
	switch mode {
	case modeErrno:
		return errno
	case modeBlackhole, modeApplyLose:
		f.n.entered <- what
		select {
		case <-f.closed:
			return fmt.Errorf("%w: fake: closed", nbdclient.ErrConnLost)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (f *fakeConn) ReadAt(ctx context.Context, p []byte, off int64) error {
	return f.run(ctx, fmt.Sprintf("read %d+%d", off, len(p)), func() { copy(p, f.c.data[off:]) })
}

func (f *fakeConn) WriteAt(ctx context.Context, p []byte, off int64, flags nbdproto.CmdFlags) error {
	return f.run(ctx, fmt.Sprintf("write %d+%d", off, len(p)), func() { copy(f.c.data[off:], p) })
}

func (f *fakeConn) WriteZeroes(ctx context.Context, off, length int64, flags nbdproto.CmdFlags) error {
	return f.run(ctx, fmt.Sprintf("zero %d+%d", off, length), func() { clear(f.c.data[off : off+length]) })
}

func (f *fakeConn) Flush(ctx context.Context) error {
	return f.run(ctx, "flush", func() {})
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/grbd/grbd/internal/freeport"
)

// qemuQuorum is qemu-nbd's quorum driver over two nbdkit file exports: two
// synchronous copies, the nearest off-the-shelf peer to a 2-node protocol C
// grbd (see shared/README.md for how it was measured).
//
// Writes need both copies (vote-threshold=2). Reads come from the first copy
// (read-pattern=fifo), as grbd reads its local copy. The default pattern
// votes on every read and fails it with EIO when the copies differ, which
// they do within seconds of fio's random jobs: overlapping writes in flight
// reach the two copies in different orders (seen here: one 4 KiB block
// differed after a 5 s randwrite QD32 run, and the next read of it failed).
type qemuQuorum struct {
	children [2]*nbdkitFile
	front    *serverProc
}

// QemuQuorum returns the qemu-nbd quorum system, named "qemu-quorum-2".
func QemuQuorum() System {
	q := &qemuQuorum{}
	for i := range q.children {
		q.children[i] = &nbdkitFile{name: "nbdkit-replica" + strconv.Itoa(i)}
	}
	return q
}

func (q *qemuQuorum) Name() string { return "qemu-quorum-2" }

func (q *qemuQuorum) Start(ctx context.Context, dir string, size int64) (string, error) {
	opts := []string{"driver=quorum", "vote-threshold=2", "read-pattern=fifo"}
	for i, c := range q.children {
		uri, err := c.Start(ctx, filepath.Join(dir, "replica"+strconv.Itoa(i)), size)
		if err != nil {
			_ = q.Stop()
			return "", err
		}
		host, port, err := splitHostPort(strings.TrimPrefix(uri, "nbd://"))
		if err != nil {
			_ = q.Stop()
			return "", err
		}
		p := fmt.Sprintf("children.%d.", i)
		opts = append(opts, p+"driver=raw", p+"file.driver=nbd", p+"file.server.type=inet",
			p+"file.server.host="+host, p+"file.server.port="+port)
	}
	addr, err := freeport.Addr()
	if err != nil {
		_ = q.Stop()
		return "", err
	}
	_, port, _ := splitHostPort(addr)
	argv := []string{"qemu-nbd", "-t", "-b", "127.0.0.1", "-p", port, "-x", "", "--cache=none",
		"--aio=threads", "--image-opts", strings.Join(opts, ",")}
	q.front, _, err = startChild(ctx, dir, "qemu-nbd", argv, readiness{Addr: addr})
	if err != nil {
		_ = q.Stop()
		return "", err
	}
	return "nbd://" + addr, nil
}

func (q *qemuQuorum) Stop() error {
	var errs []error
	if q.front != nil {
		errs = append(errs, q.front.stop())
		q.front = nil
	}
	for _, c := range q.children {
		errs = append(errs, c.Stop())
	}
	return errors.Join(errs...)
}

func (q *qemuQuorum) Processes() []Process {
	var ps []Process
	if q.front != nil {
		ps = append(ps, Process{Name: "qemu-nbd", PID: q.front.PID()})
	}
	for _, c := range q.children {
		ps = append(ps, c.Processes()...)
	}
	return ps
}

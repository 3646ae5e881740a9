package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
)

// qemuQuorum is qemu-nbd's quorum driver over two nbdkit file exports: two
// synchronous copies, the nearest off-the-shelf peer to a 2-node protocol C
// grbd (see shared/README.md for how it was measured).
type qemuQuorum struct {
	children [2]System
	front    *process
}

// QemuQuorum returns the qemu-nbd quorum system.
func QemuQuorum() System {
	return &qemuQuorum{children: [2]System{NBDKitFile(), NBDKitFile()}}
}

func (q *qemuQuorum) Name() string { return "qemu-quorum-2" }

func (q *qemuQuorum) Start(ctx context.Context, dir string, size int64) (string, error) {
	var ports [2]int
	for i, c := range q.children {
		uri, err := c.Start(ctx, filepath.Join(dir, "replica"+strconv.Itoa(i)), size)
		if err != nil {
			_ = q.Stop()
			return "", err
		}
		var port int
		if _, err := fmt.Sscanf(uri, "nbd://127.0.0.1:%d", &port); err != nil {
			_ = q.Stop()
			return "", fmt.Errorf("bench: child uri %q: %w", uri, err)
		}
		ports[i] = port
	}
	q.front = &process{name: q.Name(), argv: func(_ string, _ int64, port int) ([]string, error) {
		opts := "driver=quorum,vote-threshold=2"
		for i, p := range ports {
			opts += fmt.Sprintf(",children.%d.driver=raw,children.%d.file.driver=nbd,children.%d.file.server.type=inet,"+
				"children.%d.file.server.host=127.0.0.1,children.%d.file.server.port=%d", i, i, i, i, i, p)
		}
		return []string{"qemu-nbd", "-t", "-b", "127.0.0.1", "-p", strconv.Itoa(port), "-x", "", "--cache=none",
			"--aio=threads", "--image-opts", opts}, nil
	}}
	uri, err := q.front.Start(ctx, filepath.Join(dir, "front"), size)
	if err != nil {
		_ = q.Stop()
	}
	return uri, err
}

func (q *qemuQuorum) Stop() error {
	var errs []error
	if q.front != nil {
		errs = append(errs, q.front.Stop())
	}
	for _, c := range q.children {
		errs = append(errs, c.Stop())
	}
	return errors.Join(errs...)
}

package node

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"github.com/grbd/grbd/journal"
	"github.com/stretchr/testify/require"
)

func TestIsDiskError(t *testing.T) {
	t.Parallel()
	path := func(op string, errno syscall.Errno) error {
		return fmt.Errorf("journal: write segment 2: %w", &fs.PathError{Op: op, Path: "/d/journal/2.seg", Err: errno})
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no space", path("write", syscall.ENOSPC), true},
		{"read-only file system", path("open", syscall.EROFS), true},
		{"I/O error", path("read", syscall.EIO), true},
		{"fsync failed", os.NewSyscallError("fdatasync", syscall.EIO), true},
		{"journal failed", fmt.Errorf("%w: boom", journal.ErrFailed), true},
		{"fenced (EIO for the client)", ErrFenced, false},
		{"deposed", ErrDeposed, false},
		{"read-only node", ErrReadOnly, false},
		{"corrupt block", &journal.ChecksumError{}, false},
		{"closed", journal.ErrClosed, false},
		{"out of range", journal.ErrOutOfRange, false},
		{"bare EIO", syscall.EIO, false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, isDiskError(tc.err)) })
	}
}

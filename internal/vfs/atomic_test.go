package vfs_test

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/grbd/grbd/internal/vfs"
)

func TestWriteFileAtomicFailures(t *testing.T) {
	for _, c := range []struct {
		failOp  vfs.Op
		want    string // content of /f after the failed write
		dirSync bool   // the error wraps ErrDirSync
	}{
		{vfs.OpOpen, "old", false},
		{vfs.OpSync, "old", false},
		{vfs.OpRename, "old", false},
		{vfs.OpSyncDir, "new", true},
	} {
		t.Run(c.failOp.String(), func(t *testing.T) {
			mem := vfs.NewMem()
			if err := vfs.WriteFileAtomic(mem, "/f", []byte("old")); err != nil {
				t.Fatal(err)
			}
			failing := vfs.WithErrors(mem, func(op vfs.Op, _ string) error {
				if op == c.failOp {
					return syscall.EIO
				}
				return nil
			})
			err := vfs.WriteFileAtomic(failing, "/f", []byte("new"))
			if !errors.Is(err, syscall.EIO) || errors.Is(err, vfs.ErrDirSync) != c.dirSync {
				t.Fatalf("err = %v, want EIO, ErrDirSync %v", err, c.dirSync)
			}
			got, rerr := vfs.ReadFile(mem, "/f")
			if rerr != nil || string(got) != c.want {
				t.Fatalf("/f = %q, %v; want %q", got, rerr, c.want)
			}
			if _, err := mem.Stat("/f.tmp"); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("/f.tmp left behind: %v", err)
			}
		})
	}
}

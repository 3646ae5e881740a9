package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Modes of everything a member creates in its data directory: the device's
// contents, journals and control-plane state are readable by the member's
// user only (issue 15: they were 0644 in 0755 directories).
const (
	DirMode  os.FileMode = 0o700
	FileMode os.FileMode = 0o600
)

// FixModes takes group and other permissions away from dir and everything
// under it (older versions created 0755 directories and 0644 files) and
// reports what it changed, for one warning at start. Symbolic links and
// files of other owners are left alone: a member fixes what it made.
func FixModes(dir string) (fixed []string, err error) {
	uid := os.Getuid()
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
			return nil
		}
		perm := info.Mode().Perm()
		if perm&0o077 == 0 {
			return nil
		}
		want := FileMode
		if d.IsDir() {
			want = DirMode
		}
		// Keep the owner's bits (an executable stays executable for its
		// owner), add the ones the member needs.
		mode := want | perm&0o700
		if err := os.Chmod(path, mode); err != nil {
			return err
		}
		fixed = append(fixed, fmt.Sprintf("%s %#o->%#o", path, perm, mode))
		return nil
	})
	if err != nil {
		return fixed, fmt.Errorf("datadir: fix modes in %s: %w", dir, err)
	}
	return fixed, nil
}

package datadir

import "os"

// Modes of everything a member creates in its data directory: the device's
// contents, journals and control-plane state are readable by the member's
// user only (issue 15: they were 0644 in 0755 directories).
const (
	DirMode  os.FileMode = 0o700
	FileMode os.FileMode = 0o600
)

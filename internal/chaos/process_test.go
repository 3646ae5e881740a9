package chaos

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// An exit the harness did not ask for is a crash unless AcceptExitIf's
// judge explains it from the log; the judge does not excuse other exits.
func TestAcceptExitIf(t *testing.T) {
	diskFault := func(tail string) bool { return diskFaultExit(tail) != "" }
	for _, tc := range []struct {
		name, log string
		accept    bool
		crashed   bool
	}{
		{"no judge", "the control plane cannot persist: no space left on device", false, true},
		{"explained by the fault", "the control plane cannot persist: no space left on device", true, false},
		{"disk failed", "disk failed: write: input/output error", true, false},
		{"not explained", "panic: runtime error", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := startProcess("sh", "/bin/sh", []string{"-c", "echo '" + tc.log + "' >&2; exit 1"}, nil,
				filepath.Join(t.TempDir(), "sh.log"))
			require.NoError(t, err)
			t.Cleanup(p.Kill)
			if tc.accept {
				p.AcceptExitIf(diskFault)
			}
			require.Eventually(t, func() bool { done, _ := p.Exited(); return done }, 10*time.Second, 10*time.Millisecond)
			crashed, tail := p.Crashed()
			require.Equal(t, tc.crashed, crashed, tail)
			if crashed {
				require.True(t, strings.Contains(tail, tc.log), tail)
			}
		})
	}
}

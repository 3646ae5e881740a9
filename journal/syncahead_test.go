package journal

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/vfs"
	"github.com/stretchr/testify/require"
)

// TestRotationFlushesLittle: the active segment is synced in the
// background as it fills, so the fdatasync that rotation runs under the
// append lock (every writer waits for it) finds at most a fraction of a
// segment to flush, not the whole segment.
func TestRotationFlushesLittle(t *testing.T) {
	var j atomic.Pointer[Journal]
	var rotations, worst atomic.Int64
	fs := vfs.WithErrors(vfs.NewMem(), func(op vfs.Op, name string) error {
		// rotate trims the old segment under mu, just before its
		// fdatasync: what is unsynced now is what writers wait for.
		if jj := j.Load(); jj != nil && op == vfs.OpTruncate && strings.HasSuffix(name, ".seg") && !jj.closing.Load() {
			seg := jj.segs[len(jj.segs)-1]
			rotations.Add(1)
			worst.Store(max(worst.Load(), seg.size-seg.synced.Load()))
		}
		return nil
	})
	o := testOptions(fs)
	o.SegmentSize, o.MaxSize = 4<<20, 64<<20
	jj := mustOpen(t, o)
	j.Store(jj)
	data := bytes.Repeat([]byte{7}, 16<<10)
	for i := range 3 * (4 << 20) / len(data) {
		_, err := jj.Append(Write{Offset: int64(i%4) * int64(len(data)), Data: data})
		require.NoError(t, err)
		if i%16 == 0 {
			time.Sleep(time.Millisecond) // a writer that leaves the background sync a moment
		}
	}
	require.GreaterOrEqual(t, rotations.Load(), int64(2))
	require.LessOrEqual(t, worst.Load(), o.SegmentSize/2, "unsynced bytes of a segment at its rotation")
}

package bench

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteFootprints(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeFootprints(&b, nil))
	require.Empty(t, b.String())
	require.NoError(t, writeFootprints(&b, []Footprint{
		{System: SysGrbd3C, WrittenBytes: 100 << 20, SentBytes: 200 << 20, SentPerMiB: 2 << 20, StorageBytes: 3 << 30, StorageRatio: 3},
		{System: SysGrbdEC22, WrittenBytes: 100 << 20, SentBytes: 400 << 20, SentPerMiB: 4 << 20, StorageBytes: 3 << 30, StorageRatio: 3},
	}))
	out := b.String()
	require.Contains(t, out, "peer bytes sent per MiB written")
	require.Regexp(t, `grbd-3n-C\s+100\s+2.00 MiB\s+3072\s+3.00x`, out)
	require.Regexp(t, `grbd-ec2\+2-C\s+100\s+4.00 MiB\s+3072\s+3.00x`, out)
}

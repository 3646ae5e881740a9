package secondary

import (
	"testing"

	"github.com/grbd/grbd/internal/wire"
	"github.com/grbd/grbd/replicator"
	"github.com/stretchr/testify/require"
)

// TestPrimaryWrote: which records a secondary holds past the primary's
// are the primary's own lost writes (refused) and which are another
// primary's unacknowledged ones (rewound).
func TestPrimaryWrote(t *testing.T) {
	resumed := replicator.History{{Epoch: 1, FirstSeq: 1}, {Epoch: 2, FirstSeq: 130}} // a took epoch 2 at seq 130
	for _, tc := range []struct {
		name         string
		epoch, last  uint64
		flags        uint32
		pri          replicator.History
		common, lost uint64
		want         bool
	}{
		{"own epoch past its last", 2, 140, 0, resumed, 140, 2, true},
		{"own epoch inside its journal", 2, 140, 0, resumed, 135, 2, false},
		{"led the epoch before: past its entry", 2, 129, wire.HelloReestablished, resumed, 129, 1, true},
		{"took over from another primary", 2, 129, 0, resumed, 129, 1, false},
		{"led the epoch before, divergence elsewhere", 2, 129, wire.HelloReestablished, resumed, 100, 1, false},
		{"an older epoch than the one it led", 3, 200, wire.HelloReestablished,
			replicator.History{{Epoch: 1, FirstSeq: 1}, {Epoch: 2, FirstSeq: 130}, {Epoch: 3, FirstSeq: 200}}, 199, 1, false},
		{"no epoch before its own", 1, 0, wire.HelloReestablished, replicator.History{{Epoch: 1, FirstSeq: 1}}, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &wire.Hello{Epoch: tc.epoch, LastSeq: tc.last, Flags: tc.flags}
			require.Equal(t, tc.want, primaryWrote(h, tc.pri, tc.common, tc.lost))
		})
	}
}

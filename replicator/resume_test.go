package replicator

import (
	"github.com/grbd/grbd/internal/extent"
	"testing"

	"github.com/stretchr/testify/require"
)

const mib = 1 << 20

// TestResumeRules: the primary honours a report it can check (copies less)
// and ignores, with ErrUntrusted, every report that claims more than it can
// check. A primary that ignored good progress, or trusted a bad one, fails
// here.
func TestResumeRules(t *testing.T) {
	const size = 1024 * mib
	hist := History{{Epoch: 1, FirstSeq: 1}, {Epoch: 4, FirstSeq: 500}}
	src := ResumeSource{Disk: 0xd15c, LastSeq: 2000, Size: size, History: hist}
	good := ResyncProgress{AsOf: 1500, Epoch: 4, Source: 0xd15c, Copied: []extent.Extent{{Offset: 0, Length: 512 * mib}}}
	for _, tc := range []struct {
		name string
		edit func(p *ResyncProgress, s *ResumeSource)
		ok   bool
	}{
		{"checkable report", func(*ResyncProgress, *ResumeSource) {}, true},
		{"position at the primary's last record", func(p *ResyncProgress, _ *ResumeSource) { p.AsOf = 2000 }, true},
		{"copied by another primary's disk", func(p *ResyncProgress, _ *ResumeSource) { p.Source = 0xbeef }, false},
		{"no source", func(p *ResyncProgress, _ *ResumeSource) { p.Source = 0 }, false},
		{"position above the primary's journal", func(p *ResyncProgress, _ *ResumeSource) { p.AsOf = 2001 }, false},
		{"primary lost its tail and restarted in a new epoch", func(_ *ResyncProgress, s *ResumeSource) {
			s.History = append(hist, HistoryEntry{Epoch: 6, FirstSeq: 1200})
		}, false},
		{"position in another epoch", func(p *ResyncProgress, _ *ResumeSource) { p.Epoch = 3 }, false},
		{"epoch zero", func(p *ResyncProgress, s *ResumeSource) { p.Epoch = 0; s.History = nil }, false},
		{"position before the resync began", func(p *ResyncProgress, _ *ResumeSource) { p.AsOf = 100; p.Epoch = 1 }, false},
		{"range past the device", func(p *ResyncProgress, _ *ResumeSource) {
			p.Copied = []extent.Extent{{Offset: size - mib, Length: 2 * mib}}
		}, false},
		{"range wraps", func(p *ResyncProgress, _ *ResumeSource) {
			p.Copied = []extent.Extent{{Offset: ^uint64(0) - 10, Length: 20}}
		}, false},
		{"empty range", func(p *ResyncProgress, _ *ResumeSource) { p.Copied = []extent.Extent{{Offset: mib, Length: 0}} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, s := good, src
			p.Copied = append([]extent.Extent(nil), good.Copied...)
			tc.edit(&p, &s)
			err := s.Check(p, 200)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ErrUntrusted)
			}
		})
	}

	// A trusted report: only the half not copied and what changed after
	// AsOf is copied again.
	all := []extent.Extent{{Offset: 0, Length: size}}
	changed := []extent.Extent{{Offset: 100 * mib, Length: mib}, {Offset: 900 * mib, Length: 2 * mib}}
	cp, kept := Resume(all, good.Copied, changed)
	require.Equal(t, []extent.Extent{{Offset: 100 * mib, Length: mib}, {Offset: 512 * mib, Length: 512 * mib}}, cp)
	require.Equal(t, []extent.Extent{{Offset: 0, Length: 100 * mib}, {Offset: 101 * mib, Length: 411 * mib}}, kept)
	require.LessOrEqual(t, extent.Bytes(cp), uint64(size*6/10))
	// Whatever is copied and kept covers the target: nothing is skipped.
	require.Equal(t, all, extent.Union(cp, kept))
}

// TestOfferNeedsAgreeingHistory: the secondary offers its progress only to
// the primary that copied, when their histories agree up to its position.
func TestOfferNeedsAgreeingHistory(t *testing.T) {
	pri := ResumeSource{Disk: 9, LastSeq: 300, History: History{{Epoch: 2, FirstSeq: 1}}}
	p := ResyncProgress{AsOf: 250, Epoch: 2, Source: 9}
	require.True(t, Offer(p, 10, pri, History{{Epoch: 2, FirstSeq: 1}}))
	require.False(t, Offer(p, 10, pri, History{{Epoch: 2, FirstSeq: 1}, {Epoch: 3, FirstSeq: 200}}), "its records from 200 on are of another epoch")
	other := pri
	other.Disk = 8
	require.False(t, Offer(p, 10, other, History{{Epoch: 2, FirstSeq: 1}}), "another primary")
	behind := pri
	behind.LastSeq = 249
	require.False(t, Offer(p, 10, behind, History{{Epoch: 2, FirstSeq: 1}}), "primary behind the position")
}

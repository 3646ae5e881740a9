package primary

import (
	"testing"
	"time"

	"github.com/grbd/grbd/quorum"
	"github.com/stretchr/testify/require"
)

func verified(r *resumeCheck) bool { return r.done.Load() }

// TestResumeCheck: a resumed role serves once every counted peer completed
// a handshake or is Outdated, and holds a lost peer's Outdate until its
// start-up wait passed; a role promoted in this run serves at once.
func TestResumeCheck(t *testing.T) {
	peers := []string{"b", "c"}
	outdatedC := quorum.State{Outdated: []string{"c"}}
	for _, tc := range []struct {
		name   string
		on     bool
		st     quorum.State
		events func(r *resumeCheck)
		want   bool
	}{
		{"promoted in this run", false, quorum.State{}, func(*resumeCheck) {}, true},
		{"resumed, nobody answered", true, quorum.State{}, func(*resumeCheck) {}, false},
		{"resumed, one of two answered", true, quorum.State{}, func(r *resumeCheck) { r.handshook("b") }, false},
		{"resumed, both answered", true, quorum.State{}, func(r *resumeCheck) { r.handshook("b"); r.handshook("c") }, true},
		{"resumed, an Outdated peer is not waited for", true, outdatedC, func(r *resumeCheck) { r.handshook("b") }, true},
		{"resumed, a peer Outdated later", true, quorum.State{}, func(r *resumeCheck) {
			r.handshook("b")
			r.outdated(outdatedC)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r resumeCheck
			r.begin(tc.on, tc.st, peers, time.Hour)
			tc.events(&r)
			require.Equal(t, tc.want, verified(&r))
		})
	}

	var r resumeCheck
	r.begin(true, quorum.State{}, peers, time.Second)
	now := time.Now()
	require.True(t, r.holdOutdate("b", now), "a peer that has not answered yet is Outdated at once")
	require.False(t, r.holdOutdate("b", now.Add(2*time.Second)), "the start-up wait never ends")
	r.handshook("b")
	require.False(t, r.holdOutdate("b", now), "a peer that answered and was lost later waits for its Outdate")
	var fresh resumeCheck
	fresh.begin(false, quorum.State{}, peers, time.Second)
	require.False(t, fresh.holdOutdate("b", now), "a role promoted in this run holds back an Outdate")
}

package primary

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A verify that outlives the primary's role reports nothing: after a
// failover this node is resynced from the new primary while the peers
// follow it, and a comparison would call regions out of sync that are not.
func TestVerifyStopsWhenTheRoleEnds(t *testing.T) {
	p, _ := newSide(t, &control{}, "q") // q never answers: the verify waits on it
	type result struct {
		res []VerifyResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := p.Verify(t.Context(), false)
		done <- result{res, err}
	}()
	time.Sleep(50 * time.Millisecond)
	p.Stop(errors.New("deposed"))
	select {
	case r := <-done:
		require.ErrorIs(t, r.err, ErrEnded)
		require.Nil(t, r.res, "no verdict from a primary whose role ended")
	case <-time.After(2 * time.Second): // the open alone waits 5 s
		t.Fatal("the verify went on after the role ended")
	}
}

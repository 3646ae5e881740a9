package sidecar

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"

	"github.com/grbd/grbd/internal/extent"
	"github.com/grbd/grbd/internal/vfs"
	"github.com/grbd/grbd/replicator"
)

const dir = "/data"

var errPowerLost = errors.New("power lost")

// crashSeeds is how many crash clones each crash point is checked with.
const crashSeeds = 16

// checkCrashes runs setup, then op with the power lost before its k-th file
// system operation, for every k until op runs whole, and checks every
// state a reboot could find with valid (the old state or the new one).
func checkCrashes(setup, op func(*Store) error, valid func(*Store) error) error {
	for k := 0; ; k++ {
		mem := vfs.NewMem()
		if err := mem.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := mem.SyncDir("/"); err != nil {
			return err
		}
		if err := setup(New(mem, dir)); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		calls := 0
		failing := vfs.WithErrors(mem, func(vfs.Op, string) error {
			if calls >= k {
				return errPowerLost
			}
			calls++
			return nil
		})
		opErr := op(New(failing, dir))
		if opErr != nil && !errors.Is(opErr, errPowerLost) {
			return fmt.Errorf("op: %w", opErr)
		}
		for seed := range uint64(crashSeeds) {
			crashed := mem.CrashClone(rand.New(rand.NewPCG(seed, uint64(k))))
			if err := valid(New(crashed, dir)); err != nil {
				return fmt.Errorf("power lost before operation %d (seed %d): %w", k, seed, err)
			}
		}
		if opErr == nil {
			return nil // op ran whole: every crash point is checked
		}
	}
}

func history(epochs ...uint64) replicator.History {
	var h replicator.History
	for i, e := range epochs {
		h = append(h, replicator.HistoryEntry{Epoch: e, FirstSeq: uint64(i) * 100})
	}
	return h
}

// oneOf accepts a stored history equal to one of want.
func oneOf(want ...replicator.History) func(*Store) error {
	return func(s *Store) error {
		got, err := s.History()
		if err != nil {
			return err
		}
		for _, w := range want {
			if reflect.DeepEqual(got, w) {
				return nil
			}
		}
		return fmt.Errorf("history %v is neither of %v", got, want)
	}
}

func TestHistorySurvivesPowerLoss(t *testing.T) {
	old, next := history(1, 2), history(1, 2, 5)
	cases := []struct {
		name  string
		setup func(*Store) error
		valid func(*Store) error
	}{
		{"first write", func(*Store) error { return nil }, oneOf(nil, next)},
		{"replace", func(s *Store) error { return s.SaveHistory(old) }, oneOf(old, next)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			op := func(s *Store) error { return s.SaveHistory(next) }
			if err := checkCrashes(c.setup, op, c.valid); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestResyncStateSurvivesPowerLoss(t *testing.T) {
	rs := &replicator.ResyncState{From: 7, Extents: []extent.Extent{{Offset: 4096, Length: 8192}}}
	nilOrRS := func(s *Store) error {
		got, err := s.Resync()
		if err != nil {
			return err
		}
		if got != nil && !reflect.DeepEqual(got, rs) {
			return fmt.Errorf("resync state %+v, want none or %+v", got, rs)
		}
		return nil
	}
	none := func(*Store) error { return nil }
	save := func(s *Store) error { return s.SaveResync(rs) }
	clear := func(s *Store) error { return s.SaveResync(nil) }
	if err := checkCrashes(none, save, nilOrRS); err != nil {
		t.Fatalf("save: %v", err)
	}
	if err := checkCrashes(save, clear, nilOrRS); err != nil {
		t.Fatalf("clear: %v", err)
	}
	// Once cleared and synced, it stays cleared.
	mem := vfs.NewMem()
	s := New(mem, dir)
	if err := mem.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(mem.SyncDir("/"), save(s), clear(s)); err != nil {
		t.Fatal(err)
	}
	if got, err := New(mem.CrashClone(rand.New(rand.NewPCG(1, 2))), dir).Resync(); got != nil || err != nil {
		t.Fatalf("after a synced clear: %+v, %v", got, err)
	}
}

func TestMarkersSurvivePowerLoss(t *testing.T) {
	for _, m := range []Marker{Settle, Takeover, FullCopy} {
		none := func(*Store) error { return nil }
		mark := func(s *Store) error { return s.Mark(m, "42\n") }
		unmark := func(s *Store) error { return s.Unmark(m) }
		// Any state is valid mid-way; what is checked is that the end
		// state is durable once the call returned.
		anything := func(*Store) error { return nil }
		if err := checkCrashes(none, mark, anything); err != nil {
			t.Fatal(err)
		}
		mem := vfs.NewMem()
		if err := errors.Join(mem.MkdirAll(dir, 0o755), mem.SyncDir("/")); err != nil {
			t.Fatal(err)
		}
		s := New(mem, dir)
		if err := mark(s); err != nil {
			t.Fatal(err)
		}
		if !New(mem.CrashClone(rand.New(rand.NewPCG(3, 4))), dir).Marked(m) {
			t.Fatalf("%s lost after Mark returned", m)
		}
		if err := unmark(s); err != nil {
			t.Fatal(err)
		}
		if New(mem.CrashClone(rand.New(rand.NewPCG(5, 6))), dir).Marked(m) {
			t.Fatalf("%s back after Unmark returned", m)
		}
		if err := unmark(s); err != nil {
			t.Fatalf("Unmark of a missing marker: %v", err)
		}
	}
}

// The checker can fail: a history written in place (no temporary file, no
// sync before the rename) is found torn or empty after some power loss.
func TestCrashCheckCatchesAnInPlaceWrite(t *testing.T) {
	old, next := history(1, 2), history(1, 2, 5)
	inPlace := func(s *Store) error {
		f, err := s.fs.OpenFile(s.path(HistoryFile), os.O_RDWR|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt(next.Encode(), 0)
		return err
	}
	err := checkCrashes(func(s *Store) error { return s.SaveHistory(old) }, inPlace, oneOf(old, next))
	if err == nil {
		t.Fatal("an in-place history write passed the crash check: the check cannot fail")
	}
	t.Logf("caught as it must be: %v", err)
}

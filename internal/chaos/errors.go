package chaos

import (
	"errors"

	"github.com/grbd/grbd/internal/child"
)

// Errors callers branch on.
var (
	// ErrSkip wraps the reason a scenario cannot run here (not root, no
	// nft, a capability the binary lacks); tests turn it into t.Skip.
	ErrSkip = errors.New("chaos: skipped")
	// ErrCorruptBlock is returned by Codec.Decode for a block that is
	// neither zeroes nor an intact block of this run.
	ErrCorruptBlock = errors.New("chaos: corrupt block")
	// ErrMisplacedBlock is returned by Codec.Decode for an intact block
	// written for another block number.
	ErrMisplacedBlock = errors.New("chaos: block at the wrong offset")
	// ErrExited is returned when a member process exited while the harness
	// waited for it to become ready.
	ErrExited = child.ErrExited
	// ErrNoPrimary is returned while no data node reports itself Primary.
	ErrNoPrimary = errors.New("chaos: no primary")
	// ErrManyPrimaries is returned while more than one data node reports
	// itself Primary (a deposed primary that has not noticed yet, or a
	// split brain).
	ErrManyPrimaries = errors.New("chaos: more than one primary")
	// ErrNothingToDamage is returned by journal faults when the journal has
	// no record of the kind asked for (no unsynced tail, say).
	ErrNothingToDamage = errors.New("chaos: no journal record to damage")
	// ErrTimeout is returned when a wait for a cluster state ends first.
	ErrTimeout = child.ErrTimeout
)

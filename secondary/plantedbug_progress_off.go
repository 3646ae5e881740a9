//go:build !grbd_plantedbug_progress

package secondary

// plantedUnsyncedProgress is the in-place resync's planted bug, off in
// every normal build; see plantedbug_progress_on.go.
const plantedUnsyncedProgress = false

//go:build grbd_plantedbug_progress

package secondary

// plantedUnsyncedProgress, set only by `go test -tags
// grbd_plantedbug_progress`, makes a resync target save progress that names
// in-place copies after a journal sync only, not a checkpoint: the copies
// may not be on disk. TestInPlaceProgressCatchesPlantedBug requires the
// power-loss test to catch it. Never ship it.
const plantedUnsyncedProgress = true

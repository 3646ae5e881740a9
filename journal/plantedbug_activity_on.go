//go:build grbd_plantedbug_activity

package journal

// plantedNoActivityLog, built with -tags grbd_plantedbug_activity, lets
// writes reach data.img without their extents in the activity log, so that
// TestActivityLogCatchesPlantedBug can show the power-loss test fails
// when the ordering it protects is broken.
const plantedNoActivityLog = true

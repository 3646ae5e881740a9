//go:build grbd_plantedbug_imagesync

package journal

// plantedNoImageSync, built with -tags grbd_plantedbug_imagesync, has Sync
// claim extent records durable without syncing their data in data.img.
// TestExtentCatchesPlantedBugs requires the power-loss test to fail with it.
const plantedNoImageSync = true

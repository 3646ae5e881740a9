//go:build grbd_plantedbug_window

package journal

// plantedIgnoreReplayWindow, built with -tags grbd_plantedbug_window, lets a
// write become an extent record although a record that replay applies
// touched its regions: replay then writes the older bytes over it.
// TestExtentCatchesPlantedBugs requires the crash tests to fail with it.
const plantedIgnoreReplayWindow = true

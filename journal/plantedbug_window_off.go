//go:build !grbd_plantedbug_window

package journal

// plantedIgnoreReplayWindow is the planted bug's switch (plantedbug_window_on.go).
const plantedIgnoreReplayWindow = false

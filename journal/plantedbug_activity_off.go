//go:build !grbd_plantedbug_activity

package journal

// plantedNoActivityLog is the planted bug's switch (plantedbug_activity_on.go).
const plantedNoActivityLog = false

//go:build !grbd_plantedbug_imagesync

package journal

// plantedNoImageSync is the planted bug's switch (plantedbug_imagesync_on.go).
const plantedNoImageSync = false

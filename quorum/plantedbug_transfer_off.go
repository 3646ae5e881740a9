//go:build !grbd_plantedbug_transfer

package quorum

// plantedStaleTransfer is the simulation's planted liveness bug, off in
// every normal build; see plantedbug_transfer_on.go.
const plantedStaleTransfer = false

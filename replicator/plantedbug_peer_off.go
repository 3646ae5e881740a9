//go:build !grbd_plantedbug_peer

package replicator

// plantedEarlyCount is the simulation's planted bug in the per-peer rules,
// off in every normal build; see plantedbug_peer_on.go.
const plantedEarlyCount = false

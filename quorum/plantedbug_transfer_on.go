//go:build grbd_plantedbug_transfer

package quorum

// plantedStaleTransfer, set only by `-tags grbd_plantedbug_transfer`, keeps
// a raft leader waiting for a leadership transfer that cannot complete (the
// old behaviour): it drops every proposal, so a failover after the primary
// that asked for leadership died never commits. internal/sim
// (TestSimCatchesPlantedStaleTransfer) builds with this tag and must catch
// it. Never ship it.
const plantedStaleTransfer = true

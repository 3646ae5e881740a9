//go:build grbd_plantedbug_transfer

package sim

import "testing"

// Built only with -tags grbd_plantedbug_transfer
// (quorum/plantedbug_transfer_on.go): a raft leader never gives up a
// leadership transfer to a member that died, and drops every proposal
// meanwhile. The cluster then never fails over: the liveness check must
// notice. TestSimCatchesStaleTransfer runs this.
func TestSimCatchesPlantedStaleTransfer(t *testing.T) {
	requireCaught(t, 1000, func(*Config) {}, "live:")
}

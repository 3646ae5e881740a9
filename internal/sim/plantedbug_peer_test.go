//go:build grbd_plantedbug_peer

package sim

import "testing"

// Built only with -tags grbd_plantedbug_peer (replicator/plantedbug_peer_on.go):
// the shipped peer rules count a peer as caught up as soon as it goes live
// and propose its Clear before it acknowledged the catch-up. A node missing
// acknowledged writes then leaves Outdated and is promoted: the simulation
// must notice. TestSimCatchesPlantedPeerBug runs this.
func TestSimCatchesPlantedEarlyCount(t *testing.T) {
	requireCaught(t, 1000, func(*Config) {}, "acked on primary")
}

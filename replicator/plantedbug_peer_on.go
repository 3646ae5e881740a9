//go:build grbd_plantedbug_peer

package replicator

// plantedEarlyCount, set only by `-tags grbd_plantedbug_peer`, counts a peer
// as caught up as soon as it goes live, as if it already held every write
// queued for it: its Clear is proposed before it acknowledged them, so a
// node that misses acknowledged writes may leave Outdated and be promoted.
// internal/sim (TestSimCatchesPlantedEarlyCount) builds with this tag and
// must catch it. Never ship it.
const plantedEarlyCount = true

//go:build grbd_plantedbug

package primary

// plantedEarlyAck, set only by `go build -tags grbd_plantedbug`, makes the
// primary acknowledge a write as soon as it is journaled locally, without
// waiting for the replication core: protocol C then acks before the peers
// have the write. The fault suite (e2e/chaos_test.go) builds this binary and
// must catch the lost writes. Never ship it.
const plantedEarlyAck = true

//go:build !grbd_plantedbug

package primary

// plantedEarlyAck is the fault suite's planted bug (issue 5), off in every
// normal build; see plantedbug_on.go.
const plantedEarlyAck = false

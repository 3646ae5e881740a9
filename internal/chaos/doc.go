// Package chaos is grbd's black-box fault suite: it runs real `grbd node` (and
// `grbd witness`) processes on per-member loopback addresses, drives a client
// workload over NBD, injects faults (kill -9, SIGSTOP/SIGCONT, nftables
// partitions, toxiproxy latency and bandwidth, full disks, torn and corrupted
// journals, flipped data bits) and checks what the clients saw:
//
//   - linearizability, with github.com/anishathalye/porcupine: one register
//     per 4 KiB block, the history partitioned by block, writes of unknown
//     outcome given a far-future return time (workload.go, linearize.go). A
//     fifth of the requests cover a whole 64 KiB slot of 16 registers, each
//     with its own value, so the journal's large-write path (extent records,
//     in-place writes) runs under every fault; a write in flight may land in
//     part, a block at a time;
//   - durability: every write acknowledged before a successful FLUSH (or with
//     FUA) is visible to every later read (durability.go);
//   - integrity: every block read is zeroes or a block some write wrote, with
//     its CRC intact and at its own offset (block.go).
//
// A Scenario names a cluster shape and a fault schedule; Execute runs one with
// a seed and returns a Report (faults, operations, anomalies, failover
// times), writing porcupine's HTML visualization when linearizability fails.
// The seed fixes every random choice of the workload and of the schedule;
// the interleaving of real processes is not reproducible, so a replay runs
// the same schedule, not the same history.
//
// Pure logic (the codec, the checks, the report) takes times as values; the
// workload and the event log read time through a Clock. Everything that
// touches processes, sockets, nftables or files lives in cluster.go,
// process.go, netfault.go, proxy.go and diskfault.go.
//
// Concurrency: a Cluster, a Workload and an Events log are safe for
// concurrent use; a Scenario's Inject runs on one goroutine while the
// workload's workers run on others.
package chaos

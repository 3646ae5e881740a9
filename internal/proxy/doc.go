// Package proxy is the client side of a grbd cluster that survives a
// failover: a blockdev.Device that forwards every request to the data node
// serving as primary and, when that node goes away (killed, fenced, demoted,
// cut off), finds the new primary and sends again every request that was not
// answered. `grbd proxy` serves it over NBD with blockdev.Server, so any NBD
// client (nbdfuse, qemu, fio, the kernel's nbd-client) keeps its mount across
// a failover and sees a pause instead of an error.
//
// # Rules
//
//   - A request is answered to the client only with the answer of a primary
//     that served it, or with EIO after Options.HoldTimeout without one.
//   - Unanswered WRITE, WRITE_ZEROES and TRIM are sent again with the same
//     offset and data (idempotent); READs are retried.
//   - A FLUSH reaches the proxy only after every write its connection sent
//     before it was answered (blockdev's flush epochs), so a FLUSH answered by
//     the new primary covers every write the client sent before it, re-sent
//     ones included: under protocol C every answered write is journaled on
//     every node that may be promoted, and the new primary's flush makes it
//     durable.
//   - Overlapping requests keep the client's order: the server runs with
//     blockdev.Options.OrderOverlapping, so a re-sent write can never land
//     after a later overlapping write of the same connection.
//   - Errors that describe the request (EINVAL, ENOSPC, ...) are passed on.
//     EIO, EPERM and ESHUTDOWN mean "this node does not serve now" (fenced,
//     demoted, stopping): the request is retried on the primary found next,
//     and passed on only when the same primary, in the same epoch, answers it
//     with an error again.
//
// # Concurrency contract
//
// A Proxy is safe for concurrent use; blockdev calls the Device methods from
// many goroutines. One goroutine (Run) owns finding the primary and
// connecting: requests never dial. A request that finds no session waits for
// the next one; a request whose session broke drops it (closing its
// connection fails every other request in flight on it, which then retry as
// well) and wakes Run.
package proxy

//go:build race

package bufpool

// poison: under the race detector (make test's unit pass), Put fills a
// buffer with poisonByte, so that a use after Put (a message sent after its
// buffer was released) carries bytes no test writes. The race detector
// itself does not see it: the pool's next user is a proper happens-after.
const poison = true

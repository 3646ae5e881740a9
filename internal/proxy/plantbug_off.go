//go:build !grbd_plantbug_flush

package proxy

// plantFlushBug is true only in binaries built with the tag
// grbd_plantbug_flush, which e2e's TestProxyResendRules builds to show that
// it catches a proxy that answers a FLUSH before the unanswered writes were
// sent again.
const plantFlushBug = false

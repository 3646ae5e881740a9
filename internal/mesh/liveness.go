package mesh

import "time"

// Liveness (issue 15). A link that goes silent (a cut cable, a one-way
// firewall rule, a SIGSTOPped peer) sends no FIN and no RST: nothing on
// the connection says it is dead. Three things bound how long it lives:
//
//   - yamux keepalives every KeepAlive, each answered within
//     ConnectionWriteTimeout or the session ends: an idle silent link
//     ends within KeepAlive + ConnectionWriteTimeout = PeerTimeout;
//   - a frame that the send loop cannot hand to the connection within
//     ConnectionWriteTimeout (the peer takes no bytes) ends it too;
//   - a user of the mesh that knows sooner (the primary's watchdog: a
//     counted peer acknowledged nothing for peer-timeout) calls Drop.
//
// Ending a session closes its TCP connection first: every Read and Write
// on every stream of the session returns at once, and yamux's own Close
// cannot wait on a send queue that the dead connection no longer drains.
// A closed stream (readerConn.Close) likewise unblocks its own reader at
// once instead of waiting for a FIN.
//
// The price: a link must carry a stream window's worth of queued bytes
// (StreamWindow, 4 MiB) and a keepalive answer within PeerTimeout minus
// KeepAlive, or it is taken for dead; at 1 Gbit/s that is 0.03 s.

// minWriteTimeout is the least ConnectionWriteTimeout: below it a busy
// host's scheduling hiccups would end healthy sessions.
const minWriteTimeout = 250 * time.Millisecond

// keepAliveFor is the keepalive interval for a peer timeout.
func keepAliveFor(peerTimeout time.Duration) time.Duration {
	return max(peerTimeout/4, 50*time.Millisecond)
}

// writeTimeoutFor is yamux's ConnectionWriteTimeout: with the keepalive
// interval it makes up the peer timeout.
func writeTimeoutFor(peerTimeout, keepAlive time.Duration) time.Duration {
	return max(peerTimeout-keepAlive, minWriteTimeout)
}

// Drop ends the session with peer now, if there is one, closing its TCP
// connection: use it when the peer is known to be dead or wedged. The
// dialing side redials as after any lost session. It reports whether a
// session was dropped.
func (m *Mesh) Drop(peer, why string) bool {
	m.mu.Lock()
	p := m.peers[peer]
	if p == nil || p.sess == nil {
		m.mu.Unlock()
		return false
	}
	sess, conn := p.sess, p.conn
	// Unregistered at once: Connected and Open stop using it now, not
	// when the session's goroutines have noticed.
	p.sess, p.conn = nil, nil
	p.up = make(chan struct{})
	m.mu.Unlock()
	m.log.Warn("dropping peer session", "peer", peer, "why", why)
	conn.Close()
	sess.Close()
	return true
}

package quorum

// RequestDurable asks, as primary, for seq to be recorded as State.Durable:
// a completed FLUSH made every write up to seq durable on this node and on
// every peer that is not Outdated (docs/quorum.md, "Writes recorded as
// flushed"). The driver asks again as the watermark moves; a request that
// is lost or overtaken is simply asked again, and one at or below the
// recorded value is dropped.
func (m *Member) RequestDurable(seq uint64) {
	if !m.IsPrimary() || seq <= m.state.Durable {
		return
	}
	delete(m.lastPropose, "durable") // a new value goes out at once
	m.propose("durable", Command{Type: CmdDurable, By: m.self, Epoch: m.state.Epoch, Seq: seq})
}

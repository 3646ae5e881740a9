package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// stats are the proxy's counters; every field is atomic.
type stats struct {
	requests       atomic.Uint64 // block requests received
	held           atomic.Uint64 // requests that had to wait for a (new) primary at least once
	resent         atomic.Uint64 // attempts after the first (re-sent or retried)
	expired        atomic.Uint64 // requests failed with EIO after the hold timeout
	failovers      atomic.Uint64 // sessions installed after a lost one
	noPrimaryNanos atomic.Int64  // total time between a lost session and the next
	maxGapNanos    atomic.Int64  // longest such time
}

func (s *stats) maxGap(d time.Duration) {
	for {
		old := s.maxGapNanos.Load()
		if int64(d) <= old || s.maxGapNanos.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// Status is a snapshot of the proxy for operators (GET /status of the
// proxy's admin endpoint). Fields are only ever added.
type Status struct {
	Primary  string `json:"primary"` // the node followed; "" while none serves
	NBD      string `json:"nbd,omitempty"`
	Epoch    uint64 `json:"epoch,omitempty"`
	Size     int64  `json:"device_size"`
	Requests uint64 `json:"requests"`
	Held     uint64 `json:"requests_held"`
	Resent   uint64 `json:"requests_resent"`
	Expired  uint64 `json:"requests_expired"`
	// Failovers counts switches to a primary after a lost one.
	Failovers uint64 `json:"failovers"`
	// WithoutPrimary is the time without a primary so far: the current gap
	// (WithoutPrimaryNow) plus every past one.
	WithoutPrimary    float64 `json:"without_primary_seconds"`
	WithoutPrimaryNow float64 `json:"without_primary_now_seconds"`
	LongestGap        float64 `json:"longest_without_primary_seconds"`
}

// Status returns the proxy's state and counters.
func (p *Proxy) Status() Status {
	p.mu.Lock()
	s, lost := p.cur, p.lost
	p.mu.Unlock()
	st := Status{
		Size: p.Size(), Requests: p.stats.requests.Load(), Held: p.stats.held.Load(),
		Resent: p.stats.resent.Load(), Expired: p.stats.expired.Load(), Failovers: p.stats.failovers.Load(),
		WithoutPrimary: time.Duration(p.stats.noPrimaryNanos.Load()).Seconds(),
		LongestGap:     time.Duration(p.stats.maxGapNanos.Load()).Seconds(),
	}
	if s != nil {
		st.Primary, st.NBD, st.Epoch = s.prim.Name, s.prim.Addr, s.prim.Epoch
	} else if !lost.IsZero() {
		st.WithoutPrimaryNow = time.Since(lost).Seconds()
		st.WithoutPrimary += st.WithoutPrimaryNow
	}
	return st
}

// Handler serves GET /status (JSON) and GET /metrics (Prometheus text).
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.Status())
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		st := p.Status()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		following := 0
		if st.Primary != "" {
			following = 1
		}
		fmt.Fprintf(w, "# HELP grbd_proxy_requests_total Block requests received by the proxy.\n# TYPE grbd_proxy_requests_total counter\ngrbd_proxy_requests_total %d\n", st.Requests)
		fmt.Fprintf(w, "# HELP grbd_proxy_requests_held_total Requests that waited for a new primary.\n# TYPE grbd_proxy_requests_held_total counter\ngrbd_proxy_requests_held_total %d\n", st.Held)
		fmt.Fprintf(w, "# HELP grbd_proxy_requests_resent_total Requests sent again after a lost primary.\n# TYPE grbd_proxy_requests_resent_total counter\ngrbd_proxy_requests_resent_total %d\n", st.Resent)
		fmt.Fprintf(w, "# HELP grbd_proxy_requests_expired_total Requests failed with EIO after the hold timeout.\n# TYPE grbd_proxy_requests_expired_total counter\ngrbd_proxy_requests_expired_total %d\n", st.Expired)
		fmt.Fprintf(w, "# HELP grbd_proxy_failovers_total Switches to a new primary.\n# TYPE grbd_proxy_failovers_total counter\ngrbd_proxy_failovers_total %d\n", st.Failovers)
		fmt.Fprintf(w, "# HELP grbd_proxy_without_primary_seconds_total Time without a primary.\n# TYPE grbd_proxy_without_primary_seconds_total counter\ngrbd_proxy_without_primary_seconds_total %g\n", st.WithoutPrimary)
		fmt.Fprintf(w, "# HELP grbd_proxy_following Whether the proxy follows a primary, by name.\n# TYPE grbd_proxy_following gauge\ngrbd_proxy_following{primary=%q} %d\n", st.Primary, following)
	})
	return mux
}

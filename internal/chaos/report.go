package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Outage is a stretch during which a workload connection could not complete
// operations: from its first failure to its next success. When the member
// serving it changed, it is a failover.
type Outage struct {
	Conn     int           `json:"conn"`
	From     string        `json:"from"`
	To       string        `json:"to"`
	Start    time.Duration `json:"start"`
	End      time.Duration `json:"end"`
	Failover bool          `json:"failover"`
}

// Duration is End - Start.
func (o Outage) Duration() time.Duration { return o.End - o.Start }

// Report is the result of one scenario run.
type Report struct {
	Scenario  string        `json:"scenario"`
	Seed      uint64        `json:"seed"`
	Binary    string        `json:"binary"`
	Duration  time.Duration `json:"duration"`
	Events    []Event       `json:"events"`
	Faults    int           `json:"faults"`
	Ops       OpCounts      `json:"ops"`
	Eras      []EraResult   `json:"linearizability"`
	Anomalies []Anomaly     `json:"anomalies"`
	// Expected lists anomaly kinds the scenario expects (a known gap the
	// suite must detect); they do not fail the run.
	Expected []string `json:"expected,omitempty"`
	Outages  []Outage `json:"outages,omitempty"`
	// Notes are scenario observations that are not anomalies.
	Notes []string `json:"notes,omitempty"`
	// Inconclusive is set when a linearizability check timed out.
	Inconclusive  bool   `json:"inconclusive,omitempty"`
	Visualization string `json:"visualization,omitempty"`
	Dir           string `json:"dir,omitempty"`
}

// Failed lists the anomalies that fail the run (those not expected).
func (r *Report) Failed() []Anomaly {
	var out []Anomaly
	for _, a := range r.Anomalies {
		if !r.expects(a.Kind) {
			out = append(out, a)
		}
	}
	return out
}

// OK reports a run without unexpected anomalies. An inconclusive check
// does not fail a run, but Summary says so.
func (r *Report) OK() bool { return len(r.Failed()) == 0 }

func (r *Report) expects(kind string) bool {
	for _, k := range r.Expected {
		if k == kind {
			return true
		}
	}
	return false
}

// Found reports whether an anomaly of kind was found.
func (r *Report) Found(kind string) bool {
	for _, a := range r.Anomalies {
		if a.Kind == kind {
			return true
		}
	}
	return false
}

// Replay is the command that replays this run's schedule.
func (r *Report) Replay() string {
	return fmt.Sprintf("make chaos SEED=%d SCENARIO=%s", r.Seed, r.Scenario)
}

// Summary is a human-readable report.
func (r *Report) Summary() string {
	var b strings.Builder
	verdict := "OK"
	if !r.OK() {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "scenario %s seed %d: %s in %.1fs (replay: %s)\n", r.Scenario, r.Seed, verdict, r.Duration.Seconds(), r.Replay())
	o := r.Ops
	fmt.Fprintf(&b, "operations: %d writes (%d ok, %d failed, %d unknown; longest ack %.3fs), %d reads (%d ok, %d torn), %d flushes (%d ok)\n",
		o.Writes, o.WritesOK, o.WritesFailed, o.WritesUnknown, o.MaxWriteLatency.Seconds(), o.Reads, o.ReadsOK, o.TornReads, o.Flushes, o.FlushesOK)
	if len(o.Errors) > 0 {
		keys := make([]string, 0, len(o.Errors))
		for k := range o.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("errors seen:")
		for _, k := range keys {
			fmt.Fprintf(&b, " %q x%d;", k, o.Errors[k])
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "faults injected: %d\n", r.Faults)
	for _, e := range r.Events {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	for _, e := range r.Eras {
		fmt.Fprintf(&b, "linearizability era %d: %s over %d ops", e.Era, e.Result, e.Ops)
		if len(e.Blocks) > 0 {
			fmt.Fprintf(&b, " (blocks %v)", e.Blocks)
		}
		b.WriteString("\n")
	}
	if r.Inconclusive {
		b.WriteString("WARNING: a linearizability check timed out: the verdict is inconclusive\n")
	}
	for _, o := range r.Outages {
		kind := "outage"
		if o.Failover {
			kind = "failover"
		}
		fmt.Fprintf(&b, "%s conn %d: %s -> %s at %.3fs, %.3fs\n", kind, o.Conn, o.From, o.To, o.Start.Seconds(), o.Duration().Seconds())
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	fmt.Fprintf(&b, "anomalies: %d", len(r.Anomalies))
	if len(r.Expected) > 0 {
		fmt.Fprintf(&b, " (expected kinds: %s)", strings.Join(r.Expected, ", "))
	}
	b.WriteString("\n")
	const maxShown = 20
	for i, a := range r.Anomalies {
		if i == maxShown {
			fmt.Fprintf(&b, "  ... %d more in report.json\n", len(r.Anomalies)-maxShown)
			break
		}
		fmt.Fprintf(&b, "  %s block %d: %s\n", a.Kind, a.Block, a.Detail)
	}
	if r.Visualization != "" {
		fmt.Fprintf(&b, "visualization: %s\n", r.Visualization)
	}
	return b.String()
}

// Write stores report.json and report.txt in dir, and the visualization of
// the first illegal era as linearizability.html.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("chaos: report dir: %w", err)
	}
	r.Dir = dir
	for _, e := range r.Eras {
		if e.Result == "Illegal" {
			p := filepath.Join(dir, "linearizability.html")
			if err := e.Visualize(p); err != nil {
				return fmt.Errorf("chaos: visualization: %w", err)
			}
			r.Visualization = p
			break
		}
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("chaos: encode report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), js, 0o644); err != nil {
		return fmt.Errorf("chaos: write report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.txt"), []byte(r.Summary()), 0o644); err != nil {
		return fmt.Errorf("chaos: write report: %w", err)
	}
	return nil
}

// Analyze fills the report's checks from a history: operation counts,
// linearizability per era, durability and integrity anomalies.
func (r *Report) Analyze(ops []Op, freshStart bool, timeout time.Duration) {
	r.Ops = Count(ops)
	r.Eras = CheckLinearizable(ops, freshStart, timeout)
	for _, e := range r.Eras {
		switch e.Result {
		case "Illegal":
			r.Anomalies = append(r.Anomalies, Anomaly{Kind: AnomalyLinearizability, Block: firstOr(e.Blocks, -1),
				Detail: fmt.Sprintf("era %d: no linearization of %d ops; blocks %v", e.Era, e.Ops, e.Blocks)})
		case "Unknown":
			r.Inconclusive = true
		}
	}
	r.Anomalies = append(r.Anomalies, CheckDurability(ops)...)
	for _, e := range r.Events {
		if IsFault(e.Kind) {
			r.Faults++
		}
	}
}

func firstOr(xs []int, def int) int {
	if len(xs) == 0 {
		return def
	}
	return xs[0]
}

#!/usr/bin/env bash
# failure-summary.sh LOG: reprint, at the end of a failed `go test -v` run,
# what each failure said. Parallel tests stream their logs as they go, so the
# assertion and a chaos run's anomalies can sit far above the last lines a CI
# page shows; this puts them back at the bottom.
set -uo pipefail
log=${1:?usage: failure-summary.sh LOG}
[ -r "$log" ] || { echo "failure-summary: no log at $log"; exit 0; }
echo
echo "=================== failure summary (full log: $log) ==================="
grep -E '^\s*--- FAIL' "$log" | head -40
echo "--- assertions:"
# testify's block: "Error Trace:" and the tab-indented lines after it.
awk '/^[ ]+\tError Trace:/ {on=1; print "--"; next}
     on && /^[ ]+\t/ {if ($0 !~ /^[ ]+\tTest:/) print; next}
     {on=0}' "$log" | head -150
echo "--- chaos anomalies:"
# a report's first line names the run; its anomaly lines follow the count.
# The planted-bug run (TestChaosCatchesPlantedBug) must find anomalies.
awk '/against the planted bug/ {planted=1}
     /^[ ]+scenario .* seed [0-9]+:/ {run=$0; skip=planted; planted=0}
     /^[ ]+anomalies: [1-9]/ && !skip {print "--"; print run; print; on=30; next}
     /^(=== |--- |[ ]+--- |[ ]+[a-z_]+_test\.go:)/ {on=0}
     on > 0 {print; on--}' "$log" | head -100
echo "--- panics and races:"
grep -E -A12 '^(panic:|WARNING: DATA RACE)' "$log" | head -60
echo "========================================================================"

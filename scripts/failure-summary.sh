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
echo "--- last words of each failed test (a t.Fatalf is not a testify block):"
# go test -v names the test whose output follows (=== RUN/CONT/NAME); keep
# each test's last _test.go line that came before its member logs, then
# print it with its continuation lines for the tests that failed.
awk '/^=== (RUN|CONT|NAME)[ ]/ {cur=$3; grab=0; next}
     /^[ ]+[A-Za-z0-9_]+_test\.go:[0-9]+: --- log of / {done[cur]=1; grab=0; next}
     /^[ ]+[A-Za-z0-9_]+_test\.go:[0-9]+: / { if (!done[cur]) {last[cur]=$0; grab=1} else grab=0; next}
     grab && /^        / && !done[cur] {if (length(last[cur]) < 4000) last[cur]=last[cur] "\n" $0; next}
     {grab=0}
     /^[ ]*--- FAIL: / {failed[$3]=1}
     END {for (t in failed) if (t in last) {print "-- " t; print last[t]}}' "$log" | head -80
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

#!/usr/bin/env bash
# Runs each test program given, prints its output, and ends with the totals of
# their "N passed, M failed" lines. Exits non-zero if any test failed or a
# program ended without its summary line (a crash counts as one failure).
set -u
total_pass=0; total_fail=0
for t in "$@"; do
  echo "=== $t"
  out=$(./"$t" 2>&1); rc=$?
  echo "$out"
  last=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
  if [ -z "$last" ]; then
    echo "FAIL $t ended without a summary line (exit $rc)"
    total_fail=$((total_fail + 1)); continue
  fi
  p=$(echo "$last" | cut -d' ' -f1); f=$(echo "$last" | cut -d' ' -f3)
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $t exited $rc"; total_fail=$((total_fail + 1))
  fi
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]

#!/usr/bin/env bash
# Runs each test program given, prints its output, and ends with the totals of
# their "N passed, M failed" lines. Exits non-zero if any test failed or a
# program ended without its summary line (a crash counts as one failure).
source "$(dirname "$0")/testlib.sh"
for t in "$@"; do
  echo "=== $t"
  out=$(./"$t" 2>&1); rc=$?
  echo "$out"
  add_summary "$t" $rc "$out"
done
summary

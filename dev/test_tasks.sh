#!/usr/bin/env bash
# The synthetic tasks' data (dev/data/synthetic.py): its self-tests (both
# tasks' layout, the task file round trip, bad files refused), the same flags
# writing the same bytes, and bad flags refused with one error line. Ends
# with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup
out=$($PYTHON dev/data/synthetic.py --selftest 2>&1); rc=$?
echo "$out"
add_summary "synthetic.py --selftest" $rc "$out"
for task in copy induction; do
  for d in a b; do
    $PYTHON dev/data/synthetic.py --task $task --out "$W/$d" --train 64 --val 8 --test 8 --test-lengths 6-8 \
      --test-tokens 4096 > /dev/null || fail "$task: writing the sets failed"
  done
  if [ -n "$(ls "$W/a")" ] && diff -r "$W/a" "$W/b" > /dev/null; then
    ok "$task: the same flags write the same bytes ($(ls "$W/a" | wc -l) files)"
  else
    fail "$task: two writes differ"
  fi
  rm -rf "$W/a" "$W/b"
done
WATCH="c"  # the output directory must not appear
expect "selective copying with T below 2K" "T >= 2K" $PYTHON dev/data/synthetic.py --task copy --T 16 --K 16 --out "$W/c"
summary

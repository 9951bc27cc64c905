#!/usr/bin/env bash
# Runs each test given, prints its output, and ends with the totals of their
# "N passed, M failed" lines. Exits non-zero if any test failed or a program
# ended without its summary line (a crash counts as one failure).
#
# Test programs run TEST_JOBS at a time (default: one per core), each with
# OMP_NUM_THREADS = cores / TEST_JOBS, their outputs printed in the order
# given: the tests use small shapes, where two single-threaded programs finish
# sooner than one program on two threads. Scripts (*.sh, which drive the
# trainers and time a kill) run one after another on all cores, with OpenMP's
# threads sleeping rather than spinning while they wait (OMP_WAIT_POLICY
# passive, unless set), which keeps them fast on a machine shared with other
# work.
source "$(dirname "$0")/testlib.sh"
cores=$(nproc)
jobs=${TEST_JOBS:-$cores}
threads=$(( cores / jobs > 0 ? cores / jobs : 1 ))
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

programs=(); scripts=()
for t in "$@"; do [[ $t == *.sh ]] && scripts+=("$t") || programs+=("$t"); done

# start the programs, at most $jobs at once; each writes DIR/i.out and DIR/i.rc
i=0
for t in "${programs[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  ( OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} ./"$t" > "$dir/$i.out" 2>&1; echo $? > "$dir/$i.rc" ) &
  i=$((i + 1))
done
wait
i=0
for t in "${programs[@]}"; do
  echo "=== $t"
  out=$(cat "$dir/$i.out"); rc=$(cat "$dir/$i.rc")
  echo "$out"
  add_summary "$t" "$rc" "$out"
  i=$((i + 1))
done
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
for t in "${scripts[@]}"; do
  echo "=== $t"
  out=$(./"$t" 2>&1); rc=$?
  echo "$out"
  add_summary "$t" $rc "$out"
done
summary

#!/usr/bin/env bash
# The GPU check's rehearsal (dev/gpu_check.sh under GPU_CHECK_DRY=1) with a
# deadline too short for its stages: it must end within the deadline (plus
# the few seconds a stage takes to be killed), cut or skip the stages that do
# not fit, and still leave a summary file in $OUT with the lines of the
# stages that ran; and --prepare's folder must fit the device's 64 MiB.
# Needs the test programs and trainers built. Ends with "N passed, M failed".
source "$(dirname "$0")/testlib.sh"
test_setup
deadline=45
t0=$(date +%s)
GPU_CHECK_DRY=1 GPU_CHECK_DEADLINE_S=$deadline OUT="$W/out" dev/gpu_check.sh > "$W/log" 2>&1
rc=$?
took=$(( $(date +%s) - t0 ))
summary_file=$W/out/summary.txt
[ $took -le $((deadline + 15)) ] && ok "the rehearsal ended after $took s (deadline $deadline s)" ||
  fail "the rehearsal took $took s, past its $deadline s deadline"
[ $rc -eq 0 ] && ok "it exited 0" || fail "it exited $rc"
if [ -s "$summary_file" ]; then
  ok "summary file written: $(wc -l < "$summary_file") lines"
else
  fail "no summary file in \$OUT"
fi
for stage in machine data build test_backend; do
  line=$(grep "^$stage " "$summary_file" 2>/dev/null | head -n 1 | tr -s ' ')
  [ -n "$line" ] && ok "summary has the $stage line: $line" || fail "summary lacks the $stage line"
done
# the programs are built already: the data and build stages finish, and the first test passes
for stage in data build; do
  grep -qE "^$stage +ok" "$summary_file" 2>/dev/null && ok "the $stage stage succeeded" || fail "the $stage stage did not succeed"
done
grep -qE "^test_backend +[0-9]+ passed, 0 failed" "$summary_file" 2>/dev/null && ok "test_backend passed in the rehearsal" ||
  fail "test_backend did not pass in the rehearsal"
cut=$(grep -cE 'cut off|not started' "$summary_file" 2>/dev/null)
[ "${cut:-0}" -ge 1 ] && ok "$cut stages or runs cut off or not started by the deadline" ||
  fail "no stage was cut at a $deadline s deadline"
tail -n "$(wc -l < "$summary_file")" "$W/log" | cmp -s - "$summary_file" && ok "the summary is printed last" ||
  fail "the output does not end with the summary"
[ -s "$W/out/tests.log" ] && ok "the tests stage's log is in \$OUT" || fail "no tests.log in \$OUT"
# what --prepare leaves to send must fit the device's 64 MiB
prepared=$(dev/gpu_check.sh --prepare 2>&1 | grep '^prepared')
mib=$(echo "$prepared" | sed -n 's/.* \([0-9]*\) MiB .*/\1/p')
[ -n "$mib" ] && [ "$mib" -le 64 ] && ok "--prepare: $prepared" || fail "--prepare: '$prepared'"
summary

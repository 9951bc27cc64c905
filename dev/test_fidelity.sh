#!/usr/bin/env bash
# The tests under the host backend's fidelity switches (llmc/host_backend.h),
# which make the CPU show what a GPU would: the test programs with blocks and
# threads in reversed and in random order and with the GPU build's kernel
# variants; test_backend with TF32 products (the model tests join that run
# once their reference tolerance is tf32_tolerance(1e-4, 2e-2)); the script
# tests as the trainers run on a GPU, with the GPU's variants and TF32 on the
# handles that ask for it (HOST_TF32=handle), but for dev/test_resume.sh
# (500 s of CPU with the chunked scan in fibers, and its 10 s window to kill a
# run after its step-20 checkpoint is too short at that speed). Allocations
# are poisoned (NaN) in every run. Prints each program's summary and failures
# (full logs in build/fidelity/), then one line per run; exits non-zero when
# any run had a failure.
#
# The lists come from the environment (`make test-fidelity` sets them):
#   TESTS                the test programs
#   FIDELITY_RUNS        settings, each one run of TESTS (several separated by commas)
#   FIDELITY_TF32_TESTS  the programs run once more with HOST_TF32=1
#   FIDELITY_SCRIPTS     the script tests, run with HOST_VARIANTS=gpu,HOST_TF32=handle
: "${TESTS:?set TESTS (make test-fidelity sets it)}" "${FIDELITY_RUNS:?set FIDELITY_RUNS}"
: "${FIDELITY_TF32_TESTS:?set FIDELITY_TF32_TESTS}" "${FIDELITY_SCRIPTS:?set FIDELITY_SCRIPTS}"
cd "$(dirname "$0")/.."
mkdir -p build/fidelity; rm -f build/fidelity/summary; start=$(date +%s)
# run SETTINGS KIND "TESTS": one dev/run_tests.sh under SETTINGS (comma separated), its log in build/fidelity/
run() {
  log=build/fidelity/$(echo "$1-$2" | tr -c 'a-zA-Z0-9_\n-' _).log; t0=$(date +%s)
  echo "##### $1 ($2)"; env $(echo $1 | tr , ' ') dev/run_tests.sh $3 > $log 2>&1
  grep -E '^(=== |FAIL|[0-9]+ passed, [0-9]+ failed$)' $log
  echo "$1 ($2): $(tail -n 1 $log), $(( $(date +%s) - t0 )) s" >> build/fidelity/summary
}
for r in $FIDELITY_RUNS; do run $r programs "$TESTS"; done
run HOST_TF32=1 programs "$FIDELITY_TF32_TESTS"
run HOST_VARIANTS=gpu,HOST_TF32=handle scripts "$FIDELITY_SCRIPTS"
echo "##### test-fidelity, $(( $(date +%s) - start )) s:"; cat build/fidelity/summary
! grep -qv ' 0 failed, ' build/fidelity/summary

# What the test scripts share; sourced (source "$(dirname "$0")/testlib.sh").
#   ok MSG, fail MSG        print "ok   MSG" / "FAIL MSG" and count a pass / a failure
#   summary                 prints "N passed, M failed"; returns non-zero after a failure
#   abort MSG               fail MSG, summary, exit 1 (setup that the cases cannot run without)
#   add_summary NAME RC OUT adds the last "N passed, M failed" line of OUT (the output of
#                           a program that exited RC) to the counts; no such line counts one
#                           failure, and so does a non-zero exit with no failure counted
#   test_setup              cd to the repository root, PYTHON (default /usr/bin/python3),
#                           W = a fresh directory removed on exit
#   expect NAME WANT CMD... CMD must fail with exactly one stderr line that starts "error:"
#                           and contains WANT, a non-zero exit that is not a signal (< 128),
#                           and no change to the files under the directories $WATCH
#                           (names relative to $W)
#   expect_ok NAME WANT CMD...
#                           CMD must succeed (exit 0) with WANT in its output (stdout and stderr),
#                           no "error:" line, and no change to the files under $WATCH
#   step_lines              filters a trainer's output to its "step k/n: train loss X | lr ..
#                           | norm .." lines, without the times
#   log_lines DIR           DIR/log.jsonl read as one run (formats.read_log: a resumed run's lines
#                           replace those after its checkpoint), one JSON object a line, without
#                           the times (elapsed_s, the throughputs *_per_s)
#   random_lm_data SEED NT NV
#                           writes $W/vocab.bin (65 one-byte tokens) and $W/train.bin,
#                           $W/val.bin of NT and NV uniform random tokens (numpy seed SEED)
set -u
n_pass=0
n_fail=0

ok() { echo "ok   $*"; n_pass=$((n_pass + 1)); }
fail() { echo "FAIL $*"; n_fail=$((n_fail + 1)); }
summary() { echo "$n_pass passed, $n_fail failed"; [ "$n_fail" -eq 0 ]; }
abort() { fail "$@"; summary; exit 1; }

add_summary() {
  local name=$1 rc=$2 out=$3 last p f
  last=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
  if [ -z "$last" ]; then
    fail "$name ended without a summary line (exit $rc)"
    return
  fi
  p=$(echo "$last" | cut -d' ' -f1); f=$(echo "$last" | cut -d' ' -f3)
  n_pass=$((n_pass + p)); n_fail=$((n_fail + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail "$name exited $rc"; fi
}

test_setup() {
  cd "$(dirname "$0")/.." || exit 1
  PYTHON=${PYTHON:-/usr/bin/python3}
  W=$(mktemp -d)
  trap 'rm -rf "$W"' EXIT
}

WATCH=""
_watched() { (cd "$W" && find $WATCH -type f -exec md5sum {} + 2>/dev/null | sort); }

expect() {
  local name=$1 want=$2; shift 2
  local before after rc lines msg
  before=$(_watched)
  "$@" >"$W/out" 2>"$W/err"; rc=$?
  after=$(_watched)
  lines=$(wc -l < "$W/err")
  msg=$(head -n 1 "$W/err")
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$lines" -eq 1 ] && [[ "$msg" == error:* ]] && [[ "$msg" == *"$want"* ]] && [ "$before" == "$after" ]; then
    ok "$name: exit $rc: $msg"
  else
    fail "$name: exit $rc, $lines stderr lines, first: '$msg' (wanted it to name '$want'; outputs unchanged: $([ "$before" == "$after" ] && echo yes || echo no))"
  fi
}

expect_ok() {
  local name=$1 want=$2; shift 2
  local before after rc
  before=$(_watched)
  "$@" >"$W/out" 2>&1; rc=$?
  after=$(_watched)
  if [ $rc -eq 0 ] && grep -qF -- "$want" "$W/out" && ! grep -q '^error:' "$W/out" && [ "$before" == "$after" ]; then
    ok "$name: $(grep -F -- "$want" "$W/out" | head -n 1)"
  else
    fail "$name: exit $rc, wanted '$want' in the output (found: $(grep -qF -- "$want" "$W/out" && echo yes || echo no); outputs unchanged: $([ "$before" == "$after" ] && echo yes || echo no)); last line: '$(tail -n 1 "$W/out")'"
  fi
}

step_lines() { grep -E '^step ' | sed 's/ | [0-9.]* ms | .*//'; }

log_lines() {
  $PYTHON - "$1" <<'PY'
import json, sys
sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import formats
for row in formats.read_log(sys.argv[1]):
    print(json.dumps({k: v for k, v in row.items() if k != "elapsed_s" and not k.endswith("_per_s")}))
PY
}

random_lm_data() {
  $PYTHON - "$W" "$@" <<'PY' || abort "cannot write test data"
import sys
sys.path.insert(0, "dev/reference"); sys.dont_write_bytecode = True
import numpy as np, formats
w, (seed, n_train, n_val) = sys.argv[1], map(int, sys.argv[2:5])
rng = np.random.default_rng(seed)
formats.write_vocab(f"{w}/vocab.bin", [chr(c) for c in range(32, 97)])
formats.write_tokens(f"{w}/train.bin", rng.integers(0, 65, n_train), 65)
formats.write_tokens(f"{w}/val.bin", rng.integers(0, 65, n_val), 65)
PY
}

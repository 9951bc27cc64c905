"""
The Mamba paper's synthetic tasks (section 4.1) as task files: fixed-length
sequences with an input token and a target per position, most targets
ignored. Seeded and deterministic: the same flags write the same bytes.

Selective copying (--task copy): a sequence of length T holds K data tokens
at random positions of its first T - K positions, noise (token 0) elsewhere;
its last K positions hold the marker (token V - 1), and their targets are the
K data tokens in order. Data tokens are drawn from 1 .. V - 2. A model must
select the data tokens and skip the noise, which a time-invariant recurrence
cannot do.

Induction heads (--task induction): random tokens from 0 .. V - 2; at one
random position the trigger (token V - 1) is followed by a key token; the
last position holds the trigger again, and its target is the key. The
trigger appears nowhere else. Test sets at lengths 2^6 .. 2^20 (--test-lengths)
measure how far past its training length a model recalls the key.

    python3 dev/data/synthetic.py --task copy --out data               # T 256, K 16, V 16
    python3 dev/data/synthetic.py --task induction --out data          # T 256, V 16, test lengths 2^6 .. 2^20
    python3 dev/data/synthetic.py --selftest

writes <out>/<task>_train.bin, <task>_val.bin and <task>_test.bin; for
induction also <task>_test_<length>.bin per test length.

Task file (doc/data.md): a header of 256 little-endian int32: magic
20261107, version 1, [2] sequences S, [3] length T, [4] vocabulary V,
[5] task (1 copy, 2 induction), [6] targets per sequence (K, or 1); then per
sequence T uint16 inputs and T uint16 targets, IGNORE (65535) where a
position has no target. Every input and every other target is below V.
"""
import argparse
import os
import sys

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
from checks import Checks  # noqa: E402

MAGIC = 20261107
VERSION = 1
HEADER_INTS = 256
IGNORE = 65535
TASKS = {"copy": 1, "induction": 2}


class TaskFileError(Exception):
    pass


def write_task_file(path, task, vocab, inputs, targets):
    """inputs, targets: (S, T) integer arrays; targets IGNORE where none."""
    inputs = np.asarray(inputs)
    targets = np.asarray(targets)
    if inputs.shape != targets.shape or inputs.ndim != 2:
        raise ValueError(f"inputs {inputs.shape} and targets {targets.shape} must be the same (S, T)")
    per_sequence = int((targets[0] != IGNORE).sum()) if len(targets) else 0
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:7] = [MAGIC, VERSION, inputs.shape[0], inputs.shape[1], vocab, TASKS[task], per_sequence]
    records = np.concatenate([inputs.astype("<u2"), targets.astype("<u2")], axis=1)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(records.tobytes())
    os.replace(tmp, path)


def read_task_file(path):
    """Returns (task name, vocab, inputs (S, T), targets (S, T)); raises TaskFileError naming what is wrong."""
    size = os.path.getsize(path)
    if size < 4 * HEADER_INTS:
        raise TaskFileError(f"{path}: {size} bytes, shorter than the {4 * HEADER_INTS}-byte header")
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(4 * HEADER_INTS), dtype="<i4")
        if header[0] != MAGIC:
            raise TaskFileError(f"{path}: magic {header[0]}, not a task file ({MAGIC})")
        if header[1] != VERSION:
            raise TaskFileError(f"{path}: version {header[1]}, expected {VERSION}")
        S, T, V, task = (int(v) for v in header[2:6])
        names = {v: k for k, v in TASKS.items()}
        if S < 1 or T < 2 or not 3 <= V < IGNORE or task not in names:
            raise TaskFileError(f"{path}: header slots sequences {S}, length {T}, vocabulary {V}, task {task} "
                                f"out of range (S >= 1, T >= 2, 3 <= V < {IGNORE}, task 1 or 2)")
        want = 4 * HEADER_INTS + S * 2 * T * 2
        if size != want:
            raise TaskFileError(f"{path}: {size} bytes, but {S} sequences of length {T} make {want}")
        records = np.frombuffer(f.read(), dtype="<u2").reshape(S, 2, T)
    inputs, targets = records[:, 0, :], records[:, 1, :]
    if inputs.max() >= V:
        raise TaskFileError(f"{path}: input token {int(inputs.max())} outside the vocabulary of {V}")
    bad = (targets != IGNORE) & (targets >= V)
    if bad.any():
        raise TaskFileError(f"{path}: target {int(targets[bad][0])} outside the vocabulary of {V}")
    return names[task], V, inputs, targets


def selective_copy(rng, count, T, K, V):
    """count sequences of the selective copying task."""
    if V < 3 or K < 1 or T < 2 * K:
        raise ValueError(f"selective copying needs V >= 3, K >= 1 and T >= 2K (V {V}, K {K}, T {T})")
    inputs = np.zeros((count, T), dtype=np.int64)
    targets = np.full((count, T), IGNORE, dtype=np.int64)
    data = rng.integers(1, V - 1, size=(count, K))
    for s in range(count):
        positions = np.sort(rng.choice(T - K, size=K, replace=False))
        inputs[s, positions] = data[s]
    inputs[:, T - K:] = V - 1
    targets[:, T - K:] = data
    return inputs, targets


def induction_heads(rng, count, T, V):
    """count sequences of the induction heads task."""
    if V < 3 or T < 4:
        raise ValueError(f"induction heads needs V >= 3 and T >= 4 (V {V}, T {T})")
    trigger = V - 1
    inputs = rng.integers(0, V - 1, size=(count, T))
    targets = np.full((count, T), IGNORE, dtype=np.int64)
    where = rng.integers(0, T - 2, size=count)  # the trigger's first position; the key follows it
    rows = np.arange(count)
    inputs[rows, where] = trigger
    key = inputs[rows, where + 1]
    inputs[:, T - 1] = trigger
    targets[:, T - 1] = key
    return inputs, targets


def make(task, rng, count, T, K, V):
    if task == "copy":
        return selective_copy(rng, count, T, K, V)
    return induction_heads(rng, count, T, V)


def selftest():
    import tempfile
    check = Checks()

    rng = np.random.default_rng(0)
    x, y = selective_copy(rng, 50, 64, 8, 16)
    answers = np.where(y != IGNORE)
    check(all((x[s][:56] != 0).sum() == 8 for s in range(50)), "copy: 8 data tokens among the first T - K positions")
    check(all(np.array_equal(x[s][:56][x[s][:56] != 0], y[s][56:]) for s in range(50)),
          "copy: the targets are the data tokens in order")
    check(np.all(x[:, 56:] == 15) and len(answers[0]) == 50 * 8, "copy: markers and targets on the last K positions only")
    x, y = induction_heads(np.random.default_rng(1), 200, 32, 16)
    ok_key = True
    for s in range(200):
        first = int(np.where(x[s] == 15)[0][0])
        ok_key &= (x[s] == 15).sum() == 2 and x[s, -1] == 15 and y[s, -1] == x[s, first + 1] and (y[s, :-1] == IGNORE).all()
    check(ok_key, "induction: the trigger twice, the target at the end is the token after its first place")
    a = make("copy", np.random.default_rng(5), 4, 32, 4, 16)
    b = make("copy", np.random.default_rng(5), 4, 32, 4, 16)
    check(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), "a function of the seed")
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.bin")
        write_task_file(p, "induction", 16, x, y)
        task, V, xi, yi = read_task_file(p)
        check(task == "induction" and V == 16 and np.array_equal(xi, x) and np.array_equal(yi, y), "write then read")
        raw = open(p, "rb").read()
        cases = {
            "truncated": raw[:-2],
            "wrong magic": (1).to_bytes(4, "little") + raw[4:],
            "target outside the vocabulary": raw[:-2] + (20).to_bytes(2, "little"),
            "length slot zero": raw[:12] + (0).to_bytes(4, "little") + raw[16:],
        }
        for name, data in cases.items():
            open(p, "wb").write(data)
            try:
                read_task_file(p)
                check(False, f"bad file ({name}) refused")
            except TaskFileError as e:
                check(True, f"bad file ({name}) refused: {str(e).replace(p, 'FILE')}")
    return check.summary()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), help="the task")
    parser.add_argument("--out", default="data", help="output directory")
    parser.add_argument("--prefix", default=None, help="file name prefix (default: the task)")
    parser.add_argument("--T", type=int, default=256, help="sequence length of train, val and test")
    parser.add_argument("--K", type=int, default=16, help="selective copying: data tokens per sequence")
    parser.add_argument("--V", type=int, default=16, help="vocabulary, the noise or trigger and marker included")
    parser.add_argument("--train", type=int, default=16384, help="training sequences")
    parser.add_argument("--val", type=int, default=512, help="validation sequences")
    parser.add_argument("--test", type=int, default=1024, help="test sequences")
    parser.add_argument("--test-lengths", default="6-20",
                        help="induction: extra test sets at lengths 2^a .. 2^b (e.g. 6-20), or none")
    parser.add_argument("--test-tokens", type=int, default=1 << 22,
                        help="induction: tokens per extra test set (sequences = max(4, tokens / length), at most --test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selftest", action="store_true", help="run the self-tests and exit")
    args = parser.parse_args()
    if args.selftest:
        sys.exit(0 if selftest() else 1)
    if not args.task:
        parser.error("--task is required")
    prefix = args.prefix or args.task
    try:
        make(args.task, np.random.default_rng(0), 1, args.T, args.K, args.V)  # the flags checked before writing
    except ValueError as e:
        sys.exit(f"error: {e}")
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    try:
        for split, count in (("train", args.train), ("val", args.val), ("test", args.test)):
            x, y = make(args.task, rng, count, args.T, args.K, args.V)
            path = os.path.join(args.out, f"{prefix}_{split}.bin")
            write_task_file(path, args.task, args.V, x, y)
            print(f"wrote {path}: {count} sequences of {args.T} tokens")
        if args.task == "induction" and args.test_lengths != "none":
            lo, hi = (int(v) for v in args.test_lengths.split("-"))
            for e in range(lo, hi + 1):
                T = 1 << e
                count = min(args.test, max(4, args.test_tokens // T))
                x, y = make(args.task, rng, count, T, args.K, args.V)
                path = os.path.join(args.out, f"{prefix}_test_{T}.bin")
                write_task_file(path, args.task, args.V, x, y)
                print(f"wrote {path}: {count} sequences of {T} tokens")
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()

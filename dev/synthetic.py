"""
The Mamba paper's synthetic tasks as a study: trains 2-layer models of width
64 (Mamba, the selection ablation Mamba -M lti, Mamba-2 -M 2, GPT,
Transformer++ and the hybrid -A MA; and a Mamba initialized with dt down to
1e-9 (-U 1e-9), then trained on for 2,000 steps with the dt stretch -Y 1e6)
on selective copying and on induction heads, evaluates the
induction-heads models at every test length each can run (2^6 .. 2^20), and
writes

  OUT/results.md     both tables (final accuracy, and accuracy against test
                     length) beside the paper's numbers, with the commands,
                     seeds, steps and wall times
  OUT/induction.png  accuracy against test length (log scale)

Every model of a task trains with the same flags (batch, steps, learning
rate, seed). Which lengths a model runs: the Mamba and its ablation all of
them (in chunks, constant memory); the GPT and the hybrid up to their
position table (the training length; longer ones are refused by the
trainer and shown as "refused"); the Transformer++ (rotary positions, the
memory-linear attention) up to --attention-max, as far as its quadratic
cost allows on a CPU.

  dev/synthetic                         the CPU study (about half an hour on 2 cores, --jobs 2)
  dev/synthetic --steps 200 --longest 4096 --out /tmp/syn --models Mamba   a quick look
  dev/synthetic --gpu                   batch 64 and 20,000 steps at the seed preset (for a GPU)
  dev/synthetic --models "Mamba -U 1e-9 then -Y 1e6" --tasks induction --jobs 1 --out doc/synthetic/dt_stretch

The data are make synthetic-tasks' (length 256, vocabulary 16, K 16): the
paper's induction-heads task and model sizes (2 layers, width 64).
Needs the trainers' build and matplotlib for /usr/bin/python3 (or PYTHON).
"""

import argparse
import concurrent.futures
import math
import os
import re
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRETCHED = "Mamba -U 1e-9 then -Y 1e6"

# name: (trainer, flags of the architecture)
MODELS = {
    "Mamba": ("./train_mamba", ["-L", "2", "-C", "64"]),
    STRETCHED: ("./train_mamba", ["-L", "2", "-C", "64", "-U", "1e-9"]),
    "Mamba LTI (-M lti)": ("./train_mamba", ["-L", "2", "-C", "64", "-M", "lti"]),
    "Mamba-2 (-M 2)": ("./train_mamba", ["-L", "2", "-C", "64", "-M", "2"]),
    "GPT": ("./train_gpt", ["-L", "2", "-C", "64", "-H", "4"]),
    "Transformer++": ("./train_gpt_plus", ["-L", "2", "-C", "64", "-H", "4"]),
    "Hybrid (-A MA)": ("./train_hybrid", ["-A", "MA", "-C", "64", "-H", "4"]),
}
TASKS = ("induction", "copy")
# models trained on from their model file with flags of their own after the study's run: the
# dt stretch (train_mamba -Y), a gap of up to 10^6 tokens at one position per row
FINETUNE = {STRETCHED: ["-Y", "1e6", "-x", "2000", "-l", "3e-4", "-u", "100"]}
# training flags per config, the same for every model and both tasks; the
# learning rate is constant after the warmup (induction heads are learnt in a
# sudden jump after a plateau, which a decaying rate delays)
CONFIGS = {
    "cpu": {"B": 8, "steps": 6000, "lr": "1e-3", "warmup": 200, "val_every": 500, "preset": "cpu"},
    "gpu": {"B": 64, "steps": 20000, "lr": "1e-3", "warmup": 500, "val_every": 1000, "preset": "seed"},
}
TEST_LENGTHS = [1 << e for e in range(6, 21)]
# evaluation: every test sequence up to this many tokens per length, at least 4 sequences
EVAL_TOKENS = 1 << 18
# positions per forward at evaluation (the cpu preset's B x T); longer sequences run in chunks
EVAL_SPAN = 2048

# The paper's numbers (Gu and Dao 2023): Table 1, selective copying, 2-layer
# models (architecture / layer: accuracy); Table 2, induction heads, trained
# at length 256.
PAPER_COPY = [("S4 (no gate) / S4", "18.3"), ("no gate / S6", "97.0"), ("H3 / S4", "57.0"),
              ("H3 / Hyena", "30.1"), ("H3 / S6", "99.7"), ("Mamba / S4", "56.4"),
              ("Mamba / Hyena", "28.4"), ("Mamba / S6", "99.8")]
PAPER_INDUCTION = ("Mamba: 100% at every test length from 2^6 to 2^20; multi-head attention with absolute, "
                   "rotary or xPos positions: near 100% up to the training length, failing beyond about "
                   "twice it.")


def run(cmd):
    """(return code, output, seconds)"""
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout, time.time() - t0


def must(cmd):
    rc, out, secs = run(cmd)
    if rc != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {rc}:\n{out[-2000:]}")
    return out, secs


def slug(name):
    return re.sub(r"[^a-zA-Z0-9]+", "_", name).strip("_").lower()


def task_sequences(path):
    """the number of sequences a task file holds (its header's [2])"""
    with open(os.path.join(ROOT, path), "rb") as f:
        header = f.read(12)
    return int.from_bytes(header[8:12], "little")


def parse_score(line):
    m = re.search(r"val loss ([0-9.naif]+) \| acc ([0-9.]+)%(?: \| seq acc ([0-9.]+)%)?", line)
    if not m:
        return None
    return {"loss": float(m.group(1)), "acc": float(m.group(2)),
            "seq_acc": float(m.group(3)) if m.group(3) else None}


def train(name, task, cfg, out_dir, seed):
    trainer, arch = MODELS[name]
    d = os.path.join(out_dir, f"{task}_{slug(name)}")
    cmd = [trainer, "-S", cfg["preset"], *arch, "-b", str(cfg["B"]), "-x", str(cfg["steps"]), "-l", cfg["lr"],
           "-u", str(cfg["warmup"]), "-q", "1", "-v", str(cfg["val_every"]), "-m", "0", "-g", "0", "-s", "0",
           "-r", str(seed), "-i", f"data/{task}_train.bin", "-j", f"data/{task}_val.bin", "-o", d]
    subprocess.run(["rm", "-rf", os.path.join(ROOT, d)])
    out, secs = must(cmd)
    if name in FINETUNE:  # trained on from the model just written, the result is the second run's
        tuned = d + "_tuned"
        then = [trainer, "-S", cfg["preset"], "-e", os.path.join(d, "model.bin"), *FINETUNE[name], "-b", str(cfg["B"]),
                "-q", "1", "-v", str(cfg["val_every"]), "-m", "0", "-g", "0", "-s", "0", "-r", str(seed),
                "-i", f"data/{task}_train.bin", "-j", f"data/{task}_val.bin", "-o", tuned]
        subprocess.run(["rm", "-rf", os.path.join(ROOT, tuned)])
        out, more = must(then)
        secs += more
        cmd += ["&&", *then]
        d = tuned
    params = int(re.search(r"([0-9]+) parameters", out).group(1))
    vals = [parse_score(l) for l in out.splitlines() if l.startswith("val loss")]
    final = parse_score([l for l in out.splitlines() if l.startswith("final")][-1])
    curve = [(i * cfg["val_every"], v["acc"]) for i, v in enumerate(vals)]
    print(f"{task:9s} {name:20s} {params:7,d} parameters: final acc {final['acc']:.2f}%"
          + (f", seq acc {final['seq_acc']:.2f}%" if final["seq_acc"] is not None else "") + f", {secs:.0f} s", flush=True)
    return {"name": name, "task": task, "params": params, "final": final, "curve": curve, "wall": secs,
            "cmd": " ".join(cmd), "model": os.path.join(d, "model.bin")}


def evaluate_lengths(result, cfg, attention_max, longest):
    """accuracy at each test length the model runs: {length: (acc, peak MiB, seconds)} or "refused" / "skipped"."""
    name = result["name"]
    trainer, _ = MODELS[name]
    scores = {}
    for L in TEST_LENGTHS:
        path = f"data/induction_test_{L}.bin"
        if L > longest:
            break
        if name == "Transformer++" and L > attention_max:
            scores[L] = "skipped"
            continue
        if "refused" in scores.values():  # a shorter length was past the position table
            scores[L] = "refused"
            continue
        n = min(task_sequences(path), max(4, EVAL_TOKENS // L))
        rows = max(1, EVAL_SPAN // min(L, EVAL_SPAN))
        batches = math.ceil(n / rows)
        cmd = [trainer, "-S", cfg["preset"], "-e", result["model"], "-j", path, "-x", "0",
               "-b", str(rows), "-m", str(batches)]
        if trainer == "./train_mamba":
            cmd += ["-d", str(EVAL_SPAN)]
        rc, out, secs = run(cmd)
        if rc != 0:
            err = [l for l in out.splitlines() if l.startswith("error:")]
            if not err:
                sys.exit(f"error: {' '.join(cmd)} exited {rc}:\n{out[-2000:]}")
            scores[L] = "refused"
            print(f"  {name} at {L}: refused ({err[0]})", flush=True)
            continue
        final = [l for l in out.splitlines() if l.startswith("final")][-1]
        score = parse_score(final)
        peak = float(re.search(r"peak memory ([0-9.]+) MiB", final).group(1))
        scores[L] = (score["acc"], peak, secs, min(n, rows * batches))
        print(f"  {name} at {L}: acc {score['acc']:.2f}% over {scores[L][3]} sequences, peak {peak:.0f} MiB, "
              f"{secs:.1f} s", flush=True)
    return scores


def pow2(L):
    return f"2^{int(math.log2(L))}"


def write_report(out, cfg, args, results, lengths, wall_total):
    cpu = "a GPU" if args.gpu else "the CPU"
    tuned = [n for n in FINETUNE if any(r["name"] == n for r in results)]
    lines = ["# The Mamba paper's synthetic tasks", "",
             f"Written by `dev/synthetic{' --gpu' if args.gpu else ''}` ({cpu} config). Every model: 2 layers, "
             f"width 64, trained with the same flags: batch {cfg['B']}, {cfg['steps']} steps, learning rate "
             f"{cfg['lr']} (constant after a warmup of {cfg['warmup']} steps), seed {args.seed} (-r), one run each"
             + "".join(f"; {n}: then trained on from that run's model with `{' '.join(FINETUNE[n])}`" for n in tuned)
             + ". "
             f"Data: `make synthetic-tasks` (length 256, vocabulary 16; selective copying with K 16 data tokens; "
             f"16,384 training sequences, validation on the 512 of the val file). The whole study took "
             f"{wall_total / 60:.1f} minutes of wall time ({min(args.jobs, len(results))} run(s) at a time).", ""]
    for task in TASKS:
        rows = [r for r in results if r["task"] == task]
        if not rows:
            continue
        if task == "copy":
            lines += ["## Selective copying", "",
                      "Accuracy over the 16 target positions of each validation sequence, and the share of "
                      "sequences entirely right.", "",
                      "| model | parameters | accuracy | sequences right | val loss | wall time (s) |",
                      "| --- | ---: | ---: | ---: | ---: | ---: |"]
            for r in rows:
                f = r["final"]
                lines.append(f"| {r['name']} | {r['params']:,d} | {f['acc']:.2f}% | {f['seq_acc']:.2f}% | "
                             f"{f['loss']:.4f} | {r['wall']:.0f} |")
            lines += ["", "The paper's Table 1 (2-layer models, architecture / layer: accuracy): "
                      + "; ".join(f"{a} {b}%" for a, b in PAPER_COPY) + ".", ""]
        else:
            lines += ["## Induction heads", "",
                      "Accuracy at the last position (the key after the second trigger) on the validation "
                      "set at the training length, then on the test sets at each length. Up to "
                      f"{EVAL_TOKENS:,d} tokens of test sequences per length (all 1,024 sequences up to "
                      f"{EVAL_TOKENS // 1024:,d}, at least 4: 4 at 2^20). The Mamba evaluates lengths past {EVAL_SPAN} "
                      f"positions in chunks of {EVAL_SPAN}, its state carried (`-d`); refused: longer than the "
                      "model's position table; skipped: past --attention-max "
                      f"({pow2(args.attention_max)}), the quadratic attention's cost on {cpu}.", "",
                      "| model | parameters | val accuracy | wall time (s) | "
                      + " | ".join(pow2(L) for L in TEST_LENGTHS) + " |",
                      "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in TEST_LENGTHS) + " |"]
            for r in rows:
                s = lengths.get(r["name"], {})
                cells = []
                for L in TEST_LENGTHS:
                    v = s.get(L)
                    cells.append(f"{v[0]:.1f}" if isinstance(v, tuple) else (v or ""))
                lines.append(f"| {r['name']} | {r['params']:,d} | {r['final']['acc']:.2f}% | {r['wall']:.0f} | "
                             + " | ".join(cells) + " |")
            for r in rows:
                s = lengths.get(r["name"], {})
                if isinstance(s.get(1024), tuple) and isinstance(s.get(TEST_LENGTHS[-1]), tuple):
                    lines += ["", f"Peak memory of the {r['name']}'s evaluation: {s[1024][1]:.0f} MiB at 2^10, "
                              f"{s[TEST_LENGTHS[-1]][1]:.0f} MiB at 2^20 ({s[TEST_LENGTHS[-1]][2]:.0f} s for "
                              f"{s[TEST_LENGTHS[-1]][3]} sequences)."]
                    break
            lines += ["", f"The paper's Table 2 (trained at 256): {PAPER_INDUCTION}", "",
                      "![accuracy against test length](induction.png)", ""]
    lines += ["## Commands", "", "Training (evaluation: the same trainer with `-e MODEL -j "
              "data/induction_test_LENGTH.bin -x 0 -b ROWS -m BATCHES`):", ""]
    lines += [f"- {r['task']}, {r['name']}: `{r['cmd']}`" for r in results]
    with open(os.path.join(ROOT, out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(out, results, lengths):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if r["task"] != "induction":
            continue
        s = lengths.get(r["name"], {})
        pts = [(L, v[0]) for L, v in sorted(s.items()) if isinstance(v, tuple)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=r["name"])
    ax.axvline(256, color="gray", linestyle=":", label="training length")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("test sequence length")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Induction heads: trained at 256, tested at 2^6 .. 2^20")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, out, "induction.png"), dpi=120)


def subset(text, known, flag):
    """the comma-separated names of a flag, each one of known, or exit naming the unknown ones"""
    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if n not in known]
    if bad:
        sys.exit(f"error: {flag}: unknown {', '.join(bad)} (known: {', '.join(known)})")
    return names


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="batch 64, 20,000 steps, seed preset (for a GPU)")
    p.add_argument("--steps", type=int, help="training steps (default: the config's)")
    p.add_argument("--models", help="comma-separated subset of: " + ", ".join(MODELS))
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of: " + ", ".join(TASKS))
    p.add_argument("--seed", type=int, default=1337, help="the trainers' -r")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, each on cores / jobs threads")
    p.add_argument("--attention-max", type=int, default=1 << 14,
                   help="longest test length for the Transformer++ (quadratic cost)")
    p.add_argument("--longest", type=int, default=TEST_LENGTHS[-1], help="longest test length evaluated")
    p.add_argument("--out", default="doc/synthetic", help="output directory (results.md, induction.png)")
    p.add_argument("--runs", default="build/synthetic", help="where the runs' models and logs go")
    args = p.parse_args()
    cfg = dict(CONFIGS["gpu" if args.gpu else "cpu"])
    if args.steps is not None:
        if args.steps < 1:
            sys.exit(f"error: --steps {args.steps}: need at least one step")
        cfg["steps"] = args.steps
        cfg["val_every"] = max(1, min(cfg["val_every"], args.steps // 4))
    if args.jobs < 1:
        sys.exit(f"error: --jobs {args.jobs}: need at least one")
    names = subset(args.models, MODELS, "--models") if args.models else list(MODELS)
    tasks = subset(args.tasks, TASKS, "--tasks")
    os.makedirs(os.path.join(ROOT, args.out), exist_ok=True)
    os.makedirs(os.path.join(ROOT, args.runs), exist_ok=True)
    must(["make", "-s", "train_gpt", "train_gpt_plus", "train_mamba", "train_hybrid", "synthetic-tasks"])
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))

    t0 = time.time()
    jobs = [(name, task) for name in names for task in tasks]  # the Mamba's runs first
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: train(j[0], j[1], cfg, args.runs, args.seed), jobs))
        induction = [r for r in results if r["task"] == "induction"]
        scored = pool.map(lambda r: evaluate_lengths(r, cfg, args.attention_max, args.longest), induction)
        lengths = {r["name"]: s for r, s in zip(induction, scored)}
    wall = time.time() - t0
    write_report(args.out, cfg, args, results, lengths, wall)
    plot(args.out, results, lengths)
    print(f"wrote {args.out}/results.md and induction.png ({wall / 60:.1f} minutes)")


if __name__ == "__main__":
    main()

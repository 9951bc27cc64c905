"""
The results report: trains the GPT, Transformer++ (train_gpt_plus), the
Mamba, the Mamba-2 (train_mamba -M 2) and two hybrids (Mamba-MHA, -A MAMA, and Mamba-MLP, -A MFMF) at equal
parameter count for K seeds on tinyshakespeare, and writes

  OUT/results.md   per model: parameters, final and best val loss (mean +- std
                   over the seeds), tokens/s, wall time, and the commands
  OUT/results.png  val loss against step, the mean over seeds with a band
                   from the lowest to the highest seed

Equal size: the GPT's parameter count at the config's width is the target;
every other model keeps its layer count and takes the width C (a multiple
of 4, of 8 for Transformer++) whose count is nearest, which must be within 5% (the counts are read
from the trainers themselves and printed).

  dev/compare                      the CPU config (minutes per run; 3 seeds)
  dev/compare --seeds 1 --steps 100 --out /tmp/cmp   a quick look
  dev/compare --seed-config        the write-up's (C 256, T 256, B 64, 5000 steps; for a GPU)

Needs the trainers' build and matplotlib for /usr/bin/python3 (or PYTHON).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (trainer, flags that fix the architecture but the width, the step of the width search:
# 4 heads divide C; Transformer++'s rotary embedding needs an even head size)
MODELS = {
    "GPT": ("./train_gpt", ["-L", "4", "-H", "4"], 4),
    "Transformer++": ("./train_gpt_plus", ["-L", "4", "-H", "4"], 8),
    "Mamba": ("./train_mamba", ["-L", "5"], 4),
    # Mamba-2: headdim 64 makes the width a multiple of 32; d_state 32 (of 64) brings it within 5% of the target
    "Mamba-2": ("./train_mamba", ["-L", "5", "-M", "2", "-N", "32"], 32),
    "Mamba-MHA (MAMA)": ("./train_hybrid", ["-A", "MAMA", "-H", "4"], 4),
    "Mamba-MLP (MFMF)": ("./train_hybrid", ["-A", "MFMF"], 4),
}
CONFIGS = {
    # a CPU config: about 2 minutes per run on 2 cores
    "cpu": {"C": 96, "B": 16, "T": 128, "steps": 600, "lr": "3e-3", "warmup": 30, "val_every": 50, "preset": "cpu"},
    "seed": {"C": 256, "B": 64, "T": 256, "steps": 5000, "lr": "1e-3", "warmup": 0, "val_every": 250, "preset": "seed"},
}


def run(cmd):
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}")
    return p.stdout


def width_flags(name, C, cfg):
    trainer, arch, _ = MODELS[name]
    # the F of MLPs scales with C: the trainers' defaults (GPT 2C, hybrid 4C)
    return trainer, ["-S", cfg["preset"], *arch, "-C", str(C), "-t", str(cfg["T"])]


def param_count(name, C, cfg):
    trainer, flags = width_flags(name, C, cfg)
    out = run([trainer, *flags, "-b", "1", "-x", "0", "-m", "1", "-g", "0"])
    m = re.search(r"([0-9]+) parameters", out)
    if not m:
        sys.exit(f"error: {trainer}: no parameter count in its output")
    return int(m.group(1))


def matched_width(name, target, cfg):
    """The width C (a multiple of the model's step) whose count is nearest the target."""
    best = None
    step = MODELS[name][2]
    for C in range(2 * step, 4 * cfg["C"] + 1, step):
        n = param_count(name, C, cfg)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (C, n)
        if n > target:
            break
    return best


def read_log(path):
    """A run's log.jsonl as one run (formats.read_log: a resumed run's lines replace the ones after its checkpoint)."""
    sys.path.insert(0, os.path.join(ROOT, "dev", "reference"))
    import formats
    return formats.read_log(path)


def mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds per model (K)")
    p.add_argument("--seed-config", action="store_true", help="the write-up's config instead of the CPU one")
    p.add_argument("--steps", type=int, help="training steps (default: the config's)")
    p.add_argument("--out", default="build/compare", help="output directory")
    p.add_argument("--models", help="comma-separated subset of: " + ", ".join(MODELS))
    args = p.parse_args()
    if args.seeds < 1:
        sys.exit(f"error: --seeds {args.seeds}: need at least one seed")
    cfg = dict(CONFIGS["seed" if args.seed_config else "cpu"])
    if args.steps is not None:
        if args.steps < 1:
            sys.exit(f"error: --steps {args.steps}: need at least one step")
        cfg["steps"] = args.steps
        cfg["val_every"] = max(1, min(cfg["val_every"], args.steps // 4))
    names = list(MODELS)
    if args.models:
        names = [n.strip() for n in args.models.split(",")]
        bad = [n for n in names if n not in MODELS]
        if bad:
            sys.exit(f"error: --models: unknown {', '.join(bad)} (known: {', '.join(MODELS)})")
    out = os.path.join(ROOT, args.out)
    os.makedirs(out, exist_ok=True)
    run(["make", "-s", "train_gpt", "train_gpt_plus", "train_mamba", "train_hybrid", "data"])

    # equal size: the GPT at the config's width sets the target
    target = param_count("GPT", cfg["C"], cfg)
    widths = {}
    for name in names:
        C, n = (cfg["C"], target) if name == "GPT" else matched_width(name, target, cfg)
        off = n / target - 1
        print(f"{name:18s} C {C:4d}: {n:9,d} parameters ({off:+.1%} of the GPT's {target:,d})", flush=True)
        if abs(off) > 0.05:
            sys.exit(f"error: {name}: no width within 5% of {target:,d} parameters (nearest C {C}: {n:,d})")
        widths[name] = (C, n)

    results = {}
    for name in names:
        C, n = widths[name]
        trainer, flags = width_flags(name, C, cfg)
        runs = []
        for k in range(args.seeds):
            d = os.path.join(args.out, re.sub(r"[^a-zA-Z0-9]+", "_", name).strip("_").lower() + f"_seed{k + 1}")
            cmd = [trainer, *flags, "-b", str(cfg["B"]), "-x", str(cfg["steps"]), "-l", cfg["lr"],
                   "-u", str(cfg["warmup"]), "-v", str(cfg["val_every"]), "-g", "0", "-r", str(1337 + k), "-o", d]
            subprocess.run(["rm", "-rf", d], cwd=ROOT)
            text = run(cmd)
            rows = read_log(os.path.join(ROOT, d, "log.jsonl"))
            val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
            tok = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
            wall = float(re.search(r"final val loss [0-9.]+ \| ([0-9.]+) s", text).group(1))
            runs.append({"val": val, "final": val[-1][1], "best": min(v for _, v in val),
                         "tok_s": statistics.median(tok), "wall": wall, "cmd": " ".join(cmd)})
            print(f"{name:18s} seed {k + 1}: final val {val[-1][1]:.4f}, best {runs[-1]['best']:.4f}, "
                  f"{runs[-1]['tok_s']:.0f} tok/s, {wall:.0f} s", flush=True)
        results[name] = runs

    # the report
    hdr = (f"Config: {'seed' if args.seed_config else 'CPU'}: B {cfg['B']}, T {cfg['T']}, {cfg['steps']} steps, "
           f"lr {cfg['lr']} (warmup {cfg['warmup']}, cosine to 10%), validation every {cfg['val_every']} steps; "
           f"{args.seeds} seeds (-r 1337..{1336 + args.seeds}); sizes matched to the GPT at C {cfg['C']}.")
    lines = ["# Results: GPT, Transformer++, Mamba and hybrids at equal size", "", hdr, "",
             "| model | C | parameters | final val loss | best val loss | tokens/s | wall time (s) |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: |"]
    for name in names:
        runs = results[name]
        f_m, f_s = mean_std([r["final"] for r in runs])
        b_m, b_s = mean_std([r["best"] for r in runs])
        t_m, _ = mean_std([r["tok_s"] for r in runs])
        w_m, _ = mean_std([r["wall"] for r in runs])
        C, n = widths[name]
        lines.append(f"| {name} | {C} | {n:,d} | {f_m:.4f} ± {f_s:.4f} | {b_m:.4f} ± {b_s:.4f} | {t_m:.0f} | {w_m:.0f} |")
    lines += ["", "Mean ± standard deviation over the seeds; tokens/s is the median of each run's steps, "
              "then the mean over seeds. Commands (seed 1; the others differ in -r and -o):", ""]
    lines += [f"- {name}: `{results[name][0]['cmd']}`" for name in names]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        runs = results[name]
        steps = [s for s, _ in runs[0]["val"]]
        per_step = [[r["val"][i][1] for r in runs] for i in range(len(steps))]
        mean = [statistics.mean(v) for v in per_step]
        line, = ax.plot(steps, mean, label=f"{name} ({widths[name][1] / 1e3:.0f}k)")
        ax.fill_between(steps, [min(v) for v in per_step], [max(v) for v in per_step], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_ylim(top=min(3.0, ax.get_ylim()[1]))
    ax.set_title(f"tinyshakespeare, equal size, {args.seeds} seeds (band: min..max)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "results.png"), dpi=120)
    print("\n".join([""] + lines))
    print(f"wrote {args.out}/results.md and results.png")


if __name__ == "__main__":
    main()

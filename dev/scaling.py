"""
Benchmark (not a test): training cost against sequence length, the GPT
against the Mamba and the Mamba-2 at the seed widths (C 256; GPT 4 layers,
4 heads, F 512; Mamba 5 layers, E 512, N 16; Mamba-2 5 layers, E 512, N 64,
8 heads of 64), batch 1.

For every T (256, 512, ..., 16384 by default; up to 131072 when a GPU is
visible) it measures, with the trainers of this project (the GPT twice:
with the attention variant the backend picks, which is the materialized
one while its T x T buffers fit in 256 MiB, and with the memory-linear
tiled one forced, ATTENTION_VARIANT=tiled):
  - the train-step time (forward, backward, update), tokens/s and peak memory
    (-x STEPS+1 steps; the first is warmup, the mean of the others is kept);
  - PyTorch's step time and peak memory for the same model
    (dev/bench_torch.py) while it is predicted to fit in memory: from the
    peak of the previous T, growing with T^2 for the GPT (its attention
    matrices) and with T for the Mamba, against TORCH_MEMORY_MB (default
    60% of the memory available at the start);
  - the generation time per token at that context length: one generation
    run per model of the largest T tokens from a randomly initialized model
    (KV cache for the GPT, recurrent step for the Mambas) writes the time of
    every 100-token block (generate.jsonl), read at position T.
Writes OUT/scaling.md (the table), OUT/scaling_time.png (time per 1k tokens
against T) and OUT/scaling_memory.png (peak memory against T), log-log axes,
and prints where the Mamba becomes faster than the GPT.

  dev/scaling                                   everything (about an hour on 2 cores)
  dev/scaling --lengths 256,1024 --no-torch     a quick look
  dev/scaling --models mamba,mamba2             some of the models (gpt, gpt_tiled, mamba, mamba2)
  dev/scaling --out results/scaling             where to write (default build/scaling)

Needs the trainers' build (make picks the GPU when visible) and PyTorch and
matplotlib for /usr/bin/python3 (or PYTHON).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT_FLAGS = ["-C", "256", "-L", "4", "-H", "4", "-F", "512"]
MODELS = {
    # name: (trainer, flags of the seed widths, bench_torch.py's flags or None, torch memory growth
    # exponent, environment); PyTorch and the generation timing for the models that have torch flags
    "gpt": ("./train_gpt", GPT_FLAGS, ["--model", "gpt", "--C", "256", "--L", "4", "--H", "4", "--F", "512"], 2, {}),
    "gpt_tiled": ("./train_gpt", GPT_FLAGS, None, None, {"ATTENTION_VARIANT": "tiled"}),
    "mamba": ("./train_mamba", ["-C", "256", "-L", "5"],
              ["--model", "mamba", "--C", "256", "--L", "5", "--N", "16"], 1, {}),
    "mamba2": ("./train_mamba", ["-M", "2", "-C", "256", "-L", "5"],
               ["--model", "mamba2", "--C", "256", "--L", "5", "--N", "64", "--headdim", "64"], 1, {}),
}


def run(cmd, env=None):
    """Runs cmd in the repository root (with env added to the environment); returns its stdout, exits on failure."""
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env={**os.environ, **(env or {})})
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}")
    return p.stdout


def gpu_visible():
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def memory_available_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return 8192.0


def train_step(model, T, steps):
    """(mean ms per step after the first, peak MiB, the attention variant or None) of our trainer at batch 1."""
    trainer, flags, _, _, env = MODELS[model]
    out = run([trainer, "-S", "seed", *flags, "-b", "1", "-t", str(T), "-x", str(steps + 1),
               "-v", "0", "-m", "1", "-g", "0", "-u", "0"], env)
    ms = [float(m) for m in re.findall(r"^step .*\| ([0-9.]+) ms \|", out, re.M)]
    peak = re.search(r"peak memory ([0-9.]+) MiB", out)
    if len(ms) < 2 or not peak:
        sys.exit(f"error: {trainer}: no step times or peak memory in its output:\n{out[-2000:]}")
    variant = re.search(r"\| attention (\w+)", out)
    return sum(ms[1:]) / len(ms[1:]), float(peak.group(1)), variant.group(1) if variant else None


def torch_step(python, model, T, steps, threads, device):
    """(ms per step, peak MB) of PyTorch for the same model at batch 1."""
    out = run([python, "dev/bench_torch.py", *MODELS[model][2], "--B", "1", "--T", str(T),
               "--steps", str(steps), "--warmup", "1", "--threads", str(threads), "--device", device])
    ms = re.search(r"^torch_ms_per_step ([0-9.]+)", out, re.M)
    peak = re.search(r"^torch_peak_memory_mb ([0-9.]+)", out, re.M)
    return float(ms.group(1)), float(peak.group(1))


def generation_ms(model, tokens, work):
    """{position: ms per token} of one generation of `tokens` tokens from a random model."""
    trainer, flags, _, _, _ = MODELS[model]
    d = os.path.join(work, model)
    # a random model whose context (the GPT's position table) holds every token
    run([trainer, "-S", "seed", *flags, "-b", "1", "-t", str(tokens), "-x", "0", "-m", "1", "-g", "0", "-o", d])
    run([trainer, "-e", os.path.join(d, "model.bin"), "-G", "1", "-b", "1", "-t", str(tokens),
         "-g", str(tokens), "-o", os.path.join(d, "gen")])
    with open(os.path.join(d, "gen", "generate.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["position"]: r["gen_ms_per_token"] for r in rows}


def at_position(gen, T):
    """The time per token of the block that ends nearest position T."""
    if not gen:
        return float("nan")
    return gen[min(gen, key=lambda p: abs(p - T))]


def plot(rows, lengths, key, ylabel, path, title):
    fig, ax = plt.subplots(figsize=(6, 4.5))
    styles = {"gpt": ("GPT", "tab:blue", "-"), "gpt_tiled": ("GPT, tiled attention", "tab:green", "-."),
              "mamba": ("Mamba", "tab:orange", "-"), "mamba2": ("Mamba-2", "tab:red", "-")}
    for model, (label, color, ours_ls) in styles.items():
        for source, ls, suffix in (("ours", ours_ls, ""), ("torch", "--", " (PyTorch)")):
            pts = [(T, rows[model][T][source][key]) for T in lengths if T in rows[model]
                   and rows[model][T].get(source) and rows[model][T][source].get(key) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, color=color, marker="o", label=label + suffix)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (batch 1)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", help="comma-separated T values (default 256..16384, ..131072 on a GPU)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per T (after one warmup step)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--no-generate", action="store_true", help="skip the generation timing")
    p.add_argument("--out", default="build/scaling", help="output directory")
    p.add_argument("--models", help="comma-separated subset of: " + ", ".join(MODELS) + " (default all)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch CPU threads")
    args = p.parse_args()
    python = os.environ.get("PYTHON", sys.executable)
    device = "cuda" if gpu_visible() else "cpu"
    top = 131072 if device == "cuda" else 16384
    if args.lengths:
        try:
            lengths = sorted(int(x) for x in args.lengths.split(","))
        except ValueError:
            sys.exit(f"error: --lengths {args.lengths}: not a comma-separated list of integers")
        if lengths[0] < 2:
            sys.exit(f"error: --lengths {args.lengths}: every T must be at least 2")
    else:
        lengths = [256 << i for i in range((top // 256).bit_length())]
    torch_budget = float(os.environ.get("TORCH_MEMORY_MB", 0.6 * memory_available_mb()))
    os.makedirs(os.path.join(ROOT, args.out), exist_ok=True)
    run(["make", "-s", "train_gpt", "train_mamba", "data"])
    work = tempfile.mkdtemp()

    chosen = args.models.split(",") if args.models else list(MODELS)
    bad = [m for m in chosen if m not in MODELS]
    if bad:
        sys.exit(f"error: --models: unknown {', '.join(bad)} (known: {', '.join(MODELS)})")
    if "gpt_tiled" in chosen and "gpt" not in chosen:
        sys.exit("error: --models: gpt_tiled needs gpt (it reuses the GPT's run where the backend picked tiled)")
    rows = {m: {} for m in MODELS}
    for model in [m for m in MODELS if m in chosen]:
        has_torch = MODELS[model][2] is not None
        gen = {} if args.no_generate or not has_torch else generation_ms(model, lengths[-1], work)
        torch_prev = None  # (T, peak MB) of PyTorch's last run
        for T in lengths:
            if model == "gpt_tiled" and rows["gpt"][T]["ours"]["variant"] == "tiled":
                rows[model][T] = {"ours": rows["gpt"][T]["ours"]}  # the backend's pick was the tiled one already
                continue
            ms, mib, variant = train_step(model, T, args.steps)
            r = {"ours": {"ms": ms, "ms_1k": ms * 1000 / T, "tok_s": T / (ms / 1000), "mem": mib,
                          "gen_ms": at_position(gen, T), "variant": variant}}
            predicted = None
            if torch_prev:
                predicted = torch_prev[1] * (T / torch_prev[0]) ** MODELS[model][3]
            if not has_torch:
                pass
            elif not args.no_torch and (predicted is None or predicted < torch_budget):
                tms, tmb = torch_step(python, model, T, args.steps, args.threads, device)
                r["torch"] = {"ms": tms, "ms_1k": tms * 1000 / T, "mem": tmb}
                torch_prev = (T, tmb)
            elif not args.no_torch:
                r["torch_skipped"] = f"predicted {predicted / 1024:.0f} GB > {torch_budget / 1024:.0f} GB"
            rows[model][T] = r
            t = r.get("torch")
            print(f"{model:9s} T {T:6d}: {ms:10.1f} ms/step {r['ours']['tok_s']:8.0f} tok/s {mib:7.0f} MiB"
                  + (f" | attention {variant}" if variant else "")
                  + f" | gen {r['ours']['gen_ms']:.3f} ms/token"
                  + (f" | torch {t['ms']:.1f} ms/step {t['mem']:.0f} MB" if t else
                     f" | torch skipped ({r['torch_skipped']})" if "torch_skipped" in r else ""), flush=True)
    shutil.rmtree(work, ignore_errors=True)

    # the table: a column per (model, quantity) of the models run ("-" for the others)
    out = os.path.join(ROOT, args.out)
    names = {"gpt": "GPT", "gpt_tiled": "GPT tiled", "mamba": "Mamba", "mamba2": "Mamba-2"}
    ran = [m for m in MODELS if rows[m]]

    def torch_cell(r):
        if "torch" in r:
            return f"{r['torch']['ms_1k']:.0f} ({r['torch']['mem']:.0f})"
        return "does not fit" if "torch_skipped" in r else "-"

    def ms_cell(m, r):
        v = r["ours"]["variant"]
        return f"{r['ours']['ms_1k']:.0f}" + (f" ({v[0]})" if m == "gpt" and v else "")
    columns = [(f"{names[m]} ms/1k", m, lambda r, m=m: ms_cell(m, r)) for m in ran]
    columns += [(f"{names[m]} tok/s", m, lambda r: f"{r['ours']['tok_s']:.0f}") for m in ran if m != "gpt_tiled"]
    columns += [(f"{names[m]} MiB", m, lambda r: f"{r['ours']['mem']:.0f}") for m in ran]
    columns += [(f"{names[m]} gen ms/tok", m, lambda r: f"{r['ours']['gen_ms']:.3f}") for m in ran if MODELS[m][2]]
    columns += [(f"PyTorch {names[m]} ms/1k (MB)", m, torch_cell) for m in ran if MODELS[m][2]]
    lines = [f"Training cost against sequence length, batch 1, device {device} "
             f"({os.cpu_count()} cores), {args.steps} timed steps after one warmup.",
             "GPT: C 256, L 4, H 4, F 512, with the attention variant the backend picks (m: materialized, "
             "t: tiled) and with the memory-linear tiled one forced; "
             "Mamba: C 256, L 5, E 512, N 16; Mamba-2 (-M 2): C 256, L 5, E 512, N 64, 8 heads of 64. ms/1k: "
             "step time per 1000 tokens. gen: generation time per token at that context length (KV cache / "
             "recurrent step).", "",
             "| T | " + " | ".join(c[0] for c in columns) + " |", "| ---: " * (len(columns) + 1) + "|"]
    for T in lengths:
        lines.append(f"| {T} | " + " | ".join(f(rows[m][T]) for _, m, f in columns) + " |")

    def series(m, key):
        return [rows[m][T]["ours"][key] for T in lengths]
    summary = []
    if "gpt" in ran and "mamba" in ran:
        cross = next((T for i, T in enumerate(lengths)
                      if all(rows["mamba"][U]["ours"]["ms"] < rows["gpt"][U]["ours"]["ms"] for U in lengths[i:])),
                     None)
        summary.append("Mamba faster than the GPT per training step " +
                       (f"from T = {cross} on." if cross else "at none of these lengths."))
    for m in ("mamba", "mamba2"):
        if m in ran:
            ms, mem = series(m, "ms_1k"), series(m, "mem")
            summary.append(f"{names[m]} time per 1k tokens: {min(ms):.0f} to {max(ms):.0f} ms, a spread of "
                           f"{max(ms) / min(ms):.2f}x over T = {lengths[0]}..{lengths[-1]}; peak memory "
                           f"{mem[0]:.0f} MiB at T = {lengths[0]}, {mem[-1]:.0f} MiB at T = {lengths[-1]}.")
    if "gpt" in ran:
        g_mem = series("gpt", "mem")
        summary.append(f"GPT peak memory: {g_mem[0]:.0f} MiB at T = {lengths[0]}, {g_mem[-1]:.0f} MiB at "
                       f"T = {lengths[-1]}.")
    if "gpt_tiled" in ran and len(lengths) > 1:
        t_mem = series("gpt_tiled", "mem")
        # linear growth: the same MiB per extra 1k tokens between every two lengths
        t_slope = [(t_mem[i + 1] - t_mem[i]) * 1000 / (lengths[i + 1] - lengths[i]) for i in range(len(lengths) - 1)]
        summary.append(f"GPT with the tiled attention: {t_mem[0]:.0f} MiB at T = {lengths[0]}, {t_mem[-1]:.0f} MiB at "
                       f"T = {lengths[-1]}; MiB per extra 1k tokens between successive lengths: "
                       + ", ".join(f"{x:.1f}" for x in t_slope) + " (constant: linear in T).")
    with open(os.path.join(out, "scaling.md"), "w") as f:
        f.write("\n".join(lines + [""] + summary) + "\n")
    plot(rows, lengths, "ms_1k", "train-step time per 1k tokens (ms)", os.path.join(out, "scaling_time.png"),
         "Training cost against sequence length")
    plot(rows, lengths, "mem", "peak memory (MiB / MB)", os.path.join(out, "scaling_memory.png"),
         "Peak memory against sequence length")
    print("\n".join([""] + lines + [""] + summary))
    print(f"wrote {args.out}/scaling.md, scaling_time.png, scaling_memory.png")


if __name__ == "__main__":
    main()

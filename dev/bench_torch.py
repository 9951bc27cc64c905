"""
Times PyTorch training steps (forward, backward, grad clip, AdamW) of the
project's models on random tokens, to set beside the C++ trainers.

Each model is registered in MODELS as a builder: args -> (model, optimizer
param groups). A model's forward takes (idx, targets) and returns
(logits, loss). To add a model, write its builder and add it to MODELS.

Models:
    gpt    dev/reference/gpt.py (uses -H, -F)
    mamba  dev/reference/mamba.py with the parallel (log-depth) selective
           scan; E = 2C, R = ceil(C/16), state size --N (-H, -F are ignored).
           --selftest first compares that scan with the sequential one.
           The scan materializes (B,T,E,N) decays and states in every layer:
           about 6 GB peak on the CPU at B 16, T 256, C 256, L 5.
    vit    dev/reference/vit.py's ViT on random 3x32x32 images (uses --patch,
           -H, -F, --K, --dropout; --T is ignored: T = (32/patch)^2)
    mamba_vit  dev/reference/vit.py's Mamba-ViT with mamba.py's parallel
           scan (uses --patch, --N, --K, --dropout). Both report images/s.

The last two lines printed are exactly:
    torch_peak_memory_mb <peak memory: the process's resident set on the CPU, the allocator's peak on a GPU>
    torch_ms_per_step <mean milliseconds over the timed steps>

Usage:
    python dev/bench_torch.py --model gpt --B 16 --T 256 --threads 8
    python dev/bench_torch.py --model gpt --device cuda --B 64
    python dev/bench_torch.py --model mamba --B 16 --T 256 --C 256 --L 5 --threads 2
    python dev/bench_torch.py --model mamba2 --B 16 --T 256 --C 256 --L 5 --N 64 --threads 2
    python dev/bench_torch.py --model vit --B 128 --C 256 --L 6 --H 4 --F 512 --threads 2
    python dev/bench_torch.py --model mamba_vit --B 128 --C 256 --L 6 --threads 2
"""

import argparse
import os
import resource
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
import blas_core  # noqa: E402

blas_core.use_fast_blas()  # the BLAS kernels the trainers use, before torch loads OpenBLAS
import torch  # noqa: E402

# -----------------------------------------------------------------------------
# model builders


def build_gpt(args):
    from gpt import GPT, GPTConfig
    cfg = GPTConfig(maxT=args.T, V=args.V, L=args.L, H=args.H, C=args.C, F=args.F)
    model = GPT(cfg)
    return model, model.optim_groups(args.weight_decay)


def build_mamba(args):
    from mamba import MambaLM, MambaConfig
    cfg = MambaConfig(V=args.V, L=args.L, C=args.C, N=args.N)
    model = MambaLM(cfg, scan="parallel")
    return model, model.optim_groups(args.weight_decay)


def build_mamba2(args):
    from mamba import MambaLM, MambaConfig
    cfg = MambaConfig(V=args.V, L=args.L, C=args.C, N=args.N, mamba2=True, headdim=args.headdim)
    model = MambaLM(cfg, scan="chunked")  # the SSD algorithm in matrix products (mamba.py's ssd_scan_chunked)
    return model, model.optim_groups(args.weight_decay)


def build_vit(args):
    from vit import ViT, ViTConfig
    model = ViT(ViTConfig(patch=args.patch, K=args.K, L=args.L, H=args.H, C=args.C, F=args.F))
    model.set_dropout(args.dropout)  # torch's own dropout in train mode
    return model, model.optim_groups(args.weight_decay)


def build_mamba_vit(args):
    from vit import MambaViT, MambaViTConfig
    model = MambaViT(MambaViTConfig(patch=args.patch, K=args.K, L=args.L, C=args.C, N=args.N), scan="parallel")
    model.set_dropout(args.dropout)
    return model, model.optim_groups(args.weight_decay)


# models whose input is a batch of images (B, 3, 32, 32) and labels (B)
VISION_MODELS = ("vit", "mamba_vit")


def describe(args):
    """The model's config for the header line."""
    if args.model in VISION_MODELS:
        T = (32 // args.patch) ** 2
        shape = f"H {args.H} F {args.F}" if args.model == "vit" else f"E {2 * args.C} N {args.N}"
        return f"patch {args.patch} (T {T}) C {args.C} L {args.L} {shape} K {args.K} dropout {args.dropout}"
    if args.model == "mamba2":
        return f"C {args.C} L {args.L} E {2 * args.C} N {args.N} headdim {args.headdim} V {args.V} (chunked SSD)"
    if args.model == "mamba":
        from mamba import MambaConfig
        cfg = MambaConfig(V=args.V, L=args.L, C=args.C, N=args.N)
        return f"C {cfg.C} L {cfg.L} E {cfg.E} N {cfg.N} R {cfg.R} V {cfg.V}"
    return f"C {args.C} L {args.L} H {args.H} F {args.F} V {args.V}"


def selftest(args):
    """Checks the benchmarked model's fast path against its plain version."""
    if args.model == "mamba2":
        from mamba import check_ssd_scans
        ok, worst = check_ssd_scans(verbose=False)
        print(f"selftest: chunked and parallel vs sequential SSD scan, worst float64 rel err {worst:.1e}: "
              + ("OK" if ok else "FAILED"))
        if not ok:
            sys.exit(1)
    elif args.model in ("mamba", "mamba_vit"):
        from mamba import check_scans
        ok, worst = check_scans()
        print(f"selftest: parallel vs sequential scan, worst float64 rel err {worst:.1e}: "
              + ("OK" if ok else "FAILED"))
        if not ok:
            sys.exit(1)
    else:
        print(f"selftest: nothing to check for {args.model}")


MODELS = {
    "gpt": build_gpt,
    "mamba": build_mamba,
    "mamba2": build_mamba2,
    "vit": build_vit,
    "mamba_vit": build_mamba_vit,
}

# -----------------------------------------------------------------------------


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt", choices=sorted(MODELS))
    parser.add_argument("--B", type=int, default=16, help="batch size")
    parser.add_argument("--T", type=int, default=256, help="sequence length")
    parser.add_argument("--C", type=int, default=256, help="channels")
    parser.add_argument("--L", type=int, default=4, help="layers")
    parser.add_argument("--H", type=int, default=4, help="heads")
    parser.add_argument("--F", type=int, default=512, help="MLP hidden size")
    parser.add_argument("--V", type=int, default=65, help="vocab size")
    parser.add_argument("--N", type=int, default=16, help="state size (d_state: mamba's per channel, mamba2's per head)")
    parser.add_argument("--headdim", type=int, default=64, help="mamba2's channels per head")
    parser.add_argument("--patch", type=int, default=4, help="patch size (vision models)")
    parser.add_argument("--K", type=int, default=10, help="classes (vision models)")
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout (vision models)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight_decay", type=float, default=1e-5)
    parser.add_argument("--grad_clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--selftest", action="store_true",
                        help="first check the model's fast path against its plain version (mamba: the scan)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("need at least one timed step")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch.cuda.is_available() is False")
    device = torch.device(args.device)
    if args.selftest:
        selftest(args)
    torch.manual_seed(args.seed)

    model, groups = MODELS[args.model](args)
    model.to(device=device, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99), eps=1e-8)
    nparams = sum(p.numel() for p in model.parameters())

    # random tokens or images: timing does not depend on the data
    if args.model in VISION_MODELS:
        x = torch.rand(args.B, 3, 32, 32, device=device)
        y = torch.randint(0, args.K, (args.B,), device=device)
    else:
        x = torch.randint(0, args.V, (args.B, args.T), device=device)
        y = torch.randint(0, args.V, (args.B, args.T), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        return loss

    print(f"model {args.model}: {nparams:,} params, B {args.B}" + ("" if args.model in VISION_MODELS else f" T {args.T}")
          + f" {describe(args)}")
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, float32")

    for _ in range(args.warmup):
        step()
    sync(device)

    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
        print(f"step {i + 1}/{args.steps}: loss {loss.item():.4f}, {times[-1]:.2f} ms")

    ms = sum(times) / len(times)
    if args.model in VISION_MODELS:
        print(f"images/s {args.B / (ms / 1000.0):.1f}")
    else:
        print(f"tokens/s {args.B * args.T / (ms / 1000.0):.0f}")
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 1e6
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # ru_maxrss is in KiB on Linux
    print(f"torch_peak_memory_mb {peak_mb:.0f}")
    print(f"torch_ms_per_step {ms:.3f}")


if __name__ == "__main__":
    main()

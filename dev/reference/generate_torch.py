"""
Times recurrent generation in PyTorch, to set beside the C++ generation
(llmc/mamba_step.cuh, llmc/kv_cache.cuh): the char Mamba LM with a
recurrent step, and the GPT with a KV cache, on randomly initialized models
(dev/reference/mamba.py's MambaLM, dev/reference/gpt.py's GPT; no trained
weights are needed for timing).

Mamba step, batched, per layer a conv state (B, E, 3) and an SSM state
(B, E, N), the math of mamba_ssm's Mamba.step:
    xz = in_proj(x) -> x | z;  u = silu(conv_b + sum_k conv_w[:, k] * window[k]),
    window = (conv state, x), then the state keeps its last 3 entries
    x_dbl = x_proj(u) -> dt_raw | B | C;  dt = softplus(dt_proj(dt_raw))
    h = exp(dt A) h + dt B u;  y = <h, C> + D u;  out = out_proj(y * silu(z))
    and the block's x = LN(x + out) (post-norm).
Mamba-2 step (--model mamba2), batched, per layer a conv state (B, E+2N, 3)
and an SSD state (B, H, P, N):
    zxbcdt = in_proj(x) -> z | xBC | dt_raw;  xbc = silu(conv of (conv state, xBC)) -> x | B | C
    dt = softplus(dt_raw + dt_bias) (H);  S = exp(dt A) S + dt x B^T per head
    y = S C + D x;  out = out_proj(RMSNorm(y * silu(z)) * norm_w);  x = LN(x + out).
GPT step, batched, per layer k and v (B, H, T, hs): the new token's q, k, v;
k, v appended at its position; attention over positions 0..pos; pre-norm
block. When the cache is full (pos == T) the last T/2 tokens are
re-prefilled as a new window at positions 0..T/2-1 (one parallel pass),
as the C++ generation does.

A run: the prompt (--prompt tokens, random) is prefilled, then --tokens
tokens are generated per row: embed, the L block steps, final LayerNorm,
head, a sample from the softmax (or the argmax with --greedy). One warm-up
run of a few tokens comes first. Generated tokens per second count all B
rows: B * tokens / seconds of the generation loop (the prompt's prefill is
not timed).

The last two lines printed are exactly:
    torch_peak_memory_mb <peak CUDA memory allocated, or the process's peak RSS on the CPU>
    torch_tokens_per_s <B * tokens / seconds>

--check first verifies the steps against the models' parallel forward in
float64 (logits at every position; for the GPT also across a re-prefill),
printing the max relative errors.

Usage:
    /usr/bin/python3 dev/reference/generate_torch.py --model mamba --C 256 --L 5 --B 1 --tokens 256
    /usr/bin/python3 dev/reference/generate_torch.py --model mamba2 --C 256 --L 5 --N 64 --B 1 --tokens 256
    /usr/bin/python3 dev/reference/generate_torch.py --model gpt --C 256 --L 4 --B 8 --tokens 512 --T 256
    /usr/bin/python3 dev/reference/generate_torch.py --model gpt --device cuda --B 64 --tokens 1024
    /usr/bin/python3 dev/reference/generate_torch.py --check
"""

import argparse
import math
import os
import resource
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blas_core  # noqa: E402

blas_core.use_fast_blas()  # the BLAS kernels the trainers use, before torch loads OpenBLAS
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gpt import GPT, GPTConfig  # noqa: E402
from mamba import MambaLM, MambaConfig  # noqa: E402

# -----------------------------------------------------------------------------
# Mamba: the recurrent step


class MambaGenerator:
    """Per-layer conv and SSM states for B rows of a MambaLM; step() feeds one token per row."""

    def __init__(self, model, B):
        c = model.cfg
        p = next(model.parameters())
        self.model = model
        self.conv = [p.new_zeros(B, c.E, 3) for _ in range(c.L)]
        self.ssm = [p.new_zeros(B, c.E, c.N) for _ in range(c.L)]

    def reset(self):
        for s in self.conv + self.ssm:
            s.zero_()

    def block_step(self, l, x):
        """x (B, C) -> the block's output (B, C); layer l's states advance."""
        block = self.model.blocks[l]
        m = block.mixer
        E, N, R = m.E, m.N, m.R
        xz = m.in_proj(x)
        xs, z = xz.split(E, dim=-1)
        window = torch.cat([self.conv[l], xs.unsqueeze(-1)], dim=-1)  # (B, E, 4), oldest first
        self.conv[l].copy_(window[..., 1:])
        u = F.silu((window * m.conv_w).sum(-1) + m.conv_b)
        dt_raw, Bm, Cm = m.x_proj(u).split([R, N, N], dim=-1)
        dt = F.softplus(m.dt_proj(dt_raw))  # (B, E)
        A = -torch.exp(m.A_log)  # (E, N)
        h = self.ssm[l]
        h.mul_(torch.exp(dt.unsqueeze(-1) * A)).add_((dt * u).unsqueeze(-1) * Bm.unsqueeze(1))
        y = (h * Cm.unsqueeze(1)).sum(-1) + m.D * u
        return block.ln(x + m.out_proj(y * F.silu(z)))

    def step(self, tokens, pos):
        """tokens (B,) -> logits (B, V). pos is unused (Mamba has no positions)."""
        x = self.model.wte(tokens)
        for l in range(len(self.model.blocks)):
            x = self.block_step(l, x)
        return self.model.head(self.model.lnf(x))

    def prefill(self, prompt):
        """prompt (B, P): stepped through (the states are what matter); returns the last logits."""
        self.reset()
        for t in range(prompt.shape[1]):
            logits = self.step(prompt[:, t], t)
        return logits


class Mamba2Generator(MambaGenerator):
    """Per-layer conv (B, E+2N, 3) and SSD (B, H, P, N) states of a Mamba-2 MambaLM."""

    def __init__(self, model, B):
        c = model.cfg
        p = next(model.parameters())
        self.model = model
        H, P = c.E // c.headdim, c.headdim
        self.conv = [p.new_zeros(B, c.E + 2 * c.N, 3) for _ in range(c.L)]
        self.ssm = [p.new_zeros(B, H, P, c.N) for _ in range(c.L)]

    def block_step(self, l, x):
        block = self.model.blocks[l]
        m = block.mixer
        E, N, H = m.E, m.N, m.H
        z, xBC, dt_raw = m.in_proj(x).split([E, E + 2 * N, H], dim=-1)
        window = torch.cat([self.conv[l], xBC.unsqueeze(-1)], dim=-1)  # (B, E+2N, 4), oldest first
        self.conv[l].copy_(window[..., 1:])
        xs, Bm, Cm = F.silu((window * m.conv_w).sum(-1) + m.conv_b).split([E, N, N], dim=-1)
        dt = F.softplus(dt_raw + m.dt_bias)  # (B, H)
        A = -torch.exp(m.A_log)  # (H,)
        xh = xs.view(x.shape[0], H, E // H)  # (B, H, P)
        S = self.ssm[l]
        S.mul_(torch.exp(dt * A)[:, :, None, None]).add_((dt.unsqueeze(-1) * xh).unsqueeze(-1) * Bm[:, None, None, :])
        y = ((S * Cm[:, None, None, :]).sum(-1) + m.D[:, None] * xh).reshape(x.shape[0], E)
        gated = y * F.silu(z)
        normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + 1e-5) * m.norm_w
        return block.ln(x + m.out_proj(normed))


# -----------------------------------------------------------------------------
# GPT: the KV cache


class GPTGenerator:
    """Per-layer k, v caches (B, H, T, hs) of a GPT; blocks() runs a span of new positions."""

    def __init__(self, model, B):
        c = model.cfg
        p = next(model.parameters())
        self.model, self.T = model, c.maxT
        hs = c.C // c.H
        self.k = [p.new_zeros(B, c.H, c.maxT, hs) for _ in range(c.L)]
        self.v = [p.new_zeros(B, c.H, c.maxT, hs) for _ in range(c.L)]
        self.window = []  # the tokens at positions 0..pos-1, per position (B,)

    def forward_span(self, tokens, pos0):
        """
        tokens (B, S) at positions pos0..pos0+S-1, the cache holding 0..pos0-1:
        writes their k, v, returns logits (B, S, V). S = 1 is a step.
        """
        model, c = self.model, self.model.cfg
        Bsz, S = tokens.shape
        H, hs = c.H, c.C // c.H
        pos = torch.arange(pos0, pos0 + S, device=tokens.device)
        x = model.wte(tokens) + model.wpe(pos)  # the caller's position embedding
        end = pos0 + S
        # query i (position pos0+i) sees keys 0..pos0+i
        mask = torch.arange(end, device=tokens.device).unsqueeze(0) <= pos.unsqueeze(1)  # (S, end)
        for l, block in enumerate(model.blocks):
            attn = block.attn
            q, k, v = attn.qkv(block.ln1(x)).split(c.C, dim=-1)
            q = q.view(Bsz, S, H, hs).transpose(1, 2)  # (B, H, S, hs)
            self.k[l][:, :, pos0:end] = k.view(Bsz, S, H, hs).transpose(1, 2)
            self.v[l][:, :, pos0:end] = v.view(Bsz, S, H, hs).transpose(1, 2)
            scores = (q @ self.k[l][:, :, :end].transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            y = (att @ self.v[l][:, :, :end]).transpose(1, 2).reshape(Bsz, S, c.C)
            x = x + attn.proj(y)
            x = x + block.mlp(block.ln2(x), lambda name, t: None)
        return model.head(model.lnf(x))

    def prefill(self, prompt):
        """prompt (B, P), P <= T: one parallel pass; returns the last logits (B, V)."""
        self.window = list(prompt.unbind(1))
        return self.forward_span(prompt, 0)[:, -1]

    def step(self, tokens, pos):
        """
        tokens (B,) -> logits (B, V); re-prefills the last T/2 tokens when the
        cache is full. pos is unused: the position is where the window ends.
        """
        if len(self.window) == self.T:
            self.prefill(torch.stack(self.window[self.T - self.T // 2:], dim=1))
        p = len(self.window)
        self.window.append(tokens)
        return self.forward_span(tokens.unsqueeze(1), p)[:, 0]


# -----------------------------------------------------------------------------
# building, checking, timing


def build(args, dtype=torch.float32, device="cpu"):
    if args.model == "mamba":
        model = MambaLM(MambaConfig(V=args.V, L=args.L, C=args.C, N=args.N))
    elif args.model == "mamba2":
        model = MambaLM(MambaConfig(V=args.V, L=args.L, C=args.C, N=args.N, mamba2=True, headdim=args.headdim))
    else:
        F_ = args.F or 2 * args.C
        model = GPT(GPTConfig(maxT=args.T, V=args.V, L=args.L, H=args.H, C=args.C, F=F_))
    return model.to(device=device, dtype=dtype).eval()


def generator_for(args, model, B):
    if args.model == "mamba2":
        return Mamba2Generator(model, B)
    return MambaGenerator(model, B) if args.model == "mamba" else GPTGenerator(model, B)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@torch.no_grad()
def check(seed):
    """Steps against the parallel forward in float64; returns the worst relative error."""
    torch.manual_seed(seed)
    worst = 0.0
    B, T = 3, 37
    for name in ("mamba", "mamba2", "gpt"):
        args = argparse.Namespace(model=name, V=65, L=2, C=32, N=16, H=4, F=0, T=40, headdim=16)
        model = build(args, torch.float64)
        idx = torch.randint(0, 65, (B, T))
        ref, _ = model(idx)  # (B, T, V)
        gen = generator_for(args, model, B)
        P = 5
        got = [gen.prefill(idx[:, :P])] + [gen.step(idx[:, t], t) for t in range(P, T)]
        e = rel_err(torch.stack(got, dim=1), ref[:, P - 1:])
        print(f"check {name}: prefill {P} + {T - P} steps vs parallel forward, max rel err {e:.3e}")
        worst = max(worst, e)
    # the GPT across a re-prefill: maxT 16, 30 tokens; after position 15 the
    # window restarts from the last 8 tokens
    args = argparse.Namespace(model="gpt", V=65, L=2, C=32, N=16, H=4, F=0, T=16, headdim=16)
    model = build(args, torch.float64)
    idx = torch.randint(0, 65, (B, 30))
    gen = generator_for(args, model, B)
    gen.prefill(idx[:, :16])
    got = torch.stack([gen.step(idx[:, t], t) for t in range(16, 24)], dim=1)  # window idx[8:24]
    ref, _ = model(idx[:, 8:24])
    e = rel_err(got, ref[:, 8:])
    print(f"check gpt: re-prefill of 8 + 8 steps vs parallel forward over the window, max rel err {e:.3e}")
    return max(worst, e)


def sample(logits, generator, greedy):
    if greedy:
        return logits.argmax(-1)
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(gen, logits, pos, tokens, rng, greedy):
    """From the prompt's last logits (B, V) at position pos: samples and steps `tokens` times."""
    for _ in range(tokens):
        nxt = sample(logits, rng, greedy)
        logits = gen.step(nxt, pos)
        pos += 1
    return logits


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mamba", "mamba2", "gpt"], default="mamba")
    parser.add_argument("--C", type=int, default=256, help="channels")
    parser.add_argument("--L", type=int, default=5, help="layers")
    parser.add_argument("--B", type=int, default=1, help="rows generated at once")
    parser.add_argument("--tokens", type=int, default=256, help="tokens generated per row (timed)")
    parser.add_argument("--prompt", type=int, default=1, help="prompt tokens per row (prefilled, not timed)")
    parser.add_argument("--N", type=int, default=16, help="(mamba, mamba2) d_state")
    parser.add_argument("--headdim", type=int, default=64, help="(mamba2) channels per head")
    parser.add_argument("--H", type=int, default=4, help="(gpt) heads")
    parser.add_argument("--F", type=int, default=0, help="(gpt) MLP width, 0: 2C")
    parser.add_argument("--T", type=int, default=256, help="(gpt) positions = cache length; full: re-prefill T/2")
    parser.add_argument("--V", type=int, default=65, help="vocabulary")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, 0: torch's default")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    parser.add_argument("--check", action="store_true", help="first check the steps against the parallel forward")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.check and check(args.seed) > 1e-10:
        sys.exit("error: the steps disagree with the parallel forward")
    if args.model == "gpt" and not 1 <= args.prompt <= args.T:
        sys.exit(f"error: --prompt {args.prompt} must be in 1..--T {args.T}")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = build(args, torch.float32, device)
    gen = generator_for(args, model, args.B)
    rng = torch.Generator(device=device)
    rng.manual_seed(args.seed)
    prompt = torch.randint(0, args.V, (args.B, args.prompt), device=device, generator=rng)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with torch.no_grad():
        generate(gen, gen.prefill(prompt), args.prompt, min(8, args.tokens), rng, args.greedy)  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        logits = gen.prefill(prompt)
    sync()
    t0 = time.perf_counter()
    generate(gen, logits, args.prompt, args.tokens, rng, args.greedy)
    sync()
    seconds = time.perf_counter() - t0
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: C {args.C} L {args.L} B {args.B}, {nparams} parameters, prompt {args.prompt}, "
          f"{args.tokens} tokens per row in {seconds:.3f} s on {device}")
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"torch_peak_memory_mb {peak:.1f}")
    print(f"torch_tokens_per_s {args.B * args.tokens / seconds:.1f}")


if __name__ == "__main__":
    main()

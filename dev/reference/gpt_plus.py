"""
The Transformer++ (train_gpt_plus) in PyTorch, and the writer of its
reference state.

The model (defined exactly in doc/models.md): token embedding wte (V,C), no
position table; L pre-norm blocks x = x + attn(RMSNorm1(x));
x = x + mlp(RMSNorm2(x)); causal self-attention with qkv Linear(C,3C) and
proj Linear(C,C), no biases, H heads, rotary embeddings on q and k (base
10000, rotate-half pairing: channel i of a head with channel i + hs/2, as
GPT-NeoX and Hugging Face's LLaMA); SwiGLU MLP W2(silu(W1 x) * W3 x) with
W1, W3 Linear(C,F) and W2 Linear(F,C), no biases; final RMSNorm lnf; head
Linear(C,V) without bias. RMSNorm: x / sqrt(mean(x^2) + 1e-5) * weight.
F is the SwiGLU width; train_gpt_plus derives it from the GPT's MLP width as
2F_gpt/3 to the nearest multiple of 8 (hidden_width below). Dropout
(set_dropout, the trainers' -D) as gpt.py's: the embedding's output, the
attention probabilities and each residual branch, the same sites.

The reference state holds what gpt.py's does (initial flat parameters, a
random batch, every layer's activations, loss, flat gradient, 10 AdamW
steps), computed in float64 and stored as float32.

Usage:
    python dev/reference/gpt_plus.py               # writes data/ref_gpt_plus.bin
    python dev/reference/gpt_plus.py --check       # and checks it afterwards
"""

import argparse
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import formats  # noqa: E402

RMS_EPS = 1e-5
ROPE_BASE = 10000.0


def hidden_width(F_gpt):
    """The SwiGLU width with about the parameters of a GPT MLP of width F_gpt (plus_block.cuh)."""
    return max(8, 8 * int((2.0 * F_gpt / 3.0) / 8.0 + 0.5))


@dataclass
class PlusConfig:
    maxT: int = 64  # longest context (the KV cache's length); no position table
    V: int = 65     # vocab size
    L: int = 2      # number of layers
    H: int = 4      # number of heads
    C: int = 64     # channels
    F: int = 88     # SwiGLU hidden width (hidden_width(2C))


def rms_norm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * weight


def rope_cos_sin(T, hs, dtype):
    """cos, sin (T, hs): angle t * base^(-2i/hs) for channel i and i + hs/2."""
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, hs/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class RMSNorm(nn.Module):

    def __init__(self, C):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))

    def forward(self, x):
        return rms_norm(x, self.weight)


class CausalSelfAttention(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        assert cfg.C % cfg.H == 0 and (cfg.C // cfg.H) % 2 == 0
        self.H = cfg.H
        self.qkv = nn.Linear(cfg.C, 3 * cfg.C, bias=False)
        self.proj = nn.Linear(cfg.C, cfg.C, bias=False)
        mask = torch.tril(torch.ones(cfg.maxT, cfg.maxT, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, cfg.maxT, cfg.maxT), persistent=False)

    def forward(self, x, save, drop, site):
        """drop, site: dropout on the probabilities (a common.Dropout and its site)."""
        B, T, C = x.size()
        H, hs = self.H, C // self.H
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, H, hs).transpose(1, 2)  # (B,H,T,hs)
        k = k.view(B, T, H, hs).transpose(1, 2)
        v = v.view(B, T, H, hs).transpose(1, 2)
        cos, sin = rope_cos_sin(T, hs, x.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # the qkv buffer after the rotation, (B,T,3C) as train_gpt_plus keeps it
        save("qkv_rot", torch.cat([t.transpose(1, 2).reshape(B, T, C) for t in (q, k, v)], dim=2))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        scores = scores.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
        att = F.softmax(scores, dim=-1)
        save("att", att)
        att = drop(att, site, self.training)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        save("atty", y)
        y = self.proj(y)
        save("attproj", y)
        return y


class SwiGLU(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.w1 = nn.Linear(cfg.C, cfg.F, bias=False)  # gate (through SiLU)
        self.w3 = nn.Linear(cfg.C, cfg.F, bias=False)  # value
        self.w2 = nn.Linear(cfg.F, cfg.C, bias=False)

    def forward(self, x, save):
        a, b = self.w1(x), self.w3(x)
        save("fch", torch.cat([a, b], dim=-1))  # (B,T,2F), as train_gpt_plus's one Linear
        h = F.silu(a) * b
        save("fch_swiglu", h)
        h = self.w2(h)
        save("fcproj", h)
        return h


class Block(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.ln1 = RMSNorm(cfg.C)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = RMSNorm(cfg.C)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, save, drop, layer):
        """drop: the model's common.Dropout; layer: this block's index (its sites, as gpt.py's)."""
        h = self.ln1(x)
        save("ln1", h)
        x = x + drop(self.attn(h, save, drop, common.SITE_PROBS + layer), 2 * layer, self.training)
        save("res2", x)
        h = self.ln2(x)
        save("ln2", h)
        x = x + drop(self.mlp(h, save), 2 * layer + 1, self.training)
        save("res3", x)
        return x


class GPTPlus(common.FlatParams):

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.V, cfg.C)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.L)])
        self.lnf = RMSNorm(cfg.C)
        self.head = nn.Linear(cfg.C, cfg.V, bias=False)
        self.drop = common.Dropout()

    def set_dropout(self, p, seed=None, step=None):
        """Dropout at rate p: the trainers' masks of (seed, step), or torch's own without a seed."""
        self.drop = common.Dropout(p, seed, step)

    def forward(self, idx, targets=None, acts=None):
        """idx, targets: (B,T) int64. Returns (logits (B,T,V), loss or None); intermediates into acts."""
        B, T = idx.size()
        assert T <= self.cfg.maxT, f"sequence length {T} > maxT {self.cfg.maxT}"
        save = common.saver(acts, "")
        x = self.drop(self.wte(idx), common.SITE_EMBED, self.training)
        save("encoded", x)
        for l, block in enumerate(self.blocks):
            x = block(x, common.saver(acts, f"h{l}."), self.drop, l)
        x = self.lnf(x)
        save("lnf", x)
        logits = self.head(x)
        save("logits", logits)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def flat_layout(self):
        c = self.cfg
        return formats.gpt_plus_param_layout(c.V, c.L, c.C, c.F)

    def flat_tensors(self):
        bs = self.blocks
        return [
            ("wte", [self.wte.weight]),
            ("ln1_w", [b.ln1.weight for b in bs]),
            ("qkv_w", [b.attn.qkv.weight for b in bs]),
            ("attn_proj_w", [b.attn.proj.weight for b in bs]),
            ("ln2_w", [b.ln2.weight for b in bs]),
            ("fc_w", [w for b in bs for w in (b.mlp.w1.weight, b.mlp.w3.weight)]),  # per layer: W1 then W3
            ("fc_proj_w", [b.mlp.w2.weight for b in bs]),
            ("lnf_w", [self.lnf.weight]),
            ("head_w", [self.head.weight]),
        ]


# -----------------------------------------------------------------------------
# reference state

ACT_NAMES = ("ln1", "qkv_rot", "att", "atty", "attproj", "res2", "ln2", "fch", "fch_swiglu", "fcproj", "res3")


def write_reference(path, cfg, B, T, seed, steps, adamw):
    torch.manual_seed(seed)
    gen = torch.default_generator
    params32 = common.reference_init(formats.gpt_plus_param_layout(cfg.V, cfg.L, cfg.C, cfg.F), gen)
    inputs = torch.randint(0, cfg.V, (B, T), generator=gen)
    targets = torch.randint(0, cfg.V, (B, T), generator=gen)
    model = GPTPlus(cfg).double()
    names = [f"h{l}.{name}" for l in range(cfg.L) for name in ACT_NAMES]
    tensors, summary = common.lm_reference_state(model, params32, inputs, targets, names, steps, adamw,
                                                 dropout=(0.1, 4242, 17))
    config = dict(maxT=cfg.maxT, V=cfg.V, L=cfg.L, H=cfg.H, C=cfg.C, F=cfg.F, P=params32.numel())
    formats.write_state(path, formats.KIND_GPT_PLUS, config, B, T, tensors)
    print(f"wrote {path}: {summary}")


# -----------------------------------------------------------------------------
# self-check of a written state (--check)


def _independent_forward(state):
    """
    Logits from the stored params by a second implementation: the rotation
    as complex multiplication of the pairs (x_i, x_{i+hs/2}) by
    exp(i t theta_i), attention by einsum with an additive mask, RMSNorm as
    x / (||x|| / sqrt(C)).
    """
    c = state.config
    T, C, L, H, Fh = state.T, c["C"], c["L"], c["H"], c["F"]
    hs = C // H
    flat = torch.from_numpy(state["params"].astype(np.float64))
    p = common.unflatten(flat, formats.gpt_plus_param_layout(c["V"], L, C, Fh))
    idx = torch.from_numpy(state["inputs"].astype(np.int64))
    Bn = idx.shape[0]

    def norm(x, w):
        return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) / C + RMS_EPS) * w

    theta = torch.tensor([ROPE_BASE ** (-2.0 * i / hs) for i in range(hs // 2)], dtype=torch.float64)
    rot = torch.polar(torch.ones(T, hs // 2, dtype=torch.float64), torch.arange(T, dtype=torch.float64)[:, None] * theta)

    def rope(x):  # (B,T,H,hs)
        z = torch.complex(x[..., :hs // 2], x[..., hs // 2:]) * rot[None, :, None, :]
        return torch.cat([z.real, z.imag], dim=-1)

    mask = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), diagonal=1)
    x = p["wte"][idx]
    for l in range(L):
        h = norm(x, p["ln1_w"][l])
        qkv = h @ p["qkv_w"][l].T
        q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(Bn, T, H, hs) for i in range(3))
        q, k = rope(q), rope(k)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hs) + mask
        y = torch.einsum("bhts,bshd->bthd", torch.softmax(s, dim=-1), v).reshape(Bn, T, C)
        x = x + y @ p["attn_proj_w"][l].T
        h = norm(x, p["ln2_w"][l])
        ab = h @ p["fc_w"][l].T
        a, b = ab[..., :Fh], ab[..., Fh:]
        x = x + (a * torch.sigmoid(a) * b) @ p["fc_proj_w"][l].T
    x = norm(x, p["lnf_w"])
    return (x @ p["head_w"].T).detach()


def check_state(path, fd_per_tensor=3, h=1e-4):
    state = formats.read_state(path)
    c = state.config
    cfg = PlusConfig(maxT=c["maxT"], V=c["V"], L=c["L"], H=c["H"], C=c["C"], F=c["F"])
    logits = _independent_forward(state)
    err = (logits - torch.tensor(state["logits"], dtype=torch.float64)).abs().max().item()
    print(f"check: logits vs an independent implementation (complex rotation, einsum) max abs err {err:.3e}")
    ok = err < 1e-5

    ok = common.check_lm_grads_and_steps(GPTPlus(cfg).double(), state, fd_per_tensor, h) and ok
    print("check: " + ("OK" if ok else "FAILED"))
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/ref_gpt_plus.bin", help="reference state file to write")
    parser.add_argument("--B", type=int, default=4)
    parser.add_argument("--T", type=int, default=32)
    parser.add_argument("--V", type=int, default=65)
    parser.add_argument("--L", type=int, default=2)
    parser.add_argument("--C", type=int, default=64)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--F", type=int, default=0, help="SwiGLU width (default: hidden_width(2C))")
    parser.add_argument("--maxT", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--check", action="store_true", help="read the state back and verify it")
    args = parser.parse_args()
    if args.C % args.H != 0 or (args.C // args.H) % 2 != 0:
        parser.error("C must split into H heads of even size")
    if not (1 <= args.T <= args.maxT):
        parser.error("need 1 <= T <= maxT")
    if args.steps < 1:
        parser.error("need at least one step")
    Fh = args.F or hidden_width(2 * args.C)
    cfg = PlusConfig(maxT=args.maxT, V=args.V, L=args.L, H=args.H, C=args.C, F=Fh)
    write_reference(args.out, cfg, args.B, args.T, args.seed, args.steps, common.REFERENCE_ADAMW)
    if args.check and not check_state(args.out):
        sys.exit(1)


if __name__ == "__main__":
    main()

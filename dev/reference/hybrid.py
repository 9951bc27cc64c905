"""
The hybrid LM in PyTorch (train_hybrid.cu), and the writer of its reference state.

The model (defined exactly in doc/models.md), mamba_ssm's MixerModel
stacking: token embedding wte (V,C), plus learned positions wpe (maxT,C)
when the pattern has an attention layer; one layer per letter of the
pattern, each a pre-norm residual with its own LayerNorm,

    x = x + mixer(LN(x)),  mixer = M: Mamba(x)      (mamba.py's Mamba, d_state 16, expand 2)
                                   S: Mamba-2(x)    (mamba.py's Mamba2, d_state 64, headdim 64, expand 2)
                                   A: causal self-attention (gpt.py's, qkv and proj with bias, H heads)
                                   F: MLP Linear(C,F) -> GELU -> Linear(F,C) (gpt.py's)

then a final LayerNorm lnf and a head Linear(C,V) with bias. LayerNorm eps
1e-5; loss the mean cross-entropy over all B*T positions. The mixers are
the modules of gpt.py and mamba.py, unchanged. Dropout (set_dropout, the
trainers' -D, with their masks, common.Dropout) on the embedding's output
(SITE_EMBED), on layer l's branch before its residual add (site l) and on an
A layer's attention probabilities (SITE_PROBS + l).

The reference state (read by test_hybrid.cu) holds the initial flat
parameters, a random batch, every layer's activations of the first forward
("l{l}.ln", the mixer's own names, "l{l}.res" the layer's output), the
loss, the flat gradient, and the losses and final parameters of a few AdamW
steps, all computed in float64 and stored as float32.

Usage:
    python dev/reference/hybrid.py                  # writes data/ref_hybrid.bin (pattern MAFM)
    python dev/reference/hybrid.py --pattern SMAS --C 64 --out data/ref_hybrid_s.bin   # with Mamba-2 layers
    python dev/reference/hybrid.py --check          # and checks it afterwards
"""

import argparse
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
import gpt  # noqa: E402
import mamba  # noqa: E402

# -----------------------------------------------------------------------------
# the model


@dataclass
class HybridConfig:
    pattern: str = "MAFM"  # one letter per layer: M Mamba, S Mamba-2, A attention, F MLP
    maxT: int = 48         # rows of wpe (with an attention layer)
    V: int = 65            # vocab size
    C: int = 32            # channels
    H: int = 4             # attention heads
    F: int = 48            # MLP hidden width


class Layer(nn.Module):
    """x + mixer(LN(x)) with the mixer of one letter."""

    def __init__(self, letter, cfg, scan):
        super().__init__()
        self.letter = letter
        self.ln = nn.LayerNorm(cfg.C, eps=1e-5)
        if letter == "M":
            self.mixer = mamba.Mamba(mamba.MambaConfig(V=cfg.V, L=1, C=cfg.C, N=formats.HYBRID_N), scan)
        elif letter == "S":
            self.mixer = mamba.Mamba2(mamba.MambaConfig(V=cfg.V, L=1, C=cfg.C, N=formats.HYBRID_SSD_N, mamba2=True,
                                                        headdim=formats.HYBRID_SSD_HD), scan)
        else:
            g = gpt.GPTConfig(maxT=cfg.maxT, V=cfg.V, L=1, H=cfg.H, C=cfg.C, F=cfg.F)
            self.mixer = gpt.CausalSelfAttention(g) if letter == "A" else gpt.MLP(g)

    def forward(self, x, save, drop, layer):
        """drop: the model's common.Dropout; layer: this layer's index (its sites)."""
        h = self.ln(x)
        save("ln", h)
        if self.letter == "A":
            y = self.mixer(h, save, drop, common.SITE_PROBS + layer)
        else:
            y = self.mixer(h, save)
        x = x + drop(y, layer, self.training)
        save("res", x)
        return x


class HybridLM(common.FlatParams):

    def __init__(self, cfg, scan="sequential"):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.V, cfg.C)
        self.wpe = nn.Embedding(cfg.maxT, cfg.C) if "A" in cfg.pattern else None
        self.layers = nn.ModuleList([Layer(ch, cfg, scan) for ch in cfg.pattern])
        self.lnf = nn.LayerNorm(cfg.C, eps=1e-5)
        self.head = nn.Linear(cfg.C, cfg.V)
        self.drop = common.Dropout()

    def set_dropout(self, p, seed=None, step=None):
        """Dropout at rate p: the trainers' masks of (seed, step), or torch's own without a seed."""
        self.drop = common.Dropout(p, seed, step)

    def forward(self, idx, targets=None, acts=None):
        """
        idx, targets: (B,T) int64. Returns (logits (B,T,V), loss or None).
        If acts is a dict, the intermediates are stored in it (detached) under
        the reference state's names ("encoded", "l{l}.ln", ..., "logits").
        """
        B, T = idx.size()
        save = common.saver(acts, "")
        x = self.wte(idx)
        if self.wpe is not None:
            assert T <= self.cfg.maxT, f"sequence length {T} > maxT {self.cfg.maxT}"
            x = x + self.wpe(torch.arange(T, device=idx.device))
        x = self.drop(x, common.SITE_EMBED, self.training)
        save("encoded", x)
        for l, layer in enumerate(self.layers):
            x = layer(x, common.saver(acts, f"l{l}."), self.drop, l)
        x = self.lnf(x)
        save("lnf", x)
        logits = self.head(x)
        save("logits", logits)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    # --- the flat parameter buffer of the C++ trainer ------------------------

    def flat_layout(self):
        c = self.cfg
        return formats.hybrid_param_layout(c.maxT, c.V, c.C, c.H, c.F, c.pattern)

    def flat_tensors(self):
        """Per flat tensor: its parameters, one per layer of its kind in pattern order."""
        of = {ch: [l for l in self.layers if l.letter == ch] for ch in "MSAF"}
        out = [("wte", [self.wte.weight])]
        if of["A"]:
            out.append(("wpe", [self.wpe.weight]))
        ms = of["M"]
        if ms:
            out += [("mamba.in_proj_w", [l.mixer.in_proj.weight for l in ms]),
                    ("mamba.conv_w", [l.mixer.conv_w for l in ms]),
                    ("mamba.conv_b", [l.mixer.conv_b for l in ms]),
                    ("mamba.x_proj_w", [l.mixer.x_proj.weight for l in ms]),
                    ("mamba.dt_proj_w", [l.mixer.dt_proj.weight for l in ms]),
                    ("mamba.dt_proj_b", [l.mixer.dt_proj.bias for l in ms]),
                    ("mamba.A_log", [l.mixer.A_log for l in ms]),
                    ("mamba.D", [l.mixer.D for l in ms]),
                    ("mamba.out_proj_w", [l.mixer.out_proj.weight for l in ms]),
                    ("mamba.ln_w", [l.ln.weight for l in ms]),
                    ("mamba.ln_b", [l.ln.bias for l in ms])]
        ss = of["S"]
        if ss:
            out += mamba.mamba2_mixer_tensors([l.mixer for l in ss], "mamba2.")
            out += [("mamba2.ln_w", [l.ln.weight for l in ss]),
                    ("mamba2.ln_b", [l.ln.bias for l in ss])]
        at = of["A"]
        if at:
            out += [("attn.ln_w", [l.ln.weight for l in at]), ("attn.ln_b", [l.ln.bias for l in at]),
                    ("attn.qkv_w", [l.mixer.qkv.weight for l in at]), ("attn.qkv_b", [l.mixer.qkv.bias for l in at]),
                    ("attn.proj_w", [l.mixer.proj.weight for l in at]),
                    ("attn.proj_b", [l.mixer.proj.bias for l in at])]
        fs = of["F"]
        if fs:
            out += [("mlp.ln_w", [l.ln.weight for l in fs]), ("mlp.ln_b", [l.ln.bias for l in fs]),
                    ("mlp.fc_w", [l.mixer.fc.weight for l in fs]), ("mlp.fc_b", [l.mixer.fc.bias for l in fs]),
                    ("mlp.proj_w", [l.mixer.fcproj.weight for l in fs]),
                    ("mlp.proj_b", [l.mixer.fcproj.bias for l in fs])]
        return out + [("lnf_w", [self.lnf.weight]), ("lnf_b", [self.lnf.bias]),
                      ("head_w", [self.head.weight]), ("head_b", [self.head.bias])]


# -----------------------------------------------------------------------------
# reference state

# what each kind of layer records, in order ("ln" and "res" are the layer's own)
ACT_NAMES = {
    "M": ("ln",) + tuple(n for n in mamba.ACT_NAMES if n not in ("res", "ln")) + ("res",),
    "S": ("ln",) + tuple(n for n in mamba.ACT_NAMES_MAMBA2 if n not in ("res", "ln")) + ("res",),
    "A": ("ln", "qkv", "att", "atty", "attproj", "res"),
    "F": ("ln", "fch", "fch_gelu", "fcproj", "res"),
}


def reference_params(layout, gen):
    """
    mamba.reference_init's draws (common.reference_init's, but for the
    Mamba-2 layers' per-head A_log and their norm_w), keyed by the tensors'
    names without their kind prefix.
    """
    return mamba.reference_init([(name.split(".")[-1], shape, wd) for name, shape, wd in layout], gen)


def write_reference(path, cfg, B, T, seed, steps, adamw):
    """Computes the reference in float64 and writes the state file."""
    torch.manual_seed(seed)
    gen = torch.default_generator
    params32 = reference_params(formats.hybrid_param_layout(cfg.maxT, cfg.V, cfg.C, cfg.H, cfg.F, cfg.pattern), gen)
    inputs = torch.randint(0, cfg.V, (B, T), generator=gen)
    targets = torch.randint(0, cfg.V, (B, T), generator=gen)
    model = HybridLM(cfg, scan="sequential").double()  # (its init draws after the state's draws)
    names = [f"l{l}.{name}" for l, ch in enumerate(cfg.pattern) for name in ACT_NAMES[ch]]
    tensors, summary = common.lm_reference_state(model, params32, inputs, targets, names, steps, adamw,
                                                 dropout=(0.1, 4242, 17))
    config = dict(maxT=cfg.maxT, V=cfg.V, C=cfg.C, H=cfg.H, F=cfg.F,
                  pattern=formats.hybrid_pattern_code(cfg.pattern), P=params32.numel())
    formats.write_state(path, formats.KIND_HYBRID, config, B, T, tensors)
    print(f"wrote {path}: pattern {cfg.pattern}, {summary}")


# -----------------------------------------------------------------------------
# self-check of a written state (--check)


def check_state(path, fd_per_tensor=3, h=1e-4):
    """
    Reads the state back; checks the logits against the model with the
    parallel scan (mamba.py's other implementation), gradient entries against
    central differences and the AdamW trajectory against a numpy AdamW.
    """
    state = formats.read_state(path)
    c = state.config
    cfg = HybridConfig(pattern=formats.hybrid_pattern_letters(c["pattern"]), maxT=c["maxT"], V=c["V"], C=c["C"],
                       H=c["H"], F=c["F"])
    flat0 = torch.from_numpy(state["params"].astype(np.float64))
    inputs = torch.from_numpy(state["inputs"].astype(np.int64))
    targets = torch.from_numpy(state["targets"].astype(np.int64))

    pmodel = HybridLM(cfg, scan="parallel").double()
    pmodel.set_flat(flat0)
    with torch.no_grad():
        logits, _ = pmodel(inputs, targets)
    err = (logits - torch.from_numpy(state["logits"].astype(np.float64))).abs().max().item()
    print(f"check: pattern {cfg.pattern}: logits with the parallel scan vs the state: max abs err {err:.3e}")
    ok = err < 1e-5

    model = HybridLM(cfg, scan="sequential").double()
    ok = common.check_lm_grads_and_steps(model, state, fd_per_tensor, h, order=4) and ok
    print("check: " + ("OK" if ok else "FAILED"))
    return ok


# -----------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/ref_hybrid.bin", help="reference state file to write")
    parser.add_argument("--pattern", default="MAFM", help="the layers, one letter each (M, S, A, F)")
    parser.add_argument("--B", type=int, default=3)
    parser.add_argument("--T", type=int, default=37, help="sequence length (37: past one 32-step scan chunk)")
    parser.add_argument("--V", type=int, default=65)
    parser.add_argument("--C", type=int, default=32)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--F", type=int, default=48)
    parser.add_argument("--maxT", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--check", action="store_true", help="read the state back and verify it")
    args = parser.parse_args()
    try:
        formats.hybrid_pattern_code(args.pattern)
    except ValueError as err:
        parser.error(str(err))
    if "A" in args.pattern and (args.C % args.H != 0 or not 1 <= args.T <= args.maxT):
        parser.error("with attention: C divisible by H, and 1 <= T <= maxT")
    if "S" in args.pattern and args.C % (formats.HYBRID_SSD_HD // 2) != 0:
        parser.error(f"with S layers: C a multiple of {formats.HYBRID_SSD_HD // 2} (headdim {formats.HYBRID_SSD_HD})")
    if args.steps < 1:
        parser.error("need at least one step")

    cfg = HybridConfig(pattern=args.pattern, maxT=args.maxT, V=args.V, C=args.C, H=args.H, F=args.F)
    write_reference(args.out, cfg, args.B, args.T, args.seed, args.steps, common.REFERENCE_ADAMW)
    if args.check and not check_state(args.out):
        sys.exit(1)


if __name__ == "__main__":
    main()

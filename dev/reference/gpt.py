"""
The char GPT in PyTorch, and the writer of its reference state.

The model (defined exactly in doc/models.md): token embedding wte (V,C) +
learned positions wpe (maxT,C); L pre-norm blocks x = x + attn(LN1(x));
x = x + mlp(LN2(x)); causal self-attention with qkv Linear(C,3C) and proj
Linear(C,C), both with bias, H heads; MLP Linear(C,F) -> GELU (erf) ->
Linear(F,C); final LayerNorm lnf; head Linear(C,V) with bias (not tied).
LayerNorm eps 1e-5. Loss is the mean cross-entropy over all B*T positions.
Dropout (set_dropout, the trainers' -D at nanoGPT's places) on the
embedding's output, the attention probabilities and each residual branch,
with the trainers' masks (common.Dropout): sites 2l and 2l+1 for layer l's
branches, SITE_PROBS + l for its probabilities, SITE_EMBED for the embedding.

Attention is written out explicitly (no fused kernels) so that every
intermediate can be captured for the reference state.

The reference state (read by the C++ tests) holds the initial flat
parameters, a random batch, the activations of the first forward pass, the
loss, the flat gradient, and the losses and final parameters of a few AdamW
steps, all computed in float64 and stored as float32. See write_reference().

Usage:
    python dev/reference/gpt.py                      # writes data/ref_gpt.bin
    python dev/reference/gpt.py --check              # and checks it afterwards

Other scripts can import the model:
    from gpt import GPT, GPTConfig
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

# -----------------------------------------------------------------------------
# the model


@dataclass
class GPTConfig:
    maxT: int = 64  # max sequence length (rows of wpe)
    V: int = 65     # vocab size
    L: int = 2      # number of layers
    H: int = 4      # number of heads
    C: int = 64     # channels
    F: int = 128    # MLP hidden size


class CausalSelfAttention(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        assert cfg.C % cfg.H == 0
        self.H = cfg.H
        self.qkv = nn.Linear(cfg.C, 3 * cfg.C)
        self.proj = nn.Linear(cfg.C, cfg.C)
        mask = torch.tril(torch.ones(cfg.maxT, cfg.maxT, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, cfg.maxT, cfg.maxT), persistent=False)

    def forward(self, x, save, drop=None, site=None):
        """drop, site: dropout on the probabilities (a common.Dropout and its site), or none."""
        B, T, C = x.size()
        H, hs = self.H, C // self.H
        qkv = self.qkv(x)  # (B,T,3C)
        save("qkv", qkv)
        # q, k, v in that order along the last dim; head h is channels [h*hs, (h+1)*hs)
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, H, hs).transpose(1, 2)  # (B,H,T,hs)
        k = k.view(B, T, H, hs).transpose(1, 2)
        v = v.view(B, T, H, hs).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B,H,T,T)
        scores = scores.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
        att = F.softmax(scores, dim=-1)  # exactly 0 above the diagonal
        save("att", att)
        if drop is not None:
            att = drop(att, site, self.training)
        y = att @ v  # (B,H,T,hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side
        save("atty", y)
        y = self.proj(y)
        save("attproj", y)
        return y


class MLP(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.C, cfg.F)
        self.fcproj = nn.Linear(cfg.F, cfg.C)

    def forward(self, x, save):
        h = self.fc(x)
        save("fch", h)
        h = F.gelu(h)  # erf form
        save("fch_gelu", h)
        h = self.fcproj(h)
        save("fcproj", h)
        return h


class Block(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.C, eps=1e-5)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.C, eps=1e-5)
        self.mlp = MLP(cfg)

    def forward(self, x, save, drop=None, layer=0):
        """drop: the model's common.Dropout (none: no dropout); layer: this block's index (its sites)."""
        if drop is None:
            drop = common.Dropout()
        h = self.ln1(x)
        save("ln1", h)
        x = x + drop(self.attn(h, save, drop, common.SITE_PROBS + layer), 2 * layer, self.training)
        save("res2", x)
        h = self.ln2(x)
        save("ln2", h)
        x = x + drop(self.mlp(h, save), 2 * layer + 1, self.training)
        save("res3", x)
        return x


class GPT(common.FlatParams):

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.V, cfg.C)
        self.wpe = nn.Embedding(cfg.maxT, cfg.C)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.L)])
        self.lnf = nn.LayerNorm(cfg.C, eps=1e-5)
        self.head = nn.Linear(cfg.C, cfg.V)
        self.drop = common.Dropout()
        self.init_weights()

    def set_dropout(self, p, seed=None, step=None):
        """Dropout at rate p: the trainers' masks of (seed, step), or torch's own without a seed."""
        self.drop = common.Dropout(p, seed, step)

    def init_weights(self, std=0.02):
        """Standard init: weights and embeddings N(0, std), biases 0, LayerNorm 1/0."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets=None, acts=None):
        """
        idx, targets: (B,T) int64. Returns (logits (B,T,V), loss or None).
        If acts is a dict, the intermediates are stored in it (detached) under
        the reference state's names ("encoded", "h{l}.ln1", ..., "logits").
        """
        B, T = idx.size()
        assert T <= self.cfg.maxT, f"sequence length {T} > maxT {self.cfg.maxT}"
        save = common.saver(acts, "")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos), common.SITE_EMBED, self.training)  # (B,T,C)
        save("encoded", x)
        for l, block in enumerate(self.blocks):
            x = block(x, common.saver(acts, f"h{l}."), self.drop, l)
        x = self.lnf(x)
        save("lnf", x)
        logits = self.head(x)  # (B,T,V)
        save("logits", logits)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    # --- the flat parameter buffer of the C++ trainers -----------------------

    def flat_layout(self):
        """(name, shape, weight_decay) per flat tensor, in order (formats.py)."""
        c = self.cfg
        return formats.gpt_param_layout(c.maxT, c.V, c.L, c.C, c.F)

    def flat_tensors(self):
        """
        For each flat tensor, in order: (name, list of the nn.Parameters it is
        made of). Per-layer tensors list one parameter per layer, layer 0
        first, which is the same as stacking them along a leading L dim.
        """
        bs = self.blocks
        return [
            ("wte", [self.wte.weight]),
            ("wpe", [self.wpe.weight]),
            ("ln1_w", [b.ln1.weight for b in bs]),
            ("ln1_b", [b.ln1.bias for b in bs]),
            ("qkv_w", [b.attn.qkv.weight for b in bs]),
            ("qkv_b", [b.attn.qkv.bias for b in bs]),
            ("attn_proj_w", [b.attn.proj.weight for b in bs]),
            ("attn_proj_b", [b.attn.proj.bias for b in bs]),
            ("ln2_w", [b.ln2.weight for b in bs]),
            ("ln2_b", [b.ln2.bias for b in bs]),
            ("fc_w", [b.mlp.fc.weight for b in bs]),
            ("fc_b", [b.mlp.fc.bias for b in bs]),
            ("fc_proj_w", [b.mlp.fcproj.weight for b in bs]),
            ("fc_proj_b", [b.mlp.fcproj.bias for b in bs]),
            ("lnf_w", [self.lnf.weight]),
            ("lnf_b", [self.lnf.bias]),
            ("head_w", [self.head.weight]),
            ("head_b", [self.head.bias]),
        ]


# -----------------------------------------------------------------------------
# reference state

ACT_NAMES = ("ln1", "qkv", "att", "atty", "attproj", "res2", "ln2", "fch", "fch_gelu", "fcproj", "res3")


DROPOUT = (0.1, 4242, 17)  # the reference state's dropout: rate, seed, training step

IGNORE_INDEX = -100  # cross_entropy's default; the C++ side skips every negative target


def masked_targets_loss(model, params32, inputs, targets, seed):
    """
    The loss of task files, where most positions have no target: targets
    with about two thirds of the positions ignored (and the whole first
    sequence), the mean cross-entropy over the rest as
    F.cross_entropy(..., ignore_index) computes it, and its flat gradient,
    at params32. Returns (masked targets, loss, gradient).
    """
    gen = torch.Generator().manual_seed(seed + 1)  # the state's other draws stay as they were
    masked = targets.clone()
    masked[torch.rand(targets.shape, generator=gen) < 2 / 3] = IGNORE_INDEX
    masked[0, :] = IGNORE_INDEX
    model.set_flat(params32.double())

    def run():
        logits, _ = model(inputs)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), masked.view(-1), ignore_index=IGNORE_INDEX)

    loss, grads = common.loss_and_grads(model, run)
    return masked, loss, grads


def write_reference(path, cfg, B, T, seed, steps, adamw):
    """Computes the reference in float64 and writes the state file."""
    torch.manual_seed(seed)
    gen = torch.default_generator
    params32 = common.reference_init(formats.gpt_param_layout(cfg.maxT, cfg.V, cfg.L, cfg.C, cfg.F), gen)
    inputs = torch.randint(0, cfg.V, (B, T), generator=gen)
    targets = torch.randint(0, cfg.V, (B, T), generator=gen)
    model = GPT(cfg).double()  # (its init draws from the same generator, after the state's draws)
    names = [f"h{l}.{name}" for l in range(cfg.L) for name in ACT_NAMES]
    tensors, summary = common.lm_reference_state(model, params32, inputs, targets, names, steps, adamw,
                                                 dropout=DROPOUT)
    masked, masked_loss, masked_grads = masked_targets_loss(model, params32, inputs, targets, seed)
    tensors += [("masked_targets", masked.int().numpy()), ("masked_loss", np.array([masked_loss.item()], dtype=np.float32)),
                ("masked_grads", common.f32(masked_grads))]
    summary += f", masked loss {masked_loss.item():.6f} over {int((masked != IGNORE_INDEX).sum())} of {B * T} positions"
    config = dict(maxT=cfg.maxT, V=cfg.V, L=cfg.L, H=cfg.H, C=cfg.C, F=cfg.F, P=params32.numel())
    formats.write_state(path, formats.KIND_GPT, config, B, T, tensors)
    print(f"wrote {path}: {summary}")


# -----------------------------------------------------------------------------
# self-check of a written state (--check)


def _independent_forward(state):
    """
    Logits from the stored params using PyTorch's own pre-norm
    TransformerEncoderLayer (with a causal mask): an implementation of the
    blocks that shares no code with GPT above.
    """
    c = state.config
    T, C, L = state.T, c["C"], c["L"]
    flat = torch.from_numpy(state["params"].astype(np.float64))
    p = common.unflatten(flat, formats.gpt_param_layout(c["maxT"], c["V"], L, C, c["F"]))
    idx = torch.from_numpy(state["inputs"].astype(np.int64))
    x = p["wte"][idx] + p["wpe"][:T]
    causal = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), diagonal=1)
    for l in range(L):
        x = common.torch_encoder_layer(p, l, C, c["H"], c["F"])(x, src_mask=causal)
    x = F.layer_norm(x, (C,), p["lnf_w"], p["lnf_b"], 1e-5)
    return (x @ p["head_w"].T + p["head_b"]).detach()


def check_state(path, fd_per_tensor=3, h=1e-4):
    """
    Reads the state back; checks the logits against an independent
    implementation, gradient entries against central differences and the
    AdamW trajectory against a numpy AdamW.
    """
    state = formats.read_state(path)
    c = state.config
    cfg = GPTConfig(maxT=c["maxT"], V=c["V"], L=c["L"], H=c["H"], C=c["C"], F=c["F"])

    # 1) logits against an independent implementation of the same model
    logits = _independent_forward(state)
    err = (logits - torch.tensor(state["logits"], dtype=torch.float64)).abs().max().item()
    print(f"check: logits vs TransformerEncoderLayer max abs err {err:.3e}")
    ok = err < 1e-5

    # 2) gradient entries against central differences of the float64 loss, and
    # 3) the AdamW trajectory against a numpy AdamW (grads from the float64 model)
    ok = common.check_lm_grads_and_steps(GPT(cfg).double(), state, fd_per_tensor, h) and ok
    print("check: " + ("OK" if ok else "FAILED"))
    return ok


# -----------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/ref_gpt.bin", help="reference state file to write")
    parser.add_argument("--B", type=int, default=4)
    parser.add_argument("--T", type=int, default=32)
    parser.add_argument("--V", type=int, default=65)
    parser.add_argument("--L", type=int, default=2)
    parser.add_argument("--C", type=int, default=64)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--F", type=int, default=128)
    parser.add_argument("--maxT", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--check", action="store_true", help="read the state back and verify it")
    args = parser.parse_args()
    if args.C % args.H != 0:
        parser.error("C must be divisible by H")
    if not (1 <= args.T <= args.maxT):
        parser.error("need 1 <= T <= maxT")
    if args.steps < 1:
        parser.error("need at least one step")

    cfg = GPTConfig(maxT=args.maxT, V=args.V, L=args.L, H=args.H, C=args.C, F=args.F)
    write_reference(args.out, cfg, args.B, args.T, args.seed, args.steps, common.REFERENCE_ADAMW)
    if args.check and not check_state(args.out):
        sys.exit(1)


if __name__ == "__main__":
    main()

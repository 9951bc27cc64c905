"""
The vision models in PyTorch, and the writer of their reference states:
a ViT, a Mamba-ViT, a bidirectional Mamba-ViT and a Mamba-ViT with Mamba-2
mixers on images of any shape
(Cc, H, W; CIFAR-10's 3 x 32 x 32 by default) cut into patches (defined in
doc/models.md).

Common input: images (B,Cc,H,W) -> patches 'b c (h p1) (w p2) -> b (h w)
(c p1 p2)' (B,T,PD), T = (H/p)(W/p), PD = Cc p^2 -> LN(PD) -> Linear(PD,C)
-> LN(C). LayerNorm eps 1e-5; the loss is the mean cross-entropy over the
batch.

  ViT        input + learned positions wpe (T,C); L pre-norm encoder blocks
             x = x + Dropout(attn(LN1(x))); x = x + Dropout(mlp(LN2(x)))
             (the GPT's block of gpt.py, not causal: qkv Linear(C,3C) and
             proj Linear(C,C) with bias, H heads, MLP C -> F -> C with GELU;
             dropout on each residual branch, after the attention projection
             and after the MLP); final LayerNorm; mean over the T tokens;
             head Linear(C,K).
  Mamba-ViT  input; L blocks x = Dropout(LN(x + Mamba(x))) (mamba.py's block,
             post-norm, dropout after it as the seed's MambaBlock); mean over
             the T tokens; head Linear(C,K). No positions, no final norm.
  bidirectional Mamba-ViT (train_mamba_vit -M bi): the same with blocks of
             two mixers of their own, the forward one on the tokens and the
             reverse one on the tokens reversed (flip over T):
               y_f = Mamba_f(x);  y_b = flip(Mamba_b(flip(x)))
               x = Dropout(LN(x + y_f + y_b))
             (BiBlock below).
  Mamba-2 ViT (train_mamba_vit -M 2): the Mamba-ViT with mamba.py's Mamba-2
             mixer in each block (mamba.Block with MambaConfig(mamba2=True)):
             x = Dropout(LN(x + Mamba2(x))), E = 2C, E/headdim heads.

Dropout comes in two kinds. With a key (set_dropout(p, seed, step)) the
masks are the C++ trainers' counter-based hash of (seed, step, site,
element index) (llmc/dropout.cuh, common.Dropout), so a reference state can hold a dropout
forward/backward that the C++ test reproduces exactly; without one it is
torch's own (the benchmark's). Sites: the ViT's layer l uses 2l (attention
branch) and 2l+1 (MLP branch), the Mamba-ViT's layer l uses l.

The reference states (read by test_vit.cu and test_mamba_vit.cu) hold the
initial flat parameters, float images (as the trainers' uint8 -> float gives
them, no augmentation) and labels, every layer's activations of the first
forward pass without dropout, the loss, the flat gradient, one forward and
backward with dropout 0.1 under a given seed and step (logits, loss,
gradient), and the losses and final parameters of 10 AdamW steps without
dropout, all computed in float64 and stored as float32.

Usage:
    python3 dev/reference/vit.py                        # writes data/ref_vit.bin and data/ref_mamba_vit.bin
    python3 dev/reference/vit.py --model vit --out data/ref_vit.bin --check
    python3 dev/reference/vit.py --model mamba_vit2 --image 1,28,28 --out data/ref_mamba_vit2.bin --check
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
# the models


def sincos_positions(Gy, Gx, C):
    """
    The ViT's starting positions (Gy*Gx, C) for a grid of Gy rows and Gx
    columns of patches, as train_vit.cu's sincos_positions: K = C // 4
    frequencies per axis, w_k = (pi / G)^(k / (K - 1)) for that axis' G
    (geometric, from 1 to pi / G radians per patch); row y, column x gets
    sin(wy y), cos(wy y), sin(wx x), cos(wx x) in channel blocks of K; the
    channels from 4K on are 0.
    """
    K = C // 4

    def freqs(G):
        return np.array([(np.pi / G) ** (k / (K - 1)) if K > 1 else 1.0 for k in range(K)])

    wy, wx = freqs(Gy), freqs(Gx)
    y, x = np.divmod(np.arange(Gy * Gx), Gx)
    out = np.zeros((Gy * Gx, C))
    for block, (f, v, w) in enumerate(((np.sin, y, wy), (np.cos, y, wy), (np.sin, x, wx), (np.cos, x, wx))):
        out[:, block * K:(block + 1) * K] = f(v[:, None] * w[None, :])
    return out.astype(np.float32)


def patchify(images, p):
    """(B,Cc,H,W) -> (B,T,Cc*p*p): einops 'b c (h p1) (w p2) -> b (h w) (c p1 p2)'."""
    B, Cc, H, W = images.shape
    x = images.reshape(B, Cc, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), Cc * p * p)


@dataclass
class ViTConfig:
    patch: int = 4
    K: int = 10  # classes
    L: int = 2
    H: int = 4
    C: int = 32
    F: int = 64
    image: tuple = formats.CIFAR_IMAGE  # (Cc, H, W)


@dataclass
class MambaViTConfig:
    patch: int = 4
    K: int = 10
    L: int = 2
    C: int = 32
    N: int = 16
    E: int = 0  # 0: 2C
    image: tuple = formats.CIFAR_IMAGE  # (Cc, H, W)
    bidirectional: bool = False  # blocks of a forward and a reverse mixer (BiBlock)
    mamba2: bool = False  # Mamba-2 mixers (mamba.Mamba2), E/headdim heads
    headdim: int = 16  # Mamba-2's channels per head

    def __post_init__(self):
        if self.E == 0:
            self.E = 2 * self.C


class PatchEmbed(nn.Module):
    """patches -> LN(PD) -> Linear(PD, C) -> LN(C)."""

    def __init__(self, patch, C, image):
        super().__init__()
        self.patch = patch
        _, PD = formats.vision_tokens(patch, image)
        self.ln0 = nn.LayerNorm(PD, eps=1e-5)
        self.proj = nn.Linear(PD, C)
        self.ln1 = nn.LayerNorm(C, eps=1e-5)

    def forward(self, images, save):
        x = patchify(images, self.patch)
        save("patches", x)
        x = self.ln0(x)
        save("patch_ln", x)
        x = self.proj(x)
        save("embed", x)
        x = self.ln1(x)
        save("embed_ln", x)
        return x


def _loss(logits, targets):
    """Mean cross-entropy over the batch, or None without targets."""
    return F.cross_entropy(logits, targets) if targets is not None else None


class ViTBlock(nn.Module):
    """gpt.py's pre-norm block, not causal, with dropout on both residual branches."""

    def __init__(self, cfg, T):
        super().__init__()
        gcfg = gpt.GPTConfig(maxT=T, V=1, L=1, H=cfg.H, C=cfg.C, F=cfg.F)
        self.ln1 = nn.LayerNorm(cfg.C, eps=1e-5)
        self.attn = gpt.CausalSelfAttention(gcfg)
        self.attn.mask.fill_(True)  # every key visible: not causal
        self.ln2 = nn.LayerNorm(cfg.C, eps=1e-5)
        self.mlp = gpt.MLP(gcfg)

    def forward(self, x, save, drop, layer):
        h = self.ln1(x)
        save("ln1", h)
        x = x + drop(self.attn(h, save), 2 * layer, self.training)
        save("res2", x)
        h = self.ln2(x)
        save("ln2", h)
        x = x + drop(self.mlp(h, save), 2 * layer + 1, self.training)
        save("res3", x)
        return x


class ViT(common.FlatParams):

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        T, _ = formats.vision_tokens(cfg.patch, cfg.image)
        self.embed = PatchEmbed(cfg.patch, cfg.C, cfg.image)
        self.wpe = nn.Parameter(torch.zeros(T, cfg.C))
        self.blocks = nn.ModuleList([ViTBlock(cfg, T) for _ in range(cfg.L)])
        self.lnf = nn.LayerNorm(cfg.C, eps=1e-5)
        self.head = nn.Linear(cfg.C, cfg.K)
        with torch.no_grad():
            _, H, W = cfg.image
            self.wpe.copy_(torch.from_numpy(sincos_positions(H // cfg.patch, W // cfg.patch, cfg.C)))
        self.drop = common.Dropout()

    def set_dropout(self, p, seed=None, step=None):
        self.drop = common.Dropout(p, seed, step)

    def forward(self, images, targets=None, acts=None):
        """
        images (B,Cc,H,W) float, targets (B,) int64. Returns (logits (B,K),
        loss or None); intermediates go into acts (if a dict) under the
        reference state's names.
        """
        save = common.saver(acts, "")
        x = self.embed(images, save) + self.wpe
        save("encoded", x)
        for l, block in enumerate(self.blocks):
            x = block(x, common.saver(acts, f"h{l}."), self.drop, l)
        x = self.lnf(x)
        save("lnf", x)
        pooled = x.mean(1)
        save("pooled", pooled)
        logits = self.head(pooled)
        save("logits", logits)
        return logits, _loss(logits, targets)

    def flat_layout(self):
        c = self.cfg
        return formats.vit_param_layout(c.patch, c.K, c.L, c.H, c.C, c.F, c.image)

    def flat_tensors(self):
        e = self.embed
        return [
            ("patch_ln_w", [e.ln0.weight]), ("patch_ln_b", [e.ln0.bias]),
            ("patch_w", [e.proj.weight]), ("patch_b", [e.proj.bias]),
            ("embed_ln_w", [e.ln1.weight]), ("embed_ln_b", [e.ln1.bias]),
            ("wpe", [self.wpe]),
        ] + vit_block_tensors(self.blocks) + [
            ("lnf_w", [self.lnf.weight]), ("lnf_b", [self.lnf.bias]),
            ("head_w", [self.head.weight]), ("head_b", [self.head.bias]),
        ]


def vit_block_tensors(bs):
    """flat_tensors' rows of a stack of ViTBlocks (the GPT's names, one parameter per block in each)."""
    return [
        ("ln1_w", [b.ln1.weight for b in bs]), ("ln1_b", [b.ln1.bias for b in bs]),
        ("qkv_w", [b.attn.qkv.weight for b in bs]), ("qkv_b", [b.attn.qkv.bias for b in bs]),
        ("attn_proj_w", [b.attn.proj.weight for b in bs]), ("attn_proj_b", [b.attn.proj.bias for b in bs]),
        ("ln2_w", [b.ln2.weight for b in bs]), ("ln2_b", [b.ln2.bias for b in bs]),
        ("fc_w", [b.mlp.fc.weight for b in bs]), ("fc_b", [b.mlp.fc.bias for b in bs]),
        ("fc_proj_w", [b.mlp.fcproj.weight for b in bs]), ("fc_proj_b", [b.mlp.fcproj.bias for b in bs]),
    ]


class BiBlock(nn.Module):
    """
    The bidirectional Mamba block: two mixers of their own, the forward one
    on the tokens, the reverse one on the tokens reversed in order (flip
    over T, dim 1), its output flipped back; both added to the residual,
    then the post-norm of the one-way block (mamba.Block):
        y_f = Mamba_f(x);  y_b = flip(Mamba_b(flip(x)));  x_out = LN(x + y_f + y_b)
    The reverse mixer's activations (saved by save_rev) are in its own,
    reversed token order.
    """

    def __init__(self, cfg, scan):
        super().__init__()
        self.mixer = mamba.Mamba(cfg, scan)
        self.mixer_rev = mamba.Mamba(cfg, scan)
        self.ln = nn.LayerNorm(cfg.C, eps=1e-5)

    def forward(self, x, save, save_rev):
        y_f = self.mixer(x, save)
        y_b = self.mixer_rev(x.flip(1), save_rev).flip(1)
        x = x + y_f + y_b
        save("res", x)
        x = self.ln(x)
        save("ln", x)
        return x


class MambaViT(common.FlatParams):

    def __init__(self, cfg, scan="sequential"):
        super().__init__()
        self.cfg = cfg
        mcfg = mamba.MambaConfig(V=1, L=1, C=cfg.C, N=cfg.N, E=cfg.E, mamba2=cfg.mamba2, headdim=cfg.headdim)
        self.embed = PatchEmbed(cfg.patch, cfg.C, cfg.image)
        block = BiBlock if cfg.bidirectional else mamba.Block
        self.blocks = nn.ModuleList([block(mcfg, scan) for _ in range(cfg.L)])
        self.head = nn.Linear(cfg.C, cfg.K)
        self.drop = common.Dropout()

    def set_dropout(self, p, seed=None, step=None):
        self.drop = common.Dropout(p, seed, step)

    def forward(self, images, targets=None, acts=None):
        save = common.saver(acts, "")
        x = self.embed(images, save)
        for l, block in enumerate(self.blocks):
            saves = [common.saver(acts, f"m{l}.")]
            if self.cfg.bidirectional:
                saves.append(common.saver(acts, f"m{l}.rev."))
            x = self.drop(block(x, *saves), l, self.training)
        pooled = x.mean(1)
        save("pooled", pooled)
        logits = self.head(pooled)
        save("logits", logits)
        return logits, _loss(logits, targets)

    def flat_layout(self):
        c = self.cfg
        if c.mamba2:
            return formats.mamba_vit2_param_layout(c.patch, c.K, c.L, c.C, c.N, c.headdim, c.image)
        return formats.mamba_vit_param_layout(c.patch, c.K, c.L, c.C, c.E, c.N, c.image, c.bidirectional)

    def flat_tensors(self):
        """The mixer tensors list the forward mixers of the L blocks, then (bidirectional) their reverse mixers."""
        e = self.embed
        ms = [b.mixer for b in self.blocks]
        if self.cfg.mamba2:
            return [
                ("patch_ln_w", [e.ln0.weight]), ("patch_ln_b", [e.ln0.bias]),
                ("patch_w", [e.proj.weight]), ("patch_b", [e.proj.bias]),
                ("embed_ln_w", [e.ln1.weight]), ("embed_ln_b", [e.ln1.bias]),
            ] + mamba.mamba2_mixer_tensors(ms) + [
                ("ln_w", [b.ln.weight for b in self.blocks]),
                ("ln_b", [b.ln.bias for b in self.blocks]),
                ("head_w", [self.head.weight]), ("head_b", [self.head.bias]),
            ]
        if self.cfg.bidirectional:
            ms += [b.mixer_rev for b in self.blocks]
        return [
            ("patch_ln_w", [e.ln0.weight]), ("patch_ln_b", [e.ln0.bias]),
            ("patch_w", [e.proj.weight]), ("patch_b", [e.proj.bias]),
            ("embed_ln_w", [e.ln1.weight]), ("embed_ln_b", [e.ln1.bias]),
        ] + mamba.mamba_mixer_tensors(ms) + [
            ("ln_w", [b.ln.weight for b in self.blocks]),
            ("ln_b", [b.ln.bias for b in self.blocks]),
            ("head_w", [self.head.weight]), ("head_b", [self.head.bias]),
        ]


# -----------------------------------------------------------------------------
# reference states

VIT_ACTS = ("ln1", "qkv", "att", "atty", "attproj", "res2", "ln2", "fch", "fch_gelu", "fcproj", "res3")
MAMBA_ACTS = mamba.ACT_NAMES  # xz, conv, u, x_dbl, dt, scan, gated, out, res, ln
MIXER_ACTS = MAMBA_ACTS[:-2]  # the mixer's: xz .. out
MAMBA2_ACTS = mamba.ACT_NAMES_MAMBA2  # zxbcdt, conv, xbc, dt, scan, gated, normed, out, res, ln


def build(kind, config, scan="sequential"):
    image = tuple(config.get("image", formats.CIFAR_IMAGE))
    if kind == formats.KIND_VIT:
        c = ViTConfig(patch=config["patch"], K=config["K"], L=config["L"], H=config["H"], C=config["C"], F=config["F"],
                      image=image)
        return ViT(c), c
    if kind == formats.KIND_MAMBA_VIT2:
        c = MambaViTConfig(patch=config["patch"], K=config["K"], L=config["L"], C=config["C"], N=config["N"],
                           image=image, mamba2=True, headdim=config["Hd"])
        return MambaViT(c, scan), c
    c = MambaViTConfig(patch=config["patch"], K=config["K"], L=config["L"], C=config["C"], N=config["N"], E=config["E"],
                       image=image, bidirectional=kind == formats.KIND_MAMBA_VIT_BI)
    return MambaViT(c, scan), c


def config_dict(kind, cfg, P):
    if kind == formats.KIND_VIT:
        return dict(patch=cfg.patch, K=cfg.K, L=cfg.L, H=cfg.H, C=cfg.C, F=cfg.F, P=P, image=cfg.image)
    if kind == formats.KIND_MAMBA_VIT2:
        return dict(patch=cfg.patch, K=cfg.K, L=cfg.L, C=cfg.C, N=cfg.N, Hd=cfg.headdim, P=P, image=cfg.image)
    return dict(patch=cfg.patch, K=cfg.K, L=cfg.L, C=cfg.C, E=cfg.E, N=cfg.N, P=P, image=cfg.image)


def act_names(kind, L):
    """The activations a state holds, in order."""
    names = ["patches", "patch_ln", "embed", "embed_ln"]
    if kind == formats.KIND_VIT:
        names.append("encoded")
        names += [f"h{l}.{n}" for l in range(L) for n in VIT_ACTS]
        names.append("lnf")
    elif kind == formats.KIND_MAMBA_VIT_BI:
        for l in range(L):
            names += [f"m{l}.{n}" for n in MIXER_ACTS] + [f"m{l}.rev.{n}" for n in MIXER_ACTS]
            names += [f"m{l}.res", f"m{l}.ln"]
    elif kind == formats.KIND_MAMBA_VIT2:
        names += [f"m{l}.{n}" for l in range(L) for n in MAMBA2_ACTS]
    else:
        names += [f"m{l}.{n}" for l in range(L) for n in MAMBA_ACTS]
    return names + ["pooled", "logits"]


def write_reference(path, kind, cfg, B, seed, steps, adamw, dropout, scan="sequential"):
    """Computes the reference in float64 and writes the state file (the Mamba-ViT with `scan`)."""
    drop_p, drop_seed, drop_step = dropout
    torch.manual_seed(seed)
    gen = torch.default_generator
    model = (ViT(cfg) if kind == formats.KIND_VIT else MambaViT(cfg, scan)).double()  # (draws from gen first)
    # (Mamba-2's per-head A_log and its norm_w drawn as mamba.py's LM state draws them)
    init = mamba.reference_init if kind == formats.KIND_MAMBA_VIT2 else common.reference_init
    params32 = init(model.flat_layout(), gen)
    pixels = torch.randint(0, 256, (B,) + tuple(cfg.image), generator=gen, dtype=torch.int32)
    images32 = (pixels.float() * np.float32(1.0 / 255.0))  # as the trainers' uint8 -> float
    labels = torch.randint(0, cfg.K, (B,), generator=gen)
    images = images32.double()
    P = params32.numel()

    # first forward/backward at the initial parameters, no dropout, capturing activations
    model.set_flat(params32.double())
    model.train()
    acts = {}
    loss, grads = common.loss_and_grads(model, lambda: model(images, labels, acts=acts)[1])

    # one forward/backward with the hash dropout of a training step
    model.set_dropout(drop_p, drop_seed, drop_step)
    drop = {}

    def run_dropout():
        drop["logits"], drop_loss = model(images, labels)
        return drop_loss

    drop_loss, drop_grads = common.loss_and_grads(model, run_dropout)
    model.set_dropout(0.0)

    # a few AdamW steps on the same batch, with global grad-norm clipping, no dropout
    step_losses, step_params = common.adamw_trajectory(model, params32, lambda: model(images, labels)[1],
                                                       steps, adamw)
    assert step_losses[0] == loss.item()

    f32 = common.f32
    tensors = [("params", params32.numpy()), ("images", images32.numpy()), ("labels", labels.int().numpy())]
    tensors += [(name, f32(acts[name])) for name in act_names(kind, cfg.L)]
    tensors += [
        ("loss", np.array([loss.item()], dtype=np.float32)),
        ("grads", f32(grads)),
        ("dropout", np.array([drop_seed, drop_step], dtype=np.int32)),
        ("dropout_p", np.array([drop_p], dtype=np.float32)),
        ("drop_logits", f32(drop["logits"])),
        ("drop_loss", np.array([drop_loss.item()], dtype=np.float32)),
        ("drop_grads", f32(drop_grads)),
    ]
    tensors += common.trajectory_tensors(adamw, step_losses, step_params)
    T, _ = formats.vision_tokens(cfg.patch, cfg.image)
    formats.write_state(path, kind, config_dict(kind, cfg, P), B, T, tensors)
    print(f"wrote {path}: {formats.KIND_NAMES[kind]} {'x'.join(map(str, cfg.image))} patch {cfg.patch} P {P}, loss {loss.item():.6f}, with dropout "
          f"{drop_loss.item():.6f}, grad norm {grads.norm().item():.4f}, step losses {step_losses[0]:.6f} -> "
          f"{step_losses[-1]:.6f} ({steps} steps)")


# -----------------------------------------------------------------------------
# self-checks of a written state (--check)


def _independent_vit_logits(state):
    """
    Logits from the stored params with explicit loops for the patches and
    PyTorch's own pre-norm TransformerEncoderLayer (no mask) for the blocks:
    shares no code with ViT above.
    """
    c = state.config
    flat = torch.from_numpy(state["params"].astype(np.float64))
    p = common.unflatten(flat, formats.vit_param_layout(c["patch"], c["K"], c["L"], c["H"], c["C"], c["F"], c["image"]))
    images = torch.from_numpy(state["images"].astype(np.float64))
    (B, Cc, H, W), P = images.shape, c["patch"]
    gy, gx = H // P, W // P
    x = torch.empty(B, gy * gx, Cc * P * P, dtype=torch.float64)
    for hy in range(gy):
        for wx in range(gx):
            x[:, hy * gx + wx] = images[:, :, hy * P:(hy + 1) * P, wx * P:(wx + 1) * P].reshape(B, -1)
    x = F.layer_norm(x, (x.shape[-1],), p["patch_ln_w"], p["patch_ln_b"], 1e-5)
    x = F.layer_norm(x @ p["patch_w"].T + p["patch_b"], (c["C"],), p["embed_ln_w"], p["embed_ln_b"], 1e-5) + p["wpe"]
    for l in range(c["L"]):
        x = common.torch_encoder_layer(p, l, c["C"], c["H"], c["F"])(x)
    x = F.layer_norm(x, (c["C"],), p["lnf_w"], p["lnf_b"], 1e-5)
    return (x.mean(1) @ p["head_w"].T + p["head_b"]).detach()


def check_state(path, fd_per_tensor=3, h=1e-4):
    """
    Reads a state back and checks it: names; (ViT) logits against an
    independent implementation, (Mamba-ViT) the model with the parallel scan;
    gradient entries with and without dropout against central differences;
    the dropout masks' rate.
    """
    state = formats.read_state(path)
    kind, c = state.kind, state.config
    model, cfg = build(kind, c)
    model = model.double()
    expected = (["params", "images", "labels"] + act_names(kind, cfg.L)
                + ["loss", "grads", "dropout", "dropout_p", "drop_logits", "drop_loss", "drop_grads", "adamw",
                   "step_losses", "step_params"])
    ok = list(state.tensors) == expected
    print(f"check: read back {path}: kind {formats.KIND_NAMES[kind]}, config {c}, B {state.B} T {state.T}, "
          f"{len(state.tensors)} tensors" + ("" if ok else " (UNEXPECTED NAMES)"))
    flat0 = torch.from_numpy(state["params"].astype(np.float64))
    images = torch.from_numpy(state["images"].astype(np.float64))
    labels = torch.from_numpy(state["labels"].astype(np.int64))
    ref_logits = torch.from_numpy(state["logits"].astype(np.float64))

    if kind == formats.KIND_VIT:
        err = (_independent_vit_logits(state) - ref_logits).abs().max().item()
        print(f"check: logits vs explicit patches + TransformerEncoderLayer: max abs err {err:.3e}")
    else:
        pmodel, _ = build(kind, c, scan="parallel")
        pmodel = pmodel.double()
        pmodel.set_flat(flat0)
        with torch.no_grad():
            err = (pmodel(images)[0] - ref_logits).abs().max().item()
        print(f"check: logits with the parallel scan: max abs err {err:.3e}")
    ok = ok and err < 1e-5

    if kind == formats.KIND_MAMBA_VIT_BI:
        # the two directions: a change of token t0 of a block's input reaches the forward
        # mixer's output at t0 and after only, the reverse one's (flipped back) at t0 and before only
        block = model.blocks[0]
        x = torch.randn(2, state.T, cfg.C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        t0 = state.T // 3
        x2 = x.clone()
        x2[:, t0] += 1.0
        none = common.saver(None, "")
        with torch.no_grad():
            df = (block.mixer(x2, none) - block.mixer(x, none)).abs().amax(dim=(0, 2))
            db = (block.mixer_rev(x2.flip(1), none).flip(1) - block.mixer_rev(x.flip(1), none).flip(1)).abs().amax(dim=(0, 2))
        directions = bool((df[:t0] == 0).all() and (df[t0:] > 0).all() and (db[t0 + 1:] == 0).all()
                           and (db[:t0 + 1] > 0).all())
        print(f"check: token {t0} of {state.T} reaches the forward mixer at tokens >= {t0} and the reverse one "
              f"at tokens <= {t0} only: {directions}")
        ok = ok and directions

    # the hash masks drop at the rate asked for, and differently per site and step
    keep = common.dropout_keep(common.dropout_key(1, 2, 3), 100000, 0.1)
    other = common.dropout_keep(common.dropout_key(1, 3, 3), 100000, 0.1)
    rate = 1.0 - keep.mean()
    print(f"check: hash dropout p 0.1 drops {rate:.4f} of 100000, agreement with the next step's mask "
          f"{(keep == other).mean():.3f}")
    ok = ok and abs(rate - 0.1) < 0.005 and (keep != other).any()

    # gradient entries against central differences, without and with dropout
    gen = torch.Generator().manual_seed(0)
    drop_seed, drop_step = (int(v) for v in state["dropout"])
    for label, gname, dropout in (("", "grads", 0.0), ("dropout ", "drop_grads", float(state["dropout_p"][0]))):
        model.set_dropout(dropout, drop_seed, drop_step)
        model.train()
        fd_ok, worst = common.check_grads_fd(model, flat0, lambda: model(images, labels)[1].item(), state[gname],
                                             gen, count=fd_per_tensor, h=h, label=label)
        ok = ok and fd_ok
        print(f"check: {label}{fd_per_tensor} grad entries per tensor vs central differences, worst rel err {worst:.3e}")

    # the AdamW trajectory (no dropout) against a numpy AdamW (grads from the float64 model)
    model.set_dropout(0.0)
    ok = common.check_adamw_trajectory(model, state, lambda: model(images, labels)[1]) and ok
    print("check: " + ("OK" if ok else "FAILED"))
    return ok


# -----------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="both", choices=["vit", "mamba_vit", "mamba_vit_bi", "mamba_vit2", "both"])
    parser.add_argument("--out", default=None,
                        help="state file (default data/ref_vit.bin, data/ref_mamba_vit.bin; not with --model both)")
    parser.add_argument("--image", default="3,32,32", help="image shape channels,height,width")
    parser.add_argument("--B", type=int, default=3)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--L", type=int, default=2)
    parser.add_argument("--C", type=int, default=32)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--F", type=int, default=64)
    parser.add_argument("--N", type=int, default=16)
    parser.add_argument("--headdim", type=int, default=16,
                        help="mamba_vit2's channels per head (2C/headdim heads: 4 at the default C)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--check", action="store_true", help="read the state back and verify it")
    parser.add_argument("--scan", default="sequential", choices=["sequential", "parallel"],
                        help="the Mamba-ViT's scan: the plain loop over positions, or the log-depth one "
                             "(the same values; much faster at patch 1, T 1024)")
    args = parser.parse_args()
    if args.model == "both" and args.out:
        parser.error("--out needs --model vit, mamba_vit, mamba_vit_bi or mamba_vit2")
    image = tuple(int(v) for v in args.image.split(","))
    if len(image) != 3 or min(image) < 1:
        parser.error("--image is channels,height,width")
    if args.C % args.H != 0 or image[1] % args.patch != 0 or image[2] % args.patch != 0:
        parser.error("C must be divisible by H and the patch size must divide the image's height and width")
    if args.model == "mamba_vit2" and (2 * args.C) % args.headdim != 0:
        parser.error("mamba_vit2: 2C must be divisible by --headdim")
    adamw = common.REFERENCE_ADAMW
    dropout = (0.1, 4242, 17)  # p, seed, step
    ok = True
    for name in (["vit", "mamba_vit"] if args.model == "both" else [args.model]):
        path = args.out or f"data/ref_{name}.bin"
        if name == "vit":
            kind, cfg = formats.KIND_VIT, ViTConfig(args.patch, args.K, args.L, args.H, args.C, args.F, image)
        elif name == "mamba_vit2":
            kind = formats.KIND_MAMBA_VIT2
            cfg = MambaViTConfig(args.patch, args.K, args.L, args.C, args.N, image=image, mamba2=True,
                                 headdim=args.headdim)
        else:
            kind = formats.KIND_MAMBA_VIT_BI if name == "mamba_vit_bi" else formats.KIND_MAMBA_VIT
            cfg = MambaViTConfig(args.patch, args.K, args.L, args.C, args.N, image=image,
                                 bidirectional=kind == formats.KIND_MAMBA_VIT_BI)
        write_reference(path, kind, cfg, args.B, args.seed, args.steps, adamw, dropout, args.scan)
        if args.check:
            ok = check_state(path) and ok
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

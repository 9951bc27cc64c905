"""
Readers and writers for the project's binary file formats.

Every file starts with a header of 256 little-endian int32 (1024 bytes):
header[0] is the magic number, header[1] the format version (1; 2 for
model files and checkpoints, which add checksums), and the slots that a
format does not use are 0. What follows depends on the magic:

tokens (20261101)
    header[2] = N tokens, header[3] = vocab size V; then N uint16 tokens.
    File length is exactly 1024 + 2*N. Every token is < V.
vocab (20261102)
    header[2] = V; then for each token id in order: one uint8 length n
    (1..255) followed by n bytes of the token's UTF-8 text.
model (20261103)
    header[2] = model kind (1 gpt, 2 mamba, 3 vit, 4 mamba_vit, 5 hybrid, 6 gpt_plus,
    7 mamba_vit_bi, 8 mamba_lti, 9 mamba2, 10 mamba_vit2), header[3..9] = the model's config
    (gpt: maxT, V, L, H, C, F, P; gpt_plus (train_gpt_plus): the same, F the
    SwiGLU width; mamba and mamba_lti: V, L, C, E, N, R, P (R = 0 for
    mamba_lti); mamba2: V, L, C, E, N, Hd, P; vit: patch, K, L, H, C, F, P;
    mamba_vit and mamba_vit_bi: patch, K, L, C, E, N, P; mamba_vit2: patch,
    K, L, C, N, Hd, P (E = 2C); hybrid: maxT, V, C,
    H, F, pattern, P); header[24..26] = the image shape of a vision model
    (channels, height, width; 0 0 0, in files written before these slots,
    means 3 x 32 x 32; the config dict's "image"); version 2: header[20] =
    CRC-32C of everything after the header, header[21] = CRC-32C of the
    header with header[21] = 0 (both uint32); then P float32 parameters in
    the flat-buffer order. Version 1 files (no checksums) are read with a
    warning.
reference state (20261104)
    header[2] = model kind, header[3..9] = config as in the model file,
    header[10] = B, header[11] = T, header[12] = K named tensors,
    header[24..26] the image shape as in the model file; then K
    records, each: name (48 bytes, UTF-8, NUL padded), dtype int32
    (0 float32, 1 int32), ndim int32 (1..4), shape int32[4] (unused dims 0),
    then prod(shape) elements of 4 bytes. File length is exactly
    1024 + the sum of the record sizes.
images (20261106)
    header[2] = N images, header[3] = channels Cc, header[4] = height H,
    header[5] = width W, header[6] = number of classes K; then N records of
    one uint8 label (< K) followed by Cc*H*W uint8 pixels in CHW order (the
    CIFAR-10 binary record layout). File length is exactly
    1024 + N * (1 + Cc*H*W).

checkpoint (20261105)
    kind and config as a model file, header[10] = step, [11..12] and
    [13..14] the data and sampling generators' uint64 states (low word
    first; a vision checkpoint: the augmentation generator, and the seed),
    [15] = B, [16] = T; version 2: [17] = the run's seed, [18] = the size
    of its training data (tokens or images), [20] and [21] the checksums
    as in a model file; then P parameters, P AdamW first moments, P second
    moments (float32).

Readers validate everything they can (magic, version, counts, unused slots,
checksums, sizes against the file length) and raise ValueError with one
line that names the file and what is wrong.

The flat parameter layout of each model also lives here (gpt_param_layout,
mamba_param_layout, mamba2_param_layout, vit_param_layout,
mamba_vit_param_layout, ...), because the model file and the C++ trainers
depend on it.
"""

import json
import math
import os
import struct
import sys

import numpy as np

HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS
VERSION = 1
MODEL_VERSION = 2  # model files and checkpoints: version 2 adds the checksums
SLOT_SEED = 17  # checkpoints, version 2
SLOT_DATA_SIZE = 18
SLOT_BODY_CRC = 20  # version 2: CRC-32C of everything after the header
SLOT_HEADER_CRC = 21  # version 2: CRC-32C of the header with this slot 0

MAGIC_TOKENS = 20261101
MAGIC_VOCAB = 20261102
MAGIC_MODEL = 20261103
MAGIC_STATE = 20261104
MAGIC_IMAGES = 20261106

# model kinds (header[2] of model and reference state files)
KIND_GPT = 1
KIND_MAMBA = 2
KIND_VIT = 3
KIND_MAMBA_VIT = 4
KIND_HYBRID = 5
KIND_GPT_PLUS = 6
KIND_MAMBA_VIT_BI = 7  # train_mamba_vit -M bi: two mixers per block (forward and reverse)
KIND_MAMBA_LTI = 8  # train_mamba -M lti: the selection ablation (dt, B, C per channel)
KIND_MAMBA2 = 9  # train_mamba -M 2: the Mamba LM with Mamba-2 (SSD) mixers
KIND_MAMBA_VIT2 = 10  # train_mamba_vit -M 2: the Mamba-ViT with Mamba-2 (SSD) mixers
# train_diffusion -M vit, mamba, bimamba, mamba2: the denoisers (config slots as the ViT's, the Mamba-ViT's
# (both one-way and bidirectional) and the Mamba-2 ViT's)
KIND_DIFFUSION_VIT = 11
KIND_DIFFUSION_MAMBA = 12
KIND_DIFFUSION_BIMAMBA = 13
KIND_DIFFUSION_MAMBA2 = 14
DIFFUSION_KINDS = (KIND_DIFFUSION_VIT, KIND_DIFFUSION_MAMBA, KIND_DIFFUSION_BIMAMBA, KIND_DIFFUSION_MAMBA2)
KIND_NAMES = {KIND_GPT: "gpt", KIND_MAMBA: "mamba", KIND_VIT: "vit", KIND_MAMBA_VIT: "mamba_vit",
              KIND_HYBRID: "hybrid", KIND_GPT_PLUS: "gpt_plus", KIND_MAMBA_VIT_BI: "mamba_vit_bi",
              KIND_MAMBA_LTI: "mamba_lti", KIND_MAMBA2: "mamba2", KIND_MAMBA_VIT2: "mamba_vit2",
              KIND_DIFFUSION_VIT: "diffusion_vit", KIND_DIFFUSION_MAMBA: "diffusion_mamba",
              KIND_DIFFUSION_BIMAMBA: "diffusion_bimamba", KIND_DIFFUSION_MAMBA2: "diffusion_mamba2"}
VISION_KINDS = (KIND_VIT, KIND_MAMBA_VIT, KIND_MAMBA_VIT_BI, KIND_MAMBA_VIT2) + DIFFUSION_KINDS

# config fields stored in header[3..] for each model kind, in slot order.
# Every kind lists "P" (the number of float parameters) among its fields.
CONFIG_SLOT0 = 3
CONFIG_SLOTS = 7  # header[3..9]
CONFIG_FIELDS = {
    KIND_GPT: ("maxT", "V", "L", "H", "C", "F", "P"),
    # Transformer++: F is the SwiGLU hidden width; maxT the longest context (no position table)
    KIND_GPT_PLUS: ("maxT", "V", "L", "H", "C", "F", "P"),
    # E = expanded width (2C), N = state size (16), R = dt rank (ceil(C/16))
    KIND_MAMBA: ("V", "L", "C", "E", "N", "R", "P"),
    # the LTI ablation (train_mamba -M lti): no dt_proj, so R = 0
    KIND_MAMBA_LTI: ("V", "L", "C", "E", "N", "R", "P"),
    # Mamba-2 (train_mamba -M 2): Hd = head dim, so E/Hd heads; N the state size per head
    KIND_MAMBA2: ("V", "L", "C", "E", "N", "Hd", "P"),
    # images Cc x H x W (the config's "image", in header[24..26]): patch =
    # patch size (T = (H/patch)(W/patch) tokens of Cc*patch^2 values), K =
    # classes; the Mamba-ViT's dt rank is ceil(C/16)
    KIND_VIT: ("patch", "K", "L", "H", "C", "F", "P"),
    KIND_MAMBA_VIT: ("patch", "K", "L", "C", "E", "N", "P"),
    KIND_MAMBA_VIT_BI: ("patch", "K", "L", "C", "E", "N", "P"),
    # the Mamba-ViT with Mamba-2 mixers: E = 2C (not stored), N the state
    # size, Hd the head dim (2C/Hd heads)
    KIND_MAMBA_VIT2: ("patch", "K", "L", "C", "N", "Hd", "P"),
    KIND_DIFFUSION_VIT: ("patch", "K", "L", "H", "C", "F", "P"),
    KIND_DIFFUSION_MAMBA: ("patch", "K", "L", "C", "E", "N", "P"),
    KIND_DIFFUSION_BIMAMBA: ("patch", "K", "L", "C", "E", "N", "P"),
    KIND_DIFFUSION_MAMBA2: ("patch", "K", "L", "C", "N", "Hd", "P"),
    # the hybrid LM: pattern = its layers (hybrid_pattern_code: base 4, or
    # with S layers bit 30 and base 5); the Mamba layers' N is 16, E = 2C,
    # R = ceil(C/16); the Mamba-2 layers' N is 64, headdim 64, E = 2C
    KIND_HYBRID: ("maxT", "V", "C", "H", "F", "pattern", "P"),
}

# reference state records
STATE_NAME_BYTES = 48
STATE_RECORD_HEADER_BYTES = STATE_NAME_BYTES + 4 + 4 + 4 * 4  # 72
STATE_MAX_NDIM = 4
DTYPE_FLOAT32 = 0
DTYPE_INT32 = 1
DTYPE_NUMPY = {DTYPE_FLOAT32: np.dtype("<f4"), DTYPE_INT32: np.dtype("<i4")}

# -----------------------------------------------------------------------------
# flat parameter layouts


def gpt_param_layout(maxT, V, L, C, F):
    """
    The char GPT's flat parameter buffer, in order: a list of
    (name, shape, weight_decay). Per-layer tensors are stacked along a leading
    L dimension (layer 0 first); Linear weights are (out, in) row-major.
    Weight decay applies to the embeddings and the Linear weights only.
    """
    return [
        ("wte", (V, C), True),
        ("wpe", (maxT, C), True),
        ("ln1_w", (L, C), False),
        ("ln1_b", (L, C), False),
        ("qkv_w", (L, 3 * C, C), True),
        ("qkv_b", (L, 3 * C), False),
        ("attn_proj_w", (L, C, C), True),
        ("attn_proj_b", (L, C), False),
        ("ln2_w", (L, C), False),
        ("ln2_b", (L, C), False),
        ("fc_w", (L, F, C), True),
        ("fc_b", (L, F), False),
        ("fc_proj_w", (L, C, F), True),
        ("fc_proj_b", (L, C), False),
        ("lnf_w", (C,), False),
        ("lnf_b", (C,), False),
        ("head_w", (V, C), True),
        ("head_b", (V,), False),
    ]


def gpt_num_params(maxT, V, L, C, F):
    return sum(math.prod(shape) for _, shape, _ in gpt_param_layout(maxT, V, L, C, F))


def gpt_plus_param_layout(V, L, C, F):
    """
    The Transformer++'s flat parameter buffer (train_gpt_plus), in order.
    F is the SwiGLU hidden width; fc_w stacks W1 (rows 0..F-1, through SiLU)
    and W3 (rows F..2F-1); fc_proj_w is W2. No biases, no position table.
    Weight decay on the embedding and the Linear weights.
    """
    return [
        ("wte", (V, C), True),
        ("ln1_w", (L, C), False),
        ("qkv_w", (L, 3 * C, C), True),
        ("attn_proj_w", (L, C, C), True),
        ("ln2_w", (L, C), False),
        ("fc_w", (L, 2 * F, C), True),
        ("fc_proj_w", (L, C, F), True),
        ("lnf_w", (C,), False),
        ("head_w", (V, C), True),
    ]


def gpt_plus_num_params(V, L, C, F):
    return sum(math.prod(shape) for _, shape, _ in gpt_plus_param_layout(V, L, C, F))


# kernel size of the Mamba block's causal depthwise conv1d (fixed, like
# mamba_ssm's d_conv=4; not stored in the config)
MAMBA_CONV_K = 4


def mamba_param_layout(V, L, C, E, N, R):
    """
    The char Mamba LM's flat parameter buffer, in order: a list of
    (name, shape, weight_decay). Per-layer tensors are stacked along a leading
    L dimension (layer 0 first); Linear weights are (out, in) row-major.
    conv_w[l, e, k] is tap k of channel e's causal conv (k = K-1 multiplies
    the current step). Weight decay applies to the embedding, the conv
    weights and the Linear weights; not to A_log, D, biases or LayerNorm.
    """
    K = MAMBA_CONV_K
    return [
        ("wte", (V, C), True),
        ("in_proj_w", (L, 2 * E, C), True),
        ("conv_w", (L, E, K), True),
        ("conv_b", (L, E), False),
        ("x_proj_w", (L, R + 2 * N, E), True),
        ("dt_proj_w", (L, E, R), True),
        ("dt_proj_b", (L, E), False),
        ("A_log", (L, E, N), False),
        ("D", (L, E), False),
        ("out_proj_w", (L, C, E), True),
        ("ln_w", (L, C), False),
        ("ln_b", (L, C), False),
        ("lnf_w", (C,), False),
        ("lnf_b", (C,), False),
        ("head_w", (V, C), True),
        ("head_b", (V,), False),
    ]


def mamba_num_params(V, L, C, E, N, R):
    return sum(math.prod(shape) for _, shape, _ in mamba_param_layout(V, L, C, E, N, R))


def mamba_lti_param_layout(V, L, C, E, N):
    """
    The LTI ablation's flat buffer (train_mamba -M lti): the Mamba LM's with
    x_proj_w, dt_proj_w and dt_proj_b gone and, after the blocks' ln_b,
    dt_bias (L,E), B_lti (L,E,N), C_lti (L,E,N), none weight-decayed.
    """
    drop = ("x_proj_w", "dt_proj_w", "dt_proj_b")
    rows = [r for r in mamba_param_layout(V, L, C, E, N, 1) if r[0] not in drop]
    at = [r[0] for r in rows].index("ln_b") + 1
    return rows[:at] + [("dt_bias", (L, E), False), ("B_lti", (L, E, N), False),
                        ("C_lti", (L, E, N), False)] + rows[at:]


def mamba_lti_num_params(V, L, C, E, N):
    return sum(math.prod(shape) for _, shape, _ in mamba_lti_param_layout(V, L, C, E, N))


def mamba2_param_layout(V, L, C, E, N, Hd):
    """
    The Mamba-2 LM's flat parameter buffer (train_mamba -M 2), in order: a
    list of (name, shape, weight_decay), per-layer tensors stacked along a
    leading L dimension. With H = E/Hd heads and W = 2E + 2N + H, in_proj_w's
    rows are z (E) | xBC (E + 2N: x, then B, then C) | dt (H), in that order;
    conv_w[l, c, k] is tap k of channel c's causal conv over xBC (k = K-1
    multiplies the current step). dt_bias, A_log and D are per head; norm_w
    is the gated RMSNorm's weight. Weight decay on the embedding, the conv
    weights and the Linear weights; not on biases, A_log, D or the norms.
    """
    K = MAMBA_CONV_K
    H = E // Hd
    W = 2 * E + 2 * N + H
    return [
        ("wte", (V, C), True),
        ("in_proj_w", (L, W, C), True),
        ("conv_w", (L, E + 2 * N, K), True),
        ("conv_b", (L, E + 2 * N), False),
        ("dt_bias", (L, H), False),
        ("A_log", (L, H), False),
        ("D", (L, H), False),
        ("norm_w", (L, E), False),
        ("out_proj_w", (L, C, E), True),
        ("ln_w", (L, C), False),
        ("ln_b", (L, C), False),
        ("lnf_w", (C,), False),
        ("lnf_b", (C,), False),
        ("head_w", (V, C), True),
        ("head_b", (V,), False),
    ]


def mamba2_num_params(V, L, C, E, N, Hd):
    return sum(math.prod(shape) for _, shape, _ in mamba2_param_layout(V, L, C, E, N, Hd))


# the hybrid LM's layers: one letter each, stored in one config slot, layer
# 0 in the lowest digit. Without S layers: base-4 digits M 1, A 2, F 3 (at
# most 15 layers; every file written before S existed). With S layers (the
# Mamba-2 mixer): bit 30 set and below it base-5 digits, S 4 (at most 12
# layers, since 5^12 - 1 < 2^30).
HYBRID_DIGITS = {"M": 1, "A": 2, "F": 3, "S": 4}
HYBRID_MAX_LAYERS = 15
HYBRID_MAX_LAYERS_SSD = 12
HYBRID_SSD_FLAG = 1 << 30
HYBRID_N = 16
HYBRID_SSD_N = 64   # the S layers' d_state
HYBRID_SSD_HD = 64  # ... and headdim (2C/64 heads: C a multiple of 32)


def hybrid_pattern_code(pattern):
    """'MAFM' -> its config slot value."""
    ssd = "S" in pattern
    most = HYBRID_MAX_LAYERS_SSD if ssd else HYBRID_MAX_LAYERS
    if not 1 <= len(pattern) <= most or any(ch not in HYBRID_DIGITS for ch in pattern):
        raise ValueError(f"pattern '{pattern}' is not 1..{HYBRID_MAX_LAYERS} letters of M, A, F "
                         f"(1..{HYBRID_MAX_LAYERS_SSD} with S)")
    base = 5 if ssd else 4
    code = sum(HYBRID_DIGITS[ch] * base ** i for i, ch in enumerate(pattern))
    return HYBRID_SSD_FLAG | code if ssd else code


def hybrid_pattern_letters(code):
    """A config slot value -> its pattern; ValueError if it is none."""
    letters = {d: ch for ch, d in HYBRID_DIGITS.items()}
    ssd = code > 0 and code & HYBRID_SSD_FLAG
    base, most = (5, HYBRID_MAX_LAYERS_SSD) if ssd else (4, HYBRID_MAX_LAYERS)
    out, c = "", code & ~HYBRID_SSD_FLAG if ssd else code
    while c > 0:
        if c % base == 0 or len(out) == most:
            raise ValueError(f"pattern code {code} is not a layer pattern")
        out += letters[c % base]
        c //= base
    if not out or (ssd and "S" not in out):
        raise ValueError(f"pattern code {code} is not a layer pattern")
    return out


def hybrid_param_layout(maxT, V, C, H, F, pattern):
    """
    The hybrid LM's flat parameter buffer, in order: a list of (name, shape,
    weight_decay). The layers of each kind are stacked along a leading
    dimension (their count, in pattern order): the Mamba layers' tensors
    (mamba.*, the Mamba LM's, ln_w/ln_b the norm before the mixer), then the
    Mamba-2 layers' (mamba2.*, the Mamba-2 LM's, d_state 64 and headdim 64,
    ln_w/ln_b the norm before the mixer), then the attention layers'
    (attn.*), then the MLP layers' (mlp.*); kinds the pattern lacks are left
    out, and so are the positions wpe without an attention layer. H does not
    change the layout.
    """
    nM, nS, nA, nF = (pattern.count(ch) for ch in "MSAF")
    E, N, R = 2 * C, HYBRID_N, math.ceil(C / 16)
    lm_rows = ("wte", "lnf_w", "lnf_b", "head_w", "head_b")
    out = [("wte", (V, C), True)]
    if nA:
        out.append(("wpe", (maxT, C), True))
    if nM:
        out += [("mamba." + name, (nM,) + shape[1:], wd) for name, shape, wd in mamba_param_layout(1, 1, C, E, N, R)
                if name not in lm_rows]
    if nS:
        out += [("mamba2." + name, (nS,) + shape[1:], wd)
                for name, shape, wd in mamba2_param_layout(1, 1, C, E, HYBRID_SSD_N, HYBRID_SSD_HD)
                if name not in lm_rows]
    if nA:
        out += [("attn.ln_w", (nA, C), False), ("attn.ln_b", (nA, C), False),
                ("attn.qkv_w", (nA, 3 * C, C), True), ("attn.qkv_b", (nA, 3 * C), False),
                ("attn.proj_w", (nA, C, C), True), ("attn.proj_b", (nA, C), False)]
    if nF:
        out += [("mlp.ln_w", (nF, C), False), ("mlp.ln_b", (nF, C), False),
                ("mlp.fc_w", (nF, F, C), True), ("mlp.fc_b", (nF, F), False),
                ("mlp.proj_w", (nF, C, F), True), ("mlp.proj_b", (nF, C), False)]
    return out + [("lnf_w", (C,), False), ("lnf_b", (C,), False), ("head_w", (V, C), True), ("head_b", (V,), False)]


def hybrid_num_params(maxT, V, C, H, F, pattern):
    return sum(math.prod(shape) for _, shape, _ in hybrid_param_layout(maxT, V, C, H, F, pattern))


# the vision models' image shape (channels, height, width) in header[24..26];
# 0 0 0 there (files written before the slots) is CIFAR-10's 3 x 32 x 32
IMAGE_SLOT0 = 24
IMAGE_SLOTS = 3
CIFAR_IMAGE = (3, 32, 32)


def vision_tokens(patch, image=CIFAR_IMAGE):
    """(T, PD): number of patches per image and values per patch for images (Cc, H, W)."""
    Cc, H, W = image
    return (H // patch) * (W // patch), Cc * patch * patch


def vit_param_layout(patch, K, L, H, C, F, image=CIFAR_IMAGE):
    """
    The ViT's flat parameter buffer, in order: a list of (name, shape,
    weight_decay). The blocks are the GPT's (stacked over L, same names);
    before them the patch embedding LN(PD) -> Linear(PD, C) -> LN(C) and the
    positions wpe (T, C); after them the final LayerNorm and the head
    Linear(C, K). Weight decay applies to the positions and the Linear
    weights only. H does not change the layout.
    """
    T, PD = vision_tokens(patch, image)
    blocks = [entry for entry in gpt_param_layout(1, 1, L, C, F)
              if entry[0] not in ("wte", "wpe", "lnf_w", "lnf_b", "head_w", "head_b")]
    return ([("patch_ln_w", (PD,), False),
             ("patch_ln_b", (PD,), False),
             ("patch_w", (C, PD), True),
             ("patch_b", (C,), False),
             ("embed_ln_w", (C,), False),
             ("embed_ln_b", (C,), False),
             ("wpe", (T, C), True)]
            + blocks
            + [("lnf_w", (C,), False),
               ("lnf_b", (C,), False),
               ("head_w", (K, C), True),
               ("head_b", (K,), False)])


def vit_num_params(patch, K, L, H, C, F, image=CIFAR_IMAGE):
    return sum(math.prod(shape) for _, shape, _ in vit_param_layout(patch, K, L, H, C, F, image))


def mamba_vit_param_layout(patch, K, L, C, E, N, image=CIFAR_IMAGE, bidirectional=False):
    """
    The Mamba-ViT's flat parameter buffer, in order: the patch embedding
    (as the ViT's, same names), the Mamba LM's blocks
    (stacked over L, same names; R = ceil(C/16)), the head Linear(C, K).
    No positions and no final LayerNorm. Bidirectional (kind mamba_vit_bi):
    each block has two mixers, so the mixer tensors in_proj_w .. out_proj_w
    have a leading dimension 2L, index l layer l's forward mixer and L + l
    its reverse mixer; ln_w and ln_b stay (L, C).
    """
    R = math.ceil(C / 16)
    _, PD = vision_tokens(patch, image)
    mixers = 2 if bidirectional else 1
    blocks = [(name, ((mixers * L,) + shape[1:]) if name not in ("ln_w", "ln_b") else shape, wd)
              for name, shape, wd in mamba_param_layout(1, L, C, E, N, R)
              if name not in ("wte", "lnf_w", "lnf_b", "head_w", "head_b")]
    return ([("patch_ln_w", (PD,), False),
             ("patch_ln_b", (PD,), False),
             ("patch_w", (C, PD), True),
             ("patch_b", (C,), False),
             ("embed_ln_w", (C,), False),
             ("embed_ln_b", (C,), False)]
            + blocks
            + [("head_w", (K, C), True),
               ("head_b", (K,), False)])


def mamba_vit_num_params(patch, K, L, C, E, N, image=CIFAR_IMAGE, bidirectional=False):
    return sum(math.prod(shape) for _, shape, _ in mamba_vit_param_layout(patch, K, L, C, E, N, image, bidirectional))


def mamba_vit2_param_layout(patch, K, L, C, N, Hd, image=CIFAR_IMAGE):
    """
    The Mamba-ViT with Mamba-2 mixers (train_mamba_vit -M 2): the patch
    embedding (as the ViT's), the Mamba-2 LM's blocks (stacked over L, same
    names; E = 2C, 2C/Hd heads), the head Linear(C, K).
    """
    _, PD = vision_tokens(patch, image)
    blocks = [r for r in mamba2_param_layout(1, L, C, 2 * C, N, Hd)
              if r[0] not in ("wte", "lnf_w", "lnf_b", "head_w", "head_b")]
    return ([("patch_ln_w", (PD,), False),
             ("patch_ln_b", (PD,), False),
             ("patch_w", (C, PD), True),
             ("patch_b", (C,), False),
             ("embed_ln_w", (C,), False),
             ("embed_ln_b", (C,), False)]
            + blocks
            + [("head_w", (K, C), True),
               ("head_b", (K,), False)])


def diffusion_param_layout(kind, config):
    """
    A diffusion denoiser's flat parameter buffer (train_diffusion.cu), in
    order: the patch Linear(PD, C), the class embedding (K + 1, C) (row K:
    no class), the positions (T + 2, C); the backbone's blocks (the ViT's,
    the Mamba-ViT's, bidirectional: 2L mixers, or the Mamba-2 ViT's, same
    names); the ViT's final LayerNorm; the head Linear(C, PD).
    """
    image = tuple(config.get("image", CIFAR_IMAGE))
    T, PD = vision_tokens(config["patch"], image)
    C, L, K = config["C"], config["L"], config["K"]
    skip = ("patch_ln_w", "patch_ln_b", "patch_w", "patch_b", "embed_ln_w", "embed_ln_b", "wpe", "head_w", "head_b")
    if kind == KIND_DIFFUSION_VIT:
        blocks = vit_param_layout(config["patch"], K, L, config["H"], C, config["F"], image)
    elif kind == KIND_DIFFUSION_MAMBA2:
        blocks = mamba_vit2_param_layout(config["patch"], K, L, C, config["N"], config["Hd"], image)
    else:
        blocks = mamba_vit_param_layout(config["patch"], K, L, C, config["E"], config["N"], image,
                                        kind == KIND_DIFFUSION_BIMAMBA)
    return ([("patch_w", (C, PD), True), ("patch_b", (C,), False), ("class_emb", (K + 1, C), False),
             ("wpe", (T + 2, C), False)]
            + [r for r in blocks if r[0] not in skip]
            + [("head_w", (PD, C), True), ("head_b", (PD,), False)])


def mamba_vit2_num_params(patch, K, L, C, N, Hd, image=CIFAR_IMAGE):
    return sum(math.prod(shape) for _, shape, _ in mamba_vit2_param_layout(patch, K, L, C, N, Hd, image))


# -----------------------------------------------------------------------------
# shared helpers


def _fail(path, msg):
    raise ValueError(f"{path}: {msg}")


def _new_header(magic):
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0] = magic
    header[1] = VERSION
    return header


def _read_file(path, magic, what, max_version=VERSION):
    """Reads the whole file, checks length >= header, magic and version (1..max_version)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER_BYTES:
        _fail(path, f"{len(data)} bytes is shorter than the {HEADER_BYTES}-byte header of a {what} file")
    header = np.frombuffer(data, dtype="<i4", count=HEADER_INTS)
    if header[0] != magic:
        _fail(path, f"bad magic {int(header[0])}, expected {magic} ({what} file)")
    if not 1 <= header[1] <= max_version:
        _fail(path, f"unsupported {what} file version {int(header[1])}, expected 1 to {max_version}")
    return data, header


# -----------------------------------------------------------------------------
# CRC-32C (Castagnoli), the checksum of model files and checkpoints: the same
# values as llmc/utils.h's crc32c (crc32c(b"123456789") == 0xE3069283)


def _crc32c_table():
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    """
    CRC-32C of a bytes-like object. Large inputs are split into K chunks of
    n bytes whose CRCs are computed side by side (numpy, n steps); the CRC is
    linear, so the chunks' CRCs are then combined in order, each step
    advancing the running value over n zero bytes (a table per register
    byte) before adding the next chunk's. The initial value 0xFFFFFFFF is
    folded into the first four bytes (the same as starting from it).
    """
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    table = _CRC_TABLE
    if len(buf) < 4096:
        r = 0xFFFFFFFF
        tl = table.tolist()
        for b in buf.tolist():
            r = tl[(r ^ b) & 0xFF] ^ (r >> 8)
        return r ^ 0xFFFFFFFF
    buf = buf.copy()
    buf[:4] ^= 0xFF
    n = max(64, math.isqrt(len(buf)))
    K = len(buf) // n
    columns = np.ascontiguousarray(buf[:K * n].reshape(K, n).T)  # (n, K): byte j of every chunk
    r = np.zeros(K, dtype=np.uint32)
    for j in range(n):
        r = table[(r ^ columns[j]) & 0xFF] ^ (r >> 8)
    # the register advanced over n zero bytes, tabled per register byte: shift[k][b] for the value b << 8k
    s = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]).reshape(-1)
    for _ in range(n):
        s = table[s & 0xFF] ^ (s >> 8)
    s0, s1, s2, s3 = (row.tolist() for row in s.reshape(4, 256))
    total = 0
    for c in r.tolist():
        total = s0[total & 0xFF] ^ s1[(total >> 8) & 0xFF] ^ s2[(total >> 16) & 0xFF] ^ s3[total >> 24] ^ c
    tl = table.tolist()
    for b in buf[K * n:].tolist():
        total = tl[(total ^ b) & 0xFF] ^ (total >> 8)
    return total ^ 0xFFFFFFFF


def _header_crc(header):
    h = np.array(header, dtype="<i4")
    h[SLOT_HEADER_CRC] = 0
    return crc32c(h.tobytes())


def _seal(header, body):
    """Stores the version 2 checksums of a model file's or checkpoint's body in its header."""
    header.view("<u4")[SLOT_BODY_CRC] = crc32c(body)
    header.view("<u4")[SLOT_HEADER_CRC] = _header_crc(header)


def _verify(path, header, data, what):
    """Checks a version 2 file's checksums; a version 1 file gets a one-line warning on stderr."""
    if header[1] < 2:
        print(f"warning: {path}: a {what} of format version 1, written before checksums; read without verifying it",
              file=sys.stderr)
        return
    h = header.view("<u4")
    if h[SLOT_HEADER_CRC] != _header_crc(header):
        _fail(path, f"the header's checksum does not match (header[{SLOT_HEADER_CRC}]): the file is corrupt")
    if h[SLOT_BODY_CRC] != crc32c(data[HEADER_BYTES:]):
        _fail(path, f"the checksum of what follows the header does not match (header[{SLOT_BODY_CRC}]): the file is corrupt")


def _check_finite(path, values, what):
    bad = np.nonzero(~np.isfinite(values))[0]
    if len(bad) > 0:
        _fail(path, f"{what} {int(bad[0])} is {values[bad[0]]}")


def _check_model_slots(path, header, first_used_end, kind):
    """The slots of a model file or checkpoint that its version leaves 0 (from first_used_end on)."""
    if header[1] >= 2:
        _check_zero_range(path, header, first_used_end, SLOT_BODY_CRC)
        _check_unused_zero(path, header, SLOT_HEADER_CRC + 1, kind)
    else:
        _check_unused_zero(path, header, first_used_end, kind)


def _check_zero_range(path, header, start, end):
    nz = np.nonzero(header[start:end])[0]
    if len(nz) > 0:
        i = start + int(nz[0])
        _fail(path, f"header[{i}] = {int(header[i])}, expected 0 (unused slot)")


def _check_unused_zero(path, header, first_unused, kind=None):
    """header[first_unused:] must be 0, but a vision kind's image shape slots."""
    rest = header[first_unused:].copy()
    if kind in VISION_KINDS:
        rest[IMAGE_SLOT0 - first_unused:IMAGE_SLOT0 - first_unused + IMAGE_SLOTS] = 0
    nz = np.nonzero(rest)[0]
    if len(nz) > 0:
        i = first_unused + int(nz[0])
        _fail(path, f"header[{i}] = {int(header[i])}, expected 0 (unused slot)")


def _check_positive(path, name, value, lo=1, hi=2**31 - 1):
    if not (lo <= value <= hi):
        _fail(path, f"{name} = {value} is out of range [{lo}, {hi}]")


def _write_file(path, chunks):
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(path, "wb") as f:
        for c in chunks:
            f.write(c)


# -----------------------------------------------------------------------------
# config (header[3..9] of model and state files)


def _config_to_slots(kind, config):
    """config dict -> list of CONFIG_SLOTS ints (unused slots 0)."""
    if kind not in CONFIG_FIELDS:
        raise ValueError(f"model kind {kind} has no config layout defined")
    fields = CONFIG_FIELDS[kind]
    missing = [k for k in fields if k not in config]
    extra = [k for k in config if k not in fields and not (k == "image" and kind in VISION_KINDS)]
    if missing or extra:
        raise ValueError(f"config for kind {KIND_NAMES[kind]} needs exactly {fields}; "
                         f"missing {missing}, unexpected {extra}")
    slots = [int(config[k]) for k in fields]
    return slots + [0] * (CONFIG_SLOTS - len(slots))


def _image_slots(kind, config):
    """header[24..26] for a config: a vision kind's image shape (default 3 x 32 x 32), else 0 0 0."""
    if kind not in VISION_KINDS:
        return [0] * IMAGE_SLOTS
    return [int(v) for v in config.get("image", CIFAR_IMAGE)]


def _plain_config(config):
    """config with its ints as ints (the image shape as a tuple of ints)."""
    return {k: tuple(int(x) for x in v) if k == "image" else int(v) for k, v in config.items()}


def _validate_config(path, kind, config):
    """Checks config values for consistency; raises ValueError naming path."""
    for k, v in config.items():
        if k == "R" and kind == KIND_MAMBA_LTI:
            if v != 0:
                _fail(path, f"R = {v}; the mamba_lti model has no dt_proj (R = 0)")
        elif k != "image":
            _check_positive(path, k, v)
    if kind == KIND_GPT:
        if config["C"] % config["H"] != 0:
            _fail(path, f"C = {config['C']} is not divisible by H = {config['H']}")
        P = gpt_num_params(config["maxT"], config["V"], config["L"], config["C"], config["F"])
        if config["P"] != P:
            _fail(path, f"P = {config['P']} does not match the gpt layout's {P} parameters")
    elif kind == KIND_GPT_PLUS:
        if config["C"] % config["H"] != 0 or (config["C"] // config["H"]) % 2 != 0:
            _fail(path, f"C = {config['C']} does not split into H = {config['H']} heads of even size")
        P = gpt_plus_num_params(config["V"], config["L"], config["C"], config["F"])
        if config["P"] != P:
            _fail(path, f"P = {config['P']} does not match the gpt_plus layout's {P} parameters")
    elif kind == KIND_MAMBA:
        P = mamba_num_params(config["V"], config["L"], config["C"], config["E"], config["N"], config["R"])
        if config["P"] != P:
            _fail(path, f"P = {config['P']} does not match the mamba layout's {P} parameters")
    elif kind == KIND_MAMBA_LTI:
        P = mamba_lti_num_params(config["V"], config["L"], config["C"], config["E"], config["N"])
        if config["P"] != P:
            _fail(path, f"P = {config['P']} does not match the mamba_lti layout's {P} parameters")
    elif kind == KIND_MAMBA2:
        if config["E"] % config["Hd"] != 0:
            _fail(path, f"E = {config['E']} is not divisible by the head dim Hd = {config['Hd']}")
        P = mamba2_num_params(config["V"], config["L"], config["C"], config["E"], config["N"], config["Hd"])
        if config["P"] != P:
            _fail(path, f"P = {config['P']} does not match the mamba2 layout's {P} parameters")
    elif kind == KIND_HYBRID:
        try:
            pattern = hybrid_pattern_letters(config["pattern"])
        except ValueError as err:
            _fail(path, str(err))
        if "A" in pattern and config["C"] % config["H"] != 0:
            _fail(path, f"C = {config['C']} is not divisible by H = {config['H']}")
        if "S" in pattern and config["C"] % (HYBRID_SSD_HD // 2) != 0:
            _fail(path, f"C = {config['C']} is not a multiple of {HYBRID_SSD_HD // 2}, as the Mamba-2 (S) layers need")
        P = hybrid_num_params(config["maxT"], config["V"], config["C"], config["H"], config["F"], pattern)
        if config["P"] != P:
            _fail(path, f"P = {config['P']} does not match the hybrid layout's {P} parameters")
    elif kind in VISION_KINDS:
        image = tuple(config.get("image", CIFAR_IMAGE))
        Cc, H, W = image
        _check_positive(path, "image channels", Cc, 1, 64)
        _check_positive(path, "image height", H, 1, 4096)
        _check_positive(path, "image width", W, 1, 4096)
        if H % config["patch"] != 0 or W % config["patch"] != 0:
            _fail(path, f"patch = {config['patch']} does not divide the {H} x {W} images")
        if kind in DIFFUSION_KINDS:
            P = sum(math.prod(shape) for _, shape, _ in diffusion_param_layout(kind, config))
        elif kind == KIND_VIT:
            if config["C"] % config["H"] != 0:
                _fail(path, f"C = {config['C']} is not divisible by H = {config['H']}")
            P = vit_num_params(config["patch"], config["K"], config["L"], config["H"], config["C"], config["F"],
                               image)
        elif kind == KIND_MAMBA_VIT2:
            if 2 * config["C"] % config["Hd"] != 0:
                _fail(path, f"E = 2C = {2 * config['C']} is not divisible by the head dim Hd = {config['Hd']}")
            P = mamba_vit2_num_params(config["patch"], config["K"], config["L"], config["C"], config["N"],
                                      config["Hd"], image)
        else:
            P = mamba_vit_num_params(config["patch"], config["K"], config["L"], config["C"], config["E"], config["N"],
                                     image, kind == KIND_MAMBA_VIT_BI)
        if config["P"] != P:
            _fail(path, f"P = {config['P']} does not match the {KIND_NAMES[kind]} layout's {P} parameters")


def _read_config(path, header):
    """header -> (kind, config dict); validates the kind and config slots."""
    kind = int(header[2])
    if kind not in KIND_NAMES:
        _fail(path, f"unknown model kind {kind}")
    if kind not in CONFIG_FIELDS:
        _fail(path, f"model kind {kind} ({KIND_NAMES[kind]}) has no config layout defined")
    fields = CONFIG_FIELDS[kind]
    config = {k: int(header[CONFIG_SLOT0 + i]) for i, k in enumerate(fields)}
    for i in range(len(fields), CONFIG_SLOTS):
        s = CONFIG_SLOT0 + i
        if header[s] != 0:
            _fail(path, f"header[{s}] = {int(header[s])}, expected 0 (unused config slot)")
    if kind in VISION_KINDS:
        image = tuple(int(v) for v in header[IMAGE_SLOT0:IMAGE_SLOT0 + IMAGE_SLOTS])
        config["image"] = CIFAR_IMAGE if image == (0, 0, 0) else image
    _validate_config(path, kind, config)
    return kind, config


# -----------------------------------------------------------------------------
# tokens


def write_tokens(path, tokens, vocab_size):
    """Writes a 1-D sequence of token ids (each < vocab_size <= 65536)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or len(tokens) == 0:
        raise ValueError(f"{path}: tokens must be a non-empty 1-D array")
    if not (1 <= vocab_size <= 65536):
        raise ValueError(f"{path}: vocab size {vocab_size} does not fit uint16 tokens")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise ValueError(f"{path}: token ids must be in [0, {vocab_size})")
    header = _new_header(MAGIC_TOKENS)
    header[2] = len(tokens)
    header[3] = vocab_size
    _write_file(path, [header.tobytes(), tokens.astype("<u2").tobytes()])


def read_tokens(path):
    """Returns (tokens as uint16 numpy array, vocab size)."""
    data, header = _read_file(path, MAGIC_TOKENS, "tokens")
    N, V = int(header[2]), int(header[3])
    _check_positive(path, "number of tokens", N)
    _check_positive(path, "vocab size", V, 1, 65536)
    _check_unused_zero(path, header, 4)
    expected = HEADER_BYTES + 2 * N
    if len(data) != expected:
        _fail(path, f"file is {len(data)} bytes, expected {expected} for {N} tokens")
    tokens = np.frombuffer(data, dtype="<u2", offset=HEADER_BYTES, count=N)
    bad = np.nonzero(tokens >= V)[0]
    if len(bad) > 0:
        _fail(path, f"token {int(tokens[bad[0]])} at position {int(bad[0])} is >= vocab size {V}")
    return tokens, V


# -----------------------------------------------------------------------------
# vocabulary


def write_vocab(path, vocab):
    """Writes a list of token strings (token id = list index)."""
    if len(vocab) == 0:
        raise ValueError(f"{path}: vocabulary is empty")
    chunks = []
    for i, s in enumerate(vocab):
        b = s.encode("utf-8")
        if not (1 <= len(b) <= 255):
            raise ValueError(f"{path}: token {i} is {len(b)} bytes of UTF-8, must be 1..255")
        chunks.append(struct.pack("<B", len(b)) + b)
    header = _new_header(MAGIC_VOCAB)
    header[2] = len(vocab)
    _write_file(path, [header.tobytes()] + chunks)


def read_vocab(path):
    """Returns the list of token strings."""
    data, header = _read_file(path, MAGIC_VOCAB, "vocab")
    V = int(header[2])
    _check_positive(path, "vocab size", V, 1, 65536)
    _check_unused_zero(path, header, 3)
    vocab = []
    pos = HEADER_BYTES
    for i in range(V):
        if pos >= len(data):
            _fail(path, f"file ends at {len(data)} bytes inside token {i} of {V}")
        n = data[pos]
        if n == 0:
            _fail(path, f"token {i} has length 0")
        if pos + 1 + n > len(data):
            _fail(path, f"file ends at {len(data)} bytes inside token {i} of {V}")
        try:
            vocab.append(data[pos + 1:pos + 1 + n].decode("utf-8"))
        except UnicodeDecodeError:
            _fail(path, f"token {i} is not valid UTF-8")
        pos += 1 + n
    if pos != len(data):
        _fail(path, f"file is {len(data)} bytes, but its {V} tokens end at {pos}")
    return vocab


# -----------------------------------------------------------------------------
# model (config + flat float32 parameters)


def write_model(path, kind, config, params):
    """Writes a model file (version 2, with checksums). config is a dict with the kind's CONFIG_FIELDS."""
    slots = _config_to_slots(kind, config)
    _validate_config(path, kind, _plain_config(config))
    params = np.asarray(params, dtype="<f4").reshape(-1)
    if len(params) != config["P"]:
        raise ValueError(f"{path}: {len(params)} parameters given, config says P = {config['P']}")
    header = _new_header(MAGIC_MODEL)
    header[1] = MODEL_VERSION
    header[2] = kind
    header[CONFIG_SLOT0:CONFIG_SLOT0 + CONFIG_SLOTS] = slots
    header[IMAGE_SLOT0:IMAGE_SLOT0 + IMAGE_SLOTS] = _image_slots(kind, config)
    body = params.tobytes()
    _seal(header, body)
    _write_file(path, [header.tobytes(), body])


def read_model(path):
    """Returns (kind, config dict, params as float32 numpy array)."""
    data, header = _read_file(path, MAGIC_MODEL, "model", MODEL_VERSION)
    if header[1] >= 2 and header.view("<u4")[SLOT_HEADER_CRC] != _header_crc(header):
        _fail(path, f"the header's checksum does not match (header[{SLOT_HEADER_CRC}]): the file is corrupt")
    kind, config = _read_config(path, header)
    _check_model_slots(path, header, CONFIG_SLOT0 + CONFIG_SLOTS, kind)
    P = config["P"]
    expected = HEADER_BYTES + 4 * P
    if len(data) != expected:
        _fail(path, f"file is {len(data)} bytes, expected {expected} for P = {P} float32 parameters")
    _verify(path, header, data, "model file")
    params = np.frombuffer(data, dtype="<f4", offset=HEADER_BYTES, count=P)
    _check_finite(path, params, "parameter")
    return kind, config, params


# -----------------------------------------------------------------------------
# reference state (config, batch size, named tensors)


def write_state(path, kind, config, B, T, tensors):
    """
    Writes a reference state. tensors is a list of (name, array) pairs (or a
    dict, in its order); arrays of integer dtype are stored as int32, all
    others as float32.
    """
    slots = _config_to_slots(kind, config)
    _validate_config(path, kind, _plain_config(config))
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate tensor names")
    chunks = []
    for name, arr in items:
        arr = np.asarray(arr)
        nb = name.encode("utf-8")
        if not (1 <= len(nb) < STATE_NAME_BYTES) or b"\0" in nb:
            raise ValueError(f"{path}: tensor name {name!r} must be 1..{STATE_NAME_BYTES - 1} bytes without NUL")
        if not (1 <= arr.ndim <= STATE_MAX_NDIM) or arr.size == 0:
            raise ValueError(f"{path}: tensor {name!r} has shape {arr.shape}; need 1..4 non-empty dims")
        if np.issubdtype(arr.dtype, np.integer):
            dtype = DTYPE_INT32
            if arr.min() < -2**31 or arr.max() >= 2**31:
                raise ValueError(f"{path}: tensor {name!r} does not fit int32")
        else:
            dtype = DTYPE_FLOAT32
        shape = list(arr.shape) + [0] * (STATE_MAX_NDIM - arr.ndim)
        rec = nb.ljust(STATE_NAME_BYTES, b"\0") + struct.pack("<6i", dtype, arr.ndim, *shape)
        chunks.append(rec)
        chunks.append(np.ascontiguousarray(arr, dtype=DTYPE_NUMPY[dtype]).tobytes())
    header = _new_header(MAGIC_STATE)
    header[2] = kind
    header[CONFIG_SLOT0:CONFIG_SLOT0 + CONFIG_SLOTS] = slots
    header[10] = B
    header[11] = T
    header[12] = len(items)
    header[IMAGE_SLOT0:IMAGE_SLOT0 + IMAGE_SLOTS] = _image_slots(kind, config)
    _write_file(path, [header.tobytes()] + chunks)


class State:
    """A reference state read back: kind, config, B, T and named tensors."""

    def __init__(self, kind, config, B, T, tensors):
        self.kind = kind
        self.config = config
        self.B = B
        self.T = T
        self.tensors = tensors  # dict name -> numpy array, in file order

    def __getitem__(self, name):
        return self.tensors[name]

    def __contains__(self, name):
        return name in self.tensors


def read_state(path):
    """Returns a State; tensors are float32 or int32 numpy arrays."""
    data, header = _read_file(path, MAGIC_STATE, "reference state")
    kind, config = _read_config(path, header)
    B, T, K = int(header[10]), int(header[11]), int(header[12])
    _check_positive(path, "B", B)
    _check_positive(path, "T", T)
    _check_positive(path, "number of tensors K", K)
    _check_unused_zero(path, header, 13, kind)
    tensors = {}
    pos = HEADER_BYTES
    for i in range(K):
        if pos + STATE_RECORD_HEADER_BYTES > len(data):
            _fail(path, f"file ends at {len(data)} bytes inside the header of record {i} of {K}")
        raw = data[pos:pos + STATE_NAME_BYTES]
        nul = raw.find(b"\0")
        if nul <= 0 or raw[nul:].strip(b"\0") != b"":
            _fail(path, f"record {i}: name is not a NUL-terminated, NUL-padded string of 1..47 bytes")
        try:
            name = raw[:nul].decode("utf-8")
        except UnicodeDecodeError:
            _fail(path, f"record {i}: name is not valid UTF-8")
        if name in tensors:
            _fail(path, f"record {i}: duplicate tensor name {name!r}")
        dtype, ndim, *shape = struct.unpack_from("<6i", data, pos + STATE_NAME_BYTES)
        if dtype not in DTYPE_NUMPY:
            _fail(path, f"tensor {name!r}: unknown dtype {dtype}")
        if not (1 <= ndim <= STATE_MAX_NDIM):
            _fail(path, f"tensor {name!r}: ndim {ndim} is out of range [1, {STATE_MAX_NDIM}]")
        if any(d <= 0 for d in shape[:ndim]) or any(d != 0 for d in shape[ndim:]):
            _fail(path, f"tensor {name!r}: bad shape {shape} for ndim {ndim}")
        shape = tuple(shape[:ndim])
        count = math.prod(shape)
        pos += STATE_RECORD_HEADER_BYTES
        if pos + 4 * count > len(data):
            _fail(path, f"file ends at {len(data)} bytes inside the data of tensor {name!r}")
        tensors[name] = np.frombuffer(data, dtype=DTYPE_NUMPY[dtype], offset=pos, count=count).reshape(shape)
        pos += 4 * count
    if pos != len(data):
        _fail(path, f"file is {len(data)} bytes, but its {K} records end at {pos}")
    return State(kind, config, B, T, tensors)


# -----------------------------------------------------------------------------
# checkpoint (magic 20261105): written by the trainers, read here for interop

MAGIC_CHECKPOINT = 20261105


def read_checkpoint(path):
    """
    Returns a dict: kind, config, step, B, T, seed and data_size (None in a
    version 1 file), params, m, v (float32 arrays). Layout: header (kind and
    config as a model file; [10] step; [11..12] and [13..14] the data and
    sampling generators' uint64 states; [15] B; [16] T; version 2: [17] the
    run's seed, [18] its training data's size, [20..21] the checksums;
    [24..26] a vision model's image shape, in config["image"]), then P
    parameters, P AdamW first moments, P second moments.
    """
    data, header = _read_file(path, MAGIC_CHECKPOINT, "checkpoint", MODEL_VERSION)
    if header[1] >= 2 and header.view("<u4")[SLOT_HEADER_CRC] != _header_crc(header):
        _fail(path, f"the header's checksum does not match (header[{SLOT_HEADER_CRC}]): the file is corrupt")
    kind, config = _read_config(path, header)
    _check_model_slots(path, header, SLOT_DATA_SIZE + 1 if header[1] >= 2 else 17, kind)
    P = config["P"]
    expected = HEADER_BYTES + 12 * P
    if len(data) != expected:
        _fail(path, f"file is {len(data)} bytes, expected {expected} for P = {P} parameters and two moments")
    step, B, T = int(header[10]), int(header[15]), int(header[16])
    if step < 0 or B < 1 or T < 1:
        _fail(path, f"bad step {step} or batch {B} x {T}")
    seed = int(header[SLOT_SEED]) if header[1] >= 2 else None
    data_size = int(header[SLOT_DATA_SIZE]) if header[1] >= 2 else None
    if header[1] >= 2 and (seed < 0 or data_size < 1):
        _fail(path, f"bad seed {seed} or training data size {data_size}")
    _verify(path, header, data, "checkpoint")
    arrays = np.frombuffer(data, dtype="<f4", offset=HEADER_BYTES, count=3 * P).reshape(3, P)
    for values, what in zip(arrays, ("parameter", "AdamW first moment", "AdamW second moment")):
        _check_finite(path, values, what)
    return {"kind": kind, "config": config, "step": step, "B": B, "T": T, "seed": seed, "data_size": data_size,
            "params": arrays[0], "m": arrays[1], "v": arrays[2]}


def write_checkpoint(path, kind, config, step, train_rng, sample_rng, B, T, seed, data_size, params, m, v):
    """
    Writes a checkpoint (version 2, with checksums) in the trainers' layout:
    train_rng and sample_rng are the two uint64 generator slots (a vision
    checkpoint: the augmentation generator, and the seed).
    """
    slots = _config_to_slots(kind, config)
    _validate_config(path, kind, _plain_config(config))
    arrays = [np.asarray(a, dtype="<f4").reshape(-1) for a in (params, m, v)]
    if any(len(a) != config["P"] for a in arrays):
        raise ValueError(f"{path}: parameters and moments must have P = {config['P']} values each")
    header = _new_header(MAGIC_CHECKPOINT)
    header[1] = MODEL_VERSION
    header[2] = kind
    header[CONFIG_SLOT0:CONFIG_SLOT0 + CONFIG_SLOTS] = slots
    u = header.view("<u4")
    header[10] = step
    u[11], u[12] = train_rng & 0xFFFFFFFF, train_rng >> 32
    u[13], u[14] = sample_rng & 0xFFFFFFFF, sample_rng >> 32
    header[15], header[16] = B, T
    header[SLOT_SEED], header[SLOT_DATA_SIZE] = seed, data_size
    header[IMAGE_SLOT0:IMAGE_SLOT0 + IMAGE_SLOTS] = _image_slots(kind, config)
    body = b"".join(a.tobytes() for a in arrays)
    _seal(header, body)
    _write_file(path, [header.tobytes(), body])


# -----------------------------------------------------------------------------
# logs (log.jsonl)


def read_log(path):
    """
    The lines of a trainer's log.jsonl (a path or a run directory) as dicts,
    as one run: a {"resume_step": S} line (a resumed run starts there)
    drops the training lines before it whose step is above S and the
    evaluation lines whose step is S or above, and is itself left out.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "log.jsonl")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                _fail(path, f"line {n} is not JSON")
            if "resume_step" in row:
                S = row["resume_step"]
                rows = [r for r in rows if (r["step"] <= S if "train_loss" in r else r["step"] < S)]
            else:
                rows.append(row)
    return rows


# -----------------------------------------------------------------------------
# images (the CIFAR-10 binary record layout behind a header)


def write_images(path, labels, pixels, num_classes):
    """
    Writes an images file. labels: N ints in [0, num_classes); pixels: uint8
    array of shape (N, Cc, H, W) (CHW per image).
    """
    labels = np.asarray(labels)
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[0] == 0 or pixels.dtype != np.uint8:
        raise ValueError(f"{path}: pixels must be a non-empty uint8 array of shape (N, C, H, W), got "
                         f"{pixels.dtype} {pixels.shape}")
    N, Cc, H, W = pixels.shape
    if labels.shape != (N,):
        raise ValueError(f"{path}: {labels.shape} labels for {N} images")
    if not (1 <= num_classes <= 256):
        raise ValueError(f"{path}: {num_classes} classes do not fit uint8 labels")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{path}: labels must be in [0, {num_classes})")
    header = _new_header(MAGIC_IMAGES)
    header[2:7] = [N, Cc, H, W, num_classes]
    records = np.empty((N, 1 + Cc * H * W), dtype=np.uint8)
    records[:, 0] = labels
    records[:, 1:] = pixels.reshape(N, -1)
    _write_file(path, [header.tobytes(), records.tobytes()])


def read_images(path):
    """Returns (labels as uint8 (N,), pixels as uint8 (N, Cc, H, W), number of classes)."""
    data, header = _read_file(path, MAGIC_IMAGES, "images")
    N, Cc, H, W, K = (int(v) for v in header[2:7])
    _check_positive(path, "number of images", N)
    _check_positive(path, "channels", Cc, 1, 64)
    _check_positive(path, "height", H, 1, 4096)
    _check_positive(path, "width", W, 1, 4096)
    _check_positive(path, "number of classes", K, 1, 256)
    _check_unused_zero(path, header, 7)
    record = 1 + Cc * H * W
    expected = HEADER_BYTES + N * record
    if len(data) != expected:
        _fail(path, f"file is {len(data)} bytes, expected {expected} for {N} images of {Cc} x {H} x {W}")
    records = np.frombuffer(data, dtype=np.uint8, offset=HEADER_BYTES).reshape(N, record)
    labels = records[:, 0]
    bad = np.nonzero(labels >= K)[0]
    if len(bad) > 0:
        _fail(path, f"image {int(bad[0])} has label {int(labels[bad[0]])}, but there are {K} classes")
    return labels, records[:, 1:].reshape(N, Cc, H, W), K

"""
The char Mamba LM in PyTorch, and the writer of its reference state.

The model (defined exactly in doc/models.md): token embedding wte (V,C), no
positions; L post-norm blocks x = Dropout(LN(x + Mamba(x))) (the seed's
MambaBlock; set_dropout, the trainers' -D, with their masks at site l for
block l, common.Dropout); final LayerNorm lnf; head Linear(C,V) with bias
(not tied). LayerNorm eps 1e-5. Loss is the mean cross-entropy over all B*T
positions.

Mamba(x) is mamba_ssm's Mamba(d_model=C, d_state=N, d_conv=4, expand=2)
written out in plain PyTorch, with E = 2C and R = ceil(C/16). For x (B,T,C):

    xz     = x @ in_proj_w^T                  (B,T,2E); xs, z = halves
    conv   = causal depthwise conv1d of xs    (B,T,E): conv_b[e] +
             sum_k conv_w[e,k] * xs[t-3+k, e], zero before t = 0
    u      = silu(conv)
    x_dbl  = u @ x_proj_w^T                   (B,T,R+2N) = [dt_raw | Bm | Cm]
    dt     = softplus(dt_raw @ dt_proj_w^T + dt_proj_b)       (B,T,E)
    A      = -exp(A_log)                      (E,N)
    h_t    = exp(dt_t*A) * h_{t-1} + dt_t * Bm_t * u_t        per (b,e,n), h_{-1} = 0
    y_t    = sum_n h_t * Cm_t + D * u_t       (the "scan" output)
    gated  = y * silu(z)
    out    = gated @ out_proj_w^T             (B,T,C)

The selection ablation (lti=True; train_mamba -M lti, model kind 8): dt, B
and C are learned per channel, not computed from u. No x_proj, no dt_proj:

    dt     = softplus(dt_bias)                (E,), the same for every position
    h_t    = exp(dt*A) * h_{t-1} + dt * B_lti * u_t           B_lti, C_lti (E,N)
    y_t    = sum_n h_t * C_lti + D * u_t

Init: dt_bias as dt_proj's bias (softplus^-1 of dt log-uniform in [1e-3,
1e-1], floored at 1e-4); B_lti = 1 (S4D's B); C_lti ~ N(0, 1/N). Its
reference state (--lti, data/ref_mamba_lti.bin) has no x_dbl or dt
activations.

Mamba-2 (mamba2=True; train_mamba -M 2, model kind 9): the same LM with the
mixer replaced by mamba_ssm's Mamba2(d_model=C, d_state=N, d_conv=4,
expand=2, headdim=Hd, ngroups=1, rmsnorm=True, norm_before_gate=False), the
state space dual (SSD) layer. Its decay is one scalar per head and step, and
B, C are shared by all heads (one group). With E = 2C, H = E/Hd heads and
W = 2E + 2N + H, for x (B,T,C):

    zxbcdt = x @ in_proj_w^T                  (B,T,W) = [z (E) | xBC (E+2N) | dt_raw (H)]
    conv   = causal depthwise conv1d of xBC   (B,T,E+2N), taps and bias as above
    xbc    = silu(conv)                       = [xs (E) | Bm (N) | Cm (N)]
    dt     = softplus(dt_raw + dt_bias)       (B,T,H)
    A      = -exp(A_log)                      (H,)
    per head h, on its channels xs_h = xs[.., h*Hd:(h+1)*Hd], a state
    S (Hd,N) per (b,h), S_{-1} = 0:
      S_t  = exp(dt_t[h]*A[h]) * S_{t-1} + dt_t[h] * outer(xs_h,t, Bm_t)
      y_t  = S_t @ Cm_t + D[h] * xs_h,t      (the "scan" output, (B,T,E))
    gated  = y * silu(z)
    normed = gated / sqrt(mean(gated^2 over E) + 1e-5) * norm_w     (RMSNorm, one group)
    out    = normed @ out_proj_w^T            (B,T,C)

Init (mamba_ssm's; only when the parameters are not set from a flat
buffer): nn.Linear's default for in_proj and out_proj, the conv nn.Conv1d's
(U(-1/2, 1/2) for weight and bias), dt_bias as above (per head), A = U(1,
16) per head (A_log = log A), D = 1, norm_w = 1. Its reference state
(--mamba2, data/ref_mamba2.bin) draws A_log as log U(1, 16) and norm_w as
1 + N(0, 0.1), the rest as common.reference_init.

The SSD recurrence is also solved two ways: ssd_scan_sequential (a loop
over time steps, used by the reference state) and ssd_scan_parallel
(linear_scan below on the per-head states); --check compares them.

The selective scan comes in two implementations with the same result:
  - selective_scan_sequential: a loop over time steps. Obviously right; the
    reference state uses it.
  - selective_scan_parallel: a log-depth odd-even (Blelloch-style) reduction
    of the linear recurrence h_t = a_t h_{t-1} + b_t: pair up neighbouring
    steps, solve the half-length recurrence recursively, then fill in the
    even steps. O(T) work, 2*log2(T) dependent tensor operations, and only
    products of decays in (0,1], so it cannot overflow. The benchmark
    (dev/bench_torch.py) uses it; --check compares the two.

The reference state (read by the C++ tests) holds the initial flat
parameters, a random batch, the activations of the first forward pass, the
loss, the flat gradient, and the losses and final parameters of a few AdamW
steps, all computed in float64 and stored as float32. See write_reference().

Usage:
    python dev/reference/mamba.py                    # writes data/ref_mamba.bin
    python dev/reference/mamba.py --check            # and checks it afterwards
    python dev/reference/mamba.py --lti --out data/ref_mamba_lti.bin
    python dev/reference/mamba.py --mamba2 --out data/ref_mamba2.bin

Other scripts can import the model:
    from mamba import MambaLM, MambaConfig
    model = MambaLM(MambaConfig(V=65, L=5, C=256), scan="parallel")
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

K_CONV = formats.MAMBA_CONV_K  # 4

# -----------------------------------------------------------------------------
# the selective scan


def selective_scan_sequential(u, dt, A, Bm, Cm, D):
    """
    y (B,T,E) of the selective scan, one time step after another.
    u, dt: (B,T,E); A: (E,N); Bm, Cm: (B,T,N); D: (E,).
    """
    Bsz, T, E = u.shape
    dA = torch.exp(dt.unsqueeze(-1) * A)                # (B,T,E,N) decay per step
    dBu = (dt * u).unsqueeze(-1) * Bm.unsqueeze(2)      # (B,T,E,N) input per step
    h = u.new_zeros(Bsz, E, A.shape[1])
    ys = []
    for t in range(T):
        h = dA[:, t] * h + dBu[:, t]
        ys.append((h * Cm[:, t].unsqueeze(1)).sum(-1))  # (B,E)
    return torch.stack(ys, dim=1) + D * u


def _shift_right(x):
    """x[:, t-1] at position t along dim 1, zero at t = 0 (autograd-friendly)."""
    pad = [0, 0] * (x.dim() - 2) + [1, -1]  # F.pad lists dims last to first
    return F.pad(x, pad)


def linear_scan(a, b):
    """
    Solves h_t = a_t * h_{t-1} + b_t (h_{-1} = 0) along dim 1 by odd-even
    reduction. a, b: (B,T,...) of the same shape; returns h of that shape.

    With steps paired as (2k, 2k+1), the odd steps satisfy a recurrence of
    half the length, h_{2k+1} = (a_{2k+1} a_{2k}) h_{2k-1} + (a_{2k+1} b_{2k}
    + b_{2k+1}), which is solved recursively; then h_{2k} = a_{2k} h_{2k-1} +
    b_{2k}. Unbind, pad and stack (rather than slicing) keep the autograd
    backward free of large zero-filled buffers.
    """
    T = a.shape[1]
    if T == 1:
        return b
    if T % 2 == 1:  # append an identity step (a = 1, b = 0), dropped at the end
        pad = [0, 0] * (a.dim() - 2) + [0, 1]
        a = F.pad(a, pad, value=1.0)
        b = F.pad(b, pad, value=0.0)
    shape = a.shape
    pairs = (shape[0], shape[1] // 2, 2) + tuple(shape[2:])
    a_even, a_odd = a.reshape(pairs).unbind(2)
    b_even, b_odd = b.reshape(pairs).unbind(2)
    h_odd = linear_scan(a_odd * a_even, torch.addcmul(b_odd, a_odd, b_even))
    h_even = torch.addcmul(b_even, a_even, _shift_right(h_odd))
    h = torch.stack([h_even, h_odd], dim=2).reshape(shape)
    return h if shape[1] == T else h[:, :T]


def selective_scan_parallel(u, dt, A, Bm, Cm, D):
    """The same as selective_scan_sequential, with the log-depth linear_scan."""
    dA = torch.exp(dt.unsqueeze(-1) * A)                # (B,T,E,N)
    dBu = (dt * u).unsqueeze(-1) * Bm.unsqueeze(2)      # (B,T,E,N)
    h = linear_scan(dA, dBu)
    return torch.einsum("bten,btn->bte", h, Cm) + D * u


SCANS = {"sequential": selective_scan_sequential, "parallel": selective_scan_parallel}


def lti_scan_sequential(u, dt, A, B_lti, C_lti, D):
    """
    y (B,T,E) of the time-invariant scan, one step after another.
    u: (B,T,E); dt: (E,); A, B_lti, C_lti: (E,N); D: (E,).
    """
    Bsz, T, E = u.shape
    dA = torch.exp(dt.unsqueeze(-1) * A)                # (E,N), the same every step
    dB = dt.unsqueeze(-1) * B_lti                       # (E,N)
    h = u.new_zeros(Bsz, E, A.shape[1])
    ys = []
    for t in range(T):
        h = dA * h + dB * u[:, t].unsqueeze(-1)
        ys.append((h * C_lti).sum(-1))                  # (B,E)
    return torch.stack(ys, dim=1) + D * u


def ssd_scan_sequential(xs, dt, A, Bm, Cm, D):
    """
    y (B,T,E) of Mamba-2's scan (SSD), one time step after another: H heads
    of Hd = E/H channels, a state (Hd,N) per (batch, head), decayed by one
    scalar exp(dt*A) per head and step. xs: (B,T,E); dt: (B,T,H); A, D:
    (H,); Bm, Cm: (B,T,N), shared by all heads.
    """
    Bsz, T, E = xs.shape
    H = A.shape[0]
    x = xs.reshape(Bsz, T, H, E // H)                   # (B,T,H,Hd)
    dA = torch.exp(dt * A)                              # (B,T,H) decay per head and step
    dBx = (dt.unsqueeze(-1) * x).unsqueeze(-1) * Bm[:, :, None, None, :]  # (B,T,H,Hd,N)
    h = xs.new_zeros(Bsz, H, E // H, Bm.shape[-1])
    ys = []
    for t in range(T):
        h = dA[:, t, :, None, None] * h + dBx[:, t]
        ys.append((h * Cm[:, t, None, None, :]).sum(-1))  # (B,H,Hd)
    y = torch.stack(ys, dim=1) + D[:, None] * x
    return y.reshape(Bsz, T, E)


def ssd_scan_parallel(xs, dt, A, Bm, Cm, D):
    """The same as ssd_scan_sequential, with the log-depth linear_scan."""
    Bsz, T, E = xs.shape
    H = A.shape[0]
    x = xs.reshape(Bsz, T, H, E // H)
    dA = torch.exp(dt * A)[..., None, None].expand(Bsz, T, H, E // H, Bm.shape[-1])
    dBx = (dt.unsqueeze(-1) * x).unsqueeze(-1) * Bm[:, :, None, None, :]
    h = linear_scan(dA, dBx)                            # (B,T,H,Hd,N)
    y = torch.einsum("bthpn,btn->bthp", h, Cm) + D[:, None] * x
    return y.reshape(Bsz, T, E)


SSD_CHUNK = 64  # positions per chunk of ssd_scan_chunked


def ssd_scan_chunked(xs, dt, A, Bm, Cm, D, Q=SSD_CHUNK):
    """
    The same as ssd_scan_sequential by the chunked SSD algorithm, in matrix
    products: time cut into chunks of Q (zero-padded: a padded step has dt 0,
    so it neither decays nor adds); s the running sum of dt*A within a chunk.
    Within a chunk y_t = sum_{u<=t} (C_t.B_u) exp(s_t - s_u) dt_u x_u; each
    chunk's state S = sum_u exp(s_last - s_u) dt_u x_u B_u^T is passed to the
    next (decayed by exp(s_last)), whose outputs add exp(s_t) S_in C_t. The
    PyTorch benchmark's Mamba-2 (dev/bench_torch.py --model mamba2).
    """
    Bsz, T, E = xs.shape
    H = A.shape[0]
    P, N = E // H, Bm.shape[-1]
    pad = (-T) % Q
    x = F.pad(xs.reshape(Bsz, T, H, P), (0, 0, 0, 0, 0, pad))
    d = F.pad(dt, (0, 0, 0, pad))
    Bp, Cp = F.pad(Bm, (0, 0, 0, pad)), F.pad(Cm, (0, 0, 0, pad))
    nc = (T + pad) // Q
    x, d = x.reshape(Bsz, nc, Q, H, P), d.reshape(Bsz, nc, Q, H)
    Bp, Cp = Bp.reshape(Bsz, nc, Q, N), Cp.reshape(Bsz, nc, Q, N)
    s = torch.cumsum(d * A, dim=2)                                   # (B,nc,Q,H)
    diff = s.unsqueeze(3) - s.unsqueeze(2)                           # (B,nc,Q,Q,H): s_t - s_u
    causal = torch.ones(Q, Q, dtype=torch.bool, device=xs.device).tril()
    decay = torch.exp(diff.masked_fill(~causal[:, :, None], float("-inf")))
    xd = x * d.unsqueeze(-1)                                         # dt_u x_u
    CB = torch.einsum("bctn,bcun->bctu", Cp, Bp)
    y = torch.einsum("bctu,bctuh,bcuhp->bcthp", CB, decay, xd)       # within the chunks
    last = s[:, :, -1:, :]                                           # (B,nc,1,H)
    S_own = torch.einsum("bcuh,bcuhp,bcun->bchpn", torch.exp(last - s), xd, Bp)
    S, S_in = xs.new_zeros(Bsz, H, P, N), []
    for c in range(nc):                                              # the states passed along
        S_in.append(S)
        S = torch.exp(last[:, c, 0])[:, :, None, None] * S + S_own[:, c]
    S_in = torch.stack(S_in, dim=1)                                  # (B,nc,H,P,N)
    y = y + torch.einsum("bctn,bchpn,bcth->bcthp", Cp, S_in, torch.exp(s))
    y = y.reshape(Bsz, nc * Q, H, P)[:, :T] + D[:, None] * xs.reshape(Bsz, T, H, P)
    return y.reshape(Bsz, T, E)


SSD_SCANS = {"sequential": ssd_scan_sequential, "parallel": ssd_scan_parallel, "chunked": ssd_scan_chunked}

# -----------------------------------------------------------------------------
# the model


@dataclass
class MambaConfig:
    V: int = 65  # vocab size
    L: int = 2   # number of layers
    C: int = 32  # channels (d_model)
    N: int = 16  # state size per channel (d_state)
    E: int = 0   # expanded width; 0: 2*C (expand=2)
    R: int = 0   # rank of dt_proj; 0: ceil(C/16) (dt_rank="auto"); none with lti
    lti: bool = False  # the selection ablation: dt, B, C per channel (no x_proj, dt_proj)
    mamba2: bool = False  # Mamba-2 (SSD) mixers: H = E/headdim heads, R unused (0)
    headdim: int = 64  # Mamba-2's channels per head (Hd)

    def __post_init__(self):
        if self.E == 0:
            self.E = 2 * self.C
        assert not (self.lti and self.mamba2), "lti and mamba2 are different models"
        if self.mamba2:
            assert self.E % self.headdim == 0, f"E = {self.E} is not divisible by headdim = {self.headdim}"
            self.R = 0
        if self.lti:
            self.R = 0
        elif self.R == 0:
            self.R = math.ceil(self.C / 16)


class Mamba(nn.Module):
    """mamba_ssm's Mamba block (selective SSM with gate), in plain PyTorch."""

    def __init__(self, cfg, scan="sequential"):
        super().__init__()
        C, E, N, R = cfg.C, cfg.E, cfg.N, cfg.R
        self.E, self.N, self.R, self.lti = E, N, R, cfg.lti
        self.scan = SCANS[scan]
        self.in_proj = nn.Linear(C, 2 * E, bias=False)
        self.conv_w = nn.Parameter(torch.empty(E, K_CONV))  # Conv1d weight (E,1,K) squeezed
        self.conv_b = nn.Parameter(torch.empty(E))
        if self.lti:
            self.dt_bias = nn.Parameter(torch.empty(E))
            self.B_lti = nn.Parameter(torch.empty(E, N))
            self.C_lti = nn.Parameter(torch.empty(E, N))
        else:
            self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
            self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.empty(E, N))
        self.D = nn.Parameter(torch.empty(E))
        self.out_proj = nn.Linear(E, C, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, dt_min=1e-3, dt_max=1e-1, dt_floor=1e-4):
        """mamba_ssm's init (the Linear layers keep nn.Linear's default)."""
        # nn.Conv1d's default for a depthwise conv: fan_in = K, U(-1/sqrt(K), 1/sqrt(K))
        bound = 1.0 / math.sqrt(K_CONV)
        nn.init.uniform_(self.conv_w, -bound, bound)
        nn.init.uniform_(self.conv_b, -bound, bound)
        if self.lti:  # dt_bias as dt_proj's bias; B = 1 (S4D); C ~ N(0, 1/N)
            self.dt_bias.copy_(common.dt_init_bias(self.E, dt_min, dt_max, dt_floor))
            nn.init.ones_(self.B_lti)
            nn.init.normal_(self.C_lti, 0.0, self.N ** -0.5)
        else:
            # dt_proj: weight U(-R^-0.5, R^-0.5); bias = softplus^-1(dt), dt log-uniform
            std = self.R ** -0.5
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(common.dt_init_bias(self.E, dt_min, dt_max, dt_floor))
        # S4D-real: A = -(1..N) for every channel
        self.A_log.copy_(torch.log(torch.arange(1, self.N + 1, dtype=torch.float32)).repeat(self.E, 1))
        nn.init.ones_(self.D)

    def forward(self, x, save):
        B, T, C = x.shape
        E, N, R = self.E, self.N, self.R
        xz = self.in_proj(x)  # (B,T,2E)
        save("xz", xz)
        xs, z = xz.split(E, dim=-1)
        # causal depthwise conv: pad K-1 on both sides, keep the first T outputs
        conv = F.conv1d(xs.transpose(1, 2), self.conv_w.unsqueeze(1), self.conv_b,
                        padding=K_CONV - 1, groups=E)[..., :T].transpose(1, 2)
        save("conv", conv)
        u = F.silu(conv)
        save("u", u)
        A = -torch.exp(self.A_log)
        if self.lti:
            y = lti_scan_sequential(u, F.softplus(self.dt_bias), A, self.B_lti, self.C_lti, self.D)
            save("scan", y)
            gated = y * F.silu(z)
            save("gated", gated)
            out = self.out_proj(gated)
            save("out", out)
            return out
        x_dbl = self.x_proj(u)  # (B,T,R+2N)
        save("x_dbl", x_dbl)
        dt_raw, Bm, Cm = x_dbl.split([R, N, N], dim=-1)
        dt = F.softplus(self.dt_proj(dt_raw))  # (B,T,E), threshold 20
        save("dt", dt)
        y = self.scan(u, dt, A, Bm, Cm, self.D)  # (B,T,E), includes D*u
        save("scan", y)
        gated = y * F.silu(z)
        save("gated", gated)
        out = self.out_proj(gated)  # (B,T,C)
        save("out", out)
        return out


class Mamba2(nn.Module):
    """mamba_ssm's Mamba2 block (SSD with gate and gated RMSNorm, one group), in plain PyTorch."""

    def __init__(self, cfg, scan="sequential"):
        super().__init__()
        C, E, N = cfg.C, cfg.E, cfg.N
        H = E // cfg.headdim
        self.E, self.N, self.H = E, N, H
        self.scan = SSD_SCANS[scan]
        self.in_proj = nn.Linear(C, 2 * E + 2 * N + H, bias=False)  # [z | xBC | dt]
        self.conv_w = nn.Parameter(torch.empty(E + 2 * N, K_CONV))  # Conv1d weight (E+2N,1,K) squeezed
        self.conv_b = nn.Parameter(torch.empty(E + 2 * N))
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm_w = nn.Parameter(torch.empty(E))
        self.out_proj = nn.Linear(E, C, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, dt_min=1e-3, dt_max=1e-1, dt_floor=1e-4, A_min=1.0, A_max=16.0):
        """mamba_ssm's init (the Linear layers keep nn.Linear's default)."""
        bound = 1.0 / math.sqrt(K_CONV)  # nn.Conv1d's default for a depthwise conv
        nn.init.uniform_(self.conv_w, -bound, bound)
        nn.init.uniform_(self.conv_b, -bound, bound)
        self.dt_bias.copy_(common.dt_init_bias(self.H, dt_min, dt_max, dt_floor))
        self.A_log.copy_(torch.log(torch.empty(self.H).uniform_(A_min, A_max)))
        nn.init.ones_(self.D)
        nn.init.ones_(self.norm_w)

    def forward(self, x, save):
        B, T, C = x.shape
        E, N, H = self.E, self.N, self.H
        zxbcdt = self.in_proj(x)  # (B,T,2E+2N+H)
        save("zxbcdt", zxbcdt)
        z, xBC, dt_raw = zxbcdt.split([E, E + 2 * N, H], dim=-1)
        # causal depthwise conv over x, B and C together: pad K-1 on both sides, keep the first T
        conv = F.conv1d(xBC.transpose(1, 2), self.conv_w.unsqueeze(1), self.conv_b,
                        padding=K_CONV - 1, groups=E + 2 * N)[..., :T].transpose(1, 2)
        save("conv", conv)
        xbc = F.silu(conv)
        save("xbc", xbc)
        xs, Bm, Cm = xbc.split([E, N, N], dim=-1)
        dt = F.softplus(dt_raw + self.dt_bias)  # (B,T,H), threshold 20
        save("dt", dt)
        A = -torch.exp(self.A_log)  # (H,)
        y = self.scan(xs, dt, A, Bm, Cm, self.D)  # (B,T,E), includes D*xs
        save("scan", y)
        gated = y * F.silu(z)
        save("gated", gated)
        normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + 1e-5) * self.norm_w
        save("normed", normed)
        out = self.out_proj(normed)  # (B,T,C)
        save("out", out)
        return out


# the Mamba (Mamba-1) mixer's tensors in the flat order, and where each lives in the module
MAMBA_MIXER_TENSORS = (("in_proj_w", lambda m: m.in_proj.weight), ("conv_w", lambda m: m.conv_w),
                       ("conv_b", lambda m: m.conv_b), ("x_proj_w", lambda m: m.x_proj.weight),
                       ("dt_proj_w", lambda m: m.dt_proj.weight), ("dt_proj_b", lambda m: m.dt_proj.bias),
                       ("A_log", lambda m: m.A_log), ("D", lambda m: m.D), ("out_proj_w", lambda m: m.out_proj.weight))


def mamba_mixer_tensors(mixers):
    """flat_tensors' rows of a stack of Mamba mixers (one parameter per mixer in each)."""
    return [(name, [get(m) for m in mixers]) for name, get in MAMBA_MIXER_TENSORS]


# the Mamba-2 mixer's tensors in the flat order, and where each lives in the module
MAMBA2_MIXER_TENSORS = (("in_proj_w", lambda m: m.in_proj.weight), ("conv_w", lambda m: m.conv_w),
                        ("conv_b", lambda m: m.conv_b), ("dt_bias", lambda m: m.dt_bias), ("A_log", lambda m: m.A_log),
                        ("D", lambda m: m.D), ("norm_w", lambda m: m.norm_w),
                        ("out_proj_w", lambda m: m.out_proj.weight))


def mamba2_mixer_tensors(mixers, prefix=""):
    """flat_tensors' rows of a stack of Mamba2 mixers (one parameter per mixer in each), names prefixed."""
    return [(prefix + name, [get(m) for m in mixers]) for name, get in MAMBA2_MIXER_TENSORS]


class Block(nn.Module):

    def __init__(self, cfg, scan):
        super().__init__()
        self.mixer = Mamba2(cfg, scan) if cfg.mamba2 else Mamba(cfg, scan)
        self.ln = nn.LayerNorm(cfg.C, eps=1e-5)

    def forward(self, x, save):
        x = x + self.mixer(x, save)
        save("res", x)
        x = self.ln(x)  # post-norm
        save("ln", x)
        return x


class MambaLM(common.FlatParams):

    def __init__(self, cfg, scan="sequential"):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.V, cfg.C)
        self.blocks = nn.ModuleList([Block(cfg, scan) for _ in range(cfg.L)])
        self.lnf = nn.LayerNorm(cfg.C, eps=1e-5)
        self.head = nn.Linear(cfg.C, cfg.V)
        # the blocks initialize themselves (mamba_ssm); the embedding is N(0, 0.02)
        # as in mamba_ssm's LM; LayerNorms 1/0 and the head nn.Linear's default
        nn.init.normal_(self.wte.weight, mean=0.0, std=0.02)
        self.drop = common.Dropout()

    def set_dropout(self, p, seed=None, step=None):
        """Dropout at rate p: the trainers' masks of (seed, step), or torch's own without a seed."""
        self.drop = common.Dropout(p, seed, step)

    def forward(self, idx, targets=None, acts=None):
        """
        idx, targets: (B,T) int64. Returns (logits (B,T,V), loss or None).
        If acts is a dict, the intermediates are stored in it (detached) under
        the reference state's names ("encoded", "m{l}.xz", ..., "logits").
        """
        save = common.saver(acts, "")
        x = self.wte(idx)  # (B,T,C)
        save("encoded", x)
        for l, block in enumerate(self.blocks):
            x = self.drop(block(x, common.saver(acts, f"m{l}.")), l, self.training)
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
        return param_layout(self.cfg)

    def flat_tensors(self):
        """
        For each flat tensor, in order: (name, list of the nn.Parameters it is
        made of). Per-layer tensors list one parameter per layer, layer 0
        first, which is the same as stacking them along a leading L dim.
        """
        ms = [b.mixer for b in self.blocks]
        if self.cfg.mamba2:
            return [("wte", [self.wte.weight])] + mamba2_mixer_tensors(ms) + [
                ("ln_w", [b.ln.weight for b in self.blocks]),
                ("ln_b", [b.ln.bias for b in self.blocks]),
                ("lnf_w", [self.lnf.weight]),
                ("lnf_b", [self.lnf.bias]),
                ("head_w", [self.head.weight]),
                ("head_b", [self.head.bias]),
            ]
        if self.cfg.lti:
            return [
                ("wte", [self.wte.weight]),
                ("in_proj_w", [m.in_proj.weight for m in ms]),
                ("conv_w", [m.conv_w for m in ms]),
                ("conv_b", [m.conv_b for m in ms]),
                ("A_log", [m.A_log for m in ms]),
                ("D", [m.D for m in ms]),
                ("out_proj_w", [m.out_proj.weight for m in ms]),
                ("ln_w", [b.ln.weight for b in self.blocks]),
                ("ln_b", [b.ln.bias for b in self.blocks]),
                ("dt_bias", [m.dt_bias for m in ms]),
                ("B_lti", [m.B_lti for m in ms]),
                ("C_lti", [m.C_lti for m in ms]),
                ("lnf_w", [self.lnf.weight]),
                ("lnf_b", [self.lnf.bias]),
                ("head_w", [self.head.weight]),
                ("head_b", [self.head.bias]),
            ]
        return [
            ("wte", [self.wte.weight]),
        ] + mamba_mixer_tensors(ms) + [
            ("ln_w", [b.ln.weight for b in self.blocks]),
            ("ln_b", [b.ln.bias for b in self.blocks]),
            ("lnf_w", [self.lnf.weight]),
            ("lnf_b", [self.lnf.bias]),
            ("head_w", [self.head.weight]),
            ("head_b", [self.head.bias]),
        ]


# -----------------------------------------------------------------------------
# reference state


ACT_NAMES = ("xz", "conv", "u", "x_dbl", "dt", "scan", "gated", "out", "res", "ln")
ACT_NAMES_LTI = ("xz", "conv", "u", "scan", "gated", "out", "res", "ln")  # no x_proj, no dt per position
ACT_NAMES_MAMBA2 = ("zxbcdt", "conv", "xbc", "dt", "scan", "gated", "normed", "out", "res", "ln")


def act_names(cfg):
    if cfg.mamba2:
        return ACT_NAMES_MAMBA2
    return ACT_NAMES_LTI if cfg.lti else ACT_NAMES


def param_layout(cfg):
    if cfg.mamba2:
        return formats.mamba2_param_layout(cfg.V, cfg.L, cfg.C, cfg.E, cfg.N, cfg.headdim)
    if cfg.lti:
        return formats.mamba_lti_param_layout(cfg.V, cfg.L, cfg.C, cfg.E, cfg.N)
    return formats.mamba_param_layout(cfg.V, cfg.L, cfg.C, cfg.E, cfg.N, cfg.R)


def kind(cfg):
    """The model kind of the state and model files (formats.py)."""
    if cfg.mamba2:
        return formats.KIND_MAMBA2
    return formats.KIND_MAMBA_LTI if cfg.lti else formats.KIND_MAMBA


def file_config(cfg, P):
    """The config dict of the state and model files."""
    if cfg.mamba2:
        return dict(V=cfg.V, L=cfg.L, C=cfg.C, E=cfg.E, N=cfg.N, Hd=cfg.headdim, P=P)
    return dict(V=cfg.V, L=cfg.L, C=cfg.C, E=cfg.E, N=cfg.N, R=cfg.R, P=P)  # R = 0 with lti


def reference_init(layout, gen):
    """
    The reference state's flat float32 parameters: common.reference_init,
    tensor by tensor in layout order from gen, but for Mamba-2's per-head
    A_log (L,H), drawn as log U(1, 16) (mamba_ssm's range of A), and its
    norm_w (L,E), drawn as a LayerNorm weight, 1 + N(0, 0.1).
    """
    parts = []
    for name, shape, wd in layout:
        if name == "A_log" and len(shape) == 2:
            t = torch.log(torch.rand(shape, generator=gen) * 15.0 + 1.0)
        elif name == "norm_w":
            t = torch.randn(shape, generator=gen) * 0.1 + 1.0
        else:
            t = common.reference_init([(name, shape, wd)], gen)
        parts.append(t.float().reshape(-1))
    return torch.cat(parts)


DROPOUT = (0.1, 4242, 17)  # the reference state's dropout: rate, seed, training step


def write_reference(path, cfg, B, T, seed, steps, adamw):
    """Computes the reference in float64 and writes the state file."""
    torch.manual_seed(seed)
    gen = torch.default_generator
    params32 = reference_init(param_layout(cfg), gen)
    inputs = torch.randint(0, cfg.V, (B, T), generator=gen)
    targets = torch.randint(0, cfg.V, (B, T), generator=gen)
    model = MambaLM(cfg, scan="sequential").double()  # (its init draws after the state's draws)
    names = [f"m{l}.{name}" for l in range(cfg.L) for name in act_names(cfg)]
    tensors, summary = common.lm_reference_state(model, params32, inputs, targets, names, steps, adamw,
                                                 dropout=DROPOUT)
    formats.write_state(path, kind(cfg), file_config(cfg, params32.numel()), B, T, tensors)
    print(f"wrote {path}: {summary}")


# -----------------------------------------------------------------------------
# self-checks (--check)


def _numpy_forward(params, inputs, targets, cfg, dropout=None):
    """
    The whole model in float64 numpy, written from the equations in the
    module docstring (explicit conv taps, a per-step scan loop with the
    states of each channel or head), sharing no code with MambaLM. Returns a
    dict of every reference activation + "loss". dropout = (p, seed, step):
    the trainers' masks after each block's LayerNorm (site l for block l).
    """
    E, N, R, K = cfg.E, cfg.N, cfg.R, K_CONV
    p = common.unflatten(params.astype(np.float64), param_layout(cfg))
    B, T = inputs.shape

    def layernorm(x, w, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w + b

    def silu(x):
        return x / (1.0 + np.exp(-x))

    def softplus(x):  # F.softplus: beta 1, threshold 20
        return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))

    def causal_conv(v, w, b):  # v (B,T,Ch), w (Ch,K), b (Ch,)
        conv = np.broadcast_to(b, v.shape).copy()
        for k in range(K):
            s = K - 1 - k  # tap k reads the input s steps back
            if s >= T:
                continue
            conv[:, s:, :] += w[:, k] * v[:, :T - s, :]
        return conv

    out = {}
    x = p["wte"][inputs]
    out["encoded"] = x
    for l in range(cfg.L):
        pre = f"m{l}."
        if cfg.mamba2:
            Hd = cfg.headdim
            H = E // Hd
            zxbcdt = x @ p["in_proj_w"][l].T
            z, xBC, dt_raw = zxbcdt[..., :E], zxbcdt[..., E:2 * E + 2 * N], zxbcdt[..., 2 * E + 2 * N:]
            conv = causal_conv(xBC, p["conv_w"][l], p["conv_b"][l])
            xbc = silu(conv)
            xs, Bm, Cm = xbc[..., :E], xbc[..., E:E + N], xbc[..., E + N:]
            dt = softplus(dt_raw + p["dt_bias"][l])  # (B,T,H)
            A = -np.exp(p["A_log"][l])  # (H,)
            y = np.zeros((B, T, E))
            for b in range(B):
                for hh in range(H):
                    ch = slice(hh * Hd, (hh + 1) * Hd)
                    S = np.zeros((Hd, N))
                    for t in range(T):
                        S = np.exp(dt[b, t, hh] * A[hh]) * S + dt[b, t, hh] * np.outer(xs[b, t, ch], Bm[b, t])
                        y[b, t, ch] = S @ Cm[b, t] + p["D"][l][hh] * xs[b, t, ch]
            gated = y * silu(z)
            normed = gated / np.sqrt((gated ** 2).mean(-1, keepdims=True) + 1e-5) * p["norm_w"][l]
            o = normed @ p["out_proj_w"][l].T
            acts = (zxbcdt, conv, xbc, dt, y, gated, normed, o)
        else:
            xz = x @ p["in_proj_w"][l].T
            xs, z = xz[..., :E], xz[..., E:]
            conv = causal_conv(xs, p["conv_w"][l], p["conv_b"][l])
            u = silu(conv)
            A = -np.exp(p["A_log"][l])  # (E,N)
            h = np.zeros((B, E, N))
            y = np.zeros((B, T, E))
            if cfg.lti:
                dt = softplus(p["dt_bias"][l])  # (E,)
                for t in range(T):
                    h = np.exp(dt[:, None] * A) * h + (dt * u[:, t])[:, :, None] * p["B_lti"][l]
                    y[:, t] = (h * p["C_lti"][l]).sum(-1) + p["D"][l] * u[:, t]
                x_dbl = None
            else:
                x_dbl = u @ p["x_proj_w"][l].T
                dt_raw, Bm, Cm = x_dbl[..., :R], x_dbl[..., R:R + N], x_dbl[..., R + N:]
                dt = softplus(dt_raw @ p["dt_proj_w"][l].T + p["dt_proj_b"][l])
                for t in range(T):
                    h = np.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
                    y[:, t] = np.einsum("ben,bn->be", h, Cm[:, t]) + p["D"][l] * u[:, t]
            gated = y * silu(z)
            o = gated @ p["out_proj_w"][l].T
            acts = dict(zip(ACT_NAMES, (xz, conv, u, x_dbl, dt, y, gated, o)))
            acts = tuple(acts[name] for name in act_names(cfg)[:-2])
        res = x + o
        x = layernorm(res, p["ln_w"][l], p["ln_b"][l])
        for name, v in zip(act_names(cfg), acts + (res, x)):
            out[pre + name] = v
        if dropout is not None:
            drop_p, drop_seed, drop_step = dropout
            keep = common.dropout_keep(common.dropout_key(drop_seed, drop_step, l), x.size, drop_p).reshape(x.shape)
            x = np.where(keep, x * float(np.float32(1.0) / (np.float32(1.0) - np.float32(drop_p))), 0.0)
    out["lnf"] = layernorm(x, p["lnf_w"], p["lnf_b"])
    logits = out["lnf"] @ p["head_w"].T + p["head_b"]
    out["logits"] = logits
    m = logits.max(-1, keepdims=True)
    logz = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    out["loss"] = np.array([(logz - picked).mean()])
    return out


def check_scans(verbose=True):
    """
    selective_scan_parallel against selective_scan_sequential: outputs and
    the gradients of all six inputs, in float64 on small random problems
    (odd and even lengths, slow and fast decays), and the forward in float32
    on a benchmark-sized slice. Returns (ok, worst float64 error).
    """
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for (B, T, E, N, dt_scale) in [(2, 1, 3, 4, 1.0), (2, 2, 3, 4, 1.0), (2, 37, 8, 16, 1.0),
                                   (1, 64, 5, 16, 0.05), (2, 100, 4, 16, 5.0), (1, 257, 3, 2, 1.0)]:
        u = torch.randn(B, T, E, generator=gen, dtype=torch.float64)
        dt = F.softplus(torch.randn(B, T, E, generator=gen, dtype=torch.float64)) * dt_scale
        A = -torch.exp(torch.randn(E, N, generator=gen, dtype=torch.float64) * 0.5
                       + torch.log(torch.arange(1, N + 1, dtype=torch.float64)))
        Bm = torch.randn(B, T, N, generator=gen, dtype=torch.float64)
        Cm = torch.randn(B, T, N, generator=gen, dtype=torch.float64)
        D = torch.randn(E, generator=gen, dtype=torch.float64)
        gy = torch.randn(B, T, E, generator=gen, dtype=torch.float64)
        results = []
        for fn in (selective_scan_sequential, selective_scan_parallel):
            xs = [t.clone().requires_grad_() for t in (u, dt, A, Bm, Cm, D)]
            y = fn(*xs)
            y.backward(gy)
            # (with T = 1 the parallel scan never reads the decay, so A gets no grad)
            results.append([y.detach()] + [x.grad if x.grad is not None else torch.zeros_like(x)
                                           for x in xs])
        errs = [((a - b).abs().max() / b.abs().max().clamp(min=1e-300)).item()
                for a, b in zip(results[1], results[0])]
        worst = max(worst, max(errs))
        if verbose:
            print(f"check: scan parallel vs sequential, float64 B {B} T {T} E {E} N {N} dt x{dt_scale}: "
                  f"max rel err y {errs[0]:.1e}, grads u/dt/A/B/C/D " + " ".join(f"{e:.1e}" for e in errs[1:]))
    ok = worst < 1e-12

    # float32, a slice of the benchmark's shape (C 256 -> E 512)
    B, T, E, N = 2, 256, 512, 16
    u = torch.randn(B, T, E, generator=gen)
    dt = F.softplus(torch.randn(B, T, E, generator=gen) - 4.0)
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)
    Bm, Cm = torch.randn(B, T, N, generator=gen), torch.randn(B, T, N, generator=gen)
    D = torch.ones(E)
    y64 = selective_scan_sequential(*(t.double() for t in (u, dt, A, Bm, Cm, D)))
    e_seq = ((selective_scan_sequential(u, dt, A, Bm, Cm, D) - y64).abs().max() / y64.abs().max()).item()
    e_par = ((selective_scan_parallel(u, dt, A, Bm, Cm, D) - y64).abs().max() / y64.abs().max()).item()
    if verbose:
        print(f"check: scan float32 B {B} T {T} E {E} N {N} vs float64: max rel err sequential {e_seq:.1e}, "
              f"parallel {e_par:.1e}")
    ok = ok and e_par < 1e-5
    return ok, worst


def check_ssd_scans(verbose=True):
    """
    ssd_scan_parallel and ssd_scan_chunked (with chunks of 16, so that the
    lengths span several, and partial ones) against ssd_scan_sequential: outputs and the gradients
    of all six inputs, in float64 on small random problems (odd and even
    lengths, slow and fast decays, one and several heads). Returns (ok,
    worst error).
    """
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for (B, T, H, Hd, N, dt_scale) in [(2, 1, 2, 3, 4, 1.0), (2, 2, 1, 3, 4, 1.0), (2, 37, 4, 4, 16, 1.0),
                                       (1, 64, 3, 2, 8, 0.05), (2, 100, 2, 4, 16, 5.0)]:
        xs = torch.randn(B, T, H * Hd, generator=gen, dtype=torch.float64)
        dt = F.softplus(torch.randn(B, T, H, generator=gen, dtype=torch.float64)) * dt_scale
        A = -torch.exp(torch.rand(H, generator=gen, dtype=torch.float64) * math.log(16.0))
        Bm = torch.randn(B, T, N, generator=gen, dtype=torch.float64)
        Cm = torch.randn(B, T, N, generator=gen, dtype=torch.float64)
        D = torch.randn(H, generator=gen, dtype=torch.float64)
        gy = torch.randn(B, T, H * Hd, generator=gen, dtype=torch.float64)
        results = []
        for fn in (ssd_scan_sequential, ssd_scan_parallel, lambda *a: ssd_scan_chunked(*a, Q=16)):
            ins = [t.clone().requires_grad_() for t in (xs, dt, A, Bm, Cm, D)]
            y = fn(*ins)
            y.backward(gy)
            results.append([y.detach()] + [t.grad if t.grad is not None else torch.zeros_like(t) for t in ins])
        for name, got in (("parallel", results[1]), ("chunked", results[2])):
            errs = [((a - b).abs().max() / b.abs().max().clamp(min=1e-300)).item() for a, b in zip(got, results[0])]
            worst = max(worst, max(errs))
            if verbose:
                print(f"check: SSD scan {name} vs sequential, float64 B {B} T {T} H {H} Hd {Hd} N {N} "
                      f"dt x{dt_scale}: max rel err y {errs[0]:.1e}, grads x/dt/A/B/C/D "
                      + " ".join(f"{e:.1e}" for e in errs[1:]))
    # the chunked scan takes exp of differences of running sums (|s| up to ~1e3 at dt x5): ~1e-13 relative
    return worst < 1e-11, worst


def config_of_state(state):
    """The MambaConfig of a state (or model file) of kind mamba, mamba_lti or mamba2."""
    c = state.config
    if state.kind == formats.KIND_MAMBA2:
        return MambaConfig(V=c["V"], L=c["L"], C=c["C"], N=c["N"], E=c["E"], mamba2=True, headdim=c["Hd"])
    return MambaConfig(V=c["V"], L=c["L"], C=c["C"], N=c["N"], E=c["E"], R=c["R"],
                       lti=state.kind == formats.KIND_MAMBA_LTI)


def check_state(path, fd_per_tensor=4, fd_scan_tensors=10, h=1e-3):
    """
    Reads the state back and checks it: every activation, the logits and the
    loss (and those of the forward with dropout) against an independent
    numpy forward; gradient entries against central differences of the
    float64 loss; the AdamW trajectory against a numpy AdamW; the whole
    model with the parallel scan against the state; and the two scans
    against each other.
    """
    state = formats.read_state(path)
    c = state.config
    cfg = config_of_state(state)
    params = state["params"]
    inputs = state["inputs"].astype(np.int64)
    targets = state["targets"].astype(np.int64)
    drop_names = ["dropout", "dropout_p", "drop_logits", "drop_loss", "drop_grads"]
    expected = (["params", "inputs", "targets", "encoded"]
                + [f"m{l}.{n}" for l in range(cfg.L) for n in act_names(cfg)]
                + ["lnf", "logits", "loss", "grads"] + drop_names + ["adamw", "step_losses", "step_params"])
    ok = list(state.tensors) == expected
    print(f"check: read back {path}: kind {formats.KIND_NAMES[state.kind]}, config {c}, "
          f"B {state.B} T {state.T}, {len(state.tensors)} tensors" + ("" if ok else " (UNEXPECTED NAMES)"))

    # 1) every activation against the independent numpy forward
    ref = _numpy_forward(params, inputs, targets, cfg)
    worst_act = 0.0
    for name, v in ref.items():
        got = state[name].astype(np.float64)
        assert got.shape == v.shape, (name, got.shape, v.shape)
        rel = np.abs(got - v).max() / max(np.abs(v).max(), 1e-30)
        worst_act = max(worst_act, rel)
        if rel > 1e-6:
            print(f"check: {name} vs numpy forward: max rel err {rel:.3e}")
            ok = False
    print(f"check: {len(ref)} activations (logits, loss included) vs numpy forward, "
          f"worst rel err {worst_act:.3e} (float32 storage)")
    if "dropout" in state:
        seed, step = (int(v) for v in state["dropout"])
        drop = (float(state["dropout_p"][0]), seed, step)
        dref = _numpy_forward(params, inputs, targets, cfg, dropout=drop)
        e_drop = max(np.abs(state[name].astype(np.float64) - dref[key]).max() / np.abs(dref[key]).max()
                     for name, key in (("drop_logits", "logits"), ("drop_loss", "loss")))
        print(f"check: the forward with dropout {drop} vs numpy forward: logits and loss max rel err {e_drop:.3e}")
        ok = ok and e_drop < 1e-6

    # 2) gradient entries against central differences of the float64 loss
    model = MambaLM(cfg, scan="sequential").double()
    flat0 = torch.from_numpy(params.astype(np.float64))
    t_in, t_tg = torch.from_numpy(inputs), torch.from_numpy(targets)
    gen = torch.Generator().manual_seed(0)
    scan_tensors = ("A_log", "D", "dt_proj_b", "dt_proj_w", "conv_w", "conv_b", "dt_bias", "B_lti", "C_lti",
                    "norm_w")
    # fourth-order central differences: error O(h^4) + rounding O(eps/h)
    fd_ok, worst_fd = common.check_grads_fd(
        model, flat0, lambda: model(t_in, t_tg)[1].item(), state["grads"].astype(np.float64), gen,
        count=lambda name: fd_scan_tensors if name in scan_tensors else fd_per_tensor,
        h=h, order=4, report_each=True)
    ok = ok and fd_ok
    print(f"check: grads vs 4th-order central differences (h {h:g}), worst rel err {worst_fd:.3e}")

    # 3) the AdamW trajectory against a numpy AdamW (grads from the float64 model)
    ok = common.check_adamw_trajectory(model, state, lambda: model(t_in, t_tg)[1]) and ok

    # 4) the model with the parallel scan (what the benchmark runs) against the state
    pmodel = MambaLM(cfg, scan="parallel").double()
    pmodel.set_flat(flat0)
    acts = {}
    _, loss = pmodel(t_in, t_tg, acts=acts)
    loss.backward()
    e_logits = (acts["logits"] - torch.from_numpy(ref["logits"])).abs().max().item()
    g_par = pmodel.get_flat_grads().numpy()
    model.set_flat(flat0)
    g_seq = common.loss_and_grads(model, lambda: model(t_in, t_tg)[1])[1].numpy()
    e_grads = np.abs(g_par - g_seq).max() / np.abs(g_seq).max()
    print(f"check: model with the parallel scan: logits max abs err {e_logits:.2e} vs numpy, "
          f"grads max rel err {e_grads:.2e} vs the sequential scan (float64)")
    ok = ok and e_logits < 1e-12 and e_grads < 1e-12

    # 5) the two scans on their own
    scans_ok, _ = check_ssd_scans() if cfg.mamba2 else check_scans()
    ok = ok and scans_ok
    if cfg.mamba2:
        # one block at the trainer's default size (C 256, N 64, head dim 64): the mixer's parameters
        layout = formats.mamba2_param_layout(65, 1, 256, 512, 64, 64)
        mixer = sum(math.prod(s) for n, s, _ in layout if n not in ("wte", "ln_w", "ln_b", "lnf_w", "lnf_b",
                                                                    "head_w", "head_b"))
        block = formats.mamba2_num_params(65, 1, 256, 512, 64, 64) - formats.mamba2_num_params(65, 0, 256, 512, 64, 64)
        print(f"check: one Mamba-2 block at C 256, N 64, head dim 64: {mixer:,} mixer parameters "
              f"(431,768 expected), {block:,} with its LayerNorm")
        ok = ok and mixer == 431768
    print("check: " + ("OK" if ok else "FAILED"))
    return ok


# -----------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None,
                        help="reference state file to write (default data/ref_mamba.bin, _lti.bin with --lti, "
                             "data/ref_mamba2.bin with --mamba2)")
    parser.add_argument("--B", type=int, default=2)
    parser.add_argument("--T", type=int, default=37, help="sequence length (37: not a multiple of any chunk size)")
    parser.add_argument("--V", type=int, default=65)
    parser.add_argument("--L", type=int, default=2)
    parser.add_argument("--C", type=int, default=32)
    parser.add_argument("--N", type=int, default=16, help="state size per channel (d_state)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lti", action="store_true",
                        help="the selection ablation (train_mamba -M lti): dt, B, C per channel")
    parser.add_argument("--mamba2", action="store_true",
                        help="Mamba-2 (SSD) mixers (train_mamba -M 2; kind mamba2)")
    parser.add_argument("--headdim", type=int, default=16,
                        help="Mamba-2's channels per head (16 here: 4 heads at C 32; the trainer's default is 64)")
    parser.add_argument("--check", action="store_true",
                        help="read the state back and verify it; compare the parallel scan with the sequential one")
    args = parser.parse_args()
    if min(args.B, args.T, args.V, args.L, args.C, args.N) < 1:
        parser.error("B, T, V, L, C and N must be positive")
    if args.steps < 1:
        parser.error("need at least one step")
    if args.lti and args.mamba2:
        parser.error("--lti and --mamba2 are different models")
    if args.mamba2 and (args.headdim < 1 or (2 * args.C) % args.headdim != 0):
        parser.error(f"--headdim {args.headdim} does not divide E = 2C = {2 * args.C}")

    cfg = MambaConfig(V=args.V, L=args.L, C=args.C, N=args.N, lti=args.lti, mamba2=args.mamba2, headdim=args.headdim)
    if args.out is None:
        args.out = "data/ref_mamba2.bin" if args.mamba2 else "data/ref_mamba_lti.bin" if args.lti else "data/ref_mamba.bin"
    write_reference(args.out, cfg, args.B, args.T, args.seed, args.steps, common.REFERENCE_ADAMW)
    if args.check and not check_state(args.out):
        sys.exit(1)


if __name__ == "__main__":
    main()

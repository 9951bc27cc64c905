"""
The diffusion model of train_diffusion.cu in PyTorch, and the writer of its
reference states (one per denoiser: vit, mamba, bimamba, mamba2).

DDPM with epsilon prediction on the cosine schedule of 1000 steps (Nichol
and Dhariwal: beta_t = min(1 - f(t)/f(t-1), 0.999), f(t) = cos^2((t/1000 +
0.008)/1.008 pi/2), alpha_bar_t = prod_{s<=t} (1 - beta_s)). An image x_0 =
2 pixel/255 - 1 is noised to x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 -
alpha_bar_t) eps; the loss is the mean of (eps_theta(x_t, t, y) - eps)^2.

The denoiser: patches of x_t (vit.patchify) -> Linear(PD, C); the sequence
[time token, class token, T patch tokens] + positions wpe (T + 2, C), the
time token U-ViT's sinusoidal embedding of t ([cos(t f_j)], [sin(t f_j)],
f_j = 10000^(-j/(C/2))), the class token row y of class_emb (K + 1, C), row
K meaning no class; the blocks (vit.py's ViTBlock, not causal, and a final
LayerNorm; mamba.py's post-norm Block; vit.py's BiBlock; mamba.py's Block
with Mamba-2 mixers); the head Linear(C, PD) on every token, rows 2.. put
back into the image (the inverse of patchify).

The reference state holds the initial flat parameters, the batch (images in
[0, 1] as the trainers' uint8 -> float gives them, t, y, eps), the
activations of one forward (noisy, tokens, every block's output, lnf, rows,
eps_pred), the loss and the flat gradient, the losses and parameters of 10
AdamW steps on the same batch, all in float64 stored as float32; and the
schedule's pieces, computed here independently of the C++: the tables
sqrt(alpha_bar), sqrt(1 - alpha_bar) and the time embedding, the ELBO's
step coefficients (t = 2..1000), the prior term and the decoder term (t = 1,
unconditional) of the batch's images, and the DDIM (50 steps) and DDPM
(1000 and 50 steps) sampler coefficients.

Usage:
    python3 dev/reference/diffusion.py --model vit --out data/ref_diffusion_vit.bin
"""

import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import formats  # noqa: E402
import mamba  # noqa: E402
import vit  # noqa: E402

STEPS = 1000
KINDS = {"vit": formats.KIND_DIFFUSION_VIT, "mamba": formats.KIND_DIFFUSION_MAMBA,
         "bimamba": formats.KIND_DIFFUSION_BIMAMBA, "mamba2": formats.KIND_DIFFUSION_MAMBA2}

# -----------------------------------------------------------------------------
# the schedule, in float64 numpy (index t = 0..1000; t = 0 is no noise)


def schedule():
    """beta, alpha_bar (1001,): the cosine schedule, betas clipped at 0.999, alpha_bar their running product."""
    t = np.arange(STEPS + 1)
    f = np.cos((t / STEPS + 0.008) / 1.008 * np.pi / 2) ** 2
    beta = np.zeros(STEPS + 1)
    beta[1:] = np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    alpha_bar = np.cumprod(1.0 - beta)
    return beta, alpha_bar


def posterior_variance(t):
    beta, ab = schedule()
    return beta[t] * (1.0 - ab[t - 1]) / (1.0 - ab[t])


def timestep_embedding(t, C):
    """(len(t), C) float64: U-ViT's [cos(t f), sin(t f)], f_j = 10000^(-j/half); an odd C's last channel 0."""
    half = C // 2
    f = np.exp(-math.log(10000.0) * np.arange(half) / half)
    args = np.asarray(t, dtype=np.float64)[:, None] * f[None, :]
    out = np.zeros((len(t), C))
    out[:, :half] = np.cos(args)
    out[:, half:2 * half] = np.sin(args)
    return out


def unpatchify(rows, patch, image):
    """(B, T, Cc p p) -> (B, Cc, H, W), the inverse of vit.patchify."""
    Cc, H, W = image
    B = rows.shape[0]
    x = rows.reshape(B, H // patch, W // patch, Cc, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(B, Cc, H, W)


# -----------------------------------------------------------------------------
# the denoiser


class Denoiser(common.FlatParams):

    def __init__(self, kind, config):
        super().__init__()
        self.kind, self.config = kind, config
        c = config
        self.image = tuple(c["image"])
        T, PD = formats.vision_tokens(c["patch"], self.image)
        C, L = c["C"], c["L"]
        self.patch = nn.Linear(PD, C)
        self.class_emb = nn.Parameter(torch.zeros(c["K"] + 1, C))
        self.wpe = nn.Parameter(torch.zeros(T + 2, C))
        if kind == formats.KIND_DIFFUSION_VIT:
            vcfg = vit.ViTConfig(patch=c["patch"], K=c["K"], L=L, H=c["H"], C=C, F=c["F"], image=self.image)
            self.blocks = nn.ModuleList([vit.ViTBlock(vcfg, T + 2) for _ in range(L)])
            self.lnf = nn.LayerNorm(C, eps=1e-5)
        else:
            m2 = kind == formats.KIND_DIFFUSION_MAMBA2
            mcfg = mamba.MambaConfig(V=1, L=1, C=C, N=c["N"], E=2 * C if m2 else c["E"], mamba2=m2,
                                     headdim=c["Hd"] if m2 else 16)
            block = vit.BiBlock if kind == formats.KIND_DIFFUSION_BIMAMBA else mamba.Block
            self.blocks = nn.ModuleList([block(mcfg, "sequential") for _ in range(L)])
        self.head = nn.Linear(C, PD)
        self.no_drop = common.Dropout()

    def forward(self, x_t, t, y, acts=None):
        """x_t (B, Cc, H, W), t (B,) int, y (B,) int -> eps_theta (B, Cc, H, W)."""
        save = common.saver(acts, "")
        C = self.config["C"]
        patches = vit.patchify(x_t, self.config["patch"])
        save("patches", patches)
        emb = self.patch(patches)
        temb = torch.from_numpy(timestep_embedding(t.numpy(), C)).to(emb.dtype)
        x = torch.cat([temb[:, None], self.class_emb[y][:, None], emb], 1) + self.wpe
        save("tokens", x)
        for l, block in enumerate(self.blocks):
            if self.kind == formats.KIND_DIFFUSION_VIT:
                x = block(x, common.saver(acts, f"h{l}."), self.no_drop, l)
            elif self.kind == formats.KIND_DIFFUSION_BIMAMBA:
                x = block(x, common.saver(acts, f"m{l}."), common.saver(acts, f"m{l}.rev."))
            else:
                x = block(x, common.saver(acts, f"m{l}."))
            save(f"block{l}", x)
        if self.kind == formats.KIND_DIFFUSION_VIT:
            x = self.lnf(x)
            save("lnf", x)
        rows = self.head(x)
        save("rows", rows)
        eps = unpatchify(rows[:, 2:], self.config["patch"], self.image)
        save("eps_pred", eps)
        return eps

    def flat_layout(self):
        return formats.diffusion_param_layout(self.kind, self.config)

    def flat_tensors(self):
        bs = self.blocks
        rows = [("patch_w", [self.patch.weight]), ("patch_b", [self.patch.bias]),
                ("class_emb", [self.class_emb]), ("wpe", [self.wpe])]
        if self.kind == formats.KIND_DIFFUSION_VIT:
            rows += vit.vit_block_tensors(bs) + [("lnf_w", [self.lnf.weight]), ("lnf_b", [self.lnf.bias])]
        elif self.kind == formats.KIND_DIFFUSION_MAMBA2:
            rows += mamba.mamba2_mixer_tensors([b.mixer for b in bs])
            rows += [("ln_w", [b.ln.weight for b in bs]), ("ln_b", [b.ln.bias for b in bs])]
        else:
            ms = [b.mixer for b in bs]
            if self.kind == formats.KIND_DIFFUSION_BIMAMBA:
                ms += [b.mixer_rev for b in bs]
            rows += mamba.mamba_mixer_tensors(ms) + [("ln_w", [b.ln.weight for b in bs]), ("ln_b", [b.ln.bias for b in bs])]
        return rows + [("head_w", [self.head.weight]), ("head_b", [self.head.bias])]


def noised(images, t, eps):
    """x_t from images in [0, 1] (float64)."""
    _, ab = schedule()
    ab_t = torch.from_numpy(ab[t.numpy()]).to(images.dtype)[:, None, None, None]
    return ab_t.sqrt() * (2.0 * images - 1.0) + (1.0 - ab_t).sqrt() * eps


def diffusion_loss(model, images, t, y, eps, acts=None):
    x_t = noised(images, t, eps)
    if acts is not None:
        acts["noisy"] = x_t.detach().clone()
    return ((model(x_t, t, y, acts) - eps) ** 2).mean()


# -----------------------------------------------------------------------------
# the ELBO's pieces and the samplers' coefficients, from the formulas


def elbo_step_coefficients():
    """(1001,): KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) / ||eps - eps_pred||^2 for t >= 2 (0 at t = 0, 1)."""
    beta, ab = schedule()
    out = np.zeros(STEPS + 1)
    for t in range(2, STEPS + 1):
        var = posterior_variance(t)
        mean_scale = beta[t] / (math.sqrt(1.0 - beta[t]) * math.sqrt(1.0 - ab[t]))  # means differ by this x (eps - eps')
        out[t] = mean_scale ** 2 / (2.0 * var)
    return out


def prior_terms(x0):
    """KL(q(x_1000|x_0) || N(0,I)) per image, nats; x0 (B, ...) in [-1, 1]."""
    _, ab = schedule()
    mean, var = math.sqrt(ab[STEPS]) * x0, 1.0 - ab[STEPS]
    kl = 0.5 * (-1.0 - math.log(var) + var + mean ** 2)
    return kl.reshape(len(x0), -1).sum(1)


def decoder_terms(x0, x1, eps_pred):
    """-log p(x_0|x_1) per image (nats): the discretized Gaussian, sigma^2 = beta~_2, the bins of 2/255."""
    beta, ab = schedule()
    mu = (x1 - beta[1] / math.sqrt(1.0 - ab[1]) * eps_pred) / math.sqrt(1.0 - beta[1])
    sigma = math.sqrt(posterior_variance(2))
    cdf = torch.distributions.Normal(0.0, 1.0).cdf
    upper = torch.where(x0 > 0.999, torch.ones_like(x0), cdf((x0 + 1 / 255 - mu) / sigma))
    lower = torch.where(x0 < -0.999, torch.zeros_like(x0), cdf((x0 - 1 / 255 - mu) / sigma))
    p = (upper - lower).clamp(min=1e-12)
    return (-p.log()).reshape(len(x0), -1).sum(1)


def sampler_coefficients(ddpm, steps):
    """(steps, 6): t, s0, s1, a, b, sigma of each step, i = 0 .. steps-1 (run from the last)."""
    beta, ab = schedule()
    ts = [(i + 1) * STEPS // steps for i in range(steps)]
    out = []
    for i, t in enumerate(ts):
        prev = ts[i - 1] if i else 0
        s0, s1 = math.sqrt(ab[t]), math.sqrt(1.0 - ab[t])
        if ddpm:  # the posterior q(x_prev | x_t, x_0) of the respaced chain (beta' = 1 - ab_t / ab_prev): mean, deviation
            b1 = 1.0 - ab[t] / ab[prev]
            a = math.sqrt(ab[prev]) * b1 / (1.0 - ab[t])
            b = math.sqrt(1.0 - b1) * (1.0 - ab[prev]) / (1.0 - ab[t])
            sigma = math.sqrt(b1 * (1.0 - ab[prev]) / (1.0 - ab[t])) if prev > 0 else 0.0
        else:  # DDIM, eta 0: x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) (x_t - sqrt(ab) x0) / sqrt(1 - ab)
            r = math.sqrt(1.0 - ab[prev]) / math.sqrt(1.0 - ab[t])
            a, b, sigma = math.sqrt(ab[prev]) - r * math.sqrt(ab[t]), r, 0.0
        out.append([t, s0, s1, a, b, sigma])
    return np.array(out)


# -----------------------------------------------------------------------------
# the reference state


def write_reference(path, name, config, B, seed, steps):
    kind = KINDS[name]
    torch.manual_seed(seed)
    gen = torch.default_generator
    model = Denoiser(kind, config).double()
    layout = model.flat_layout()
    params32 = mamba.reference_init(layout, gen)
    image = tuple(config["image"])
    pixels = torch.randint(0, 256, (B,) + image, generator=gen, dtype=torch.int32)
    images32 = pixels.float() * np.float32(1.0 / 255.0)
    images = images32.double()
    t = torch.randint(1, STEPS + 1, (B,), generator=gen)
    t[0], t[1] = 1, STEPS  # both ends of the schedule
    y = torch.randint(0, config["K"], (B,), generator=gen)
    y[2 % B] = config["K"]  # a row without its class
    eps32 = torch.randn((B,) + image, generator=gen).float()
    eps = eps32.double()
    P = params32.numel()
    config = dict(config, P=P)

    model.set_flat(params32.double())
    acts = {}
    loss, grads = common.loss_and_grads(model, lambda: diffusion_loss(model, images, t, y, eps, acts))
    step_losses, step_params = common.adamw_trajectory(model, params32, lambda: diffusion_loss(model, images, t, y, eps),
                                                       steps, common.REFERENCE_ADAMW)
    assert step_losses[0] == loss.item()

    # the ELBO's image terms at the initial parameters, unconditional, with this batch's eps at t = 1
    model.set_flat(params32.double())
    with torch.no_grad():
        t1, null = torch.ones(B, dtype=torch.long), torch.full((B,), config["K"], dtype=torch.long)
        x1 = noised(images, t1, eps)
        pred = model(x1, t1, null)
    x0 = 2.0 * images - 1.0
    beta, ab = schedule()
    f32 = common.f32
    names = ["noisy", "patches", "tokens"] + [f"block{l}" for l in range(config["L"])]
    names += (["lnf"] if kind == formats.KIND_DIFFUSION_VIT else []) + ["rows", "eps_pred"]
    tensors = [("params", params32.numpy()), ("images", images32.numpy()), ("t", t.int().numpy()),
               ("y", y.int().numpy()), ("eps", eps32.numpy())]
    tensors += [(n, f32(acts[n])) for n in names]
    tensors += [("loss", np.array([loss.item()], dtype=np.float32)), ("grads", f32(grads))]
    tensors += common.trajectory_tensors(common.REFERENCE_ADAMW, step_losses, step_params)
    tensors += [
        ("sqrt_alpha_bar", np.sqrt(ab).astype(np.float32)),
        ("sqrt_one_minus_ab", np.sqrt(1.0 - ab).astype(np.float32)),
        ("time_embedding", timestep_embedding(np.arange(STEPS + 1), config["C"]).astype(np.float32)),
        ("elbo_step_coefficients", elbo_step_coefficients().astype(np.float32)),
        ("elbo_prior", f32(prior_terms(x0))),
        ("elbo_decoder", f32(decoder_terms(x0, x1, pred))),
        ("ddim50", sampler_coefficients(False, 50).astype(np.float32)),
        ("ddpm50", sampler_coefficients(True, 50).astype(np.float32)),
        ("ddpm", sampler_coefficients(True, STEPS).astype(np.float32)),
    ]
    T, _ = formats.vision_tokens(config["patch"], image)
    formats.write_state(path, kind, config, B, T + 2, tensors)
    print(f"wrote {path}: {formats.KIND_NAMES[kind]} {'x'.join(map(str, image))} patch {config['patch']} P {P}, "
          f"loss {loss.item():.6f}, grad norm {grads.norm().item():.4f}, step losses {step_losses[0]:.6f} -> "
          f"{step_losses[-1]:.6f} ({steps} steps)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=sorted(KINDS))
    p.add_argument("--out", required=True)
    p.add_argument("--image", default="1,12,12", help="channels,height,width (default 1,12,12: 36 patches of 2 x 2, "
                                                      "38 tokens, past one 32-position scan chunk)")
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--K", type=int, default=3)
    p.add_argument("--L", type=int, default=2)
    p.add_argument("--C", type=int, default=32)
    p.add_argument("--B", type=int, default=4)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    image = tuple(int(v) for v in a.image.split(","))
    config = dict(patch=a.patch, K=a.K, L=a.L, C=a.C, image=image)
    if a.model == "vit":
        config.update(H=4, F=2 * a.C)
    elif a.model == "mamba2":
        config.update(N=16, Hd=16)  # 2C/16 heads
    else:
        config.update(E=2 * a.C, N=16)
    write_reference(a.out, a.model, config, a.B, a.seed, a.steps)


if __name__ == "__main__":
    main()

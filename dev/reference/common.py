"""
What the reference scripts (gpt.py, gpt_plus.py, mamba.py, hybrid.py, vit.py) share:

  FlatParams          the C++ trainers' flat parameter buffer on an nn.Module:
                      parameters <-> one flat vector in the layout order of
                      formats.py, AdamW groups from the layout's weight decay
  reference_init      the perturbed initial parameters of a reference state
  saver, f32          capturing activations; float32 copies for the states
  loss_and_grads      one forward/backward -> (loss, flat gradient)
  adamw_trajectory    the AdamW steps a reference state records
  check_grads_fd      gradient entries against central finite differences
  check_lm_grads_and_steps  the LMs' finite differences and AdamW trajectory checks
  lm_reference_state  a language model's reference state tensors
  numpy_adamw         AdamW written out in numpy, and the check of a state's
                      trajectory against it (check_adamw_trajectory)
  unflatten           a flat vector -> dict of named views (layout order)
  torch_encoder_layer the GPT block as PyTorch's TransformerEncoderLayer
  Dropout             the trainers' dropout masks (llmc/dropout.cuh's counter
                      hash, dropout_key and dropout_keep) on a tensor

The models themselves are defined in doc/models.md.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# dropout masks: the counter-based hash of llmc/dropout.cuh

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def mix64_int(z):
    """splitmix64's finalizer on a Python int (mod 2^64)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix64_array(z):
    """The same on a numpy uint64 array (arithmetic wraps mod 2^64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_key(seed, step, site):
    return mix64_int(mix64_int(mix64_int(seed + GAMMA) + step + GAMMA) + site + GAMMA)


def dropout_keep(key, n, p):
    """Boolean keep mask of n elements (flat index order) under key for rate p (float32)."""
    threshold = int(float(np.float32(p)) * 16777216.0)
    idx = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = mix64_array(np.uint64(key) + idx * np.uint64(GAMMA)) >> np.uint64(40)
    return h >= np.uint64(threshold)


# the sites the language models key beside their layers' (llmc/transformer_block.cuh)
SITE_PROBS = 1 << 32  # + layer: that layer's attention probabilities
SITE_EMBED = 1 << 33  # the embedding's output


class Dropout:
    """What the models call on a branch: identity, torch's dropout, or the hash masks."""

    def __init__(self, p=0.0, seed=None, step=None):
        self.p, self.seed, self.step = p, seed, step

    def __call__(self, x, site, training):
        if self.p <= 0.0 or not training:
            return x
        if self.seed is None:
            return F.dropout(x, self.p, training=True)
        keep = dropout_keep(dropout_key(self.seed, self.step, site), x.numel(), self.p)
        keep = torch.from_numpy(keep).reshape(x.shape).to(x.device)
        scale = float(np.float32(1.0) / (np.float32(1.0) - np.float32(self.p)))  # as the C++ float
        return torch.where(keep, x * scale, torch.zeros_like(x))


# lr, beta1, beta2, eps, weight_decay, grad_clip of the reference states'
# AdamW steps (a large weight decay so that it is tested)
REFERENCE_ADAMW = [1e-3, 0.9, 0.99, 1e-8, 0.1, 1.0]

# -----------------------------------------------------------------------------
# the flat parameter buffer


class FlatParams(nn.Module):
    """
    An nn.Module whose parameters the C++ trainers hold as one flat float
    buffer. A subclass provides
      flat_layout()   [(name, shape, weight_decay)] in order (formats.py)
      flat_tensors()  [(name, [nn.Parameter, ...])] in the same order; a
                      per-layer tensor lists one parameter per layer, layer 0
                      first, which is the same as stacking them along a
                      leading L dimension
    and gets the conversions to and from the flat vector.
    """

    def _checked_pairs(self):
        """Layout entries zipped with their parameters; names, sizes and coverage checked."""
        layout = self.flat_layout()
        tensors = self.flat_tensors()
        assert [n for n, _, _ in layout] == [n for n, _ in tensors], \
            ([n for n, _, _ in layout], [n for n, _ in tensors])
        for (name, shape, _), (_, ps) in zip(layout, tensors):
            numel = sum(p.numel() for p in ps)
            assert numel == math.prod(shape), f"{name}: {numel} != prod{shape}"
        assert sum(len(ps) for _, ps in tensors) == len(list(self.parameters()))
        return list(zip(layout, tensors))

    def flat_params_in_order(self):
        return [p for _, (_, ps) in self._checked_pairs() for p in ps]

    def get_flat(self):
        """(P,) the parameters in flat order (detached)."""
        return torch.cat([p.detach().reshape(-1) for p in self.flat_params_in_order()])

    def get_flat_grads(self):
        """
        (P,) the gradients in flat order. A parameter the loss does not reach
        (A_log with the parallel scan at T = 1) has no .grad; its gradient is 0.
        """
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.flat_params_in_order()])

    @torch.no_grad()
    def set_flat(self, flat):
        """Copies the (P,) vector flat into the parameters."""
        ps = self.flat_params_in_order()
        assert flat.numel() == sum(p.numel() for p in ps)
        off = 0
        for p in ps:
            p.copy_(flat[off:off + p.numel()].view_as(p))
            off += p.numel()

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def optim_groups(self, weight_decay):
        """AdamW groups: decay exactly for the tensors the flat layout marks."""
        decay, no_decay = [], []
        for (_, _, wd), (_, ps) in self._checked_pairs():
            (decay if wd else no_decay).extend(ps)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]


def unflatten(flat, layout):
    """flat (P,) numpy array or tensor -> dict name -> view of the layout's shape."""
    p, off = {}, 0
    for name, shape, _ in layout:
        n = math.prod(shape)
        p[name] = flat[off:off + n].reshape(shape)
        off += n
    assert off == flat.shape[0], f"{flat.shape[0]} values for a layout of {off}"
    return p


# -----------------------------------------------------------------------------
# reference states

# the LayerNorm weights of every model, initialized around 1 in the states
LAYERNORM_WEIGHTS = ("ln1_w", "ln2_w", "lnf_w", "ln_w", "patch_ln_w", "embed_ln_w")


def dt_init_bias(E, dt_min=1e-3, dt_max=1e-1, dt_floor=1e-4, generator=None):
    """dt_proj bias as mamba_ssm: softplus^-1(dt), dt = exp(U(log dt_min, log dt_max)) >= dt_floor."""
    r = torch.rand(E, generator=generator)
    dt = torch.exp(r * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))


def reference_init(layout, generator):
    """
    The flat float32 parameters of a reference state, drawn tensor by tensor
    in layout order from generator, so that every gradient is exercised and
    activations are not tiny:
      every tensor not named below       N(0, 0.1)
      LayerNorm weights, D               1 + N(0, 0.1)
      conv_w                             N(0, 0.3)
      dt_proj_w (L,E,R)                  U(-R^-0.5, R^-0.5)
      dt_proj_b, dt_bias                 as mamba_ssm (softplus^-1 of dt), per layer
      B_lti, C_lti                       N(0, 0.5)
      A_log (L,E,N)                      log(n+1) + N(0, 0.1)
    """
    parts = []
    for name, shape, _ in layout:
        if name == "conv_w":
            t = torch.randn(shape, generator=generator) * 0.3
        elif name == "dt_proj_w":
            t = (torch.rand(shape, generator=generator) * 2.0 - 1.0) * shape[-1] ** -0.5
        elif name == "B_lti" or name == "C_lti":
            t = torch.randn(shape, generator=generator) * 0.5
        elif name == "dt_proj_b" or name == "dt_bias":
            t = torch.stack([dt_init_bias(shape[1], generator=generator) for _ in range(shape[0])])
        elif name == "A_log":
            L, E, N = shape
            t = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(L, E, 1) \
                + torch.randn(shape, generator=generator) * 0.1
        elif name == "D" or name in LAYERNORM_WEIGHTS:
            t = torch.randn(shape, generator=generator) * 0.1 + 1.0
        else:
            t = torch.randn(shape, generator=generator) * 0.1
        assert tuple(t.shape) == tuple(shape), (name, t.shape, shape)
        parts.append(t.float().reshape(-1))
    return torch.cat(parts)


def saver(acts, prefix):
    """save(name, t): stores a detached copy of t in acts[prefix + name] (if acts is a dict)."""
    def save(name, t):
        if acts is not None:
            acts[prefix + name] = t.detach().clone()
    return save


def f32(t):
    """A tensor as a float32 numpy array (what a state stores)."""
    return t.detach().float().numpy()


def loss_and_grads(model, run):
    """run() -> loss of one forward pass; returns (loss, flat gradient of that loss)."""
    model.zero_grad(set_to_none=True)
    loss = run()
    loss.backward()
    return loss, model.get_flat_grads().clone()


def adamw_trajectory(model, params32, run, steps, adamw):
    """
    The AdamW steps of a reference state: from params32, `steps` steps of
    torch's AdamW (decoupled weight decay on the layout's decayed tensors)
    after clipping the global gradient norm, each on the loss run() returns
    (the same batch every step). Returns (the loss before each step, the
    flat parameters after the last).
    """
    lr, beta1, beta2, eps, weight_decay, grad_clip = adamw
    model.set_flat(params32.double())
    opt = torch.optim.AdamW(model.optim_groups(weight_decay), lr=lr, betas=(beta1, beta2),
                            eps=eps, foreach=False)
    step_losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = run()
        step_losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
    return step_losses, model.get_flat()


def trajectory_tensors(adamw, step_losses, step_params):
    """The state records of the AdamW steps: hyperparameters, losses, final parameters."""
    return [
        ("adamw", np.array(adamw, dtype=np.float32)),
        ("step_losses", np.array(step_losses, dtype=np.float32)),
        ("step_params", f32(step_params)),
    ]


# -----------------------------------------------------------------------------
# self-checks of written states (--check)

# central-difference stencils: (offsets in units of h, weights, divisor in units of h)
FD_STENCILS = {
    2: ((1.0, -1.0), None, 2.0),                       # error O(h^2)
    4: ((2.0, 1.0, -1.0, -2.0), (-1.0, 8.0, -8.0, 1.0), 12.0),  # error O(h^4)
}


def lm_reference_state(model, params32, inputs, targets, act_names, steps, adamw, dropout=None):
    """
    A language model's reference state: the first forward and backward at
    params32 (the float64 model capturing its activations), then `steps`
    AdamW steps on the same batch. Returns the state's tensors in the file's
    order (params, inputs, targets, encoded, act_names in order, lnf, logits,
    loss, grads, the trajectory) and the line that describes them. With
    dropout = (p, seed, step) (a model with set_dropout), also one forward and
    backward at params32 with the trainers' masks of that training step
    (dropout, dropout_p, drop_logits, drop_loss, drop_grads, after grads).
    """
    model.set_flat(params32.double())
    model.train()
    acts = {}
    loss, grads = loss_and_grads(model, lambda: model(inputs, targets, acts=acts)[1])
    drop_tensors, drop_summary = [], ""
    if dropout is not None:
        drop_p, drop_seed, drop_step = dropout
        model.set_dropout(drop_p, drop_seed, drop_step)
        drop = {}

        def run_dropout():
            drop["logits"], drop_loss = model(inputs, targets)
            return drop_loss

        drop_loss, drop_grads = loss_and_grads(model, run_dropout)
        model.set_dropout(0.0)
        drop_tensors = [("dropout", np.array([drop_seed, drop_step], dtype=np.int32)),
                        ("dropout_p", np.array([drop_p], dtype=np.float32)), ("drop_logits", f32(drop["logits"])),
                        ("drop_loss", np.array([drop_loss.item()], dtype=np.float32)), ("drop_grads", f32(drop_grads))]
        drop_summary = f", with dropout {drop_p} {drop_loss.item():.6f}"
    step_losses, step_params = adamw_trajectory(model, params32, lambda: model(inputs, targets)[1], steps, adamw)
    assert step_losses[0] == loss.item()
    tensors = [("params", params32.numpy()), ("inputs", inputs.int().numpy()), ("targets", targets.int().numpy()),
               ("encoded", f32(acts["encoded"]))]
    tensors += [(name, f32(acts[name])) for name in act_names]
    tensors += [("lnf", f32(acts["lnf"])), ("logits", f32(acts["logits"])),
                ("loss", np.array([loss.item()], dtype=np.float32)), ("grads", f32(grads))]
    tensors += drop_tensors
    tensors += trajectory_tensors(adamw, step_losses, step_params)
    summary = (f"P {params32.numel()}, loss {loss.item():.6f}{drop_summary}, grad norm {grads.norm().item():.4f}, "
               f"step losses {step_losses[0]:.6f} -> {step_losses[-1]:.6f} ({steps} steps)")
    return tensors, summary


def check_grads_fd(model, flat0, loss_at, grads, gen, count=3, h=1e-4, order=2, tol=1e-5,
                   label="", report_each=False):
    """
    Checks entries of the flat gradient grads (at the flat parameters flat0)
    against central differences of loss_at(), which returns the model's
    float64 loss at its current parameters. For each tensor of the layout,
    count entries (an int, or a function of the name) drawn with gen.
    Returns (ok, worst relative error); prints every entry off by more than
    tol, and with report_each one line per tensor.
    """
    offsets, weights, divisor = FD_STENCILS[order]
    ok, worst, off = True, 0.0, 0
    for name, shape, _ in model.flat_layout():
        n = math.prod(shape)
        k = count(name) if callable(count) else count
        errs = []
        for i in torch.randint(0, n, (k,), generator=gen).tolist():
            j = off + i
            losses = []
            for step in offsets:
                flat = flat0.clone()
                flat[j] += step * h
                model.set_flat(flat)
                with torch.no_grad():
                    losses.append(loss_at())
            if weights is None:
                fd = (losses[0] - losses[1]) / (divisor * h)
            else:
                fd = (weights[0] * losses[0] + weights[1] * losses[1] + weights[2] * losses[2]
                      + weights[3] * losses[3]) / (divisor * h)
            err = abs(fd - grads[j])
            rel = err / max(abs(fd), abs(grads[j]), 1e-6)
            errs.append((rel, err))
            if rel > tol:
                print(f"check: {label}{name}[{i}] grad {grads[j]:.6e} vs finite difference {fd:.6e}")
                ok = False
        worst = max([worst] + [r for r, _ in errs])
        if report_each:
            print(f"check: fd {name:10s} {k:2d} entries: max abs err {max(e for _, e in errs):.2e}, "
                  f"max rel err {max(r for r, _ in errs):.2e}, |grad| up to "
                  f"{np.abs(grads[off:off + n]).max():.2e}")
        off += n
    return ok, worst


def check_lm_grads_and_steps(model, state, fd_per_tensor, h, order=2):
    """
    The language models' last two checks of a reference state: gradient
    entries against central differences of the float64 loss (model: the
    float64 reference model), and the AdamW trajectory against a numpy AdamW.
    Prints both and returns whether both passed.
    """
    flat0 = torch.from_numpy(state["params"].astype(np.float64))
    inputs = torch.from_numpy(state["inputs"].astype(np.int64))
    targets = torch.from_numpy(state["targets"].astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    fd_ok, worst = check_grads_fd(model, flat0, lambda: model(inputs, targets)[1].item(),
                                  state["grads"].astype(np.float64), gen, count=fd_per_tensor, h=h, order=order)
    print(f"check: {fd_per_tensor} grad entries per tensor vs central differences, worst rel err {worst:.3e}")
    return check_adamw_trajectory(model, state, lambda: model(inputs, targets)[1]) and fd_ok


def numpy_adamw(params, grad_fn, steps, adamw, decay_mask):
    """
    AdamW (decoupled weight decay, bias-corrected moments) with global
    grad-norm clipping, written out in numpy. grad_fn(params) -> (loss, grads).
    Returns (losses, final params).
    """
    lr, beta1, beta2, eps, weight_decay, grad_clip = adamw
    p = params.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    losses = []
    for t in range(1, steps + 1):
        loss, g = grad_fn(p)
        losses.append(loss)
        norm = np.sqrt((g * g).sum())
        g = g * min(1.0, grad_clip / (norm + 1e-6))
        p = p * np.where(decay_mask, 1.0 - lr * weight_decay, 1.0)
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        m_hat = m / (1.0 - beta1 ** t)
        v_hat = v / (1.0 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return np.array(losses), p


def decay_mask(layout):
    """(P,) bool: which flat entries AdamW decays."""
    return np.concatenate([np.full(math.prod(s), wd) for _, s, wd in layout])


def check_adamw_trajectory(model, state, run, tol=1e-6):
    """
    The state's AdamW steps (step_losses, step_params from params under the
    hyperparameters in adamw) against numpy_adamw, with the gradients of
    run(), the float64 model's loss. Tolerance tol absolute: the state
    stores float32, whose rounding of losses and parameters of size < 8 is
    below 5e-7. Returns ok.
    """
    def grad_fn(p):
        model.set_flat(torch.from_numpy(p))
        loss, grads = loss_and_grads(model, run)
        return loss.item(), grads.numpy().copy()

    steps = len(state["step_losses"])
    adamw = [float(v) for v in state["adamw"]]
    losses, p_final = numpy_adamw(state["params"], grad_fn, steps, adamw, decay_mask(model.flat_layout()))
    e_loss = np.abs(losses - state["step_losses"]).max()
    e_par = np.abs(p_final - state["step_params"]).max()
    print(f"check: {steps} AdamW steps vs numpy AdamW: max abs err losses {e_loss:.2e}, params {e_par:.2e}")
    return e_loss < tol and e_par < tol


def torch_encoder_layer(p, l, C, H, F):
    """
    Layer l of the GPT blocks (p: unflatten of a GPT or ViT layout, float64)
    as PyTorch's own pre-norm TransformerEncoderLayer: an implementation of
    the block that shares no code with gpt.py's. Masks are the caller's.
    """
    layer = nn.TransformerEncoderLayer(C, H, dim_feedforward=F, dropout=0.0, activation="gelu",
                                       layer_norm_eps=1e-5, batch_first=True, norm_first=True).double()
    pairs = [(layer.norm1.weight, "ln1_w"), (layer.norm1.bias, "ln1_b"),
             (layer.self_attn.in_proj_weight, "qkv_w"), (layer.self_attn.in_proj_bias, "qkv_b"),
             (layer.self_attn.out_proj.weight, "attn_proj_w"), (layer.self_attn.out_proj.bias, "attn_proj_b"),
             (layer.norm2.weight, "ln2_w"), (layer.norm2.bias, "ln2_b"),
             (layer.linear1.weight, "fc_w"), (layer.linear1.bias, "fc_b"),
             (layer.linear2.weight, "fc_proj_w"), (layer.linear2.bias, "fc_proj_b")]
    with torch.no_grad():
        for t, name in pairs:
            t.copy_(p[name][l])
    layer.train()  # dropout is 0; train mode avoids the inference fast path
    return layer

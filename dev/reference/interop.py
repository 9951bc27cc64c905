"""
PyTorch interop for the project's model files and checkpoints.

  interop.py eval FILE --tokens PATH --B 4 --T 64 --batches 2
      loads a model file or checkpoint (GPT, Transformer++, Mamba or hybrid LM) into the PyTorch
      model and prints "val loss X": the mean loss over the first `batches`
      consecutive B x T windows of the tokens file, as the trainers'
      validation computes it (float64).
  interop.py eval FILE --images PATH [--B 256] [--count N]
      loads a vision model file or checkpoint (ViT, Mamba-ViT, bidirectional
      Mamba-ViT) into the PyTorch model and evaluates it on the images file
      (all images, or the first N) as the trainers' evaluation does (pixels
      / 255, no augmentation, the largest logit wins, the first on ties),
      in float64: prints "test acc X% (correct/n) | test loss Y | near ties
      Z", Z the images whose two largest logits are within 1e-4, where the
      trainer's float32 logits may pick the other class.
  interop.py eval FILE --task PATH [--B 64] [--count N]
      loads a language model (the Mamba's selection ablation included) and
      scores it on a task file (dev/data/synthetic.py) as the trainers'
      validation does, in float64: the first N sequences (default all),
      prints "val loss X | acc Y% (right/targets) | seq acc Z% | near ties
      W": the mean cross-entropy over the positions with a target, the
      share of those whose largest logit (the first on ties) is the target,
      the share of sequences entirely right, and the targets whose two
      largest logits are within 1e-4.
  interop.py export --model gpt|mamba|hybrid --V 65 --L 2 --C 64 [--H 4 --F 128 --maxT 64] [--pattern MAF]
                    --seed 0 --out PATH
                    [--train-steps 20 --tokens PATH --B 4 --T 32]
      writes a PyTorch model (its default initialization, then optionally a
      few AdamW steps on random windows of a tokens file, so that it predicts
      something) as a project model file, which the trainers load with -e.

dev/test_interop.sh round-trips both ways through the trainers.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import formats  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
import synthetic  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from gpt_plus import GPTPlus, PlusConfig  # noqa: E402
from hybrid import HybridConfig, HybridLM  # noqa: E402
from mamba import MambaConfig, MambaLM  # noqa: E402
import vit  # noqa: E402

# the largest gap between the two largest logits (float64) that the trainers'
# float32 logits may order the other way round (their error is ~1e-6)
NEAR_TIE = 1e-4


def load_params(path):
    """(kind, config, flat float32 params) of a model file or a checkpoint."""
    with open(path, "rb") as f:
        magic = int.from_bytes(f.read(4), "little")
    if magic == formats.MAGIC_CHECKPOINT:
        c = formats.read_checkpoint(path)
        return c["kind"], c["config"], c["params"]
    return formats.read_model(path)


def build(kind, config):
    """An empty PyTorch model of the file's kind and config."""
    if kind == formats.KIND_GPT:
        return GPT(GPTConfig(maxT=config["maxT"], V=config["V"], L=config["L"], H=config["H"],
                             C=config["C"], F=config["F"]))
    if kind == formats.KIND_GPT_PLUS:
        return GPTPlus(PlusConfig(maxT=config["maxT"], V=config["V"], L=config["L"], H=config["H"],
                                  C=config["C"], F=config["F"]))
    if kind in (formats.KIND_MAMBA, formats.KIND_MAMBA_LTI):
        return MambaLM(MambaConfig(V=config["V"], L=config["L"], C=config["C"], N=config["N"], E=config["E"],
                                   R=config["R"], lti=kind == formats.KIND_MAMBA_LTI))
    if kind == formats.KIND_MAMBA2:
        return MambaLM(MambaConfig(V=config["V"], L=config["L"], C=config["C"], N=config["N"], E=config["E"],
                                   mamba2=True, headdim=config["Hd"]))
    if kind == formats.KIND_HYBRID:
        return HybridLM(HybridConfig(pattern=formats.hybrid_pattern_letters(config["pattern"]), maxT=config["maxT"],
                                     V=config["V"], C=config["C"], H=config["H"], F=config["F"]))
    if kind in formats.VISION_KINDS:
        return vit.build(kind, config, scan="parallel")[0]  # the log-depth scan: the sequential one's values
    raise SystemExit(f"error: model kind {kind} has no PyTorch model here")


def load_model(path):
    kind, config, params = load_params(path)
    model = build(kind, config)
    if model.num_params() != config["P"]:
        raise SystemExit(f"error: {path}: {config['P']} parameters, the PyTorch model has {model.num_params()}")
    model.set_flat(torch.from_numpy(np.array(params, dtype=np.float32)))
    return model.double().eval()


def eval_images(model, config, path, B, count):
    """(correct, n, mean loss, near ties) of the model on the first `count` images of path (0: all)."""
    labels, pixels, K = formats.read_images(path)
    image = tuple(pixels.shape[1:])
    if image != tuple(config["image"]):
        raise SystemExit(f"error: {path}: images are {' x '.join(map(str, image))}, the model's are "
                         f"{' x '.join(map(str, config['image']))}")
    if K != config["K"]:
        raise SystemExit(f"error: {path}: {K} classes, the model has {config['K']}")
    n = len(labels) if count <= 0 else min(count, len(labels))
    correct, loss_sum, near = 0, 0.0, 0
    with torch.no_grad():
        for first in range(0, n, B):
            x = torch.from_numpy(pixels[first:first + B][:n - first].astype(np.float32) * np.float32(1.0 / 255.0))
            y = torch.from_numpy(labels[first:first + B][:n - first].astype(np.int64))
            logits, loss = model(x.double(), y)
            top2 = logits.topk(2, dim=1).values
            correct += int((logits.argmax(dim=1) == y).sum())  # the first of equal maxima, as the trainers
            near += int((top2[:, 0] - top2[:, 1] < NEAR_TIE).sum())
            loss_sum += loss.item() * len(y)
    return correct, n, loss_sum / n, near


def eval_task(model, config, path, B, count):
    """(loss, right, targets, sequences right, n, near ties) on the first `count` sequences of a task file."""
    try:
        _, V, inputs, targets = synthetic.read_task_file(path)
    except synthetic.TaskFileError as err:
        raise SystemExit(f"error: {err}")
    if V != config["V"]:
        raise SystemExit(f"error: {path}: vocabulary {V}, the model's is {config['V']}")
    if "maxT" in config and inputs.shape[1] > config["maxT"]:
        raise SystemExit(f"error: {path}: sequences of {inputs.shape[1]} tokens, longer than the model's "
                         f"{config['maxT']} positions")
    n = len(inputs) if count <= 0 else min(count, len(inputs))
    loss_sum, right, total, seq_right, near = 0.0, 0, 0, 0, 0
    with torch.no_grad():
        for first in range(0, n, B):
            x = torch.from_numpy(inputs[first:min(first + B, n)].astype(np.int64))
            y = torch.from_numpy(targets[first:min(first + B, n)].astype(np.int64))
            logits, _ = model(x)
            mask = y != synthetic.IGNORE
            picked = logits[mask]  # (targets, V)
            wanted = y[mask]
            loss_sum += torch.nn.functional.cross_entropy(picked, wanted, reduction="sum").item()
            hit = (logits.argmax(dim=-1) == y) & mask  # the first of equal maxima, as the trainers
            right += int(hit.sum())
            total += int(mask.sum())
            seq_right += int((hit.sum(dim=1) == mask.sum(dim=1)).sum())
            top2 = picked.topk(2, dim=1).values
            near += int((top2[:, 0] - top2[:, 1] < NEAR_TIE).sum())
    return loss_sum / total, right, total, seq_right, n, near


def cmd_eval(args):
    kind, config, _ = load_params(args.file)
    model = load_model(args.file)
    if kind in formats.VISION_KINDS:
        if not args.images:
            raise SystemExit(f"error: {args.file}: a vision model; give --images PATH")
        correct, n, loss, near = eval_images(model, config, args.images, args.B or 256, args.count)
        print(f"test acc {100.0 * correct / n:.2f}% ({correct}/{n}) | test loss {loss:.7f} | near ties {near}")
        return
    if args.task:
        loss, right, total, seq_right, n, near = eval_task(model, config, args.task, args.B or 64, args.count)
        print(f"val loss {loss:.7f} | acc {100.0 * right / total:.2f}% ({right}/{total}) | "
              f"seq acc {100.0 * seq_right / n:.2f}% | near ties {near}")
        return
    if not args.tokens or not args.B or not args.T:
        raise SystemExit(f"error: {args.file}: a language model; give --tokens PATH --B N --T N")
    tokens, V = formats.read_tokens(args.tokens)
    tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    B, T = args.B, args.T
    losses = []
    with torch.no_grad():
        for i in range(args.batches):
            rows = [(i * B + b) * T for b in range(B)]
            if rows[-1] + T + 1 > len(tokens):
                raise SystemExit(f"error: {args.tokens}: too few tokens for {args.batches} batches of {B} x {T}")
            x = torch.stack([tokens[o:o + T] for o in rows])
            y = torch.stack([tokens[o + 1:o + T + 1] for o in rows])
            _, loss = model(x, y)
            losses.append(loss.item())
    print(f"val loss {np.mean(losses):.7f}")


def cmd_export(args):
    torch.manual_seed(args.seed)
    if args.model == "gpt":
        model = GPT(GPTConfig(maxT=args.maxT, V=args.V, L=args.L, H=args.H, C=args.C, F=args.F or 2 * args.C))
        kind, cfg = formats.KIND_GPT, model.cfg
        config = {"maxT": cfg.maxT, "V": cfg.V, "L": cfg.L, "H": cfg.H, "C": cfg.C, "F": cfg.F}
    elif args.model == "hybrid":
        model = HybridLM(HybridConfig(pattern=args.pattern, maxT=args.maxT, V=args.V, C=args.C, H=args.H,
                                      F=args.F or 4 * args.C))
        kind, cfg = formats.KIND_HYBRID, model.cfg
        config = {"maxT": cfg.maxT, "V": cfg.V, "C": cfg.C, "H": cfg.H, "F": cfg.F,
                  "pattern": formats.hybrid_pattern_code(cfg.pattern)}
    else:
        model = MambaLM(MambaConfig(V=args.V, L=args.L, C=args.C, N=args.N))
        kind, cfg = formats.KIND_MAMBA, model.cfg
        config = {"V": cfg.V, "L": cfg.L, "C": cfg.C, "E": cfg.E, "N": cfg.N, "R": cfg.R}
    if args.train_steps > 0:
        tokens, _ = formats.read_tokens(args.tokens)
        tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
        for _ in range(args.train_steps):
            starts = torch.randint(0, len(tokens) - args.T - 1, (args.B,))
            x = torch.stack([tokens[o:o + args.T] for o in starts])
            y = torch.stack([tokens[o + 1:o + args.T + 1] for o in starts])
            _, loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    config["P"] = model.num_params()
    formats.write_model(args.out, kind, config, model.get_flat().detach().numpy())
    print(f"wrote {args.out}: {args.model}, {config['P']} parameters")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("file")
    e.add_argument("--tokens", help="tokens file (language models)")
    e.add_argument("--B", type=int, default=0, help="batch (language models: required; vision: default 256)")
    e.add_argument("--T", type=int, default=0, help="window (language models)")
    e.add_argument("--batches", type=int, default=1)
    e.add_argument("--images", help="images file (vision models)")
    e.add_argument("--count", type=int, default=0, help="the first N images or task sequences (default all)")
    e.add_argument("--task", help="task file (language models)")
    x = sub.add_parser("export")
    x.add_argument("--model", choices=["gpt", "mamba", "hybrid"], required=True)
    x.add_argument("--pattern", default="MAF", help="the hybrid's layers")
    x.add_argument("--V", type=int, default=65)
    x.add_argument("--L", type=int, default=2)
    x.add_argument("--C", type=int, default=64)
    x.add_argument("--H", type=int, default=4)
    x.add_argument("--F", type=int, default=0)
    x.add_argument("--N", type=int, default=16)
    x.add_argument("--maxT", type=int, default=64)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--out", required=True)
    x.add_argument("--train-steps", type=int, default=0)
    x.add_argument("--tokens", help="tokens file for --train-steps")
    x.add_argument("--B", type=int, default=4)
    x.add_argument("--T", type=int, default=32)
    args = p.parse_args()
    try:
        cmd_eval(args) if args.cmd == "eval" else cmd_export(args)
    except ValueError as err:  # the readers' one-line messages
        raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    main()

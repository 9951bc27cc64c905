"""
Draws the seed write-up's comparisons from the trainers' logs (log.jsonl in
each run's -o directory) into one PNG:
  - loss against step (train thin, validation bold) for the language models
  - train against val (the language models' -V 1: the training set evaluated
    as the validation set is, at each validation): per run the train curve
    dashed and the val curve solid in one color, so the gap is the overfit
  - test accuracy against epoch for the vision models
  - throughput (tokens/s or images/s) against step
  - generation time per token against position (generate.jsonl, written by
    `-G 1 -o DIR`)
  - bits per dimension against step (language models on pixels, -I)
  - accuracy against step (language models on task files: the share of
    target positions right)
Panels appear for what the logs hold.

With --images it draws images files instead (llmc/image_data.h's format:
the CIFAR-format sets, and what `train_gpt/train_mamba -I 3072 -G 1 -o DIR`
generates into DIR/generated.bin), each file as a grid, side by side:

  python3 dev/plot.py --images out/gen/generated.bin data/cifar10_synthetic_small_test.bin \
      --labels generated,test --count 64 --out grid.png

--by-class draws one row per class instead (class 0 at the top), each row
the first --count images of that class in file order (default 8; a class
with fewer leaves its row's end blank), labelled with the class names when
the file is Fashion-MNIST's kind (10 classes of 1 x 28 x 28), else with the
class numbers: class-conditional samples beside the test set, e.g.

  python3 dev/plot.py --images SAMPLES.bin data/fashion_mnist_test.bin --labels samples,test \
      --by-class --out by_class.png

  python3 dev/plot.py out/gpt out/mamba --out lm.png
  python3 dev/plot.py out/vit out/mamba_vit --labels ViT,Mamba-ViT --out cifar.png
  python3 dev/plot.py gen/mamba/generate.jsonl gen/gpt/generate.jsonl --labels Mamba,GPT --out gen.png
  python3 dev/plot.py out/mamba out/mamba_d02 --gap-only --table table.md --out gap.png

--gap-only draws the train-against-val panel alone; --table FILE writes a
markdown table per run: the best val loss and its step, the final val loss
and the final train loss of the -V evaluations.

Each argument is a run directory or a log.jsonl file; labels default to the
directory names. Needs matplotlib (Debian: python3-matplotlib).
"""

import argparse
import math
import os
import sys

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path):
    """A run's log.jsonl as one run (formats.read_log: a resumed run's lines replace the ones after its checkpoint)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
    import formats
    try:
        rows = formats.read_log(path)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
    if not rows:
        raise SystemExit(f"error: {path}: no log lines")
    return rows


# the panels that draw one series per run: key, its x key, line style, x label, y label, title
MARKED = dict(linewidth=2, marker="o", markersize=3)
# the loss panels, a train series beside val_loss (MARKED) per run: the train key, its line style, y label, title
LOSS_PANELS = {
    "loss": ("train_loss", dict(alpha=0.35, linewidth=0.8), "loss (cross-entropy, nats)", "loss against step"),
    "gap": ("train_eval_loss", dict(linewidth=1.5, linestyle="--"),
            "loss (cross-entropy, nats), evaluated without dropout", "train (dashed) against val (solid)"),
}
ONE_SERIES_PANELS = {
    "acc": ("test_acc", "epoch", MARKED, "epoch", "test accuracy (%)", "test accuracy against epoch"),
    "task_acc": ("val_acc", "step", MARKED, "step", "validation accuracy over the target positions (%)",
                 "task accuracy against step"),
    "bpd": ("val_bits_per_dim", "step", MARKED, "step", "validation bits per dimension",
            "bits/dim against step (8 = uniform over 256)"),
    "generate": ("gen_ms_per_token", "position", dict(linewidth=1), "position (tokens so far)",
                 "ms per generated token", "generation: time per token against position"),
}


def series(rows, key, x="step"):
    pts = [(r.get(x, r.get("step")), r[key]) for r in rows if r.get(key) is not None]  # null: not finite
    return [p[0] for p in pts], [p[1] for p in pts]


def overfit_row(rows, label):
    """A run's line of the --table: best val loss, its step, final val and final train-eval losses."""
    xs, vals = series(rows, "val_loss")
    if not vals:
        raise SystemExit(f"error: {label}: no val_loss in the log")
    best = min(range(len(vals)), key=lambda i: vals[i])
    _, train = series(rows, "train_eval_loss")
    final_train = f"{train[-1]:.4f}" if train else "-"
    gap = f"{vals[-1] - train[-1]:+.4f}" if train else "-"
    return f"| {label} | {vals[best]:.4f} | {xs[best]} | {vals[-1]:.4f} | {xs[-1]} | {final_train} | {gap} |"


def write_table(path, logs, labels):
    lines = ["| run | best val loss | step of best | final val loss | final step | final train loss (eval) | "
             "final val - train |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [overfit_row(rows, label) for rows, label in zip(logs, labels)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]


def class_names(num_classes, shape):
    """The row labels of --by-class: Fashion-MNIST's names for 10 classes of 1 x 28 x 28, else the numbers."""
    if num_classes == 10 and tuple(shape) == (1, 28, 28):
        return FASHION_MNIST_CLASSES
    return [str(k) for k in range(num_classes)]


def by_class(labels, num_classes, per_class):
    """Indices into the file for --by-class: row k the first per_class images of class k in file order, -1 blank."""
    slots = np.full((num_classes, per_class), -1, dtype=np.int64)
    for k in range(num_classes):
        found = np.nonzero(labels == k)[0][:per_class]
        slots[k, :len(found)] = found
    return slots.reshape(-1)


def image_grid(pixels, columns, slots=None):
    """
    (N, Cc, H, W) uint8 -> one (rows*(H+1)-1, columns*(W+1)-1, 3) mosaic, a 1-pixel white gap between images:
    the images in order, or with slots the image slots[i] at place i (-1: left white).
    """
    if slots is None:
        slots = np.arange(len(pixels))
    n, (cc, h, w) = len(slots), pixels.shape[1:]
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, 3), 255, dtype=np.uint8)
    for i in range(n):
        if slots[i] < 0:
            continue
        r, c = divmod(i, columns)
        img = pixels[slots[i]].transpose(1, 2, 0)
        grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = img if cc == 3 else img[:, :, :1]
    return grid


def plot_images(paths, labels, count, out, title, per_class=False):
    """Each images file as a grid, side by side: its first `count` images, or with per_class `count` per class."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
    import formats
    grids = []
    for path in paths:
        try:
            file_labels, pixels, num_classes = formats.read_images(path)
        except (ValueError, OSError) as e:
            raise SystemExit(f"error: {e}")
        if pixels.shape[1] not in (1, 3):
            raise SystemExit(f"error: {path}: {pixels.shape[1]} channels; draws 1 or 3")
        if per_class:
            slots = by_class(file_labels, num_classes, count)
            rows = class_names(num_classes, pixels.shape[1:])
            grids.append((image_grid(pixels, count, slots), int((slots >= 0).sum()), len(pixels), rows))
        else:
            shown = pixels[:count]
            grids.append((image_grid(shown, max(1, math.ceil(math.sqrt(len(shown))))), len(shown), len(pixels), None))
    if per_class:  # sized for the rows: about 0.45 inch per image, and room for the names
        rows = max(len(g[3]) for g in grids)
        size = (max(3.0, 0.45 * count + 1.4) * len(paths), 0.45 * rows + 0.9)
    else:
        size = (5 * len(paths), 5.4)
    fig, axes = plt.subplots(1, len(paths), figsize=size, squeeze=False)
    for ax, (grid, shown, total, rows), label in zip(axes[0], grids, labels):
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(f"{label} ({shown} of {total})")
        if rows is None:
            ax.axis("off")
            continue
        h = (grid.shape[0] + 1) / len(rows)  # one row of images and its gap
        ax.set_yticks([h * (k + 0.5) - 1 for k in range(len(rows))], rows)
        ax.set_xticks([])
        ax.tick_params(left=False)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight" if per_class else None)  # (room for the longest class name)
    print(f"wrote {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories or log.jsonl files")
    p.add_argument("--images", nargs="+", metavar="FILE", help="images files to draw as grids instead of logs")
    p.add_argument("--count", type=int, help="with --images: images per grid, from the start (default 64); "
                   "with --by-class: images per class (default 8)")
    p.add_argument("--by-class", action="store_true", help="with --images: one row per class, class 0 at the top")
    p.add_argument("--labels", help="comma-separated labels, one per run")
    p.add_argument("--out", default="comparison.png")
    p.add_argument("--title", default="")
    p.add_argument("--gap-only", action="store_true", help="only the train-against-val panel (logs of -V 1 runs)")
    p.add_argument("--table", metavar="FILE", help="also write the runs' best and final losses as a markdown table")
    args = p.parse_args()
    if args.images:
        if args.runs:
            raise SystemExit("error: --images draws images files; give no run directories with it")
        if args.count is None:
            args.count = 8 if args.by_class else 64
        if args.count < 1:
            raise SystemExit(f"error: --count {args.count}: must be at least 1")
        labels = args.labels.split(",") if args.labels else [os.path.basename(f) for f in args.images]
        if len(labels) != len(args.images):
            raise SystemExit(f"error: --labels: {len(labels)} labels for {len(args.images)} images files")
        plot_images(args.images, labels, args.count, args.out, args.title, args.by_class)
        return
    if args.by_class:
        raise SystemExit("error: --by-class draws images files; give --images FILE ...")
    if not args.runs:
        raise SystemExit("error: give run directories or log.jsonl files, or --images FILE ...")
    labels = args.labels.split(",") if args.labels else [
        os.path.basename(os.path.normpath(r if os.path.isdir(r) else os.path.dirname(r) or ".")) for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"error: --labels: {len(labels)} labels for {len(args.runs)} runs")
    logs = [read_log(r) for r in args.runs]
    if args.table:
        write_table(args.table, logs, labels)

    has = lambda key: any(any(key in r for r in rows) for rows in logs)
    panels = []
    if (has("train_loss") or has("val_loss")) and not args.gap_only:
        panels.append("loss")
    if has("train_eval_loss"):
        panels.append("gap")
    elif args.gap_only:
        raise SystemExit("error: --gap-only: no train_eval_loss in the logs (train with -V 1)")
    if not args.gap_only:
        if has("test_acc"):
            panels.append("acc")
        if has("val_acc"):
            panels.append("task_acc")
        if has("tokens_per_s") or has("images_per_s"):
            panels.append("speed")
        if has("gen_ms_per_token"):
            panels.append("generate")
        if has("val_bits_per_dim"):
            panels.append("bpd")
    size = (10, 6.5) if args.gap_only else (6 * len(panels), 4.5)  # the one panel of many runs: room for the legend
    fig, axes = plt.subplots(1, len(panels), figsize=size, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes[0], panels):
        for i, (rows, label) in enumerate(zip(logs, labels)):
            c = colors[i % len(colors)]
            if panel in LOSS_PANELS:
                train_key, train_style, ylabel, title = LOSS_PANELS[panel]
                for key, style, which in ((train_key, train_style, "train"), ("val_loss", MARKED, "val")):
                    x, y = series(rows, key)
                    if x:
                        ax.plot(x, y, color=c, label=f"{label} {which}", **style)
                ax.set_xlabel("step")
                ax.set_ylabel(ylabel)
                ax.set_title(title)
            elif panel in ONE_SERIES_PANELS:
                key, x_key, style, xlabel, ylabel, title = ONE_SERIES_PANELS[panel]
                x, y = series(rows, key, x=x_key)
                if x:
                    ax.plot(x, y, color=c, label=label, **style)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
                ax.set_title(title)
                if panel == "generate":
                    ax.set_ylim(bottom=0)
            else:
                key = "tokens_per_s" if any("tokens_per_s" in r for r in rows) else "images_per_s"
                x, y = series(rows, key)
                if x:
                    ax.plot(x, y, color=c, linewidth=1, label=label)
                ax.set_xlabel("step")
                ax.set_ylabel("tokens/s" if key == "tokens_per_s" else "images/s")
                ax.set_title("throughput")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main()

"""
The diffusion study on Fashion-MNIST: trains train_diffusion with each
denoiser at the same flags (the cpu preset, --steps steps), then measures
each model and writes

  OUT/results.md          the table (denoiser, parameters, steps, training
                          time, bits/dim, Frechet distance, class agreement,
                          sampling time per image) with the commands; its
                          first row measures --per-class real training
                          images of each class the same way (the distance's
                          floor at this sample size, the classifier's
                          agreement with real labels)
  DOC/<denoiser>.png      its samples, one row per class (dev/plot.py --by-class)

The measurements:
  bits/dim      train_diffusion -N: the negative ELBO of the first --elbo
                test images, every term as Ho et al., unconditional
  samples       train_diffusion -G: --per-class images of each class, DDIM
                --sample-steps steps at guidance --guidance
  agreement     the share of samples that the classifier (a train_vit model
                file of Fashion-MNIST, --classifier; trained by the command
                below when missing) assigns to the class they were drawn for:
                train_vit -e CLASSIFIER -x 0 -j samples.bin's test accuracy
  Frechet       this project's Frechet distance (not Inception's FID): between
                Gaussians fitted to the classifier's pooled features (train_vit
                -W) of the samples and of the 10,000 test images (dev/frechet.py)

  dev/diffusion                                   the CPU study (vit, bimamba, mamba; about 50 minutes on 2 cores)
  dev/diffusion --models vit --steps 300 --per-class 4 --elbo 8 --out /tmp/d   a quick look

Run it alone: the training and sampling times are part of the table. Needs
make train_diffusion train_vit fashion-mnist, and matplotlib for
/usr/bin/python3 (or PYTHON).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys

PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")
TRAIN = "data/fashion_mnist_train.bin"
TEST = "data/fashion_mnist_test.bin"
CLASSIFIER_CMD = ("./train_vit -i data/fashion_mnist_train.bin -j data/fashion_mnist_test.bin -P 4 -v 4 -s 500 "
                  "-A 1 -f 1 -d 0 -R 0 -z 0 -w 0 -x 20000 -o {out}")


def run(cmd, log):
    """Runs a shell command, its output to log; returns the output; exits on failure."""
    print(f"$ {cmd}", flush=True)
    with open(log, "w") as f:
        r = subprocess.run(cmd, shell=True, stdout=f, stderr=subprocess.STDOUT)
    out = open(log).read()
    if r.returncode:
        sys.exit(f"error: `{cmd}` failed (exit {r.returncode}); its output is in {log}:\n{out[-2000:]}")
    return out


def grab(pattern, text, what):
    m = re.search(pattern, text)
    if not m:
        sys.exit(f"error: no {what} in the output")
    return m.group(1)


def baseline(a, real):
    """The table's first row: --per-class real training images of each class (the first ones), measured as the samples are."""
    sys.path.insert(0, "dev/reference")
    import numpy as np
    import formats
    labels, pixels, K = formats.read_images(TRAIN)
    pick = np.concatenate([np.nonzero(labels == k)[0][:a.per_class] for k in range(K)])
    path, feats = f"{a.out}/real_train.bin", f"{a.out}/real_train_features.bin"
    formats.write_images(path, labels[pick], pixels[pick], K)
    cls = run(f"./train_vit -e {a.classifier} -x 0 -i {TRAIN} -j {path} -W {feats}", f"{a.out}/real_train.log")
    fr = json.loads(run(f"{PYTHON} dev/frechet.py --json {feats} {real}", f"{a.out}/real_train_frechet.log"))
    return dict(model=f"real training images ({len(pick)})", params=0, steps=0, train_s=0.0, test_loss=float("nan"),
                bpd=float("nan"), frechet=fr["frechet"], agree=float(grab(r"final test acc ([0-9.]+)%", cls, "accuracy")),
                ms=float("nan"), cmd=None)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vit,bimamba,mamba", help="denoisers, comma-separated (vit, mamba, bimamba, mamba2)")
    p.add_argument("--steps", type=int, default=6000, help="training steps of each (default 6000, the cpu preset's)")
    p.add_argument("--flags", default="", help="more train_diffusion flags for every model")
    p.add_argument("--per-class", type=int, default=50, help="samples per class (default 50)")
    p.add_argument("--sample-steps", type=int, default=100, help="DDIM steps (default 100)")
    p.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale (default 4)")
    p.add_argument("--elbo", type=int, default=100, help="test images of the bits/dim (default 100)")
    p.add_argument("--classifier", default="out/fm_vit_flip/model.bin",
                   help="the Fashion-MNIST classifier (train_vit model file; default out/fm_vit_flip/model.bin)")
    p.add_argument("--out", default="out/diffusion")
    p.add_argument("--doc", default=None, help="where the PNG grids go (default: OUT)")
    a = p.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    doc = a.doc or a.out
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(doc, exist_ok=True)
    for path in (TRAIN, TEST):
        if not os.path.exists(path):
            sys.exit(f"error: {path} is missing; `make fashion-mnist` writes it")
    if not os.path.exists(a.classifier):
        out = os.path.dirname(a.classifier)
        run(CLASSIFIER_CMD.format(out=out), f"{a.out}/classifier.log")
    real = f"{a.out}/test_features.bin"
    clf_out = run(f"./train_vit -e {a.classifier} -x 0 -i {TRAIN} -j {TEST} -W {real}", f"{a.out}/test_features.log")
    clf_acc = float(grab(r"final test acc ([0-9.]+)%", clf_out, "classifier accuracy"))

    rows = [baseline(a, real)]
    for m in a.models.split(","):
        d = f"{a.out}/{m}"
        if os.path.exists(d):
            subprocess.run(["rm", "-rf", d], check=True)
        cmd = (f"./train_diffusion -M {m} -x {a.steps} -v 0 {a.flags} -o {d} -G {a.per_class} -k {a.sample_steps} "
               f"-g {a.guidance} -N {a.elbo}").replace("  ", " ")
        out = run(cmd, f"{a.out}/{m}.log")
        params = int(grab(r"\| (\d+) parameters \|", out, "parameter count"))
        train_s = float(grab(r"final test loss [0-9.]+ \| ([0-9.]+) s", out, "training time"))
        test_loss = float(grab(r"final test loss ([0-9.]+)", out, "test loss"))
        bpd = float(grab(r"bits/dim ([0-9.]+)", out, "bits/dim"))
        ms = float(grab(r", ([0-9.]+) ms per image", out, "sampling time"))
        feats = f"{d}/features.bin"
        cls = run(f"./train_vit -e {a.classifier} -x 0 -i {TRAIN} -j {d}/samples.bin -W {feats}", f"{d}/classify.log")
        agree = float(grab(r"final test acc ([0-9.]+)%", cls, "class agreement"))
        fr = json.loads(run(f"{PYTHON} dev/frechet.py --json {feats} {real}", f"{d}/frechet.log"))
        run(f"{PYTHON} dev/plot.py --images {d}/samples.bin --by-class --count 10 --out {doc}/{m}.png "
            f"--labels {m} --title '{m} denoiser, {a.steps} steps, DDIM {a.sample_steps}, guidance {a.guidance}'", f"{d}/plot.log")
        rows.append(dict(model=m, params=params, steps=a.steps, train_s=train_s, test_loss=test_loss, bpd=bpd,
                         frechet=fr["frechet"], agree=agree, ms=ms, cmd=cmd))
        print(f"{m}: {params} parameters, {train_s:.0f} s, test loss {test_loss:.4f}, bits/dim {bpd:.3f}, "
              f"Frechet {fr['frechet']:.2f}, agreement {agree:.1f}%, {ms:.1f} ms per image", flush=True)

    cpu = subprocess.run("lscpu | sed -n 's/^Model name: *//p'", shell=True, capture_output=True, text=True).stdout.strip()
    lines = [f"# Diffusion on Fashion-MNIST ({datetime.date.today()}, {cpu}, {os.cpu_count()} cores)", "",
             f"Classifier: {a.classifier} (test accuracy {clf_acc:.2f}%); samples: {a.per_class} per class, DDIM "
             f"{a.sample_steps} steps, guidance {a.guidance}; bits/dim over the first {a.elbo} test images.", "",
             "| denoiser | parameters | steps | training | test loss | bits/dim | Frechet (ours) | class agreement "
             "| sampling, per image |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["cmd"] is None:  # the real images' row
            lines.append(f"| {r['model']} | | | | | | {r['frechet']:.2f} | {r['agree']:.1f}% | |")
            continue
        lines.append(f"| {r['model']} | {r['params']:,} | {r['steps']} | {r['train_s'] / 60:.1f} min | "
                     f"{r['test_loss']:.4f} | {r['bpd']:.3f} | {r['frechet']:.2f} | {r['agree']:.1f}% | {r['ms']:.1f} ms |")
    lines += ["", "```bash"] + [r["cmd"] for r in rows if r["cmd"]] + ["```", ""]
    open(f"{a.out}/results.md", "w").write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

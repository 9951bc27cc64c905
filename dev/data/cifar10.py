"""
Prepares CIFAR-10 for the vision models: reads the official files and writes
them in the project's images format (dev/reference/formats.py: a header,
then per image one label byte and 3x32x32 uint8 pixels in CHW order, the
CIFAR-10 binary record layout).

Writes, into --out (default data/):
    cifar10_train.bin   50,000 images (data_batch_1..5, in order)
    cifar10_test.bin    10,000 images (test_batch)

Where the official files come from:
    --input DIR   a local copy: DIR (or DIR/cifar-10-batches-bin) holding the
                  binary version's data_batch_1.bin .. data_batch_5.bin and
                  test_batch.bin; or DIR (or DIR/cifar-10-batches-py) holding
                  the python version's pickles data_batch_1 .. data_batch_5 and
                  test_batch; or DIR holding either archive as downloaded
                  (cifar-10-binary.tar.gz, cifar-10-python.tar.gz)
    (nothing)     downloads cifar-10-binary.tar.gz into --out once, then
                  reads it (needs the network)

--synthetic writes a learnable set in the same format instead, for tests and
demos on machines without the data (cifar10_synthetic_train.bin and
cifar10_synthetic_test.bin, by default as many images as CIFAR-10): ten classes of shapes and textures (disk,
square, triangle, ring, plus, X, horizontal stripes, vertical stripes,
checkerboard, hollow square) at random positions, sizes and small tilts, on
a background with a random gradient, with Gaussian pixel noise. The
foreground and background colours are drawn per image, independently of
the class (and at least a set distance apart so the shape is visible), so
the class is in the shape, not the colour: the script fits a quadratic
Gaussian classifier on each image's mean colour and prints its test
accuracy, which stays near chance (10%). Every class looks the same after a
horizontal flip, so the flip augmentation keeps labels right.

--pixels also writes every image as a sequence of pixel tokens, for the
language models (train_gpt, train_mamba with -I 3072): 3072 tokens per
image in raster order, the R, G and B values of each pixel in turn
(token index (y*32 + x)*3 + channel), token = intensity 0..255, in the
tokens format (dev/reference/formats.py), images one after another in the
order of the images file; labels are not kept. Beside the images files:
    <prefix>_pixels_train.bin   tokens file, 3072 tokens per train image
    <prefix>_pixels_test.bin    tokens file, 3072 tokens per test image
    <prefix>_pixels_vocab.bin   vocab file of 256 tokens, token v named by its value ("0" .. "255")

Usage:
    python3 dev/data/cifar10.py --input ~/cifar-10-batches-bin
    python3 dev/data/cifar10.py                       # downloads
    python3 dev/data/cifar10.py --synthetic --train-count 50000 --test-count 10000 --seed 0
    python3 dev/data/cifar10.py --synthetic --pixels --train-count 10000 --test-count 1000 --prefix cifar10_synthetic_small
    python3 dev/data/cifar10.py --selftest            # checks the readers on fabricated files
"""

import argparse
import io
import math
import os
import pickle
import shutil
import sys
import tarfile
import tempfile

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import formats  # noqa: E402
from checks import Checks  # noqa: E402
from fetch import fetch  # noqa: E402

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE = "cifar-10-binary.tar.gz"
PY_ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
CLASSES = 10
RECORD = 1 + 3 * 32 * 32  # label byte + CHW pixels
PIXEL_VOCAB = 256  # a pixel token is an intensity


class DataError(Exception):
    """A problem with an input file; the message names it."""


# -----------------------------------------------------------------------------
# the official files


def parse_binary_batch(data, name):
    """One file of the binary version: records of a label byte + 3072 pixels."""
    if len(data) == 0 or len(data) % RECORD != 0:
        raise DataError(f"{name}: {len(data)} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].copy()
    bad = np.nonzero(labels >= CLASSES)[0]
    if len(bad):
        raise DataError(f"{name}: record {int(bad[0])} has label {int(labels[bad[0]])}, CIFAR-10 has {CLASSES} classes")
    return labels, records[:, 1:].reshape(-1, 3, 32, 32).copy()


def parse_python_batch(data, name):
    """One pickle of the python version: {b'data': (n, 3072) uint8, b'labels': [n ints]}."""
    try:
        d = pickle.loads(data, encoding="bytes")
        pixels = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:  # noqa: BLE001 (any unpickling problem is a bad file)
        raise DataError(f"{name}: not a CIFAR-10 python batch ({type(e).__name__}: {e})")
    if pixels.ndim != 2 or pixels.shape[1] != 3072 or labels.shape != (pixels.shape[0],) or len(labels) == 0:
        raise DataError(f"{name}: data {pixels.shape} and labels {labels.shape} are not n x 3072 and n")
    bad = np.nonzero((labels < 0) | (labels >= CLASSES))[0]
    if len(bad):
        raise DataError(f"{name}: image {int(bad[0])} has label {int(labels[bad[0]])}, CIFAR-10 has {CLASSES} classes")
    return labels.astype(np.uint8), pixels.reshape(-1, 3, 32, 32)


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})")


def find_batches(root):
    """
    The official batches under root: returns a function name -> (labels,
    pixels) and a description, or raises DataError naming what is missing.
    """
    for d in (root, os.path.join(root, "cifar-10-batches-bin")):
        if os.path.isfile(os.path.join(d, "data_batch_1.bin")):
            return (lambda n, d=d: parse_binary_batch(read_file(os.path.join(d, n + ".bin")), os.path.join(d, n + ".bin")),
                    f"binary version in {d}")
    for d in (root, os.path.join(root, "cifar-10-batches-py")):
        if os.path.isfile(os.path.join(d, "data_batch_1")):
            return (lambda n, d=d: parse_python_batch(read_file(os.path.join(d, n)), os.path.join(d, n)),
                    f"python version in {d}")
    for archive, suffix, parse in ((ARCHIVE, ".bin", parse_binary_batch), (PY_ARCHIVE, "", parse_python_batch)):
        path = os.path.join(root, archive)
        if os.path.isfile(path):
            members = read_archive(path, suffix)
            def get(n, members=members, path=path, suffix=suffix, parse=parse):
                if n + suffix not in members:
                    raise DataError(f"{path}: has no {n + suffix}")
                return parse(members[n + suffix], f"{path}:{n + suffix}")
            return get, f"archive {path}"
    raise DataError(f"--input {root}: no CIFAR-10 files (data_batch_1.bin, data_batch_1, {ARCHIVE} or {PY_ARCHIVE}, "
                    f"directly or in cifar-10-batches-bin/ or cifar-10-batches-py/)")


def read_archive(path, suffix):
    """The batch files of a CIFAR-10 tar.gz, by base name."""
    wanted = {n + suffix for n in TRAIN_BATCHES + [TEST_BATCH]}
    members = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar.getmembers():
                base = os.path.basename(m.name)
                if m.isfile() and base in wanted:
                    members[base] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable tar.gz archive ({e})")
    return members


def load_official(root):
    get, where = find_batches(root)
    parts = [get(n) for n in TRAIN_BATCHES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = get(TEST_BATCH)
    return train, test, where


def download(url, path):
    try:
        fetch(url, path, "pass --input DIR with a local copy of the CIFAR-10 files, or use --synthetic")
    except OSError as e:
        raise DataError(str(e))


# -----------------------------------------------------------------------------
# the synthetic set

SHAPES = ["disk", "square", "triangle", "ring", "plus", "x", "hstripes", "vstripes", "checker", "hollow_square"]


def shape_mask(cls, u, v, s, rng):
    """Boolean mask of class cls in coordinates (u, v) centred on the shape, half-size s."""
    r2 = u * u + v * v
    box = np.maximum(np.abs(u), np.abs(v))
    if cls == 0:
        return r2 <= s * s
    if cls == 1:
        return box <= 0.85 * s
    if cls == 2:  # apex up, base down (y grows downwards); symmetric under a horizontal flip
        return (v >= -s) & (v <= 0.8 * s) & (np.abs(u) <= (v + s) * (0.95 * s) / (1.8 * s))
    if cls == 3:
        return (r2 <= s * s) & (r2 >= (0.55 * s) ** 2)
    w = max(1.2, 0.22 * s)
    if cls == 4:
        return ((np.abs(u) <= w) & (np.abs(v) <= s)) | ((np.abs(v) <= w) & (np.abs(u) <= s))
    if cls == 5:
        a, b = (u + v) / np.sqrt(2.0), (u - v) / np.sqrt(2.0)
        return ((np.abs(a) <= w) & (np.abs(b) <= s)) | ((np.abs(b) <= w) & (np.abs(a) <= s))
    period = rng.uniform(2.6, 3.6)
    if cls == 6:
        return (box <= s) & (np.floor((v + s) / period) % 2 == 0)
    if cls == 7:
        return (box <= s) & (np.floor((u + s) / period) % 2 == 0)
    if cls == 8:
        return (box <= s) & ((np.floor((u + s) / period) + np.floor((v + s) / period)) % 2 == 0)
    if cls == 9:
        return (box <= s) & (box >= 0.6 * s)
    raise AssertionError(cls)


def random_colours(rng, min_distance=0.4):
    """Foreground and background colours in [0,1]^3, at least min_distance apart (Euclidean)."""
    while True:
        fg, bg = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(fg - bg) >= min_distance:
            return fg, bg


def synthetic_images(n, rng, noise=0.08, keep_clean=False):
    """
    n images (uint8 (n, 3, 32, 32)) and labels; classes balanced, in random
    order. keep_clean adds a third result: the images before the noise, in
    intensity units (float64, unclipped, unrounded).
    """
    labels = rng.permutation(np.arange(n) % CLASSES).astype(np.uint8)
    pixels = np.empty((n, 3, 32, 32), dtype=np.uint8)
    clean = np.empty((n, 3, 32, 32), dtype=np.float64) if keep_clean else None
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64) + 0.5
    for i in range(n):
        s = rng.uniform(6.0, 11.0)
        margin = s + 1.0
        cx, cy = rng.uniform(margin, 32 - margin, 2)
        tilt = np.radians(rng.uniform(-10.0, 10.0))
        dx, dy = xx - cx, yy - cy
        u = np.cos(tilt) * dx + np.sin(tilt) * dy
        v = -np.sin(tilt) * dx + np.cos(tilt) * dy
        mask = shape_mask(int(labels[i]), u, v, s, rng)
        fg, bg = random_colours(rng)
        # background: its colour with a random linear gradient of up to +-0.15
        g = rng.uniform(-0.15, 0.15, 2)
        ramp = (g[0] * (xx - 16) + g[1] * (yy - 16)) / 16.0
        img = bg[:, None, None] + ramp[None]
        img = np.where(mask[None], fg[:, None, None], img)
        if keep_clean:
            clean[i] = img * 255.0
        img = img + rng.normal(0.0, noise, img.shape)
        pixels[i] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return (labels, pixels, clean) if keep_clean else (labels, pixels)


def mean_colour_accuracy(train, test):
    """
    Test accuracy of a quadratic Gaussian classifier (one full-covariance
    Gaussian per class) on the per-image mean colour: how far the mean
    colour alone gets. Chance is 1/10.
    """
    def feats(pixels):
        return pixels.reshape(len(pixels), 3, -1).mean(-1) / 255.0

    xtr, xte = feats(train[1]), feats(test[1])
    scores = []
    for k in range(CLASSES):
        x = xtr[train[0] == k]
        mu = x.mean(0)
        cov = np.cov(x.T) + 1e-6 * np.eye(3)
        inv = np.linalg.inv(cov)
        d = xte - mu
        scores.append(-0.5 * np.einsum("ni,ij,nj->n", d, inv, d) - 0.5 * np.linalg.slogdet(cov)[1])
    return float((np.argmax(np.stack(scores, 1), 1) == test[0]).mean())


# -----------------------------------------------------------------------------
# pixels as tokens


def pixel_tokens(pixels):
    """
    uint8 images (N, 3, H, W) in CHW order -> uint16 tokens (N*H*W*3): per
    image in raster order (rows top to bottom, pixels left to right), the R,
    G, B intensities of each pixel in turn.
    """
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)).reshape(-1).astype(np.uint16)


def pixel_images(tokens, height=32, width=32):
    """The inverse of pixel_tokens: (N*H*W*3) tokens -> uint8 (N, 3, H, W)."""
    per = 3 * height * width
    if len(tokens) % per:
        raise DataError(f"{len(tokens)} tokens are not a whole number of {per}-token images")
    return np.asarray(tokens, dtype=np.uint8).reshape(-1, height, width, 3).transpose(0, 3, 1, 2)


def pixel_vocab():
    """Token v is the intensity v; its text is its value."""
    return [str(v) for v in range(PIXEL_VOCAB)]


def write_pixels(out, prefix, train, test):
    os.makedirs(out, exist_ok=True)
    for split, (labels, pixels) in (("train", train), ("test", test)):
        path = os.path.join(out, f"{prefix}_pixels_{split}.bin")
        tokens = pixel_tokens(pixels)
        formats.write_tokens(path, tokens, PIXEL_VOCAB)
        print(f"{split}: {len(labels):,} images as {len(tokens):,} pixel tokens -> {path}")
    path = os.path.join(out, f"{prefix}_pixels_vocab.bin")
    formats.write_vocab(path, pixel_vocab())
    print(f"vocab: {PIXEL_VOCAB} tokens (the intensities) -> {path}")


# the standard normal's CDF, elementwise over numpy arrays (erfc: accurate in the lower tail too)
normal_cdf = np.frompyfunc(lambda x: 0.5 * math.erfc(-x / math.sqrt(2.0)), 1, 1)


def noise_floor_bits(pixels, clean, noise):
    """
    What a model that knew every image's colours and shape exactly would
    pay for these noisy images, in bits per value: the mean of -log2 P(value
    | clean) under the generator's noise, a Gaussian of standard deviation
    noise*255 around the clean intensity, rounded to integers and clipped to
    0..255 (so value 0 takes all the mass below 0.5, value 255 all above
    254.5). Lower than noise_entropy_bits where colours saturate.
    """
    sigma = noise * 255.0
    v = pixels.astype(np.float64).reshape(-1)
    c = np.asarray(clean, dtype=np.float64).reshape(-1)
    hi = np.where(v >= 255, np.inf, (v + 0.5 - c) / sigma)
    lo = np.where(v <= 0, -np.inf, (v - 0.5 - c) / sigma)
    p = (normal_cdf(hi) - normal_cdf(lo)).astype(np.float64)
    return float(-np.log2(np.maximum(p, 1e-300)).mean())


def noise_entropy_bits(noise):
    """
    Entropy in bits of the synthetic set's pixel noise, a Gaussian of
    standard deviation noise*255 rounded to integers (clipping at 0 and 255
    ignored): about what a model that knew every image's colours and shape
    exactly would still pay per pixel value.
    """
    sigma = noise * 255.0
    k = np.arange(-int(10 * sigma) - 1, int(10 * sigma) + 2, dtype=np.float64)
    p = normal_cdf((k + 0.5) / sigma) - normal_cdf((k - 0.5) / sigma)  # P(rounds to k)
    p = p.astype(np.float64)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


# -----------------------------------------------------------------------------
# self-test of the readers on fabricated files


def selftest():
    """Fabricates official-layout files, runs the readers on them, checks everything; 'N passed, M failed'."""
    check = Checks()

    rng = np.random.default_rng(5)
    w = tempfile.mkdtemp()
    try:
        # 5 train batches of 3 records, a test batch of 4, random pixels and labels
        batches = {n: (rng.integers(0, 10, k).astype(np.uint8), rng.integers(0, 256, (k, 3, 32, 32)).astype(np.uint8))
                   for n, k in [(b, 3) for b in TRAIN_BATCHES] + [(TEST_BATCH, 4)]}
        want_train = (np.concatenate([batches[n][0] for n in TRAIN_BATCHES]),
                      np.concatenate([batches[n][1] for n in TRAIN_BATCHES]))
        want_test = batches[TEST_BATCH]

        def binary_bytes(labels, pixels):
            rec = np.empty((len(labels), RECORD), dtype=np.uint8)
            rec[:, 0] = labels
            rec[:, 1:] = pixels.reshape(len(labels), -1)
            return rec.tobytes()

        def python_bytes(labels, pixels):
            return pickle.dumps({b"batch_label": b"x", b"labels": [int(x) for x in labels],
                                 b"data": pixels.reshape(len(labels), -1), b"filenames": [b"f"] * len(labels)})

        layouts = {}
        d = os.path.join(w, "bin", "cifar-10-batches-bin")
        os.makedirs(d)
        for n, (lab, pix) in batches.items():
            with open(os.path.join(d, n + ".bin"), "wb") as f:
                f.write(binary_bytes(lab, pix))
        layouts["binary version (cifar-10-batches-bin/)"] = os.path.join(w, "bin")
        d = os.path.join(w, "py")
        os.makedirs(d)
        for n, (lab, pix) in batches.items():
            with open(os.path.join(d, n), "wb") as f:
                f.write(python_bytes(lab, pix))
        layouts["python version (pickles)"] = d
        for archive, suffix, to_bytes in ((ARCHIVE, ".bin", binary_bytes), (PY_ARCHIVE, "", python_bytes)):
            d = os.path.join(w, "tar_" + suffix.strip("."))
            os.makedirs(d)
            with tarfile.open(os.path.join(d, archive), "w:gz") as tar:
                for n, (lab, pix) in batches.items():
                    data = to_bytes(lab, pix)
                    info = tarfile.TarInfo(("cifar-10-batches-bin/" if suffix else "cifar-10-batches-py/") + n + suffix)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            layouts[f"archive {archive}"] = d

        for what, root in layouts.items():
            out = os.path.join(w, "out_" + os.path.basename(root))
            try:
                convert(root, out, "cifar10")
                lab, pix, k = formats.read_images(os.path.join(out, "cifar10_train.bin"))
                tlab, tpix, tk = formats.read_images(os.path.join(out, "cifar10_test.bin"))
                ok = (k == tk == 10 and np.array_equal(lab, want_train[0]) and np.array_equal(pix, want_train[1])
                      and np.array_equal(tlab, want_test[0]) and np.array_equal(tpix, want_test[1]))
                check(ok, f"{what}: 15 train and 4 test records read back label for label, pixel for pixel")
            except DataError as e:
                check(False, f"{what}: {e}")

        # bad official files are refused with one line naming the file
        d = os.path.join(w, "bad", "cifar-10-batches-bin")
        shutil.copytree(os.path.join(w, "bin", "cifar-10-batches-bin"), d)
        path = os.path.join(d, "data_batch_3.bin")
        good = open(path, "rb").read()
        for what, data in [("truncated record", good[:-5]), ("empty file", b""),
                           ("label 10", bytes([10]) + good[1:])]:
            with open(path, "wb") as f:
                f.write(data)
            try:
                load_official(os.path.dirname(d))
                check(False, f"bad binary batch ({what}) was accepted")
            except DataError as e:
                check(path in str(e) and "\n" not in str(e), f"bad binary batch ({what}) refused: {e}")
        with open(path, "wb") as f:
            f.write(good)
        os.remove(os.path.join(d, "test_batch.bin"))
        try:
            load_official(os.path.dirname(d))
            check(False, "missing test_batch.bin was accepted")
        except DataError as e:
            check("test_batch.bin" in str(e), f"missing test_batch.bin refused: {e}")
        try:
            find_batches(os.path.join(w, "nothing_here"))
            check(False, "a directory without CIFAR-10 files was accepted")
        except DataError as e:
            check("--input" in str(e), f"a directory without CIFAR-10 files refused: {e}")
        d = os.path.join(w, "badpy")
        shutil.copytree(layouts["python version (pickles)"], d)
        with open(os.path.join(d, "data_batch_2"), "wb") as f:
            f.write(b"not a pickle")
        try:
            load_official(d)
            check(False, "a corrupt python batch was accepted")
        except DataError as e:
            check(os.path.join(d, "data_batch_2") in str(e), f"a corrupt python batch refused: {e}")

        # the images format: bad files refused by the reader
        path = os.path.join(w, "out_bin", "cifar10_test.bin")
        good = open(path, "rb").read()
        for what, data in [("truncated", good[:-1]), ("label 10 of 10 classes", good[:1024] + bytes([10]) + good[1025:]),
                           ("wrong magic", (123).to_bytes(4, "little") + good[4:])]:
            bad = os.path.join(w, "bad_images.bin")
            with open(bad, "wb") as f:
                f.write(data)
            try:
                formats.read_images(bad)
                check(False, f"images file ({what}) was accepted")
            except ValueError as e:
                check(bad in str(e), f"images file ({what}) refused: {e}")

        # pixel tokens: the layout against the images file, and back
        out = os.path.join(w, "pix")
        write_split(out, "p", want_train, want_test)
        write_pixels(out, "p", want_train, want_test)
        for split, (lab, pix) in (("train", want_train), ("test", want_test)):
            ilab, ipix, _ = formats.read_images(os.path.join(out, f"p_{split}.bin"))
            tok, V = formats.read_tokens(os.path.join(out, f"p_pixels_{split}.bin"))
            n = len(ilab)
            per_image = tok.reshape(n, 32, 32, 3)
            # every token against the CHW record it came from, index by index
            y, x, c = 5, 17, 2
            ok = (V == 256 and len(tok) == n * 3072 and tok.dtype == np.uint16
                  and np.array_equal(per_image[:, y, x, c], ipix[:, c, y, x])
                  and all(int(tok[i * 3072 + (yy * 32 + xx) * 3 + cc]) == int(ipix[i, cc, yy, xx])
                          for i in range(n) for yy in (0, 31) for xx in (0, 13, 31) for cc in range(3))
                  and np.array_equal(pixel_images(tok), ipix))
            check(ok, f"pixel tokens of {n} {split} images: token (i*3072 + (y*32 + x)*3 + c) is pixel (c, y, x) of "
                      f"image i of the images file, and they convert back exactly")
        check(formats.read_vocab(os.path.join(out, "p_pixels_vocab.bin")) == [str(v) for v in range(256)],
              "pixel vocabulary: 256 tokens, token v named by its value")
        first = formats.read_tokens(os.path.join(out, "p_pixels_train.bin"))[0][:6]
        check([int(t) for t in first] == [int(want_train[1][0, c, 0, x]) for x in (0, 1) for c in range(3)],
              "the first six tokens are R, G, B of pixel (0, 0), then of pixel (0, 1)")
        h = noise_entropy_bits(0.08)
        want_h = 0.5 * np.log2(2 * np.pi * np.e * (0.08 * 255) ** 2)
        check(abs(h - want_h) < 1e-3, f"entropy of the rounded noise {h:.4f} bits, the continuous Gaussian's "
                                      f"{want_h:.4f} (rounding a wide Gaussian changes it by < 1e-3)")

        # the noise floor: the rounded noise's entropy where nothing clips, near 0 where all clips
        grey = np.full((10, 3, 32, 32), 127.3)
        noisy = np.clip(np.rint(grey + rng.normal(0.0, 0.08 * 255, grey.shape)), 0, 255)
        f = noise_floor_bits(noisy, grey, 0.08)
        check(abs(f - h) < 0.03, f"noise floor of mid-grey images {f:.4f} bits, the rounded noise's entropy {h:.4f} "
                                 f"(30,720 samples: standard error 0.006, bound 0.03)")
        f = noise_floor_bits(np.full(grey.shape, 255.0), np.full(grey.shape, 320.0), 0.08)
        want_f = -np.log2(0.5 * (1.0 + math.erf((320.0 - 254.5) / (0.08 * 255 * np.sqrt(2.0)))))
        check(abs(f - want_f) < 1e-9, f"noise floor of values clipped at 255 from 320: {f:.6f} bits, by hand "
                                      f"{want_f:.6f}")
        lab_c, pix_c, clean_c = synthetic_images(50, np.random.default_rng(4), keep_clean=True)
        lab_n, pix_n = synthetic_images(50, np.random.default_rng(4))
        f = noise_floor_bits(pix_c, clean_c, 0.08)
        check(np.array_equal(lab_c, lab_n) and np.array_equal(pix_c, pix_n) and 3.0 < f < h,
              f"keep_clean leaves the images as they were; their noise floor {f:.3f} bits is below {h:.3f} "
              f"(clipped colours cost less)")

        # the synthetic set: balanced, deterministic, not separable by mean colour
        a = synthetic_images(2000, np.random.default_rng(1))
        b = synthetic_images(2000, np.random.default_rng(1))
        check(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), "synthetic set is a function of the seed")
        check(np.all(np.bincount(a[0], minlength=10) == 200), "synthetic classes are balanced")
        c = synthetic_images(1000, np.random.default_rng(2))
        acc = mean_colour_accuracy(a, c)
        check(acc < 0.2, f"mean colour alone classifies the synthetic set at {100 * acc:.1f}% (chance 10%, bound 20%)")
        flipped = synthetic_images(1000, np.random.default_rng(3))
        check(flipped[1].shape == (1000, 3, 32, 32) and flipped[1].dtype == np.uint8, "synthetic images are 3x32x32 uint8")
    finally:
        shutil.rmtree(w)
    return check.summary()


# -----------------------------------------------------------------------------


def write_split(out, prefix, train, test):
    os.makedirs(out, exist_ok=True)
    for split, (labels, pixels) in (("train", train), ("test", test)):
        path = os.path.join(out, f"{prefix}_{split}.bin")
        formats.write_images(path, labels, pixels, CLASSES)
        counts = np.bincount(labels, minlength=CLASSES)
        print(f"{split}: {len(labels):,} images -> {path} (per class {counts.min()}..{counts.max()})")


def convert(root, out, prefix, pixels=False):
    train, test, where = load_official(root)
    print(f"read {len(train[0]):,} train and {len(test[0]):,} test images ({where})")
    write_split(out, prefix, train, test)
    if pixels:
        write_pixels(out, prefix, train, test)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=None, help="directory with the official CIFAR-10 files (default: download)")
    parser.add_argument("--out", default="data/", help="output directory")
    parser.add_argument("--synthetic", action="store_true", help="write the synthetic set instead")
    parser.add_argument("--train-count", type=int, default=50000, help="synthetic train images")
    parser.add_argument("--test-count", type=int, default=10000, help="synthetic test images")
    parser.add_argument("--seed", type=int, default=0, help="synthetic set's seed")
    parser.add_argument("--prefix", default=None,
                        help="output name prefix (default cifar10, or cifar10_synthetic with --synthetic)")
    parser.add_argument("--pixels", action="store_true",
                        help="also write the images as pixel tokens for the language models (<prefix>_pixels_*.bin)")
    parser.add_argument("--selftest", action="store_true", help="check the readers on fabricated files and exit")
    args = parser.parse_args()
    if args.selftest:
        sys.exit(0 if selftest() else 1)
    try:
        if args.synthetic:
            if args.train_count < CLASSES or args.test_count < CLASSES:
                parser.error(f"--train-count and --test-count must be at least {CLASSES}")
            if args.input:
                parser.error("--synthetic and --input exclude each other")
            rng = np.random.default_rng(args.seed)
            train = synthetic_images(args.train_count, rng)
            test_labels, test_pixels, test_clean = synthetic_images(args.test_count, rng, keep_clean=True)
            test = (test_labels, test_pixels)
            write_split(args.out, args.prefix or "cifar10_synthetic", train, test)
            if args.pixels:
                write_pixels(args.out, args.prefix or "cifar10_synthetic", train, test)
                print(f"noise floor of the test images: {noise_floor_bits(test[1], test_clean, 0.08):.3f} bits/dim "
                      f"(what a model that knew each image's colours and shape would still pay; "
                      f"{noise_entropy_bits(0.08):.2f} for the rounded noise without clipping)")
            acc = mean_colour_accuracy(train, test)
            print(f"mean colour alone: {100 * acc:.1f}% test accuracy (quadratic Gaussian classifier; chance 10%)")
            return
        root = args.input
        if root is None:
            root = args.out
            if not any(os.path.isfile(os.path.join(root, a)) for a in (ARCHIVE, PY_ARCHIVE)):
                os.makedirs(root, exist_ok=True)
                download(URL, os.path.join(root, ARCHIVE))
        convert(root, args.out, args.prefix or "cifar10", args.pixels)
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()

"""
Prepares Fashion-MNIST (Zalando's 28 x 28 grayscale images of clothing, 10
classes) for the vision models: reads the IDX files and writes them in the
project's images format (dev/reference/formats.py: a header, then per image
one label byte and 1 x 28 x 28 uint8 pixels), labels as in the IDX files:

    0 T-shirt/top  1 Trouser  2 Pullover  3 Dress  4 Coat
    5 Sandal       6 Shirt    7 Sneaker   8 Bag    9 Ankle boot

Writes, into --out (default data/):
    fashion_mnist_train.bin   60,000 images (train-images-idx3-ubyte, in order)
    fashion_mnist_test.bin    10,000 images (t10k-images-idx3-ubyte, in order)

The IDX files come from Debian's package dataset-fashion-mnist, which
installs them gzipped under /usr/share/datasets/fashion-mnist/ (the
default --input); any directory holding the four files, gzipped or not,
works:
    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]
An IDX file is a big-endian header (magic 0x00000803 for images, with the
count, rows and columns; 0x00000801 for labels, with the count) followed by
the uint8 values; the script checks the magic numbers, the counts (60,000
and 10,000, images and labels alike), the 28 x 28 shape, the file lengths
and the labels (< 10).

--pixels also writes every image as a sequence of 784 pixel tokens (token =
intensity, vocabulary 256) for the language models' -I 784 mode, as
dev/data/cifar10.py --pixels writes CIFAR's (its write_pixels):
    fashion_mnist_pixels_train.bin, fashion_mnist_pixels_test.bin, fashion_mnist_pixels_vocab.bin

Usage:
    python3 dev/data/fashion_mnist.py                      # from the Debian package's files
    python3 dev/data/fashion_mnist.py --input DIR --pixels
    python3 dev/data/fashion_mnist.py --selftest           # checks the reader on fabricated files
"""

import argparse
import gzip
import os
import sys
import tempfile

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)
import cifar10  # noqa: E402  (write_pixels: the pixel-token files)
import formats  # noqa: E402
from checks import Checks  # noqa: E402

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
PACKAGE = "dataset-fashion-mnist"
CLASSES = 10
SIDE = 28
IDX_IMAGES = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS = 0x00000801  # unsigned byte, 1 dimension
SPLITS = (("train", "train", 60000), ("test", "t10k", 10000))  # (ours, the files' prefix, count)
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")


class DataError(Exception):
    pass


def find_file(root, name):
    """root/name.gz or root/name; DataError naming the package when neither exists."""
    for candidate in (os.path.join(root, name + ".gz"), os.path.join(root, name)):
        if os.path.isfile(candidate):
            return candidate
    hint = (f"install Debian's package {PACKAGE} (apt-get install {PACKAGE}), which puts the IDX files in "
            f"{DEFAULT_DIR}, or give the directory that holds them (--input DIR; make fashion-mnist "
            f"FASHION_MNIST_DIR=DIR)")
    raise DataError(f"{os.path.join(root, name)}[.gz]: not found; {hint}")


def read_idx(path):
    """The bytes of an IDX file, gunzipped when its name ends in .gz."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})")


def parse_images(data, path, count):
    """IDX images -> uint8 (count, 1, 28, 28); DataError on a wrong magic, count, shape or length."""
    if len(data) < 16:
        raise DataError(f"{path}: {len(data)} bytes is shorter than the 16-byte header of IDX images")
    magic, n, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != IDX_IMAGES:
        raise DataError(f"{path}: magic 0x{magic:08x}, expected 0x{IDX_IMAGES:08x} (IDX images)")
    if n != count or rows != SIDE or cols != SIDE:
        raise DataError(f"{path}: {n} images of {rows} x {cols}, expected {count} of {SIDE} x {SIDE}")
    if len(data) != 16 + n * rows * cols:
        raise DataError(f"{path}: {len(data)} bytes, expected {16 + n * rows * cols} for {n} images of {rows} x {cols}")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)


def parse_labels(data, path, count):
    """IDX labels -> uint8 (count,); DataError on a wrong magic, count, length or a label >= 10."""
    if len(data) < 8:
        raise DataError(f"{path}: {len(data)} bytes is shorter than the 8-byte header of IDX labels")
    magic, n = (int.from_bytes(data[i:i + 4], "big") for i in range(0, 8, 4))
    if magic != IDX_LABELS:
        raise DataError(f"{path}: magic 0x{magic:08x}, expected 0x{IDX_LABELS:08x} (IDX labels)")
    if n != count:
        raise DataError(f"{path}: {n} labels, expected {count}")
    if len(data) != 8 + n:
        raise DataError(f"{path}: {len(data)} bytes, expected {8 + n} for {n} labels")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    bad = np.nonzero(labels >= CLASSES)[0]
    if len(bad):
        raise DataError(f"{path}: label {labels[bad[0]]} of image {bad[0]} is not below {CLASSES}")
    return labels


def load(root, counts=None):
    """{"train": (labels, pixels), "test": (labels, pixels)} from the IDX files in root."""
    out = {}
    for split, prefix, count in SPLITS:
        count = counts[split] if counts else count
        images_path = find_file(root, f"{prefix}-images-idx3-ubyte")
        labels_path = find_file(root, f"{prefix}-labels-idx1-ubyte")
        pixels = parse_images(read_idx(images_path), images_path, count)
        labels = parse_labels(read_idx(labels_path), labels_path, count)
        out[split] = (labels, pixels)
    return out


def write(sets, out, prefix, pixels):
    os.makedirs(out, exist_ok=True)
    for split, _, _ in SPLITS:
        labels, images = sets[split]
        path = os.path.join(out, f"{prefix}_{split}.bin")
        formats.write_images(path, labels, images, CLASSES)
        per_class = np.bincount(labels, minlength=CLASSES)
        print(f"{split}: {len(labels):,} images of 1 x {SIDE} x {SIDE} -> {path} "
              f"(per class {per_class.min()}..{per_class.max()})")
    if pixels:
        cifar10.write_pixels(out, prefix, sets["train"], sets["test"])


# -----------------------------------------------------------------------------
# self-test on fabricated IDX files


def idx_images_bytes(pixels, magic=IDX_IMAGES):
    n, _, rows, cols = pixels.shape
    return b"".join(v.to_bytes(4, "big") for v in (magic, n, rows, cols)) + pixels.tobytes()


def idx_labels_bytes(labels, magic=IDX_LABELS):
    return magic.to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.tobytes()


def selftest():
    """Fabricated IDX files through the reader and the writers, bad ones refused; 'N passed, M failed'."""
    check = Checks()

    rng = np.random.default_rng(0)
    counts = {"train": 7, "test": 3}
    want = {s: (rng.integers(0, CLASSES, counts[s]).astype(np.uint8),
                rng.integers(0, 256, (counts[s], 1, SIDE, SIDE)).astype(np.uint8)) for s in counts}
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "idx"), os.path.join(d, "out")
        os.makedirs(src)
        for split, prefix, _ in SPLITS:  # the train files gzipped (as Debian ships them), the test files plain
            labels, pixels = want[split]
            opener = (lambda p: gzip.open(p + ".gz", "wb")) if split == "train" else (lambda p: open(p, "wb"))
            with opener(os.path.join(src, f"{prefix}-images-idx3-ubyte")) as f:
                f.write(idx_images_bytes(pixels))
            with opener(os.path.join(src, f"{prefix}-labels-idx1-ubyte")) as f:
                f.write(idx_labels_bytes(labels))
        write(load(src, counts), out, "f", pixels=True)
        same = True
        for split in counts:
            labels, pixels, k = formats.read_images(os.path.join(out, f"f_{split}.bin"))
            same = same and k == CLASSES and np.array_equal(labels, want[split][0]) and \
                np.array_equal(pixels, want[split][1])
        check(same, "IDX files (gzipped and plain) -> images files of 1 x 28 x 28, labels and pixels exact")
        tokens, V = formats.read_tokens(os.path.join(out, "f_pixels_test.bin"))
        check(V == 256 and len(tokens) == 3 * 784 and np.array_equal(tokens[:784], want["test"][1][0].reshape(-1)),
              f"pixel tokens: {len(tokens)} tokens for 3 test images, vocabulary {V}, raster order")

        def refused(what, data, parse, want_text):
            try:
                parse(data, "x", 7)
                check(False, f"{what}: accepted")
            except DataError as e:
                check(want_text in str(e), f"{what} refused: {e}")

        labels, pixels = want["train"]
        refused("images with the labels' magic", idx_images_bytes(pixels, IDX_LABELS), parse_images, "magic")
        refused("labels with the images' magic", idx_labels_bytes(labels, IDX_IMAGES), parse_labels, "magic")
        refused("6 images where 7 are expected", idx_images_bytes(pixels[:6]), parse_images, "expected 7")
        refused("a truncated images file", idx_images_bytes(pixels)[:-1], parse_images, "bytes")
        refused("images of 28 x 27", idx_images_bytes(pixels[..., :27].copy()), parse_images, "28 x 27")
        bad = labels.copy()
        bad[2] = 10
        refused("a label of 10", idx_labels_bytes(bad), parse_labels, "label 10")
        try:
            load(os.path.join(d, "nowhere"))
            check(False, "a missing directory: accepted")
        except DataError as e:
            check(PACKAGE in str(e) and "train-images-idx3-ubyte" in str(e), f"a missing file refused: {e}")
    return check.summary()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=DEFAULT_DIR, help=f"directory of the IDX files (default {DEFAULT_DIR})")
    parser.add_argument("--out", default="data/", help="output directory")
    parser.add_argument("--prefix", default="fashion_mnist", help="output name prefix")
    parser.add_argument("--pixels", action="store_true",
                        help="also write the images as pixel tokens for the language models (<prefix>_pixels_*.bin)")
    parser.add_argument("--train-count", type=int, default=0,
                        help="write only the first N training images (a subset small enough to send; default all)")
    parser.add_argument("--selftest", action="store_true", help="check the reader on fabricated files and exit")
    args = parser.parse_args()
    if args.train_count < 0:
        sys.exit(f"error: --train-count {args.train_count}: must be 0 (all) or more")
    if args.selftest:
        sys.exit(0 if selftest() else 1)
    try:
        sets = load(args.input)
        if args.train_count:
            labels, pixels = sets["train"]
            if args.train_count > len(labels):
                raise DataError(f"--train-count {args.train_count}: the training set has {len(labels):,} images")
            sets["train"] = (labels[:args.train_count], pixels[:args.train_count])
        print(f"read {len(sets['train'][0]):,} train and {len(sets['test'][0]):,} test images from {args.input}")
        write(sets, args.out, args.prefix, args.pixels)
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()

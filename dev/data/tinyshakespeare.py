"""
Prepares tinyshakespeare for the char-level language models, exactly as
nanoGPT's shakespeare_char: the vocabulary is the sorted set of distinct
characters of the whole text (65 of them), the first 90% of the characters
are the train split and the last 10% the val split.

Writes, into --out (default data/):
    tinyshakespeare_train.bin   tokens file (uint16 char ids)
    tinyshakespeare_val.bin     tokens file
    tinyshakespeare_vocab.bin   vocab file (one UTF-8 char per token id)

The text (1,115,394 characters) ships with the repository in
dev/data/tinyshakespeare/input.txt, so no network is needed.

Usage:
    python dev/data/tinyshakespeare.py                  # the shipped input.txt
    python dev/data/tinyshakespeare.py --input FILE     # another copy
    python dev/data/tinyshakespeare.py --download       # fetch it instead
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import formats  # noqa: E402
from fetch import fetch  # noqa: E402

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def download(url, path):
    try:
        fetch(url, path, "pass --input PATH with a local copy of tinyshakespeare's input.txt")
    except OSError as e:
        sys.exit(f"error: {e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shipped = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tinyshakespeare", "input.txt")
    parser.add_argument("--input", default=shipped, help="the text (default: the copy in the repository)")
    parser.add_argument("--download", action="store_true", help="download the text instead of reading --input")
    parser.add_argument("--out", default="data/", help="output directory")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    path = args.input
    if args.download:
        # download once into the output directory, reuse afterwards
        path = os.path.join(args.out, "tinyshakespeare_input.txt")
        if not os.path.exists(path):
            download(URL, path)
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    print(f"read {len(text):,} characters from {path}")

    # the vocabulary: all distinct characters, sorted; token id = index
    chars = sorted(set(text))
    V = len(chars)
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = [stoi[ch] for ch in text]

    # first 90% train, last 10% val
    n = len(ids)
    split = int(n * 0.9)
    train, val = ids[:split], ids[split:]

    train_path = os.path.join(args.out, "tinyshakespeare_train.bin")
    val_path = os.path.join(args.out, "tinyshakespeare_val.bin")
    vocab_path = os.path.join(args.out, "tinyshakespeare_vocab.bin")
    formats.write_tokens(train_path, train, V)
    formats.write_tokens(val_path, val, V)
    formats.write_vocab(vocab_path, chars)

    print(f"vocab size: {V}")
    print(f"train has {len(train):,} tokens -> {train_path}")
    print(f"val has {len(val):,} tokens -> {val_path}")
    print(f"vocab -> {vocab_path}")


if __name__ == "__main__":
    main()

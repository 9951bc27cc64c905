"""
Writes the first N tokens of a tokens file as a tokens file of its own (the
same vocabulary): the small training set of the overfitting study
(dev/overfit/run.sh), on which a small model memorizes within minutes.

    python3 dev/overfit/subset.py data/tinyshakespeare_train.bin data/overfit_train_60000.bin 60000
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import formats  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="tokens file to cut")
    parser.add_argument("dst", help="tokens file to write")
    parser.add_argument("count", type=int, help="tokens to keep, from the start")
    args = parser.parse_args()
    try:
        tokens, vocab_size = formats.read_tokens(args.src)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    if not 1 < args.count <= len(tokens):
        sys.exit(f"error: count {args.count}: {args.src} has {len(tokens)} tokens (need 2 to {len(tokens)})")
    formats.write_tokens(args.dst, list(tokens[:args.count]), vocab_size)
    print(f"wrote {args.dst}: the first {args.count} of {len(tokens)} tokens of {args.src}, vocabulary {vocab_size}")


if __name__ == "__main__":
    main()

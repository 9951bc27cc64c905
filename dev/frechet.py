"""
The Frechet distance between two sets of features, as FID computes it from
Inception features; here the features are what a vision trainer's -W writes
(the pooled features of a classifier, e.g. train_vit's on Fashion-MNIST):

  ./train_vit -e out/fm_vit_flip/model.bin -x 0 -i data/fashion_mnist_train.bin \\
      -j data/fashion_mnist_test.bin -W test_feats.bin
  ./train_vit -e out/fm_vit_flip/model.bin -x 0 -i data/fashion_mnist_train.bin \\
      -j SAMPLES.bin -W sample_feats.bin
  python3 dev/frechet.py sample_feats.bin test_feats.bin
  frechet 12.3456 (N1 1000, N2 10000, D 64)

A Gaussian is fitted to each set (mean mu, covariance S with N-1
normalization, as np.cov), and the distance is

  ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

in float64 with numpy only: Tr((S1 S2)^{1/2}) is the sum of the square roots
of the eigenvalues (clipped at 0) of the symmetric PSD matrix
S1^{1/2} S2 S1^{1/2}, which has the eigenvalues of S1 S2; S1^{1/2} from
eigh (eigenvalues clipped at 0).

Features file (llmc/vision_trainer.h, -W): a header of 256 little-endian
int32, [0] 20261207 (the magic), [1] 1 (the version), [2] N rows, [3] D
columns, the rest 0; then N * D float32, row by row.

  --json   prints one JSON object instead of the line:
           {"frechet": ..., "n1": ..., "n2": ..., "d": ..., "mean_term": ..., "trace_term": ...}
  --check  the self-test (no files): a set's distance to itself is 0 (below
           1e-6 of the trace of its covariance, on sampled sets, one of them
           with fewer rows than columns), and the matrix function on exact
           diagonal covariances (closed form sum (sqrt(a) - sqrt(b))^2 +
           ||mu1 - mu2||^2, a zero variance among them), on rotated ones (the
           same, for R diag(a) R^T and R diag(b) R^T of one rotation R, which
           commute) and on a non-commuting 2 x 2 pair (Tr sqrt(P) =
           sqrt(tr P + 2 sqrt(det P))), each to 1e-9 relative; ends
           "N passed, M failed"
"""

import argparse
import json
import sys

import numpy as np

MAGIC = 20261207
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


def fail(msg):
    raise SystemExit(f"error: {msg}")


def read_features(path):
    """(N, D) float64 array of a features file; fails with one line naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail(f"{path}: cannot open ({e.strerror})")
    if len(data) < HEADER_BYTES:
        fail(f"{path}: too short for a features file ({len(data)} bytes, header is {HEADER_BYTES})")
    header = np.frombuffer(data, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        fail(f"{path}: not a features file (magic {int(header[0])}, expected {MAGIC}; a trainer's -W writes them)")
    if header[1] != VERSION:
        fail(f"{path}: features file version {int(header[1])}, this reads version {VERSION}")
    n, d = int(header[2]), int(header[3])
    if n < 0 or d < 1:
        fail(f"{path}: header says {n} rows of {d} columns")
    if header[4:].any():
        fail(f"{path}: header slots after [3] are not 0")
    expected = HEADER_BYTES + 4 * n * d
    if len(data) != expected:
        fail(f"{path}: file is {len(data)} bytes, expected {expected} for {n} rows of {d} float32")
    x = np.frombuffer(data, dtype="<f4", offset=HEADER_BYTES).reshape(n, d).astype(np.float64)
    if not np.isfinite(x).all():
        fail(f"{path}: features that are not finite (row {int(np.nonzero(~np.isfinite(x).all(axis=1))[0][0])})")
    return x


def write_features(path, x):
    """Writes (N, D) features as the trainers' -W does (for tests)."""
    x = np.asarray(x, dtype="<f4")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:4] = [MAGIC, VERSION, x.shape[0], x.shape[1]]
    with open(path, "wb") as f:
        f.write(header.tobytes() + x.tobytes())


def sqrtm_psd(s):
    """The symmetric square root of a symmetric PSD matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_terms(mu1, s1, mu2, s2):
    """(||mu1 - mu2||^2, Tr(S1 + S2 - 2 (S1 S2)^{1/2})) of two Gaussians, float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    r1 = sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    m = (m + m.T) / 2  # symmetric up to rounding; eigvalsh reads one triangle
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff), float(np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def frechet_distance(mu1, s1, mu2, s2):
    a, b = frechet_terms(mu1, s1, mu2, s2)
    return a + b


def gaussian(x):
    """(mean, covariance with N-1 normalization) of (N, D) rows."""
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def self_test():
    passed = failed = 0

    def check(name, good, detail):
        nonlocal passed, failed
        print(f"{'ok  ' if good else 'FAIL'} {name}: {detail}")
        passed, failed = passed + good, failed + (not good)

    rng = np.random.default_rng(0)
    # a set against itself: 0, up to rounding (below 1e-6 of the trace; ~1e-13 when S has full rank, ~1e-8 when
    # rank-deficient: each zero eigenvalue comes out of eigh as +-1e-16 of the scale, and its square root as 1e-8)
    for n, d in ((1000, 64), (300, 16), (50, 64)):  # the last: S rank-deficient (N - 1 < D)
        x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)
        mu, s = gaussian(x)
        f = frechet_distance(mu, s, mu, s)
        rel = abs(f) / np.trace(s)
        check(f"a set against itself ({n} x {d})", rel < 1e-6, f"distance {f:.3e}, {rel:.1e} of Tr(S)")
    # exact diagonal covariances against the closed form
    for d in (1, 8, 64):
        a, b = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
        a[0] = 0.0  # a zero variance (PSD, not PD)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        want = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum() + ((mu1 - mu2) ** 2).sum())
        got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
        rel = abs(got - want) / want
        check(f"diagonal covariances, D {d}", rel < 1e-9, f"{got:.12g} vs closed form {want:.12g}, rel {rel:.1e}")
        # the same covariances in a rotated basis: R diag(a) R^T, R diag(b) R^T commute, same closed form (all
        # variances positive: a zero one comes out of the rotation as +-1e-16, whose square root is 1e-8)
        a[0] = 0.5
        want = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum() + ((mu1 - mu2) ** 2).sum())
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        got = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
        rel = abs(got - want) / want
        check(f"rotated commuting covariances, D {d}", rel < 1e-9, f"{got:.12g} vs {want:.12g}, rel {rel:.1e}")
    # non-commuting 2 x 2: S1 = diag(4, 1), S2 = [[2, 1], [1, 2]]: Tr sqrt(S1 S2) = sqrt(tr + 2 sqrt(det))
    s1, s2 = np.diag([4.0, 1.0]), np.array([[2.0, 1.0], [1.0, 2.0]])
    p = s1 @ s2
    want = np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(np.trace(p) + 2.0 * np.sqrt(np.linalg.det(p)))
    got = frechet_distance(np.zeros(2), s1, np.zeros(2), s2)
    rel = abs(got - want) / want
    check("non-commuting 2 x 2 covariances", rel < 1e-9, f"{got:.12g} vs {want:.12g}, rel {rel:.1e}")
    # symmetric in its arguments
    x, y = rng.standard_normal((200, 8)), 1.5 * rng.standard_normal((300, 8)) + 0.3
    f1 = frechet_distance(*gaussian(x), *gaussian(y))
    f2 = frechet_distance(*gaussian(y), *gaussian(x))
    check("symmetric", abs(f1 - f2) <= 1e-9 * f1, f"{f1:.12g} vs {f2:.12g}")
    print(f"{passed} passed, {failed} failed")
    return failed == 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", metavar="FEATURES", help="two features files (a trainer's -W)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the line")
    p.add_argument("--check", action="store_true", help="run the self-test")
    args = p.parse_args()
    if args.check:
        if args.files:
            fail("--check takes no files")
        sys.exit(0 if self_test() else 1)
    if len(args.files) != 2:
        fail(f"give two features files ({len(args.files)} given)")
    x1, x2 = (read_features(f) for f in args.files)
    for path, x in zip(args.files, (x1, x2)):
        if x.shape[0] < 2:
            fail(f"{path}: {x.shape[0]} rows; a covariance needs at least 2")
    if x1.shape[1] != x2.shape[1]:
        fail(f"{args.files[1]}: {x2.shape[1]} columns, but {args.files[0]} has {x1.shape[1]} (features of one model?)")
    mean_term, trace_term = frechet_terms(*gaussian(x1), *gaussian(x2))
    f = mean_term + trace_term
    n1, n2, d = x1.shape[0], x2.shape[0], x1.shape[1]
    if args.json:
        print(json.dumps({"frechet": f, "n1": n1, "n2": n2, "d": d, "mean_term": mean_term, "trace_term": trace_term}))
    else:
        print(f"frechet {f:.4f} (N1 {n1}, N2 {n2}, D {d})")


if __name__ == "__main__":
    main()

"""
Fits the polynomial of llmc/gelu.cuh's erfc: erfc(z) e^{z^2} = t P(t),
t = 1/(1 + p z), P of degree `deg`, by least squares on the relative error
at Chebyshev-spaced t in (0, 1], for a few p and degrees; prints each fit's
max relative error evaluated in float32 (Horner, as the kernel), then the
best coefficients, lowest degree first.

    /usr/bin/python3 dev/fit_erfc.py
"""
import numpy as np
from scipy.special import erfcx  # erfc(z) e^{z^2}


def fit(p, deg, nodes=4000):
    k = np.arange(nodes)
    t = 0.5 * (1 - np.cos(np.pi * (k + 0.5) / nodes))
    t = t[t > 1e-4]
    r = erfcx((1 / t - 1) / p)
    basis = np.vander(t, deg + 1, increasing=True) * t[:, None]
    coef, *_ = np.linalg.lstsq(basis / r[:, None], np.ones_like(r), rcond=None)
    return coef.astype(np.float32)


def max_rel_err_fp32(p, coef):
    t = np.linspace(1e-4, 1, 200001)
    ref = erfcx((1 / t - 1) / p)
    t32 = t.astype(np.float32)
    acc = np.full_like(t32, coef[-1])
    for c in coef[-2::-1]:
        acc = acc * t32 + c
    return float(np.max(np.abs((acc * t32).astype(np.float64) - ref) / ref))


best = None
for p in [0.3, 0.4, 0.5, 0.6]:
    for deg in [9, 10, 11]:
        coef = fit(p, deg)
        err = max_rel_err_fp32(p, coef)
        print(f"p {p} degree {deg}: max relative error {err:.3e}")
        if best is None or err < best[0]:
            best = (err, p, deg, coef)
err, p, deg, coef = best
print(f"best: p {p} degree {deg} error {err:.3e}")
print(", ".join(repr(float(c)) for c in coef))

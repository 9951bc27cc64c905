/*
Elementary functions written as plain arithmetic, so that g++ vectorizes a
loop that calls them (glibc's expf and erff are scalar calls) and nvcc
compiles the same code for the GPU. Only multiplies, fmaf, fabsf, copysignf,
one select and float <-> int bit casts: no tables, no branches, no libm
calls, no float -> int conversion. (g++ vectorizes a select only when
neither side needs arithmetic of its own and no later select depends on it:
x < a ? b : x is fine, x < a ? 0 : f(x) or two clamps in a row are not.)

fast_expf(x): e^x by Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2 (n
rounded by adding 1.5 * 2^23; ln2 split in a high part with few bits, so
n * ln2_hi is exact, and a low part),
e^r by its Taylor polynomial of degree 7 (truncation error below 1e-8
relative), times 2^n built in the exponent bits. Max relative error against
double-precision exp of the same fp32 input, measured over [-87, 88]
(test_backend.cu prints it): 7.6e-8, under 1 ulp (expf: 0.5 ulp). Inputs above 88
are clamped to 88 (e^88 = 1.65e38; expf overflows to inf only past 88.72);
inputs below about -87.7 give 0 (expf gives subnormals below 1.2e-38
there); NaN gives NaN.
*/
#pragma once
#include "cuda_common.h"

#include <cstring>

__host__ __device__ __forceinline__ float fast_int_bits_as_float(int i) {
    float f;
    memcpy(&f, &i, sizeof(f));
    return f;
}
__host__ __device__ __forceinline__ int fast_float_bits_as_int(float f) {
    int i;
    memcpy(&i, &f, sizeof(i));
    return i;
}

__host__ __device__ __forceinline__ float fast_expf(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f;        // 15 significant bits: n * ln2_hi is exact for |n| < 256
    const float ln2_lo = 1.42860682030941723e-06f;  // ln2 - ln2_hi
    const float round_magic = 12582912.0f;          // 1.5 * 2^23: adding it rounds to an integer, kept in the low bits
    // |x| <= 88 by one select (two in a row would be split into branches by
    // g++); NaN passes through
    float limit = copysignf(88.0f, x);
    float xc = fabsf(x) > 88.0f ? limit : x;
    float t = fmaf(xc, log2e, round_magic);
    int k = fast_float_bits_as_int(t) - fast_float_bits_as_int(round_magic);  // n = round(x / ln2), in [-127, 127]
    float n = t - round_magic;
    float r = fmaf(n, -ln2_hi, xc);  // x - n ln2, |r| <= ln2 / 2
    r = fmaf(n, -ln2_lo, r);
    // e^r = sum r^k / k!, k <= 7, by Horner
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    // 2^n in the exponent bits; n = -127 (x below about -87.7) gives the bits of 0.0f
    return p * fast_int_bits_as_float((int)((unsigned)(k + 127) << 23));  // unsigned: NaN input gives garbage k, not UB
}

// log(1 + u) for u >= 0 (u = 0 .. about 1e38). w = 1 + u rounded; log(w) by
// w = 2^k m, m in [sqrt(1/2), sqrt(2)) taken from the bits (integer ops
// only), log m = 2 atanh(s), s = (m - 1)/(m + 1), |s| <= 0.172, by its odd
// series to s^9 (truncation below 1e-9 relative); plus (u - (w - 1)) / w,
// the first-order correction for the rounding of 1 + u, which keeps the
// relative accuracy for small u (log1p(1e-3) to ~1 ulp, where log(1 + u)
// alone loses 4 digits). Max relative error measured: see test_backend.cu.
__host__ __device__ __forceinline__ float fast_log1pf(float u) {
    const float ln2_hi = 0.693145751953125f;
    const float ln2_lo = 1.42860682030941723e-06f;
    float w = 1.0f + u;
    // move the mantissa range [1, 2) to [sqrt(1/2), sqrt(2)): add the bits of
    // 1 - bits of sqrt(1/2) before taking the exponent
    int iw = fast_float_bits_as_int(w) + (0x3f800000 - 0x3f3504f3);
    int k = (iw >> 23) - 127;
    float m = fast_int_bits_as_float((iw & 0x007fffff) + 0x3f3504f3);
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float q = 1.0f / 9.0f;
    q = fmaf(q, z, 1.0f / 7.0f);
    q = fmaf(q, z, 1.0f / 5.0f);
    q = fmaf(q, z, 1.0f / 3.0f);
    float log_m = 2.0f * s + 2.0f * s * z * q;
    float kf = (float)k;
    float c = (u - (w - 1.0f)) / w;
    return fmaf(kf, ln2_hi, log_m + fmaf(kf, ln2_lo, c));
}

// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow, no
// threshold select; equals x in fp32 above about 17 (PyTorch returns x
// above 20: the same values)
__host__ __device__ __forceinline__ float fast_softplusf(float x) {
    float pos = x > 0.0f ? x : 0.0f;
    return pos + fast_log1pf(fast_expf(-fabsf(x)));
}

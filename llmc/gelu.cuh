/*
GELU, the erf form (PyTorch's default): gelu(x) = x * Phi(x), with Phi the
standard normal CDF, forward and backward. Span kernels (elementwise.cuh):
one element per thread on the GPU, a contiguous span per thread on the host.

Phi is computed from erfc alone, branch-free, so that the loop vectorizes
and keeps its relative accuracy in the negative tail (where 1 + erf(x/sqrt2)
cancels): with z = |x|/sqrt(2) and q = erfc(z)/2 = Phi(-|x|),
  Phi(x) = q for x < 0, 1 - q for x >= 0  =  s q + (1 - s)/2, s = -sign(x)
and erfc(z) = e^{-z^2} R(t), t = 1/(1 + 0.4 z), R(t) = t P(t) with P of
degree 11 fitted (least squares on relative error, dev/fit_erfc.py) to
erfc(z) e^{z^2}: max relative error of R in fp32 about 2.3e-7. e^{-z^2} =
e^{-x^2/2} from x^2 split exactly in two floats (fma), so the tail keeps its
relative accuracy; the backward pass reuses it for the density. Measured errors against
double precision: test_backend.cu.
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"
#include "fast_math.cuh"

#define GELU_INV_SQRT2 0.70710678118654752f
#define GELU_INV_SQRT_2PI 0.39894228040143268f

// Phi(x) and the density phi(x)
__host__ __device__ __forceinline__ void gelu_phi(float x, float* cdf, float* pdf) {
    float z = fabsf(x) * GELU_INV_SQRT2;
    float t = 1.0f / fmaf(0.4f, z, 1.0f);
    float p = 0.002036301651969552f;
    p = fmaf(p, t, -0.0403425432741642f);
    p = fmaf(p, t, 0.16675259172916412f);
    p = fmaf(p, t, -0.27076950669288635f);
    p = fmaf(p, t, 0.1670040339231491f);
    p = fmaf(p, t, -0.06279968470335007f);
    p = fmaf(p, t, 0.08949014544487f);
    p = fmaf(p, t, 0.11777064949274063f);
    p = fmaf(p, t, 0.17190402746200562f);
    p = fmaf(p, t, 0.20760191977024078f);
    p = fmaf(p, t, 0.22567622363567352f);
    p = fmaf(p, t, 0.22567583620548248f);
    // e^{-z^2} = e^{-x^2/2}, with x^2 = h + l exactly (l by fma): e^{-h/2} (1 - l/2); -z * z in fp32
    // would carry a relative error of about x^2/2 * 1.2e-7 into the tail
    float h = x * x, l = fmaf(x, x, -h);
    float ez = fast_expf(-0.5f * h) * fmaf(-0.5f, l, 1.0f);
    float q = 0.5f * ez * (t * p);  // erfc(z) / 2
    float s = copysignf(1.0f, -x);
    *cdf = fmaf(s, q, 0.5f - 0.5f * s);
    *pdf = GELU_INV_SQRT_2PI * ez;
}

__global__ void gelu_forward_kernel(float* out, const float* inp, long n, int span) {
    long i0, i1;
    span_range(&i0, &i1, n, span);
    for (long i = i0; i < i1; i++) {
        float x = inp[i], cdf, pdf;
        gelu_phi(x, &cdf, &pdf);
        out[i] = x * cdf;
    }
}

// dinp = dout * (Phi(x) + x * phi(x)); in place allowed (dinp == dout)
__global__ void gelu_backward_kernel(float* dinp, const float* inp, const float* dout, long n, int span) {
    long i0, i1;
    span_range(&i0, &i1, n, span);
    for (long i = i0; i < i1; i++) {
        float x = inp[i], cdf, pdf;
        gelu_phi(x, &cdf, &pdf);
        dinp[i] = dout[i] * fmaf(x, pdf, cdf);
    }
}

void gelu_forward(float* out, const float* inp, long n) {
    LAUNCH(gelu_forward_kernel, span_blocks(n), kernel_choices.elementwise_threads, 0)(out, inp, n, kernel_choices.elementwise_span);
    cudaCheck(cudaGetLastError());
}

void gelu_backward(float* dinp, const float* inp, const float* dout, long n) {
    LAUNCH(gelu_backward_kernel, span_blocks(n), kernel_choices.elementwise_threads, 0)(dinp, inp, dout, n, kernel_choices.elementwise_span);
    cudaCheck(cudaGetLastError());
}

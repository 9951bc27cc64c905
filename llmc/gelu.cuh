/*
GELU, the erf form (PyTorch's default): gelu(x) = x * Phi(x), with Phi the
standard normal CDF. One thread per element, forward and backward.
*/
#pragma once
#include "cuda_common.h"

#define GELU_INV_SQRT2 0.70710678118654752f
#define GELU_INV_SQRT_2PI 0.39894228040143268f

__global__ void gelu_forward_kernel(float* out, const float* inp, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + erff(x * GELU_INV_SQRT2));
}

// dinp = dout * (Phi(x) + x * phi(x))
__global__ void gelu_backward_kernel(float* dinp, const float* inp, const float* dout, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = inp[i];
    float cdf = 0.5f * (1.0f + erff(x * GELU_INV_SQRT2));
    float pdf = GELU_INV_SQRT_2PI * expf(-0.5f * x * x);
    dinp[i] = dout[i] * (cdf + x * pdf);
}

void gelu_forward(float* out, const float* inp, long n) {
    LAUNCH(gelu_forward_kernel, CEIL_DIV(n, 256), 256, 0)(out, inp, n);
    cudaCheck(cudaGetLastError());
}

void gelu_backward(float* dinp, const float* inp, const float* dout, long n) {
    LAUNCH(gelu_backward_kernel, CEIL_DIV(n, 256), 256, 0)(dinp, inp, dout, n);
    cudaCheck(cudaGetLastError());
}

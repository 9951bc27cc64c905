/*
Causal depthwise conv1d over time, kernel K = 4, with bias, fused with SiLU
(Mamba's conv: nn.Conv1d(E, E, 4, groups=E, padding=3) cut to the first T
outputs):
  conv[b,t,e] = bias[e] + sum_k w[e,k] * x[b, t-(K-1)+k, e]   (x = 0 before t = 0)
  u[b,t,e]    = silu(conv[b,t,e])
x is a column slice of a wider activation (row distance x_stride), as the
first E channels of in_proj's output are.

The forward pass takes an optional left context x_prev (B, E, K-1): the K-1
inputs before position 0, oldest first (the recurrent step's conv state
layout, mamba_step.cuh); null is zero padding, with the same operations as
before it existed. conv1d_context_update moves such a context past T more
inputs (the last K-1 of context + x), so that a sequence can be run in chunks.
The backward pass assumes zero padding (training starts every sequence empty).

Forward and the input gradient: row kernels (elementwise.cuh), one block per
(b,t), its threads striding over e; the SiLU gradient: a span kernel. SiLU's
exp is fast_expf (vectorizes on the host; under 1 ulp). Weight and bias
gradients: a fixed grid of row chunks writes per-chunk partial sums, then
one thread per (e, k) adds the chunks in order: deterministic, no atomics.
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"
#include "fast_math.cuh"

#define CONV_K 4
#define CONV_CHUNKS 64

__device__ __forceinline__ float silu(float x) { return x / (1.0f + fast_expf(-x)); }
// d silu / dx = s * (1 + x * (1 - s)), s = sigmoid(x)
__device__ __forceinline__ float silu_grad(float x) {
    float s = 1.0f / (1.0f + fast_expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

// row bt = (b, t): conv[bt, e] and u[bt, e] = silu(conv[bt, e]). The taps
// before t = 0 (zero padding) read row (b, 0) instead, times a per-row mask
// of 0: no test per element (w * (x * 0) adds +-0, so acc is unchanged)
// With a left context x_prev (B, E, K-1), the first K-1 rows read their taps
// before t = 0 from it instead (the same order of terms).
__global__ void conv1d_silu_forward_kernel(float* conv, float* u, const float* x, int x_stride, const float* w,
                                           const float* bias, const float* x_prev, int B, int T, int E, int span) {
    long bt = blockIdx.x;
    int t = bt % T;
    long row0 = bt - t;  // (b, 0)
    const float* xr[CONV_K];
    float mask[CONV_K];
    for (int k = 0; k < CONV_K; k++) {
        int tt = t - (CONV_K - 1) + k;
        xr[k] = x + (row0 + (tt >= 0 ? tt : 0)) * x_stride;
        mask[k] = tt >= 0 ? 1.0f : 0.0f;
    }
    float* c_row = conv + bt * E;
    float* u_row = u + bt * E;
    if (x_prev && t < CONV_K - 1) {
        const float* ctx = x_prev + (bt / T) * E * (CONV_K - 1);  // row b's context (E, K-1)
        ROW_FOR(e, E, span) {
            float acc = bias[e];
            for (int k = 0; k < CONV_K; k++) {
                int tt = t - (CONV_K - 1) + k;
                acc += w[e * CONV_K + k] * (tt >= 0 ? xr[k][e] : ctx[e * (CONV_K - 1) + (CONV_K - 1) + tt]);
            }
            c_row[e] = acc;
        }
    } else {
        ROW_FOR(e, E, span) {
            float acc = bias[e];
            for (int k = 0; k < CONV_K; k++) acc += w[e * CONV_K + k] * (xr[k][e] * mask[k]);
            c_row[e] = acc;
        }
    }
    // a second pass (few pointers per loop: g++ vectorizes only loops whose
    // possible overlaps it can check in a few tests)
    ROW_FOR(e, E, span) u_row[e] = silu(c_row[e]);
}

// The context (B, E, K-1) after T more inputs x (B, T, E) (row distance
// x_stride): the last K-1 of context then x, oldest first, in place. One
// thread per (b, e); the old context is read before it is written.
__global__ void conv1d_context_update_kernel(float* context, const float* x, int x_stride, int B, int T, int E) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * E) return;
    int e = idx % E, b = idx / E;
    float* c = context + (long)idx * (CONV_K - 1);
    float old[CONV_K - 1], next[CONV_K - 1];
    for (int k = 0; k < CONV_K - 1; k++) old[k] = c[k];
    for (int k = 0; k < CONV_K - 1; k++) {
        int t = T - (CONV_K - 1) + k;  // position of the k-th oldest kept input; < 0: from the old context
        next[k] = t >= 0 ? x[((long)b * T + t) * x_stride + e] : old[CONV_K - 1 + t];
    }
    for (int k = 0; k < CONV_K - 1; k++) c[k] = next[k];
}

// dconv = du * silu'(conv), in place over du; span kernel
__global__ void silu_backward_inplace_kernel(float* du, const float* conv, long n, int span) {
    long i0, i1;
    span_range(&i0, &i1, n, span);
    for (long i = i0; i < i1; i++) du[i] *= silu_grad(conv[i]);
}

// dx[b,t,e] = sum_k w[e,k] * dconv[b, t+(K-1)-k, e]  (overwrites; dx has row distance dx_stride)
__global__ void conv1d_backward_input_kernel(float* dx, int dx_stride, const float* dconv, const float* w,
                                             int B, int T, int E, int span) {
    long bt = blockIdx.x;
    int t = bt % T;
    long row0 = bt - t;
    const float* gr[CONV_K];  // taps past T - 1 read row T - 1, masked to 0, as in the forward kernel
    float mask[CONV_K];
    for (int k = 0; k < CONV_K; k++) {
        int tt = t + (CONV_K - 1) - k;
        gr[k] = dconv + (row0 + (tt < T ? tt : T - 1)) * E;
        mask[k] = tt < T ? 1.0f : 0.0f;
    }
    float* dx_row = dx + bt * dx_stride;
    ROW_FOR(e, E, span) {
        float acc = 0.0f;
        for (int k = 0; k < CONV_K; k++) acc += w[e * CONV_K + k] * (gr[k][e] * mask[k]);
        dx_row[e] = acc;
    }
}

// partial[chunk, e, k] (k < K: weight, k = K: bias) over the chunk's rows;
// one thread per (chunk, e)
__global__ void conv1d_param_partial_kernel(float* partial, const float* dconv, const float* x, int x_stride,
                                            int B, int T, int E) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= CONV_CHUNKS * E) return;
    int e = idx % E, chunk = idx / E;
    long rows = (long)B * T, per = CEIL_DIV(rows, CONV_CHUNKS);
    float acc[CONV_K + 1] = {0.0f};
    for (long r = chunk * per; r < rows && r < (chunk + 1) * per; r++) {
        int t = r % T;
        float g = dconv[r * E + e];
        for (int k = 0; k < CONV_K; k++) {
            int tt = t - (CONV_K - 1) + k;
            if (tt >= 0) acc[k] += g * x[(r - t + tt) * x_stride + e];
        }
        acc[CONV_K] += g;
    }
    for (int k = 0; k <= CONV_K; k++) partial[((long)chunk * E + e) * (CONV_K + 1) + k] = acc[k];
}

// dw[e,k] += sum over chunks, dbias[e] += sum over chunks; one thread per (e, k)
__global__ void conv1d_param_reduce_kernel(float* dw, float* dbias, const float* partial, int E) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= E * (CONV_K + 1)) return;
    int e = idx / (CONV_K + 1), k = idx % (CONV_K + 1);
    float s = 0.0f;
    for (int c = 0; c < CONV_CHUNKS; c++) s += partial[((long)c * E + e) * (CONV_K + 1) + k];
    if (k < CONV_K) dw[e * CONV_K + k] += s;
    else dbias[e] += s;
}

// ----------------------------------------------------------------------------
// launchers

// x_prev: the left context (B, E, K-1), oldest first; null for zero padding
void conv1d_silu_forward(float* conv, float* u, const float* x, int x_stride, const float* w, const float* bias,
                         int B, int T, int E, const float* x_prev = nullptr) {
    LAUNCH(conv1d_silu_forward_kernel, B * T, row_threads(E), 0)(conv, u, x, x_stride, w, bias, x_prev, B, T, E,
                                                                 row_span(E));
    cudaCheck(cudaGetLastError());
}

// context (B, E, K-1) moved past the inputs x (B, T, E), row distance x_stride
void conv1d_context_update(float* context, const float* x, int x_stride, int B, int T, int E) {
    LAUNCH(conv1d_context_update_kernel, CEIL_DIV(B * E, 128), 128, 0)(context, x, x_stride, B, T, E);
    cudaCheck(cudaGetLastError());
}

// du (B,T,E) is consumed (turned into dconv in place). dx is overwritten.
// partial: scratch of CONV_CHUNKS * E * (K+1) floats. dw, dbias accumulate.
void conv1d_silu_backward(float* dx, int dx_stride, float* dw, float* dbias, float* partial, float* du,
                          const float* conv, const float* x, int x_stride, const float* w, int B, int T, int E) {
    long n = (long)B * T * E;
    LAUNCH(silu_backward_inplace_kernel, span_blocks(n), kernel_choices.elementwise_threads, 0)(du, conv, n, kernel_choices.elementwise_span);
    LAUNCH(conv1d_backward_input_kernel, B * T, row_threads(E), 0)(dx, dx_stride, du, w, B, T, E, row_span(E));
    LAUNCH(conv1d_param_partial_kernel, CEIL_DIV(CONV_CHUNKS * E, 64), 64, 0)(partial, du, x, x_stride, B, T, E);
    LAUNCH(conv1d_param_reduce_kernel, CEIL_DIV(E * (CONV_K + 1), 64), 64, 0)(dw, dbias, partial, E);
    cudaCheck(cudaGetLastError());
}

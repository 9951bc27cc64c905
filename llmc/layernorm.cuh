/*
LayerNorm over the last dimension C, with weight and bias, eps 1e-5.
Forward saves each row's mean and reciprocal standard deviation for the
backward pass.

Two variants of the row kernels (forward, and backward to the input):
  *_rows_kernel: one thread per row, plain loops. Barrier-free, so the host
                 backend runs it as fast C loops.
  *_warp_kernel: one warp per row, lanes stride over C and combine with
                 warp_sum. Coalesced; the variant for the GPU.
Both compute the same sums in a fixed order per variant (the rows kernels in
LN_LANES interleaved partial sums, ln_lane_sum, so that g++ vectorizes them);
the dispatcher picks by backend. Weight and bias gradients are summed over rows per channel by one
thread per channel, in row order (deterministic, no atomics).
*/
#pragma once
#include "cuda_common.h"

#define LN_EPS 1e-5f
#define LN_LANES 8   // partial sums of the rows kernels (one AVX2 register)
#define LN_TILE 16   // channels per thread of the parameter gradient on the host

// sum of x[0..C) in LN_LANES interleaved partial sums (lane j takes the
// elements i = j mod LN_LANES of the first C - C % LN_LANES), added by a fixed
// tree, then the tail in order: a fixed order that vectorizes (a single
// running sum is a chain of dependent adds). f(x[i]) is summed: f = identity,
// or (x - m)^2, or products for the backward pass, via the functor.
template <typename F> __device__ __forceinline__ float ln_lane_sum(int C, F f) {
    float acc[LN_LANES];
    for (int j = 0; j < LN_LANES; j++) acc[j] = 0.0f;
    int Cl = C - C % LN_LANES;
    for (int i = 0; i < Cl; i += LN_LANES)
        for (int j = 0; j < LN_LANES; j++) acc[j] += f(i + j);
    for (int w = LN_LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++) acc[j] += acc[j + w];
    float s = acc[0];
    for (int i = Cl; i < C; i++) s += f(i);
    return s;
}

__global__ void layernorm_forward_rows_kernel(float* out, float* mean, float* rstd, const float* inp,
                                              const float* weight, const float* bias, int N, int C) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    float m = ln_lane_sum(C, [&](int i) { return x[i]; }) / C;
    float v = ln_lane_sum(C, [&](int i) { float d = x[i] - m; return d * d; });
    float s = 1.0f / sqrtf(v / C + LN_EPS);
    float* o = out + (long)row * C;
    for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * weight[i] + bias[i];
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = s;
}

__global__ void layernorm_forward_warp_kernel(float* out, float* mean, float* rstd, const float* inp,
                                              const float* weight, const float* bias, int N, int C) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= N) return;  // whole warps leave together
    const float* x = inp + (long)row * C;
    float m = 0.0f;
    for (int i = lane; i < C; i += 32) m += x[i];
    m = warp_sum(m) / C;
    float v = 0.0f;
    for (int i = lane; i < C; i += 32) { float d = x[i] - m; v += d * d; }
    float s = 1.0f / sqrtf(warp_sum(v) / C + LN_EPS);
    float* o = out + (long)row * C;
    for (int i = lane; i < C; i += 32) o[i] = (x[i] - m) * s * weight[i] + bias[i];
    if (lane == 0) {
        if (mean) mean[row] = m;
        if (rstd) rstd[row] = s;
    }
}

// dinp[row,:] += (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)) * rstd, dnorm = dout * weight
__global__ void layernorm_backward_rows_kernel(float* dinp, const float* dout, const float* inp,
                                               const float* weight, const float* mean, const float* rstd,
                                               int N, int C) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    const float* g = dout + (long)row * C;
    float m = mean[row], s = rstd[row];
    float dsum = ln_lane_sum(C, [&](int i) { return g[i] * weight[i]; }) / C;
    float dxsum = ln_lane_sum(C, [&](int i) { return g[i] * weight[i] * (x[i] - m) * s; }) / C;
    float* d = dinp + (long)row * C;
    for (int i = 0; i < C; i++) {
        float xhat = (x[i] - m) * s;
        d[i] += (g[i] * weight[i] - dsum - xhat * dxsum) * s;
    }
}

__global__ void layernorm_backward_warp_kernel(float* dinp, const float* dout, const float* inp,
                                               const float* weight, const float* mean, const float* rstd,
                                               int N, int C) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    const float* g = dout + (long)row * C;
    float m = mean[row], s = rstd[row];
    float dsum = 0.0f, dxsum = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float dn = g[i] * weight[i];
        dsum += dn;
        dxsum += dn * (x[i] - m) * s;
    }
    dsum = warp_sum(dsum) / C;
    dxsum = warp_sum(dxsum) / C;
    float* d = dinp + (long)row * C;
    for (int i = lane; i < C; i += 32) {
        float xhat = (x[i] - m) * s;
        d[i] += (g[i] * weight[i] - dsum - xhat * dxsum) * s;
    }
}

// dweight[c] += sum_rows dout * xhat, dbias[c] += sum_rows dout, each
// channel's rows summed in order. One thread per `tile` consecutive
// channels: 1 on the GPU (coalesced across threads), LN_TILE on the host (a
// row's tile is one contiguous vector, instead of a column walk per channel)
__global__ void layernorm_param_backward_kernel(float* dweight, float* dbias, const float* dout, const float* inp,
                                                const float* mean, const float* rstd, int N, int C, int tile) {
    int c0 = (blockIdx.x * blockDim.x + threadIdx.x) * tile;
    if (c0 >= C) return;
    int nc = min(tile, C - c0);
    float dw[LN_TILE], db[LN_TILE];
    for (int j = 0; j < LN_TILE; j++) { dw[j] = 0.0f; db[j] = 0.0f; }
    if (nc == LN_TILE) {  // fixed trip counts: vectorized
        for (int row = 0; row < N; row++) {
            const float* g = dout + (long)row * C + c0;
            const float* x = inp + (long)row * C + c0;
            float m = mean[row], s = rstd[row];
            for (int j = 0; j < LN_TILE; j++) {
                dw[j] += g[j] * (x[j] - m) * s;
                db[j] += g[j];
            }
        }
    } else {
        for (int row = 0; row < N; row++) {
            const float* g = dout + (long)row * C + c0;
            const float* x = inp + (long)row * C + c0;
            float m = mean[row], s = rstd[row];
            for (int j = 0; j < nc; j++) {
                dw[j] += g[j] * (x[j] - m) * s;
                db[j] += g[j];
            }
        }
    }
    for (int j = 0; j < nc; j++) {
        dweight[c0 + j] += dw[j];
        dbias[c0 + j] += db[j];
    }
}

// ----------------------------------------------------------------------------
// launchers; use_warp selects the variant (default: the backend's fastest)

#ifdef __CUDACC__
static bool layernorm_use_warp = true;
static int layernorm_param_tile = 1;
#else
static bool layernorm_use_warp = host_variants_gpu();  // HOST_VARIANTS=gpu: the GPU's choice
static int layernorm_param_tile = host_variants_gpu() ? 1 : LN_TILE;
#endif

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C) {
    if (layernorm_use_warp) {
        LAUNCH(layernorm_forward_warp_kernel, CEIL_DIV(N * 32, 256), 256, 0)(out, mean, rstd, inp, weight, bias, N, C);
    } else {
        LAUNCH(layernorm_forward_rows_kernel, CEIL_DIV(N, 64), 64, 0)(out, mean, rstd, inp, weight, bias, N, C);
    }
    cudaCheck(cudaGetLastError());
}

// dinp accumulates (+=); dweight, dbias accumulate
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C) {
    if (layernorm_use_warp) {
        LAUNCH(layernorm_backward_warp_kernel, CEIL_DIV(N * 32, 256), 256, 0)(dinp, dout, inp, weight, mean, rstd, N, C);
    } else {
        LAUNCH(layernorm_backward_rows_kernel, CEIL_DIV(N, 64), 64, 0)(dinp, dout, inp, weight, mean, rstd, N, C);
    }
    int tile = layernorm_param_tile, nthreads = CEIL_DIV(C, tile);
    LAUNCH(layernorm_param_backward_kernel, CEIL_DIV(nthreads, 64), 64, 0)(dweight, dbias, dout, inp, mean, rstd, N, C,
                                                                          tile);
    cudaCheck(cudaGetLastError());
}

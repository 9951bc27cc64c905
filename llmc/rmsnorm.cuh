/*
RMSNorm over the last dimension C, with a weight and no bias, eps 1e-5
(Transformer++; as LLaMA's RMSNorm and torch.nn.RMSNorm(C, eps=1e-5)):
  rstd = 1 / sqrt(mean_c x[c]^2 + eps),  out[c] = x[c] * rstd * weight[c]
Forward saves each row's rstd for the backward pass, which is, with
xhat = x * rstd and g = dout * weight,
  dx[c] = rstd * (g[c] - xhat[c] * mean_c(g * xhat)),  dweight[c] = sum_rows dout[c] * xhat[c]

Two variants of the row kernels (forward, and backward to the input), as in
layernorm.cuh:
  *_rows_kernel: one thread per row, plain loops (the sums in LN_LANES
                 interleaved partial sums, ln_lane_sum). Barrier-free, so the
                 host backend runs it as vectorized C loops.
  *_warp_kernel: one warp per row, lanes stride over C and combine with
                 warp_sum. Coalesced; the variant for the GPU.
The weight gradient is LayerNorm's two-stage parameter reduction with a zero
mean and no bias (layernorm_param_backward): chunks of rows per channel,
then the chunks in order; deterministic, no atomics, and enough threads to
fill a GPU.
*/
#pragma once
#include "cuda_common.h"
#include "layernorm.cuh"  // ln_lane_sum, LN_LANES, layernorm_param_backward

#define RMS_EPS 1e-5f

// out (N, C), rstd (N) (may be null) from inp (N, C); one thread per row
__global__ void rmsnorm_forward_rows_kernel(float* out, float* rstd, const float* inp, const float* weight, int N, int C) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    float ms = ln_lane_sum(C, [&](int i) { return x[i] * x[i]; });
    float s = 1.0f / sqrtf(ms / C + RMS_EPS);
    float* o = out + (long)row * C;
    for (int i = 0; i < C; i++) o[i] = x[i] * s * weight[i];
    if (rstd) rstd[row] = s;
}

// the same, one warp per row
__global__ void rmsnorm_forward_warp_kernel(float* out, float* rstd, const float* inp, const float* weight, int N, int C) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= N) return;  // whole warps leave together
    const float* x = inp + (long)row * C;
    float ms = 0.0f;
    for (int i = lane; i < C; i += 32) ms += x[i] * x[i];
    float s = 1.0f / sqrtf(warp_sum(ms) / C + RMS_EPS);
    float* o = out + (long)row * C;
    for (int i = lane; i < C; i += 32) o[i] = x[i] * s * weight[i];
    if (lane == 0 && rstd) rstd[row] = s;
}

// dinp[row, :] += rstd * (dout * weight - xhat * mean(dout * weight * xhat)); one thread per row
__global__ void rmsnorm_backward_rows_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                                             const float* rstd, int N, int C) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    const float* g = dout + (long)row * C;
    float s = rstd[row];
    float dxsum = ln_lane_sum(C, [&](int i) { return g[i] * weight[i] * x[i] * s; }) / C;
    float* d = dinp + (long)row * C;
    for (int i = 0; i < C; i++) d[i] += (g[i] * weight[i] - x[i] * s * dxsum) * s;
}

// the same, one warp per row
__global__ void rmsnorm_backward_warp_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                                             const float* rstd, int N, int C) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    const float* g = dout + (long)row * C;
    float s = rstd[row];
    float dxsum = 0.0f;
    for (int i = lane; i < C; i += 32) dxsum += g[i] * weight[i] * x[i] * s;
    dxsum = warp_sum(dxsum) / C;
    float* d = dinp + (long)row * C;
    for (int i = lane; i < C; i += 32) d[i] += (g[i] * weight[i] - x[i] * s * dxsum) * s;
}

// ----------------------------------------------------------------------------
// launchers; the variant follows kernel_choices.layernorm_warp and kernel_choices.layernorm_param_tile
// (layernorm.cuh: the backend's fastest, switchable by tests)

// out (N, C), rstd (N) (may be null) from inp (N, C)
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C) {
    if (kernel_choices.layernorm_warp) {
        LAUNCH(rmsnorm_forward_warp_kernel, CEIL_DIV(N * 32, 256), 256, 0)(out, rstd, inp, weight, N, C);
    } else {
        LAUNCH(rmsnorm_forward_rows_kernel, CEIL_DIV(N, 64), 64, 0)(out, rstd, inp, weight, N, C);
    }
    cudaCheck(cudaGetLastError());
}

// dinp accumulates (+=); dweight accumulates
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int N, int C) {
    if (kernel_choices.layernorm_warp) {
        LAUNCH(rmsnorm_backward_warp_kernel, CEIL_DIV(N * 32, 256), 256, 0)(dinp, dout, inp, weight, rstd, N, C);
    } else {
        LAUNCH(rmsnorm_backward_rows_kernel, CEIL_DIV(N, 64), 64, 0)(dinp, dout, inp, weight, rstd, N, C);
    }
    cudaCheck(cudaGetLastError());
    layernorm_param_backward(dweight, nullptr, dout, inp, nullptr, rstd, N, C, kernel_choices.layernorm_param_tile);
    cudaCheck(cudaGetLastError());
}

/*
LayerNorm over the last dimension C, with weight and bias, eps 1e-5.
Forward saves each row's mean and reciprocal standard deviation for the
backward pass.

Two variants of the row kernels (forward, and backward to the input):
  *_rows_kernel: one thread per row, plain loops. Barrier-free, so the host
                 backend runs it as fast C loops.
  *_warp_kernel: one warp per row, lanes stride over C and combine with
                 warp_sum. Coalesced; the variant for the GPU.
Both compute the same sums in a fixed order per variant; the dispatcher picks
by backend. Weight and bias gradients are summed over rows per channel by one
thread per channel, in row order (deterministic, no atomics).
*/
#pragma once
#include "cuda_common.h"

#define LN_EPS 1e-5f

__global__ void layernorm_forward_rows_kernel(float* out, float* mean, float* rstd, const float* inp,
                                              const float* weight, const float* bias, int N, int C) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    float m = 0.0f;
    for (int i = 0; i < C; i++) m += x[i];
    m /= C;
    float v = 0.0f;
    for (int i = 0; i < C; i++) { float d = x[i] - m; v += d * d; }
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
    float dsum = 0.0f, dxsum = 0.0f;
    for (int i = 0; i < C; i++) {
        float dn = g[i] * weight[i];
        dsum += dn;
        dxsum += dn * (x[i] - m) * s;
    }
    dsum /= C; dxsum /= C;
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

// dweight[c] += sum_rows dout * xhat, dbias[c] += sum_rows dout; one thread per channel
__global__ void layernorm_param_backward_kernel(float* dweight, float* dbias, const float* dout, const float* inp,
                                                const float* mean, const float* rstd, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float dw = 0.0f, db = 0.0f;
    for (int row = 0; row < N; row++) {
        float g = dout[(long)row * C + c];
        dw += g * (inp[(long)row * C + c] - mean[row]) * rstd[row];
        db += g;
    }
    dweight[c] += dw;
    dbias[c] += db;
}

// ----------------------------------------------------------------------------
// launchers; use_warp selects the variant (default: the backend's fastest)

#ifdef __CUDACC__
static bool layernorm_use_warp = true;
#else
static bool layernorm_use_warp = host_variants_gpu();  // HOST_VARIANTS=gpu: the GPU's choice
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
    LAUNCH(layernorm_param_backward_kernel, CEIL_DIV(C, 64), 64, 0)(dweight, dbias, dout, inp, mean, rstd, N, C);
    cudaCheck(cudaGetLastError());
}

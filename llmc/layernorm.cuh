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
the dispatcher picks by backend.

Weight and bias gradients (sums over all N rows per channel) are a
deterministic two-stage reduction, no atomics: layernorm_param_partial_kernel
sums each chunk of LN_PARAM_ROWS consecutive rows per channel (one thread per
chunk and tile of channels: N / 64 * C threads, enough to fill a GPU at the
seed shapes, 256 * 256), into a scratch of partials; then
layernorm_param_reduce_kernel adds each channel's partials in chunk order.
The order depends only on N, so both backends and every tile width give
bitwise the same gradients.
*/
#pragma once
#include "cuda_common.h"

#define LN_EPS 1e-5f
#define LN_LANES 8   // partial sums of the rows kernels (one AVX2 register)
#define LN_PARAM_ROWS 64  // rows per partial sum of the parameter gradient

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

// Stage 1 of the parameter gradient. partials: (2, nchunks, C), the first
// half sum_rows dout * xhat, the second sum_rows dout, over the rows of chunk
// k, [k * LN_PARAM_ROWS, min(N, (k + 1) * LN_PARAM_ROWS)), in row order.
// One thread per (chunk, TILE consecutive channels): TILE 1 on the GPU
// (consecutive threads take consecutive channels: coalesced rows), LN_TILE
// on the host (a row's tile is one contiguous vector); barrier-free. TILE is
// a compile-time constant and every loop over the tile has a fixed trip
// count (a partial last tile is masked), so the sums stay in registers.
template <int TILE>
__global__ void layernorm_param_partial_kernel(float* partials, const float* dout, const float* inp, const float* mean,
                                               const float* rstd, int N, int C) {
    int ntiles = CEIL_DIV(C, TILE), nchunks = CEIL_DIV(N, LN_PARAM_ROWS);
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)nchunks * ntiles) return;
    int chunk = (int)(idx / ntiles), c0 = (int)(idx % ntiles) * TILE;
    int nc = min(TILE, C - c0);
    int r0 = chunk * LN_PARAM_ROWS, r1 = min(N, r0 + LN_PARAM_ROWS);
    float dw[TILE], db[TILE];
#pragma unroll
    for (int j = 0; j < TILE; j++) { dw[j] = 0.0f; db[j] = 0.0f; }
    if (nc == TILE) {  // fixed trip counts: vectorized
        for (int row = r0; row < r1; row++) {
            const float* g = dout + (long)row * C + c0;
            const float* x = inp + (long)row * C + c0;
            float m = mean ? mean[row] : 0.0f, s = rstd[row];
#pragma unroll
            for (int j = 0; j < TILE; j++) {
                dw[j] = fmaf(g[j] * (x[j] - m), s, dw[j]);  // an explicit fma: the same rounding in every tile width and backend
                db[j] += g[j];
            }
        }
    } else {
        for (int row = r0; row < r1; row++) {
            const float* g = dout + (long)row * C + c0;
            const float* x = inp + (long)row * C + c0;
            float m = mean ? mean[row] : 0.0f, s = rstd[row];
#pragma unroll
            for (int j = 0; j < TILE; j++)
                if (j < nc) {
                    dw[j] = fmaf(g[j] * (x[j] - m), s, dw[j]);  // an explicit fma: the same rounding in every tile width and backend
                    db[j] += g[j];
                }
        }
    }
    float* pw = partials + (long)chunk * C + c0;
    float* pb = partials + ((long)nchunks + chunk) * C + c0;
#pragma unroll
    for (int j = 0; j < TILE; j++)
        if (j < nc) { pw[j] = dw[j]; pb[j] = db[j]; }
}

// Stage 2: dweight[c] += sum_k partials[0, k, c], dbias[c] += sum_k
// partials[1, k, c] (when dbias is not null), chunks in order. One thread per TILE consecutive
// channels, as stage 1; barrier-free.
template <int TILE>
__global__ void layernorm_param_reduce_kernel(float* dweight, float* dbias, const float* partials, int nchunks, int C) {
    int c0 = (blockIdx.x * blockDim.x + threadIdx.x) * TILE;
    if (c0 >= C) return;
    int nc = min(TILE, C - c0);
    float dw[TILE], db[TILE];
#pragma unroll
    for (int j = 0; j < TILE; j++) { dw[j] = 0.0f; db[j] = 0.0f; }
    for (int k = 0; k < nchunks; k++) {
        const float* pw = partials + (long)k * C + c0;
        const float* pb = partials + ((long)nchunks + k) * C + c0;
#pragma unroll
        for (int j = 0; j < TILE; j++)
            if (j < nc) { dw[j] += pw[j]; db[j] += pb[j]; }
    }
#pragma unroll
    for (int j = 0; j < TILE; j++)
        if (j < nc) {
            dweight[c0 + j] += dw[j];
            if (dbias) dbias[c0 + j] += db[j];
        }
}

// the floats of stage 1's partials for N rows of C
inline long layernorm_param_scratch_size(int N, int C) { return 2L * CEIL_DIV(N, LN_PARAM_ROWS) * C; }

// The partials' scratch: one device buffer, grown when a call needs more
// (in a training run on its first backward pass, so later steps allocate
// nothing) and kept for the program's life.
static float* layernorm_param_scratch(long floats) {
    static float* buffer = nullptr;
    static long capacity = 0;
    if (floats > capacity) {
        cudaCheck(cudaFree(buffer));
        cudaCheck(cudaMalloc(&buffer, floats * sizeof(float)));
        capacity = floats;
    }
    return buffer;
}

// ----------------------------------------------------------------------------
// launchers; use_warp selects the variant (default: the backend's fastest)


void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C) {
    if (kernel_choices.layernorm_warp) {
        LAUNCH(layernorm_forward_warp_kernel, CEIL_DIV(N * 32, 256), 256, 0)(out, mean, rstd, inp, weight, bias, N, C);
    } else {
        LAUNCH(layernorm_forward_rows_kernel, CEIL_DIV(N, 64), 64, 0)(out, mean, rstd, inp, weight, bias, N, C);
    }
    cudaCheck(cudaGetLastError());
}

// dweight, dbias (C) accumulate the sums over the N rows of dout * xhat and
// dout: the two stages above, `tile` (1 or LN_TILE) channels per thread.
// RMSNorm's weight gradient is the same sum with xhat = x * rstd: mean and
// dbias null.
void layernorm_param_backward(float* dweight, float* dbias, const float* dout, const float* inp, const float* mean,
                              const float* rstd, int N, int C, int tile) {
    int nchunks = CEIL_DIV(N, LN_PARAM_ROWS), ntiles = CEIL_DIV(C, tile);
    float* partials = layernorm_param_scratch(layernorm_param_scratch_size(N, C));
    if (tile == 1) {
        LAUNCH(layernorm_param_partial_kernel<1>, CEIL_DIV((long)nchunks * ntiles, 256), 256, 0)(partials, dout, inp,
                                                                                                  mean, rstd, N, C);
        LAUNCH(layernorm_param_reduce_kernel<1>, CEIL_DIV(ntiles, 256), 256, 0)(dweight, dbias, partials, nchunks, C);
    } else if (tile == LN_TILE) {
        LAUNCH(layernorm_param_partial_kernel<LN_TILE>, CEIL_DIV((long)nchunks * ntiles, 64), 64, 0)(partials, dout, inp,
                                                                                                      mean, rstd, N, C);
        LAUNCH(layernorm_param_reduce_kernel<LN_TILE>, CEIL_DIV(ntiles, 64), 64, 0)(dweight, dbias, partials, nchunks, C);
    } else {
        fprintf(stderr, "error: layernorm_param_backward: %d channels per thread (1 or %d)\n", tile, LN_TILE);
        exit(EXIT_FAILURE);
    }
}

// dinp accumulates (+=); dweight, dbias accumulate
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C) {
    if (kernel_choices.layernorm_warp) {
        LAUNCH(layernorm_backward_warp_kernel, CEIL_DIV(N * 32, 256), 256, 0)(dinp, dout, inp, weight, mean, rstd, N, C);
    } else {
        LAUNCH(layernorm_backward_rows_kernel, CEIL_DIV(N, 64), 64, 0)(dinp, dout, inp, weight, mean, rstd, N, C);
    }
    layernorm_param_backward(dweight, dbias, dout, inp, mean, rstd, N, C, kernel_choices.layernorm_param_tile);
    cudaCheck(cudaGetLastError());
}

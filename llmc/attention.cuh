/*
Multi-head self-attention (causal or not) on a packed qkv activation.

qkv is (B, T, 3C) as the qkv Linear writes it: q, k, v each C wide, head h in
channels [h*hs, (h+1)*hs), hs = C / NH. The forward pass:
  1. permute qkv into q, k, v of shape (B, NH, T, hs) each (qkvr)
  2. preatt = q @ k^T per (b, h)                      cuBLAS strided batched
  3. att = softmax(preatt / sqrt(hs)) over keys, masked to keys <= query when
     causal (masked entries are exactly 0)
  4. y = att @ v per (b, h), then unpermute to (B, T, C)
The backward pass runs these steps in reverse. att is kept per layer for the
backward pass; preatt is scratch.

Softmax kernels come in two variants, like layernorm: one thread per row
(plain loops, fast on the host backend) and one warp per row (the GPU's).
A row is one query: (b, h, t), of length T.
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"  // row_threads, for the permute kernels

// qkv (B,T,3,NH,hs) -> q, k, v each (B,NH,T,hs). Row kernel
// (elementwise.cuh): one block per (b, h, t), its threads over d < hs (the
// index arithmetic once per row, contiguous copies)
__global__ void attention_permute_kernel(float* q, float* k, float* v, const float* qkv, int B, int T, int NH, int hs,
                                         int span) {
    int r = blockIdx.x;  // (b, h, t)
    int t = r % T, h = (r / T) % NH, b = r / (T * NH);
    int C = NH * hs;
    const float* src = qkv + ((long)b * T + t) * 3 * C + h * hs;
    long dst = (long)r * hs;
    // one loop per output (a loop with one store vectorizes on the host)
    ROW_FOR(d, hs, span) q[dst + d] = src[d];
    ROW_FOR(d, hs, span) k[dst + d] = src[C + d];
    ROW_FOR(d, hs, span) v[dst + d] = src[2 * C + d];
}

// the reverse: dq, dk, dv (B,NH,T,hs) -> dqkv (B,T,3C); same shape
__global__ void attention_permute_backward_kernel(float* dqkv, const float* dq, const float* dk, const float* dv,
                                                  int B, int T, int NH, int hs, int span) {
    int r = blockIdx.x;
    int t = r % T, h = (r / T) % NH, b = r / (T * NH);
    int C = NH * hs;
    float* dst = dqkv + ((long)b * T + t) * 3 * C + h * hs;
    long src = (long)r * hs;
    ROW_FOR(d, hs, span) dst[d] = dq[src + d];
    ROW_FOR(d, hs, span) dst[C + d] = dk[src + d];
    ROW_FOR(d, hs, span) dst[2 * C + d] = dv[src + d];
}

// y (B,NH,T,hs) -> out (B,T,C); backward = the same map reversed (forward=0); same shape
__global__ void attention_unpermute_kernel(float* out, float* y, int B, int T, int NH, int hs, int forward, int span) {
    int r = blockIdx.x;
    int t = r % T, h = (r / T) % NH, b = r / (T * NH);
    float* o = out + ((long)b * T + t) * NH * hs + h * hs;
    float* yr = y + (long)r * hs;
    if (forward) {
        ROW_FOR(d, hs, span) o[d] = yr[d];
    } else {
        ROW_FOR(d, hs, span) yr[d] = o[d];
    }
}

// att[row, :] = softmax(scale * preatt[row, :]) over keys 0..last, zero after;
// last = t (causal) or T-1. One thread per row.
__global__ void softmax_forward_rows_kernel(float* att, const float* preatt, int rows, int T, float scale, int causal) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    int t = row % T, last = causal ? t : T - 1;
    const float* x = preatt + (long)row * T;
    float* y = att + (long)row * T;
    float maxv = -INFINITY;
    for (int j = 0; j <= last; j++) maxv = fmaxf(maxv, x[j] * scale);
    float sum = 0.0f;
    for (int j = 0; j <= last; j++) { float e = expf(x[j] * scale - maxv); y[j] = e; sum += e; }
    float inv = 1.0f / sum;
    for (int j = 0; j < T; j++) y[j] = j <= last ? y[j] * inv : 0.0f;
}

// the same, one warp per row
__global__ void softmax_forward_warp_kernel(float* att, const float* preatt, int rows, int T, float scale, int causal) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    int t = row % T, last = causal ? t : T - 1;
    const float* x = preatt + (long)row * T;
    float* y = att + (long)row * T;
    float maxv = -INFINITY;
    for (int j = lane; j <= last; j += 32) maxv = fmaxf(maxv, x[j] * scale);
    maxv = warp_max(maxv);
    float sum = 0.0f;
    for (int j = lane; j <= last; j += 32) sum += expf(x[j] * scale - maxv);
    float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < T; j += 32) y[j] = j <= last ? expf(x[j] * scale - maxv) * inv : 0.0f;
}

// dpreatt[row, j] = scale * att[j] * (datt[j] - sum_i att[i] datt[i]); in place
// allowed (dpreatt == datt). One thread per row.
__global__ void softmax_backward_rows_kernel(float* dpreatt, const float* datt, const float* att, int rows, int T,
                                             float scale, int causal) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    int t = row % T, last = causal ? t : T - 1;
    const float* a = att + (long)row * T;
    const float* g = datt + (long)row * T;
    float* d = dpreatt + (long)row * T;
    float dot = 0.0f;
    for (int j = 0; j <= last; j++) dot += a[j] * g[j];
    for (int j = 0; j < T; j++) d[j] = j <= last ? scale * a[j] * (g[j] - dot) : 0.0f;
}

__global__ void softmax_backward_warp_kernel(float* dpreatt, const float* datt, const float* att, int rows, int T,
                                             float scale, int causal) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    int t = row % T, last = causal ? t : T - 1;
    const float* a = att + (long)row * T;
    const float* g = datt + (long)row * T;
    float* d = dpreatt + (long)row * T;
    float dot = 0.0f;
    for (int j = lane; j <= last; j += 32) dot += a[j] * g[j];
    dot = warp_sum(dot);
    for (int j = lane; j < T; j += 32) d[j] = j <= last ? scale * a[j] * (g[j] - dot) : 0.0f;
}

// ----------------------------------------------------------------------------
// launchers

#ifdef __CUDACC__
static bool softmax_use_warp = true;
#else
static bool softmax_use_warp = false;
#endif

// out (B,T,C); qkvr (3,B,NH,T,hs) and att (B,NH,T,T) are kept for backward;
// preatt (B,NH,T,T) and y (B,NH,T,hs) are scratch
void attention_forward(cublasHandle_t handle, float* out, float* qkvr, float* att, float* preatt, float* y,
                       const float* qkv, int B, int T, int C, int NH, int causal) {
    int hs = C / NH;
    long n = (long)B * NH * T * hs;
    float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
    LAUNCH(attention_permute_kernel, B * NH * T, row_threads(hs), 0)(q, k, v, qkv, B, T, NH, hs, row_span(hs));
    cudaCheck(cudaGetLastError());
    const float one = 1.0f, zero = 0.0f;
    // preatt[t1, t2] = q[t1] . k[t2]   (row-major T x T per (b,h))
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, &one, k, hs, (long long)T * hs,
                                          q, hs, (long long)T * hs, &zero, preatt, T, (long long)T * T, B * NH));
    float scale = 1.0f / sqrtf((float)hs);
    int rows = B * NH * T;
    if (softmax_use_warp) {
        LAUNCH(softmax_forward_warp_kernel, CEIL_DIV(rows * 32, 256), 256, 0)(att, preatt, rows, T, scale, causal);
    } else {
        LAUNCH(softmax_forward_rows_kernel, CEIL_DIV(rows, 64), 64, 0)(att, preatt, rows, T, scale, causal);
    }
    cudaCheck(cudaGetLastError());
    // y[t1] = sum_t2 att[t1, t2] v[t2]
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, &one, v, hs, (long long)T * hs,
                                          att, T, (long long)T * T, &zero, y, hs, (long long)T * hs, B * NH));
    LAUNCH(attention_unpermute_kernel, B * NH * T, row_threads(hs), 0)(out, y, B, T, NH, hs, 1, row_span(hs));
    cudaCheck(cudaGetLastError());
}

// dqkv (B,T,3C) is overwritten. Scratch: dy and dqkvr (3,B,NH,T,hs), datt (B,NH,T,T).
// dout is only read.
void attention_backward(cublasHandle_t handle, float* dqkv, float* dqkvr, float* dy, float* datt,
                        const float* dout, const float* qkvr, const float* att, int B, int T, int C, int NH, int causal) {
    int hs = C / NH;
    long n = (long)B * NH * T * hs;
    const float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
    float *dq = dqkvr, *dk = dqkvr + n, *dv = dqkvr + 2 * n;
    const float one = 1.0f, zero = 0.0f;
    LAUNCH(attention_unpermute_kernel, B * NH * T, row_threads(hs), 0)((float*)dout, dy, B, T, NH, hs, 0, row_span(hs));
    cudaCheck(cudaGetLastError());
    // datt[t1, t2] = dy[t1] . v[t2]
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, &one, v, hs, (long long)T * hs,
                                          dy, hs, (long long)T * hs, &zero, datt, T, (long long)T * T, B * NH));
    // dv[t2] = sum_t1 att[t1, t2] dy[t1]
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, &one, dy, hs, (long long)T * hs,
                                          att, T, (long long)T * T, &zero, dv, hs, (long long)T * hs, B * NH));
    float scale = 1.0f / sqrtf((float)hs);
    int rows = B * NH * T;
    if (softmax_use_warp) {
        LAUNCH(softmax_backward_warp_kernel, CEIL_DIV(rows * 32, 256), 256, 0)(datt, datt, att, rows, T, scale, causal);
    } else {
        LAUNCH(softmax_backward_rows_kernel, CEIL_DIV(rows, 64), 64, 0)(datt, datt, att, rows, T, scale, causal);
    }
    cudaCheck(cudaGetLastError());
    // dq[t1] = sum_t2 dpreatt[t1, t2] k[t2];  dk[t2] = sum_t1 dpreatt[t1, t2] q[t1]
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, &one, k, hs, (long long)T * hs,
                                          datt, T, (long long)T * T, &zero, dq, hs, (long long)T * hs, B * NH));
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, &one, q, hs, (long long)T * hs,
                                          datt, T, (long long)T * T, &zero, dk, hs, (long long)T * hs, B * NH));
    LAUNCH(attention_permute_backward_kernel, B * NH * T, row_threads(hs), 0)(dqkv, dq, dk, dv, B, T, NH, hs, row_span(hs));
    cudaCheck(cudaGetLastError());
}

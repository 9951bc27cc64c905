/*
Multi-head self-attention (causal or not) on a packed qkv activation.

qkv is (B, T, 3C) as the qkv Linear writes it: q, k, v each C wide, head h in
channels [h*hs, (h+1)*hs), hs = C / NH. Both variants first permute qkv into
q, k, v of shape (B, NH, T, hs) each (qkvr, kept for backward) and end by
unpermuting the heads' outputs to (B, T, C).

materialized (O(T^2) memory):
  2. preatt = q @ k^T per (b, h)                      cuBLAS strided batched
  3. att = softmax(preatt / sqrt(hs)) over keys, masked to keys <= query when
     causal (masked entries are exactly 0)
  4. y = att @ v per (b, h); with dropout on the probabilities (nanoGPT's
     attn_dropout, the language models' -D) y = Dropout(att) @ v, the mask
     dropout.cuh's hash of the element index of (B,NH,T,T) at the caller's
     site; att itself stays undropped for the softmax backward, the dropped
     copy lives in preatt and is recomputed into datt by the backward
  The backward pass runs these steps in reverse. att (B,NH,T,T) is kept per
  layer for the backward pass; preatt and datt (B,NH,T,T) are scratch.
  Softmax kernels come in two variants, like layernorm: one thread per row
  (plain loops, fast on the host backend) and one warp per row (the GPU's).
  A row is one query: (b, h, t), of length T.
tiled (O(T) memory per row, FlashAttention's algorithm in fp32): scores are
  computed tile by tile with an online softmax and never stored; the forward
  keeps the output o (B,NH,T,hs) and the log-sum-exp lse (B,NH,T) per row,
  the backward recomputes the probabilities from them. The kernels are in
  attention_tiled.cuh.

attention_forward / attention_backward dispatch between the two
(attention_uses_tiled: by the shape and the backend), and attention_act_sizes says
how large the kept state and the scratch are for the variant in use.
*/
#pragma once
#include <cstring>
#include "cuda_common.h"
#include "elementwise.cuh"  // row_threads, for the permute kernels
#include "fast_math.cuh"
#include "attention_tiled.cuh"
#include "dropout.cuh"
#include "utils.h"  // fail

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

// y[j] = exp(scale * x[j] - max_k scale * x[k]) for j < n (scale > 0), the
// unnormalized softmax of one row; returns the sum of the y[j]. y == x is
// allowed. The max and the sum run in SOFTMAX_LANES interleaved partials (a
// fixed order) with fast_expf, so that g++ vectorizes the row (libm's expf
// is a call per element).
#define SOFTMAX_LANES 16
__device__ __forceinline__ float softmax_row_exp(float* y, const float* x, int n, float scale) {
    int nfull = n - n % SOFTMAX_LANES;
    float part[SOFTMAX_LANES];
    for (int u = 0; u < SOFTMAX_LANES; u++) part[u] = -INFINITY;
    for (int j = 0; j < nfull; j += SOFTMAX_LANES)
        for (int u = 0; u < SOFTMAX_LANES; u++) part[u] = x[j + u] > part[u] ? x[j + u] : part[u];
    for (int j = nfull; j < n; j++) part[j - nfull] = x[j] > part[j - nfull] ? x[j] : part[j - nfull];
    float maxv = -INFINITY;
    for (int u = 0; u < SOFTMAX_LANES; u++) maxv = part[u] > maxv ? part[u] : maxv;
    maxv *= scale;  // scale > 0: the max of the scaled row
    for (int u = 0; u < SOFTMAX_LANES; u++) part[u] = 0.0f;
    for (int j = 0; j < nfull; j += SOFTMAX_LANES)
        for (int u = 0; u < SOFTMAX_LANES; u++) {
            float e = fast_expf(x[j + u] * scale - maxv);
            y[j + u] = e;
            part[u] += e;
        }
    for (int j = nfull; j < n; j++) { float e = fast_expf(x[j] * scale - maxv); y[j] = e; part[j - nfull] += e; }
    float sum = 0.0f;
    for (int u = 0; u < SOFTMAX_LANES; u++) sum += part[u];
    return sum;
}

// att[row, :] = softmax(scale * preatt[row, :]) over keys 0..last, zero after;
// last = t (causal) or T-1. One thread per row (softmax_row_exp).
__global__ void softmax_forward_rows_kernel(float* att, const float* preatt, int rows, int T, float scale, int causal) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    int t = row % T, n = causal ? t + 1 : T;  // keys 0..n-1
    float* y = att + (long)row * T;
    float inv = 1.0f / softmax_row_exp(y, preatt + (long)row * T, n, scale);
    for (int j = 0; j < n; j++) y[j] *= inv;
    for (int j = n; j < T; j++) y[j] = 0.0f;
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
// allowed (dpreatt == datt). One thread per row; the dot product in
// SOFTMAX_LANES interleaved partials (vectorizes).
__global__ void softmax_backward_rows_kernel(float* dpreatt, const float* datt, const float* att, int rows, int T,
                                             float scale, int causal) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    int t = row % T, n = causal ? t + 1 : T;
    const float* a = att + (long)row * T;
    const float* g = datt + (long)row * T;
    float* d = dpreatt + (long)row * T;
    int nfull = n - n % SOFTMAX_LANES;
    float part[SOFTMAX_LANES];
    for (int u = 0; u < SOFTMAX_LANES; u++) part[u] = 0.0f;
    for (int j = 0; j < nfull; j += SOFTMAX_LANES)
        for (int u = 0; u < SOFTMAX_LANES; u++) part[u] += a[j + u] * g[j + u];
    for (int j = nfull; j < n; j++) part[j - nfull] += a[j] * g[j];
    float dot = 0.0f;
    for (int u = 0; u < SOFTMAX_LANES; u++) dot += part[u];
    for (int j = 0; j < n; j++) d[j] = scale * a[j] * (g[j] - dot);
    for (int j = n; j < T; j++) d[j] = 0.0f;
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
// variant selection
//
// materialized: cuBLAS for q k^T and att v, softmax over stored (B,NH,T,T)
//   rows; keeps att (B,NH,T,T) per layer, scratch preatt and datt (B,NH,T,T).
// tiled (attention_tiled.cuh): keeps o (B,NH,T,hs) and lse (B,NH,T) per
//   layer, scratch D (B,NH,T): O(B T C) memory, any T.
// The rule (attention_uses_tiled), when hs is one of the tiled head sizes:
//   - tiled whenever one (B,NH,T,T) buffer would exceed
//     ATTENTION_MATERIALIZED_MAX_FLOATS (2^26 floats, 256 MiB; the
//     materialized variant keeps one per layer and two more as scratch);
//   - host: otherwise materialized, the faster one on a CPU at every shape
//     measured (doc/benchmarks.md, dev/cuda/attention);
//   - GPU: otherwise tiled from T 1024, materialized below: the T x T
//     buffers cost O(T^2) memory traffic there, which the tiled kernels
//     avoid (not yet measured on a GPU).
// kernel_choices.attention_variant (ATTENTION_VARIANT in the environment, or
// a test before any activations are sized) forces a variant; tiled still
// needs a supported hs. With kernel_choices.attention_keep_probs the tiled
// variant also keeps the (B,NH,T,T) probabilities it used, rebuilt from lse,
// in front of its state, where the materialized variant keeps att, so that
// model tests can compare them with a reference.

static const long ATTENTION_MATERIALIZED_MAX_FLOATS = 1L << 26;

// the backend's choice for a shape when no variant is forced (the rule above)
static bool attention_auto_tiled(int B, int T, int C, int NH) {
    if ((long)B * NH * T * T > ATTENTION_MATERIALIZED_MAX_FLOATS) return true;
#ifdef __CUDACC__
    return T >= 1024;
#else
    (void)C;
    return false;
#endif
}

static bool attention_uses_tiled(int B, int T, int C, int NH) {
    if (!attention_tiled_supports(C / NH)) return false;
    if (kernel_choices.attention_variant != ATTENTION_AUTO) return kernel_choices.attention_variant == ATTENTION_TILED;
    return attention_auto_tiled(B, T, C, NH);
}

// Fixes the automatic choice (when none is forced) to the one for a
// trainer's model at the batch and length its activations are sized for.
// Without it a call with a smaller batch (an eval batch below the training
// one, a last partial batch) could make the other choice, whose buffers were
// never allocated. For a program's one model, before sizing its activations.
// With dropout on the probabilities (probs_dropout > 0: a language model's
// -D) the choice is the materialized variant, the one that has it; a forced
// tiled variant (ATTENTION_VARIANT) is refused with one line.
static void attention_pin_variant(int B, int T, int C, int NH, float probs_dropout = 0.0f) {
    if (probs_dropout > 0.0f) {
        if (attention_uses_tiled(B, T, C, NH) && kernel_choices.attention_variant == ATTENTION_TILED)
            fail("flag -D: dropout on the attention probabilities needs the materialized attention; "
                 "ATTENTION_VARIANT asks for the tiled one");
        kernel_choices.attention_variant = ATTENTION_MATERIALIZED;
        return;
    }
    if (kernel_choices.attention_variant == ATTENTION_AUTO)
        kernel_choices.attention_variant = attention_auto_tiled(B, T, C, NH) ? ATTENTION_TILED : ATTENTION_MATERIALIZED;
}

// Buffer sizes (floats) of one attention layer: the state kept from forward
// to backward (the `att` argument), and the two scratch buffers (`preatt`
// of the forward, `datt` of the backward).
typedef struct {
    long state;    // materialized: att (B,NH,T,T); tiled: [att (B,NH,T,T) if kept] o (B,NH,T,hs), lse (B,NH,T)
    long preatt;   // materialized: (B,NH,T,T); tiled: 0
    long datt;     // materialized: (B,NH,T,T); tiled: D (B,NH,T)
} AttentionSizes;

static AttentionSizes attention_act_sizes(int B, int T, int C, int NH) {
    long rows = (long)B * NH * T, hs = C / NH;
    AttentionSizes s;
    if (attention_uses_tiled(B, T, C, NH)) {
        s.state = (kernel_choices.attention_keep_probs ? rows * T : 0) + rows * hs + rows;
        s.preatt = 0;
        s.datt = rows;
    } else {
        s.state = rows * T;
        s.preatt = rows * T;
        s.datt = rows * T;
    }
    return s;
}

// ----------------------------------------------------------------------------
// launchers

// The materialized variant's products, per (b,h), on T x T matrices stored
// row-major (row = query t1, column = key t2), as strided batched GEMMs over
// the B*NH heads. Causal attention needs only keys t2 <= t1: the query rows go
// in blocks [r0, r1) (attention_query_blocks), each multiplied against keys
// [0, r1) only, which skips nearly half the work at 8 blocks (none is skipped
// at 1 block, the non-causal case). Entries above the diagonal inside a block
// are computed or read as the zeros the softmax writes there; entries right of
// a block's last key are never written by the products nor read by the softmax.
static int attention_query_blocks(int T, int causal) {
    if (!causal) return 1;
    int blocks = CEIL_DIV(T, 64);  // at least 64 query rows a block, at most 8 blocks
    return blocks < 8 ? blocks : 8;
}

// S[t1, t2] = x[t1] . y[t2] for queries t1 in [r0, r1), keys t2 in [0, r1); x, y (BNH, T, hs)
static void attention_scores_gemm(cublasHandle_t handle, float* S, const float* x, const float* y, int BNH, int T,
                                  int hs, int r0, int r1) {
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_T, CUBLAS_OP_N, r1, r1 - r0, hs, &one, y, hs,
                                          (long long)T * hs, x + (long)r0 * hs, hs, (long long)T * hs, &zero,
                                          S + (long)r0 * T, T, (long long)T * T, BNH));
}

// z[t1] = sum_t2 P[t1, t2] w[t2] for queries t1 in [r0, r1), keys t2 in [0, r1); w, z (BNH, T, hs)
static void attention_rows_gemm(cublasHandle_t handle, float* z, const float* P, const float* w, int BNH, int T,
                                int hs, int r0, int r1) {
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, hs, r1 - r0, r1, &one, w, hs,
                                          (long long)T * hs, P + (long)r0 * T, T, (long long)T * T, &zero,
                                          z + (long)r0 * hs, hs, (long long)T * hs, BNH));
}

// z[t2] = sum_t1 P[t1, t2] x[t1] for keys t2 in [c0, c1), queries t1 in [c0, T); x, z (BNH, T, hs)
static void attention_cols_gemm(cublasHandle_t handle, float* z, const float* P, const float* x, int BNH, int T,
                                int hs, int c0, int c1) {
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_T, hs, c1 - c0, T - c0, &one,
                                          x + (long)c0 * hs, hs, (long long)T * hs, P + (long)c0 * T + c0, T,
                                          (long long)T * T, &zero, z + (long)c0 * hs, hs, (long long)T * hs, BNH));
}

// query block i of nblk over T rows is [start(i), start(i + 1)); one block is [0, T)
static int attention_block_start(int i, int nblk, int T) { return (int)((long)i * T / nblk); }

// materialized: out (B,T,C); qkvr (3,B,NH,T,hs) and att (B,NH,T,T) are kept
// for backward; preatt (B,NH,T,T) and y (B,NH,T,hs) are scratch
static void attention_materialized_forward(cublasHandle_t handle, float* out, float* qkvr, float* att, float* preatt,
                                           float* y, int B, int T, int C, int NH, int causal, float probs_rate,
                                           DropoutSite probs_site) {
    int hs = C / NH, BNH = B * NH, nblk = attention_query_blocks(T, causal);
    long n = (long)BNH * T * hs;
    float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
    // preatt[t1, t2] = q[t1] . k[t2]
    for (int i = 0; i < nblk; i++) {
        int r0 = attention_block_start(i, nblk, T), r1 = attention_block_start(i + 1, nblk, T);
        attention_scores_gemm(handle, preatt, q, k, BNH, T, hs, r0, r1);
    }
    float scale = 1.0f / sqrtf((float)hs);
    int rows = BNH * T;
    if (kernel_choices.softmax_warp) {
        LAUNCH(softmax_forward_warp_kernel, CEIL_DIV(rows * 32, 256), 256, 0)(att, preatt, rows, T, scale, causal);
    } else {
        LAUNCH(softmax_forward_rows_kernel, CEIL_DIV(rows, 64), 64, 0)(att, preatt, rows, T, scale, causal);
    }
    cudaCheck(cudaGetLastError());
    // with dropout the products read the dropped copy, held in preatt (its scores are spent)
    const float* probs = att;
    if (probs_rate > 0.0f) {
        dropout_apply(preatt, att, (long)rows * T, probs_rate, probs_site);
        probs = preatt;
    }
    // y[t1] = sum_t2 probs[t1, t2] v[t2]
    for (int i = 0; i < nblk; i++) {
        int r0 = attention_block_start(i, nblk, T), r1 = attention_block_start(i + 1, nblk, T);
        attention_rows_gemm(handle, y, probs, v, BNH, T, hs, r0, r1);
    }
    LAUNCH(attention_unpermute_kernel, BNH * T, row_threads(hs), 0)(out, y, B, T, NH, hs, 1, row_span(hs));
    cudaCheck(cudaGetLastError());
}

// materialized backward: dq, dk, dv into dqkvr (3,B,NH,T,hs) from dy
// (B,NH,T,hs); datt (B,NH,T,T) is scratch
static void attention_materialized_backward(cublasHandle_t handle, float* dqkvr, const float* dy, float* datt,
                                            const float* qkvr, const float* att, int B, int T, int C, int NH,
                                            int causal, float probs_rate, DropoutSite probs_site) {
    int hs = C / NH, BNH = B * NH, nblk = attention_query_blocks(T, causal);
    long n = (long)BNH * T * hs;
    const float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
    float *dq = dqkvr, *dk = dqkvr + n, *dv = dqkvr + 2 * n;
    float scale = 1.0f / sqrtf((float)hs);
    int rows = BNH * T;
    if (probs_rate > 0.0f) {
        // dv[t2] = sum_t1 Dropout(att)[t1, t2] dy[t1], the dropped copy recomputed into datt first;
        // then datt[t1, t2] = dy[t1] . v[t2] through the same mask
        dropout_apply(datt, att, (long)rows * T, probs_rate, probs_site);
        for (int i = 0; i < nblk; i++) {
            int r0 = attention_block_start(i, nblk, T), r1 = attention_block_start(i + 1, nblk, T);
            attention_cols_gemm(handle, dv, datt, dy, BNH, T, hs, r0, r1);
        }
        for (int i = 0; i < nblk; i++) {
            int r0 = attention_block_start(i, nblk, T), r1 = attention_block_start(i + 1, nblk, T);
            attention_scores_gemm(handle, datt, dy, v, BNH, T, hs, r0, r1);
        }
        dropout_apply(datt, datt, (long)rows * T, probs_rate, probs_site);
    } else {
        // datt[t1, t2] = dy[t1] . v[t2];  dv[t2] = sum_t1 att[t1, t2] dy[t1]
        for (int i = 0; i < nblk; i++) {
            int r0 = attention_block_start(i, nblk, T), r1 = attention_block_start(i + 1, nblk, T);
            attention_scores_gemm(handle, datt, dy, v, BNH, T, hs, r0, r1);
            attention_cols_gemm(handle, dv, att, dy, BNH, T, hs, r0, r1);
        }
    }
    if (kernel_choices.softmax_warp) {
        LAUNCH(softmax_backward_warp_kernel, CEIL_DIV(rows * 32, 256), 256, 0)(datt, datt, att, rows, T, scale, causal);
    } else {
        LAUNCH(softmax_backward_rows_kernel, CEIL_DIV(rows, 64), 64, 0)(datt, datt, att, rows, T, scale, causal);
    }
    cudaCheck(cudaGetLastError());
    // dq[t1] = sum_t2 dpreatt[t1, t2] k[t2];  dk[t2] = sum_t1 dpreatt[t1, t2] q[t1]
    for (int i = 0; i < nblk; i++) {
        int r0 = attention_block_start(i, nblk, T), r1 = attention_block_start(i + 1, nblk, T);
        attention_rows_gemm(handle, dq, datt, k, BNH, T, hs, r0, r1);
        attention_cols_gemm(handle, dk, datt, q, BNH, T, hs, r0, r1);
    }
}

// Multi-head attention forward, either variant (attention_uses_tiled). out
// (B,T,C) from qkv (B,T,3C). Kept for backward: qkvr (3,B,NH,T,hs) and att
// (attention_act_sizes().state floats). Scratch: preatt
// (attention_act_sizes().preatt floats) and y (B,NH,T,hs). probs_rate > 0:
// dropout on the probabilities at probs_site (the materialized variant's;
// the tiled one has none, attention_check_dropout)
void attention_forward(cublasHandle_t handle, float* out, float* qkvr, float* att, float* preatt, float* y,
                       const float* qkv, int B, int T, int C, int NH, int causal, float probs_rate = 0.0f,
                       DropoutSite probs_site = NO_DROPOUT_SITE) {
    int hs = C / NH;
    long n = (long)B * NH * T * hs;
    float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
    LAUNCH(attention_permute_kernel, B * NH * T, row_threads(hs), 0)(q, k, v, qkv, B, T, NH, hs, row_span(hs));
    cudaCheck(cudaGetLastError());
    if (!attention_uses_tiled(B, T, C, NH)) {
        attention_materialized_forward(handle, out, qkvr, att, preatt, y, B, T, C, NH, causal, probs_rate, probs_site);
        return;
    }
    if (probs_rate > 0.0f) fail("attention_forward: dropout on the probabilities needs the materialized variant");
    float *probs, *o, *lse;
    attention_tiled_state(att, B, T, C, NH, &probs, &o, &lse);
    ATTENTION_HS_DISPATCH(hs, attention_tiled_forward_hs<HS>(o, lse, q, k, v, B * NH, T, causal));
    if (probs) ATTENTION_HS_DISPATCH(hs, attention_tiled_probs_hs<HS>(probs, q, k, lse, B * NH, T, causal));
    LAUNCH(attention_unpermute_kernel, B * NH * T, row_threads(hs), 0)(out, o, B, T, NH, hs, 1, row_span(hs));
    cudaCheck(cudaGetLastError());
}

// The backward of either variant: dqkv (B,T,3C) is overwritten from dout
// (B,T,C), which is only read, and the forward's qkvr and att. Scratch: dy
// and dqkvr (3,B,NH,T,hs), datt (attention_act_sizes().datt floats).
// probs_rate, probs_site: the forward's.
void attention_backward(cublasHandle_t handle, float* dqkv, float* dqkvr, float* dy, float* datt,
                        const float* dout, const float* qkvr, const float* att, int B, int T, int C, int NH, int causal,
                        float probs_rate = 0.0f, DropoutSite probs_site = NO_DROPOUT_SITE) {
    int hs = C / NH;
    long n = (long)B * NH * T * hs;
    LAUNCH(attention_unpermute_kernel, B * NH * T, row_threads(hs), 0)((float*)dout, dy, B, T, NH, hs, 0, row_span(hs));
    cudaCheck(cudaGetLastError());
    if (!attention_uses_tiled(B, T, C, NH)) {
        attention_materialized_backward(handle, dqkvr, dy, datt, qkvr, att, B, T, C, NH, causal, probs_rate, probs_site);
    } else {
        float *probs, *o, *lse;
        attention_tiled_state((float*)att, B, T, C, NH, &probs, &o, &lse);
        const float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
        float *dq = dqkvr, *dk = dqkvr + n, *dv = dqkvr + 2 * n;
        ATTENTION_HS_DISPATCH(hs, attention_tiled_backward_hs<HS>(dq, dk, dv, datt, dy, q, k, v, o, lse, B * NH, T, causal));
    }
    LAUNCH(attention_permute_backward_kernel, B * NH * T, row_threads(hs), 0)(dqkv, dqkvr, dqkvr + n, dqkvr + 2 * n, B, T, NH, hs, row_span(hs));
    cudaCheck(cudaGetLastError());
}

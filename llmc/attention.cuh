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
  4. y = att @ v per (b, h)
  The backward pass runs these steps in reverse. att (B,NH,T,T) is kept per
  layer for the backward pass; preatt and datt (B,NH,T,T) are scratch.
  Softmax kernels come in two variants, like layernorm: one thread per row
  (plain loops, fast on the host backend) and one warp per row (the GPU's).
  A row is one query: (b, h, t), of length T.
tiled (O(T) memory per row, FlashAttention's algorithm in fp32): scores are
  computed tile by tile with an online softmax and never stored; the forward
  keeps the output o (B,NH,T,hs) and the log-sum-exp lse (B,NH,T) per row,
  the backward recomputes the probabilities from them. See the section
  "tiled attention" below.

attention_forward / attention_backward dispatch between the two
(attention_uses_tiled: by the shape and the backend), and attention_act_sizes says
how large the kept state and the scratch are for the variant in use.
*/
#pragma once
#include <cstring>
#include "cuda_common.h"
#include "elementwise.cuh"  // row_threads, for the permute kernels
#include "fast_math.cuh"

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
// tiled attention (memory-linear): FlashAttention's algorithm in fp32
//
// q, k, v, o, dout, dq, dk, dv are (B, NH, T, HS) per head, contiguous rows of
// HS floats; lse and D are (B, NH, T). Scores are s = scale * q_i . k_j. The
// forward pass keeps per query row a running max m, a running sum l of
// exp(s - m) and the accumulator acc = sum_j exp(s_j - m) v_j, rescaled when m
// grows (online softmax); it saves o = acc / l and lse = m + log(l). The
// backward pass recomputes p_ij = exp(s_ij - lse_i) from those row statistics
// (FlashAttention-2): D_i = dout_i . o_i, dp_ij = dout_i . v_j,
// ds_ij = p_ij (dp_ij - D_i), dq_i = scale sum_j ds_ij k_j,
// dk_j = scale sum_i ds_ij q_i, dv_j = sum_i p_ij dout_i. Each output row is
// summed by one thread in a fixed order (one pass per query row for dq, one
// per key row for dk and dv), so there are no atomics and results are
// bit-reproducible. Keys j > i are skipped when causal.
//
// Two variants of each kernel, with the same per-row arithmetic (the __device__
// helpers below): "rows" reads k, v (or q, dout) straight from global memory,
// one thread per ATTN_ROWS rows (each chunk of keys it reads serves all of
// them) and no barriers (the host backend's choice: barrier-free kernels run
// as plain loops there, and a thread's rows stay in L1); "smem" stages tiles of ATTN_KTILE rows in
// shared memory, loaded by the whole block between __syncthreads (the GPU's
// choice: every thread of the block reads the same staged row at once, a
// broadcast). HS is a template parameter (8, 16, 32, 64, 128) so that the
// per-thread row arrays live in registers.

#define ATTN_CHUNK 16  // keys (or queries) scored at once by one thread: one online-softmax rescale per chunk
#define ATTN_KTILE 32  // rows of k, v (or q, dout) staged in shared memory per tile (smem variants)
#define ATTN_BLOCK 64  // threads per block = query (or key) rows per block (smem variants)
#define ATTN_ROWS 16   // query (or key) rows per thread (rows variants)
#define ATTN_ROWS_BLOCK 32  // threads per block (rows variants)

// a . b over HS floats in 8 interleaved partial sums (a fixed order; lets g++
// vectorize without reassociating a single running sum)
template <int HS> __device__ __forceinline__ float attention_dot(const float* a, const float* b) {
    float part[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int d = 0; d < HS; d += 8)
#pragma unroll
        for (int u = 0; u < 8; u++) part[u] += a[d + u] * b[d + u];
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// Online-softmax step of one query row over n <= ATTN_CHUNK consecutive keys
// k[jj*HS..], v[jj*HS..]: qs is the query already multiplied by scale; m, l,
// acc are the row's running max, sum and unnormalized output.
template <int HS> __device__ __forceinline__ void attention_forward_chunk(float* acc, float& m, float& l, const float* qs,
                                                                          const float* k, const float* v, int n) {
    float s[ATTN_CHUNK];
    float cmax = -INFINITY;
    for (int jj = 0; jj < n; jj++) s[jj] = attention_dot<HS>(qs, k + jj * HS);
    for (int jj = 0; jj < n; jj++) cmax = s[jj] > cmax ? s[jj] : cmax;
    float mnew = m > cmax ? m : cmax;
    float corr = m == -INFINITY ? 0.0f : fast_expf(m - mnew);  // 0 on the first chunk
    l *= corr;
#pragma unroll
    for (int d = 0; d < HS; d++) acc[d] *= corr;
    for (int jj = 0; jj < n; jj++) s[jj] = fast_expf(s[jj] - mnew);  // the chunk's probabilities, unnormalized
    for (int jj = 0; jj < n; jj++) {
        float p = s[jj];
        l += p;
        const float* vr = v + jj * HS;
#pragma unroll
        for (int d = 0; d < HS; d++) acc[d] += p * vr[d];
    }
    m = mnew;
}

// dq step of one query row over n keys: qs = scale * q_i, g = dout_i; adds
// ds_ij k_j to dq (the caller multiplies by scale at the end)
template <int HS> __device__ __forceinline__ void attention_dq_chunk(float* dq, const float* qs, const float* g, float lse,
                                                                     float Di, const float* k, const float* v, int n) {
    float ds[ATTN_CHUNK];
    for (int jj = 0; jj < n; jj++) ds[jj] = attention_dot<HS>(qs, k + jj * HS) - lse;
    for (int jj = 0; jj < n; jj++) ds[jj] = fast_expf(ds[jj]);  // p
    for (int jj = 0; jj < n; jj++) ds[jj] *= attention_dot<HS>(g, v + jj * HS) - Di;
    for (int jj = 0; jj < n; jj++) {
        const float* kr = k + jj * HS;
#pragma unroll
        for (int d = 0; d < HS; d++) dq[d] += ds[jj] * kr[d];
    }
}

// dk, dv step of one key row (kr, vr) over n queries q[ii*HS..], g = dout
// rows, with their lse and D; adds ds_ij q_i to dk (times scale at the end)
// and p_ij dout_i to dv
template <int HS> __device__ __forceinline__ void attention_dkdv_chunk(float* dk, float* dv, const float* ks, const float* vr,
                                                                       const float* q, const float* g, const float* lse,
                                                                       const float* D, int n) {
    float p[ATTN_CHUNK], ds[ATTN_CHUNK];
    for (int ii = 0; ii < n; ii++) p[ii] = attention_dot<HS>(q + ii * HS, ks) - lse[ii];  // ks = scale * k_j
    for (int ii = 0; ii < n; ii++) p[ii] = fast_expf(p[ii]);
    for (int ii = 0; ii < n; ii++) ds[ii] = p[ii] * (attention_dot<HS>(g + ii * HS, vr) - D[ii]);
    for (int ii = 0; ii < n; ii++) {
        const float* qr = q + ii * HS;
        const float* gr = g + ii * HS;
#pragma unroll
        for (int d = 0; d < HS; d++) { dv[d] += p[ii] * gr[d]; dk[d] += ds[ii] * qr[d]; }
    }
}

// Forward, rows variant: o (B,NH,T,HS) and lse (B,NH,T) from q, k, v. Grid
// (ceil(T/(ATTN_ROWS*blockDim)), B*NH); each thread owns ATTN_ROWS
// consecutive query rows of head blockIdx.y and walks their keys (up to its
// last row when causal, all otherwise) in chunks of ATTN_CHUNK, applying
// each chunk to every row that sees it with the online softmax. The rows'
// state (q, acc) stays in the thread's local arrays, so each k, v chunk read
// from global memory serves ATTN_ROWS rows (on the CPU: from L1). No
// barriers, no shared memory.
template <int HS>
__global__ void attention_tiled_forward_rows_kernel(float* o, float* lse, const float* q, const float* k, const float* v,
                                                    int T, float scale, int causal) {
    int t0 = (blockIdx.x * blockDim.x + threadIdx.x) * ATTN_ROWS;
    if (t0 >= T) return;
    int nrows = min(ATTN_ROWS, T - t0);
    long bh = blockIdx.y, row0 = bh * T + t0;
    const float* kb = k + bh * T * HS;
    const float* vb = v + bh * T * HS;
    float qs[ATTN_ROWS][HS], acc[ATTN_ROWS][HS], m[ATTN_ROWS], l[ATTN_ROWS];
    for (int r = 0; r < nrows; r++) {
        for (int d = 0; d < HS; d++) { qs[r][d] = q[(row0 + r) * HS + d] * scale; acc[r][d] = 0.0f; }
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    int kend = causal ? t0 + nrows : T;
    for (int j0 = 0; j0 < kend; j0 += ATTN_CHUNK)
        for (int r = 0; r < nrows; r++) {
            int n = min(ATTN_CHUNK, (causal ? t0 + r + 1 : T) - j0);
            if (n > 0) attention_forward_chunk<HS>(acc[r], m[r], l[r], qs[r], kb + (long)j0 * HS, vb + (long)j0 * HS, n);
        }
    for (int r = 0; r < nrows; r++) {
        float inv = 1.0f / l[r];
        for (int d = 0; d < HS; d++) o[(row0 + r) * HS + d] = acc[r][d] * inv;
        lse[row0 + r] = m[r] + logf(l[r]);
    }
}

// Forward, smem variant: the same outputs. Grid (ceil(T/ATTN_BLOCK), B*NH),
// ATTN_BLOCK threads, one per query row of the block's query tile. The block
// walks the key tiles its rows need (up to its last row when causal): all
// threads copy ATTN_KTILE rows of k and v into shared memory, sync, then each
// thread runs the online softmax over the staged keys it attends to. Threads
// past T take part in the loads and barriers and write nothing. Shared memory:
// 2 * ATTN_KTILE * HS floats.
template <int HS>
__global__ void attention_tiled_forward_smem_kernel(float* o, float* lse, const float* q, const float* k, const float* v,
                                                    int T, float scale, int causal) {
    DYNAMIC_SHARED(float, smem);
    float* ks = smem;
    float* vs = smem + ATTN_KTILE * HS;
    int t0 = blockIdx.x * blockDim.x, t = t0 + threadIdx.x, tq = min(t, T - 1);
    long bh = blockIdx.y, row = bh * T + tq;
    const float* kb = k + bh * T * HS;
    const float* vb = v + bh * T * HS;
    float qs[HS], acc[HS];
    for (int d = 0; d < HS; d++) { qs[d] = q[row * HS + d] * scale; acc[d] = 0.0f; }
    float m = -INFINITY, l = 0.0f;
    int nkeys = causal ? tq + 1 : T;                                 // this row's keys
    int kend = causal ? min(T, t0 + (int)blockDim.x) : T;            // the block's keys
    for (int j0 = 0; j0 < kend; j0 += ATTN_KTILE) {
        int n = min(ATTN_KTILE, kend - j0);
        __syncthreads();  // the previous tile is consumed
        for (int i = threadIdx.x; i < n * HS; i += blockDim.x) {
            ks[i] = kb[(long)j0 * HS + i];
            vs[i] = vb[(long)j0 * HS + i];
        }
        __syncthreads();
        int mine = min(n, nkeys - j0);
        for (int c = 0; c < mine; c += ATTN_CHUNK)
            attention_forward_chunk<HS>(acc, m, l, qs, ks + c * HS, vs + c * HS, min(ATTN_CHUNK, mine - c));
    }
    if (t >= T) return;
    float inv = 1.0f / l;
    for (int d = 0; d < HS; d++) o[row * HS + d] = acc[d] * inv;
    lse[row] = m + logf(l);
}

// D[row] = dout[row] . o[row] over hs, for every (b, h, t) row: the softmax
// backward's row term. One thread per row, barrier-free.
__global__ void attention_row_dot_kernel(float* D, const float* dout, const float* o, long rows, int hs) {
    long row = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    float sum = 0.0f;
    for (int d = 0; d < hs; d++) sum += dout[row * hs + d] * o[row * hs + d];
    D[row] = sum;
}

// Backward dq, rows variant: dq (B,NH,T,HS) from q, k, v, dout, lse, D. Grid
// (ceil(T/(ATTN_ROWS*blockDim)), B*NH); each thread owns ATTN_ROWS
// consecutive query rows and walks their keys in chunks, recomputing p and
// ds per (row, key) and summing dq in local arrays; as in the forward rows
// kernel each k, v chunk serves all the thread's rows. No barriers.
template <int HS>
__global__ void attention_tiled_backward_dq_rows_kernel(float* dq, const float* q, const float* k, const float* v,
                                                        const float* dout, const float* lse, const float* D, int T,
                                                        float scale, int causal) {
    int t0 = (blockIdx.x * blockDim.x + threadIdx.x) * ATTN_ROWS;
    if (t0 >= T) return;
    int nrows = min(ATTN_ROWS, T - t0);
    long bh = blockIdx.y, row0 = bh * T + t0;
    const float* kb = k + bh * T * HS;
    const float* vb = v + bh * T * HS;
    float qs[ATTN_ROWS][HS], g[ATTN_ROWS][HS], acc[ATTN_ROWS][HS];
    for (int r = 0; r < nrows; r++)
        for (int d = 0; d < HS; d++) {
            qs[r][d] = q[(row0 + r) * HS + d] * scale; g[r][d] = dout[(row0 + r) * HS + d]; acc[r][d] = 0.0f;
        }
    int kend = causal ? t0 + nrows : T;
    for (int j0 = 0; j0 < kend; j0 += ATTN_CHUNK)
        for (int r = 0; r < nrows; r++) {
            int n = min(ATTN_CHUNK, (causal ? t0 + r + 1 : T) - j0);
            if (n > 0)
                attention_dq_chunk<HS>(acc[r], qs[r], g[r], lse[row0 + r], D[row0 + r], kb + (long)j0 * HS,
                                       vb + (long)j0 * HS, n);
        }
    for (int r = 0; r < nrows; r++)
        for (int d = 0; d < HS; d++) dq[(row0 + r) * HS + d] = acc[r][d] * scale;
}

// Backward dq, smem variant: the same output. Grid (ceil(T/ATTN_BLOCK), B*NH),
// ATTN_BLOCK threads, one per query row; k and v tiles of ATTN_KTILE rows are
// staged in shared memory by the whole block as in the forward smem kernel.
// Shared memory: 2 * ATTN_KTILE * HS floats.
template <int HS>
__global__ void attention_tiled_backward_dq_smem_kernel(float* dq, const float* q, const float* k, const float* v,
                                                        const float* dout, const float* lse, const float* D, int T,
                                                        float scale, int causal) {
    DYNAMIC_SHARED(float, smem);
    float* ks = smem;
    float* vs = smem + ATTN_KTILE * HS;
    int t0 = blockIdx.x * blockDim.x, t = t0 + threadIdx.x, tq = min(t, T - 1);
    long bh = blockIdx.y, row = bh * T + tq;
    const float* kb = k + bh * T * HS;
    const float* vb = v + bh * T * HS;
    float qs[HS], g[HS], acc[HS];
    for (int d = 0; d < HS; d++) { qs[d] = q[row * HS + d] * scale; g[d] = dout[row * HS + d]; acc[d] = 0.0f; }
    float lr = lse[row], Dr = D[row];
    int nkeys = causal ? tq + 1 : T;
    int kend = causal ? min(T, t0 + (int)blockDim.x) : T;
    for (int j0 = 0; j0 < kend; j0 += ATTN_KTILE) {
        int n = min(ATTN_KTILE, kend - j0);
        __syncthreads();
        for (int i = threadIdx.x; i < n * HS; i += blockDim.x) {
            ks[i] = kb[(long)j0 * HS + i];
            vs[i] = vb[(long)j0 * HS + i];
        }
        __syncthreads();
        int mine = min(n, nkeys - j0);
        for (int c = 0; c < mine; c += ATTN_CHUNK)
            attention_dq_chunk<HS>(acc, qs, g, lr, Dr, ks + c * HS, vs + c * HS, min(ATTN_CHUNK, mine - c));
    }
    if (t >= T) return;
    for (int d = 0; d < HS; d++) dq[row * HS + d] = acc[d] * scale;
}

// Backward dk, dv, rows variant: dk, dv (B,NH,T,HS) from q, k, v, dout, lse,
// D. Grid (ceil(T/(ATTN_ROWS*blockDim)), B*NH); each thread owns ATTN_ROWS
// consecutive key rows and walks the queries that see them (from its first
// key when causal, all otherwise) in chunks, recomputing p and ds per (query,
// key) and summing dk and dv in local arrays; each q, dout chunk serves all
// the thread's keys. No barriers.
template <int HS>
__global__ void attention_tiled_backward_dkdv_rows_kernel(float* dk, float* dv, const float* q, const float* k,
                                                          const float* v, const float* dout, const float* lse,
                                                          const float* D, int T, float scale, int causal) {
    int j0 = (blockIdx.x * blockDim.x + threadIdx.x) * ATTN_ROWS;
    if (j0 >= T) return;
    int nkeys = min(ATTN_ROWS, T - j0);
    long bh = blockIdx.y, row0 = bh * T + j0;
    const float* qb = q + bh * T * HS;
    const float* gb = dout + bh * T * HS;
    const float* lb = lse + bh * T;
    const float* Db = D + bh * T;
    float ks[ATTN_ROWS][HS], vr[ATTN_ROWS][HS], dka[ATTN_ROWS][HS], dva[ATTN_ROWS][HS];
    for (int r = 0; r < nkeys; r++)
        for (int d = 0; d < HS; d++) {
            ks[r][d] = k[(row0 + r) * HS + d] * scale; vr[r][d] = v[(row0 + r) * HS + d];
            dka[r][d] = 0.0f; dva[r][d] = 0.0f;
        }
    for (int i0 = causal ? j0 : 0; i0 < T; i0 += ATTN_CHUNK) {
        int n = min(ATTN_CHUNK, T - i0);
        for (int r = 0; r < nkeys; r++) {
            int skip = causal ? max(0, j0 + r - i0) : 0;  // queries of the chunk before key j0 + r
            if (skip < n)
                attention_dkdv_chunk<HS>(dka[r], dva[r], ks[r], vr[r], qb + (long)(i0 + skip) * HS,
                                         gb + (long)(i0 + skip) * HS, lb + i0 + skip, Db + i0 + skip, n - skip);
        }
    }
    for (int r = 0; r < nkeys; r++)
        for (int d = 0; d < HS; d++) { dk[(row0 + r) * HS + d] = dka[r][d] * scale; dv[(row0 + r) * HS + d] = dva[r][d]; }
}

// Backward dk, dv, smem variant: the same outputs. Grid (ceil(T/ATTN_BLOCK),
// B*NH), ATTN_BLOCK threads, one per key row of the block's key tile. The
// block walks the query tiles that see its keys (from its first key when
// causal): all threads copy ATTN_KTILE rows of q and dout, and their lse and
// D, into shared memory, sync, then each thread accumulates over the staged
// queries that see its key. Shared memory: 2 * ATTN_KTILE * (HS + 1) floats.
template <int HS>
__global__ void attention_tiled_backward_dkdv_smem_kernel(float* dk, float* dv, const float* q, const float* k,
                                                          const float* v, const float* dout, const float* lse,
                                                          const float* D, int T, float scale, int causal) {
    DYNAMIC_SHARED(float, smem);
    float* qsm = smem;
    float* gsm = qsm + ATTN_KTILE * HS;
    float* lsm = gsm + ATTN_KTILE * HS;
    float* Dsm = lsm + ATTN_KTILE;
    int j0 = blockIdx.x * blockDim.x, j = j0 + threadIdx.x, jk = min(j, T - 1);
    long bh = blockIdx.y, row = bh * T + jk;
    const float* qb = q + bh * T * HS;
    const float* gb = dout + bh * T * HS;
    float ks[HS], vr[HS], dka[HS], dva[HS];
    for (int d = 0; d < HS; d++) {
        ks[d] = k[row * HS + d] * scale; vr[d] = v[row * HS + d]; dka[d] = 0.0f; dva[d] = 0.0f;
    }
    int first = causal ? jk : 0;  // this key's first query
    for (int i0 = causal ? j0 : 0; i0 < T; i0 += ATTN_KTILE) {
        int n = min(ATTN_KTILE, T - i0);
        __syncthreads();
        for (int i = threadIdx.x; i < n * HS; i += blockDim.x) {
            qsm[i] = qb[(long)i0 * HS + i];
            gsm[i] = gb[(long)i0 * HS + i];
        }
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            lsm[i] = lse[bh * T + i0 + i];
            Dsm[i] = D[bh * T + i0 + i];
        }
        __syncthreads();
        int skip = max(0, first - i0);  // staged queries before this key's first
        for (int c = skip; c < n; c += ATTN_CHUNK)
            attention_dkdv_chunk<HS>(dka, dva, ks, vr, qsm + c * HS, gsm + c * HS, lsm + c, Dsm + c, min(ATTN_CHUNK, n - c));
    }
    if (j >= T) return;
    for (int d = 0; d < HS; d++) { dk[row * HS + d] = dka[d] * scale; dv[row * HS + d] = dva[d]; }
}

// The probabilities att (B,NH,T,T) the tiled forward used, rebuilt from q, k
// and lse: att[row, j] = exp(scale q_t . k_j - lse[row]) for keys the row
// sees, 0 after. Only for inspection (attention_keep_probs). One thread per
// row (b, h, t), barrier-free; grid (ceil(T/blockDim), B*NH).
template <int HS>
__global__ void attention_tiled_probs_kernel(float* att, const float* q, const float* k, const float* lse, int T,
                                             float scale, int causal) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    long bh = blockIdx.y, row = bh * T + t;
    float qs[HS];
    for (int d = 0; d < HS; d++) qs[d] = q[row * HS + d] * scale;
    int last = causal ? t : T - 1;
    for (int jj = 0; jj < T; jj++)
        att[row * T + jj] = jj <= last ? expf(attention_dot<HS>(qs, k + (bh * T + jj) * HS) - lse[row]) : 0.0f;
}

// ----------------------------------------------------------------------------
// variant selection
//
// materialized: cuBLAS for q k^T and att v, softmax over stored (B,NH,T,T)
//   rows; keeps att (B,NH,T,T) per layer, scratch preatt and datt (B,NH,T,T).
// tiled: the kernels above; keeps o (B,NH,T,hs) and lse (B,NH,T) per layer,
//   scratch D (B,NH,T): O(B T C) memory, any T.
// The rule (attention_uses_tiled), when hs is one of the tiled head sizes:
//   - tiled whenever one (B,NH,T,T) buffer would exceed
//     ATTENTION_MATERIALIZED_MAX_FLOATS (2^26 floats, 256 MiB; the
//     materialized variant keeps one per layer and two more as scratch), and
//   - host: otherwise materialized. Measured with dev/cuda/attention (fwd +
//     bwd of one causal layer, medians of 7; materialized / tiled time) on a
//     quiet 2-core Xeon with OpenBLAS's AVX-512 sgemm: C 256 NH 4 (hs 64) B
//     16 T 256 0.56x (one thread 0.62x), B 1 T 1024 0.74x, B 1 T 2048 0.58x,
//     B 1 T 4096 0.58x; C 128 NH 4 (hs 32) B 16 T 256 0.74x, B 4 T 1024
//     0.55x; C 64 NH 4 (hs 16) B 16 T 64, one thread, 0.31x. (On a 2-core
//     EPYC shared with other jobs the tiled kernels had won below T 4096:
//     there, two threads synchronizing around each small sgemm were the
//     cost.)
//   - GPU: otherwise tiled from T 1024, materialized below: the T x T
//     buffers cost O(T^2) memory traffic there, which the tiled kernels
//     avoid; a guess, yet to be measured on a GPU.
// ATTENTION_VARIANT=materialized|tiled|tiled-rows|tiled-smem|auto in the
// environment (or attention_variant before any activations are sized, and
// attention_tiled_use_smem) forces a variant for tests; tiled still needs a
// supported hs. With ATTENTION_KEEP_PROBS=1 the
// tiled variant also keeps the (B,NH,T,T) probabilities it used, rebuilt
// from lse, in front of its state, where the materialized variant keeps att:
// so that model tests can compare them with a reference.

#ifdef __CUDACC__
static const bool ATTENTION_TILED_SMEM_DEFAULT = true;
#else
static const bool ATTENTION_TILED_SMEM_DEFAULT = false;
#endif
static const long ATTENTION_MATERIALIZED_MAX_FLOATS = 1L << 26;

enum { ATTENTION_AUTO = -1, ATTENTION_MATERIALIZED = 0, ATTENTION_TILED = 1 };

// ATTENTION_VARIANT: auto (or unset), materialized, tiled (the backend's tiled
// kernels), tiled-rows or tiled-smem (those kernels)
static const char* attention_variant_env() {
    const char* e = getenv("ATTENTION_VARIANT");
    if (!e || !*e) return "auto";
    if (strcmp(e, "auto") && strcmp(e, "materialized") && strcmp(e, "tiled") && strcmp(e, "tiled-rows") &&
        strcmp(e, "tiled-smem")) {
        fprintf(stderr, "error: ATTENTION_VARIANT=%s; expected auto, materialized, tiled, tiled-rows or tiled-smem\n", e);
        exit(EXIT_FAILURE);
    }
    return e;
}
static int attention_variant_from_env() {
    const char* e = attention_variant_env();
    return !strcmp(e, "auto") ? ATTENTION_AUTO : !strcmp(e, "materialized") ? ATTENTION_MATERIALIZED : ATTENTION_TILED;
}
static bool attention_tiled_smem_from_env() {
    const char* e = attention_variant_env();
    return !strcmp(e, "tiled-smem") ? true : !strcmp(e, "tiled-rows") ? false : ATTENTION_TILED_SMEM_DEFAULT;
}
static bool attention_keep_probs_from_env() {
    const char* e = getenv("ATTENTION_KEEP_PROBS");
    return e && *e && strcmp(e, "0");
}
// change the first and the last only before sizing activations: the layout depends on them
static int attention_variant = attention_variant_from_env();
static bool attention_tiled_use_smem = attention_tiled_smem_from_env();
static bool attention_keep_probs = attention_keep_probs_from_env();

static bool attention_tiled_supports(int hs) { return hs == 8 || hs == 16 || hs == 32 || hs == 64 || hs == 128; }

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
    if (attention_variant != ATTENTION_AUTO) return attention_variant == ATTENTION_TILED;
    return attention_auto_tiled(B, T, C, NH);
}

// Fixes the automatic choice (when none is forced) to the one for a
// trainer's model at the batch and length its activations are sized for.
// Without it a call with a smaller batch (an eval batch below the training
// one, a last partial batch) could make the other choice, whose buffers were
// never allocated. For a program's one model, before sizing its activations.
static void attention_pin_variant(int B, int T, int C, int NH) {
    if (attention_variant == ATTENTION_AUTO)
        attention_variant = attention_auto_tiled(B, T, C, NH) ? ATTENTION_TILED : ATTENTION_MATERIALIZED;
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
        s.state = (attention_keep_probs ? rows * T : 0) + rows * hs + rows;
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

#ifdef __CUDACC__
static bool softmax_use_warp = true;
#else
static bool softmax_use_warp = host_variants_gpu();  // HOST_VARIANTS=gpu: the GPU's choice
#endif

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
                                           float* y, int B, int T, int C, int NH, int causal) {
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
    if (softmax_use_warp) {
        LAUNCH(softmax_forward_warp_kernel, CEIL_DIV(rows * 32, 256), 256, 0)(att, preatt, rows, T, scale, causal);
    } else {
        LAUNCH(softmax_forward_rows_kernel, CEIL_DIV(rows, 64), 64, 0)(att, preatt, rows, T, scale, causal);
    }
    cudaCheck(cudaGetLastError());
    // y[t1] = sum_t2 att[t1, t2] v[t2]
    for (int i = 0; i < nblk; i++) {
        int r0 = attention_block_start(i, nblk, T), r1 = attention_block_start(i + 1, nblk, T);
        attention_rows_gemm(handle, y, att, v, BNH, T, hs, r0, r1);
    }
    LAUNCH(attention_unpermute_kernel, BNH * T, row_threads(hs), 0)(out, y, B, T, NH, hs, 1, row_span(hs));
    cudaCheck(cudaGetLastError());
}

// materialized backward: dq, dk, dv into dqkvr (3,B,NH,T,hs) from dy
// (B,NH,T,hs); datt (B,NH,T,T) is scratch
static void attention_materialized_backward(cublasHandle_t handle, float* dqkvr, const float* dy, float* datt,
                                            const float* qkvr, const float* att, int B, int T, int C, int NH,
                                            int causal) {
    int hs = C / NH, BNH = B * NH, nblk = attention_query_blocks(T, causal);
    long n = (long)BNH * T * hs;
    const float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
    float *dq = dqkvr, *dk = dqkvr + n, *dv = dqkvr + 2 * n;
    // datt[t1, t2] = dy[t1] . v[t2];  dv[t2] = sum_t1 att[t1, t2] dy[t1]
    for (int i = 0; i < nblk; i++) {
        int r0 = attention_block_start(i, nblk, T), r1 = attention_block_start(i + 1, nblk, T);
        attention_scores_gemm(handle, datt, dy, v, BNH, T, hs, r0, r1);
        attention_cols_gemm(handle, dv, att, dy, BNH, T, hs, r0, r1);
    }
    float scale = 1.0f / sqrtf((float)hs);
    int rows = BNH * T;
    if (softmax_use_warp) {
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

// tiled forward at head size HS: o, lse from q, k, v (each (B,NH,T,HS))
template <int HS>
static void attention_tiled_forward_hs(float* o, float* lse, const float* q, const float* k, const float* v, int BNH,
                                       int T, int causal) {
    float scale = 1.0f / sqrtf((float)HS);
    dim3 grid(CEIL_DIV(T, ATTN_BLOCK), BNH);
    if (attention_tiled_use_smem) {
        LAUNCH(attention_tiled_forward_smem_kernel<HS>, grid, ATTN_BLOCK, 2 * ATTN_KTILE * HS * sizeof(float))(
            o, lse, q, k, v, T, scale, causal);
    } else {
        dim3 rows_grid(CEIL_DIV(T, ATTN_ROWS * ATTN_ROWS_BLOCK), BNH);
        LAUNCH(attention_tiled_forward_rows_kernel<HS>, rows_grid, ATTN_ROWS_BLOCK, 0)(o, lse, q, k, v, T, scale, causal);
    }
    cudaCheck(cudaGetLastError());
}

// tiled backward at head size HS: dq, dk, dv from dout and the forward's
// o, lse; D (B,NH,T) is scratch
template <int HS>
static void attention_tiled_backward_hs(float* dq, float* dk, float* dv, float* D, const float* dout, const float* q,
                                        const float* k, const float* v, const float* o, const float* lse, int BNH,
                                        int T, int causal) {
    float scale = 1.0f / sqrtf((float)HS);
    long rows = (long)BNH * T;
    LAUNCH(attention_row_dot_kernel, CEIL_DIV(rows, 256), 256, 0)(D, dout, o, rows, HS);
    cudaCheck(cudaGetLastError());
    dim3 grid(CEIL_DIV(T, ATTN_BLOCK), BNH);
    if (attention_tiled_use_smem) {
        LAUNCH(attention_tiled_backward_dq_smem_kernel<HS>, grid, ATTN_BLOCK, 2 * ATTN_KTILE * HS * sizeof(float))(
            dq, q, k, v, dout, lse, D, T, scale, causal);
        cudaCheck(cudaGetLastError());
        LAUNCH(attention_tiled_backward_dkdv_smem_kernel<HS>, grid, ATTN_BLOCK, 2 * ATTN_KTILE * (HS + 1) * sizeof(float))(
            dk, dv, q, k, v, dout, lse, D, T, scale, causal);
    } else {
        dim3 rows_grid(CEIL_DIV(T, ATTN_ROWS * ATTN_ROWS_BLOCK), BNH);
        LAUNCH(attention_tiled_backward_dq_rows_kernel<HS>, rows_grid, ATTN_ROWS_BLOCK, 0)(dq, q, k, v, dout, lse, D, T,
                                                                                           scale, causal);
        cudaCheck(cudaGetLastError());
        LAUNCH(attention_tiled_backward_dkdv_rows_kernel<HS>, rows_grid, ATTN_ROWS_BLOCK, 0)(dk, dv, q, k, v, dout, lse, D,
                                                                                             T, scale, causal);
    }
    cudaCheck(cudaGetLastError());
}

template <int HS>
static void attention_tiled_probs_hs(float* att, const float* q, const float* k, const float* lse, int BNH, int T,
                                     int causal) {
    dim3 grid(CEIL_DIV(T, ATTN_BLOCK), BNH);
    LAUNCH(attention_tiled_probs_kernel<HS>, grid, ATTN_BLOCK, 0)(att, q, k, lse, T, 1.0f / sqrtf((float)HS), causal);
    cudaCheck(cudaGetLastError());
}

// the tiled state in `att`: [probs (B,NH,T,T) if kept] o (B,NH,T,hs), lse (B,NH,T)
static void attention_tiled_state(float* att, int B, int T, int C, int NH, float** probs, float** o, float** lse) {
    long rows = (long)B * NH * T;
    *probs = attention_keep_probs ? att : nullptr;
    *o = att + (attention_keep_probs ? rows * T : 0);
    *lse = *o + rows * (C / NH);
}

#define ATTENTION_HS_DISPATCH(hs, call)                      \
    switch (hs) {                                            \
        case 8: { const int HS = 8; call; } break;           \
        case 16: { const int HS = 16; call; } break;         \
        case 32: { const int HS = 32; call; } break;         \
        case 64: { const int HS = 64; call; } break;         \
        case 128: { const int HS = 128; call; } break;       \
        default: fprintf(stderr, "attention: no tiled kernels for head size %d\n", hs); exit(EXIT_FAILURE); \
    }

// Multi-head attention forward, either variant (attention_uses_tiled). out
// (B,T,C) from qkv (B,T,3C). Kept for backward: qkvr (3,B,NH,T,hs) and att
// (attention_act_sizes().state floats). Scratch: preatt
// (attention_act_sizes().preatt floats) and y (B,NH,T,hs).
void attention_forward(cublasHandle_t handle, float* out, float* qkvr, float* att, float* preatt, float* y,
                       const float* qkv, int B, int T, int C, int NH, int causal) {
    int hs = C / NH;
    long n = (long)B * NH * T * hs;
    float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
    LAUNCH(attention_permute_kernel, B * NH * T, row_threads(hs), 0)(q, k, v, qkv, B, T, NH, hs, row_span(hs));
    cudaCheck(cudaGetLastError());
    if (!attention_uses_tiled(B, T, C, NH)) {
        attention_materialized_forward(handle, out, qkvr, att, preatt, y, B, T, C, NH, causal);
        return;
    }
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
void attention_backward(cublasHandle_t handle, float* dqkv, float* dqkvr, float* dy, float* datt,
                        const float* dout, const float* qkvr, const float* att, int B, int T, int C, int NH, int causal) {
    int hs = C / NH;
    long n = (long)B * NH * T * hs;
    LAUNCH(attention_unpermute_kernel, B * NH * T, row_threads(hs), 0)((float*)dout, dy, B, T, NH, hs, 0, row_span(hs));
    cudaCheck(cudaGetLastError());
    if (!attention_uses_tiled(B, T, C, NH)) {
        attention_materialized_backward(handle, dqkvr, dy, datt, qkvr, att, B, T, C, NH, causal);
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

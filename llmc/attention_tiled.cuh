/*
Tiled attention (memory-linear): FlashAttention's algorithm in fp32, forward
and backward, for head sizes 8, 16, 32, 64 and 128, in two kernel variants
(rows and smem; kernel_choices.attention_tiled_smem picks), and the
launchers attention.cuh calls when the tiled variant is in use. Scores are
never stored: the forward keeps o and the log-sum-exp per query row, the
backward recomputes the probabilities from them.
*/
#pragma once
#include "cuda_common.h"
#include "fast_math.cuh"

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
// sees, 0 after. Only for inspection (kernel_choices.attention_keep_probs). One thread per
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
// launchers

static bool attention_tiled_supports(int hs) { return hs == 8 || hs == 16 || hs == 32 || hs == 64 || hs == 128; }

// The heads go on grid.y (blockIdx.y), which CUDA limits to 65535 blocks: a
// launcher covers more heads in several launches of at most that many, each
// with its pointers moved to its first head.
#define ATTN_MAX_GRID_Y 65535

// tiled forward at head size HS: o, lse from q, k, v (each (B,NH,T,HS))
template <int HS>
static void attention_tiled_forward_hs(float* o, float* lse, const float* q, const float* k, const float* v, int BNH,
                                       int T, int causal) {
    float scale = 1.0f / sqrtf((float)HS);
    for (int h0 = 0; h0 < BNH; h0 += ATTN_MAX_GRID_Y) {
        int heads = BNH - h0 < ATTN_MAX_GRID_Y ? BNH - h0 : ATTN_MAX_GRID_Y;
        long r = (long)h0 * T, e = r * HS;  // the first head's first row, and its first element
        if (kernel_choices.attention_tiled_smem) {
            dim3 grid(CEIL_DIV(T, ATTN_BLOCK), heads);
            LAUNCH(attention_tiled_forward_smem_kernel<HS>, grid, ATTN_BLOCK, 2 * ATTN_KTILE * HS * sizeof(float))(
                o + e, lse + r, q + e, k + e, v + e, T, scale, causal);
        } else {
            dim3 rows_grid(CEIL_DIV(T, ATTN_ROWS * ATTN_ROWS_BLOCK), heads);
            LAUNCH(attention_tiled_forward_rows_kernel<HS>, rows_grid, ATTN_ROWS_BLOCK, 0)(o + e, lse + r, q + e, k + e,
                                                                                          v + e, T, scale, causal);
        }
        cudaCheck(cudaGetLastError());
    }
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
    for (int h0 = 0; h0 < BNH; h0 += ATTN_MAX_GRID_Y) {
        int heads = BNH - h0 < ATTN_MAX_GRID_Y ? BNH - h0 : ATTN_MAX_GRID_Y;
        long r = (long)h0 * T, e = r * HS;
        if (kernel_choices.attention_tiled_smem) {
            dim3 grid(CEIL_DIV(T, ATTN_BLOCK), heads);
            LAUNCH(attention_tiled_backward_dq_smem_kernel<HS>, grid, ATTN_BLOCK, 2 * ATTN_KTILE * HS * sizeof(float))(
                dq + e, q + e, k + e, v + e, dout + e, lse + r, D + r, T, scale, causal);
            cudaCheck(cudaGetLastError());
            LAUNCH(attention_tiled_backward_dkdv_smem_kernel<HS>, grid, ATTN_BLOCK, 2 * ATTN_KTILE * (HS + 1) * sizeof(float))(
                dk + e, dv + e, q + e, k + e, v + e, dout + e, lse + r, D + r, T, scale, causal);
        } else {
            dim3 rows_grid(CEIL_DIV(T, ATTN_ROWS * ATTN_ROWS_BLOCK), heads);
            LAUNCH(attention_tiled_backward_dq_rows_kernel<HS>, rows_grid, ATTN_ROWS_BLOCK, 0)(
                dq + e, q + e, k + e, v + e, dout + e, lse + r, D + r, T, scale, causal);
            cudaCheck(cudaGetLastError());
            LAUNCH(attention_tiled_backward_dkdv_rows_kernel<HS>, rows_grid, ATTN_ROWS_BLOCK, 0)(
                dk + e, dv + e, q + e, k + e, v + e, dout + e, lse + r, D + r, T, scale, causal);
        }
        cudaCheck(cudaGetLastError());
    }
}

template <int HS>
static void attention_tiled_probs_hs(float* att, const float* q, const float* k, const float* lse, int BNH, int T,
                                     int causal) {
    for (int h0 = 0; h0 < BNH; h0 += ATTN_MAX_GRID_Y) {
        int heads = BNH - h0 < ATTN_MAX_GRID_Y ? BNH - h0 : ATTN_MAX_GRID_Y;
        long r = (long)h0 * T, e = r * HS;
        dim3 grid(CEIL_DIV(T, ATTN_BLOCK), heads);
        LAUNCH(attention_tiled_probs_kernel<HS>, grid, ATTN_BLOCK, 0)(att + r * T, q + e, k + e, lse + r, T,
                                                                      1.0f / sqrtf((float)HS), causal);
        cudaCheck(cudaGetLastError());
    }
}

// the tiled state in `att`: [probs (B,NH,T,T) if kept] o (B,NH,T,hs), lse (B,NH,T)
static void attention_tiled_state(float* att, int B, int T, int C, int NH, float** probs, float** o, float** lse) {
    long rows = (long)B * NH * T;
    *probs = kernel_choices.attention_keep_probs ? att : nullptr;
    *o = att + (kernel_choices.attention_keep_probs ? rows * T : 0);
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

/*
Mamba's selective scan, forward and backward, with dt's softplus and the
SiLU(z) gating fused in.

For each batch b, channel e and state n, over time t:
  h_t = exp(dt_t * A[e,n]) * h_{t-1} + dt_t * B_t[n] * u_t        (h_{-1} = h0, or 0)
  y_t = sum_n h_t[n] * C_t[n] + D[e] * u_t
  gated_t = y_t * silu(z_t)
with A = -exp(A_log). B_t and C_t are columns [R, R+N) and [R+N, R+2N) of
x_proj's output x_dbl (row distance R + 2N); z is the second half of
in_proj's output (row distance 2E).

The recurrence is a scan under the associative operator on pairs
  (a0, b0) then (a1, b1)  ->  (a1 * a0, a1 * b0 + b1),
h_t being the b of the prefix up to t (with h_{-1} folded in as a carry).
Time is cut into chunks of SCAN_CHUNK = 32 steps. The forward pass stores
the state at the end of every chunk (B, E, nchunks, N), nothing more; the
backward pass recomputes each chunk's states from the stored state at its
start, then runs the adjoint recurrence backwards in time:
  g_t = dy_t * C_t + exp(dt_{t+1} A) * g_{t+1}
from which every gradient follows (du, ddt, dB, dC, dA_log, dD, dz).

Three variants of each pass, interchangeable (same stored states, same
gradients up to rounding and summation order):
  *_seq_kernel:     sequential in time, one thread per (b, e) forward and
                    per (b, group of 8 channels) backward. Barrier-free:
                    plain loops on the host backend. Any N.
  *_vec_kernel<NS>: the same recurrences with N a compile-time constant
                    (SCAN_VEC_N = 16), one thread per (b, group of 8
                    channels) in both passes, the group's channels stepped
                    together; every loop over states is a fixed-trip loop
                    over arrays of NS, so g++ vectorizes it (exp by
                    fast_expf). The host's choice when N = 16.
  *_chunked_kernel<NS>: the parallel scan, N a compile-time constant
                    (SCAN_DSTATE = 16: the arrays over states live in
                    registers; other N are refused with an error). A block
                    holds the 8 channels of a group, one warp each, and
                    stages each chunk's B and C rows in shared memory once
                    for all of them; each state's pairs are combined across
                    lanes by a Hillis-Steele scan with warp shuffles (log2
                    32 = 5 rounds), the state carried from block of steps
                    to block, so any T works (the last chunk may be
                    partial). Forward: lane i owns 4 consecutive steps of
                    128, composes them serially, then one warp scan.
                    Backward: lane i holds step chunk*32 + i; the block
                    combines its warps' dB, dC contributions in shared
                    memory (padded rows: no bank conflicts).
The forward pass takes an optional initial state h0 (B, E, N) (null: zeros,
the same operations as before it existed), so that a sequence can be run in
chunks with the state carried between them; the state after the last
position is the stored state of the last chunk (scan_final_state copies it
out as (B, E, N)). The backward pass takes the same h0 (training from
passed states, train_mamba -R): chunk 0's states are recomputed from it;
no gradient flows into h0 itself.

Reductions are deterministic: dB and dC (sums over channels) are summed in a
fixed order within a group, written per group, then added over groups in
order; dA_log and dD (sums over batch and time) are written per batch row
and added over the batch in order. No atomics.

The selection ablation's time-invariant scan (dt, B, C per channel, not
per position) has its own kernels below (selective_scan_lti_*), one variant
for both backends.

Limits: d_state N <= MAX_DSTATE (16), and N = SCAN_DSTATE (16) for the
chunked kernels (the GPU's); any E and T.
*/
#pragma once
#include "cuda_common.h"
#include "conv1d.cuh"  // silu, silu_grad
#include "elementwise.cuh"
#include "fast_math.cuh"
#include "dropout.cuh"  // the counter-based hash of the dt stretch
#include "utils.h"  // fail

#define SCAN_CHUNK 32
#define MAX_DSTATE 16
#define SCAN_GROUP 8  // channels whose dB, dC contributions are summed together
#define SCAN_DSTATE 16  // the d_state the chunked (GPU) kernels are compiled for

// dt = softplus(dt + bias[e]) in place, softplus(x) = log(1 + e^x) (=
// x above ~17 in fp32; PyTorch: x above 20, the same values), by
// fast_softplusf (vectorizes on the host). Row kernel (elementwise.cuh): one
// block per row of E, its threads striding over e.
__global__ void dt_softplus_kernel(float* dt, const float* bias, int E, int span) {
    float* row = dt + (long)blockIdx.x * E;
    ROW_FOR(e, E, span) row[e] = fast_softplusf(row[e] + bias[e]);
}

// ----------------------------------------------------------------------------
// forward

// The sequential scans' output at one position (row = b*T + t, channel e):
// y = yv, gated = yv * silu(z), and at the end of a chunk (or of the row)
// the state h (N) into states (B, E, nchunks, N).
__device__ inline void scan_seq_store(float* y, float* gated, float* states, const float* xz, const float* h, float yv,
                                      long row, int b, int e, int t, int T, int E, int N) {
    y[row * E + e] = yv;
    gated[row * E + e] = yv * silu(xz[row * 2 * E + E + e]);
    if (t % SCAN_CHUNK == SCAN_CHUNK - 1 || t == T - 1) {
        float* s = states + ((long)(b * E + e) * CEIL_DIV(T, SCAN_CHUNK) + t / SCAN_CHUNK) * N;
        for (int n = 0; n < N; n++) s[n] = h[n];
    }
}

__global__ void selective_scan_forward_seq_kernel(float* y, float* gated, float* states, const float* u,
                                                  const float* dt, const float* x_dbl, int R, const float* A_log,
                                                  const float* D, const float* xz, const float* h0, int B, int T,
                                                  int E, int N) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * E) return;
    int e = idx % E, b = idx / E;
    int xs = R + 2 * N;
    float A[MAX_DSTATE], h[MAX_DSTATE];
    for (int n = 0; n < N; n++) { A[n] = -expf(A_log[e * N + n]); h[n] = h0 ? h0[(long)idx * N + n] : 0.0f; }
    for (int t = 0; t < T; t++) {
        long row = (long)b * T + t;
        float dtv = dt[row * E + e], uv = u[row * E + e];
        const float* Bt = x_dbl + row * xs + R;
        const float* Ct = Bt + N;
        float acc = 0.0f;
        for (int n = 0; n < N; n++) {
            h[n] = expf(dtv * A[n]) * h[n] + dtv * Bt[n] * uv;
            acc += h[n] * Ct[n];
        }
        scan_seq_store(y, gated, states, xz, h, acc + D[e] * uv, row, b, e, t, T, E, N);
    }
}

// A chunk's B and C rows, (SCAN_CHUNK, 2 NS) of x_dbl's columns [R, R + 2NS),
// into shared memory, rows past T as zeros: the block's threads take
// consecutive floats of a row (coalesced), once for all its warps. Rows are
// SCAN_BC_STRIDE = 2NS + 1 floats apart, so that lane i reading row i, column
// n hits bank (i + n) mod 32: no conflicts.
#define SCAN_BC_STRIDE(NS) (2 * (NS) + 1)
template <int NS>
__device__ __forceinline__ void scan_load_bc_chunk(float* bc_s, const float* x_dbl, int R, long row0, int valid_rows) {
    const int xs = R + 2 * NS;
    for (int i = threadIdx.x; i < SCAN_CHUNK * 2 * NS; i += blockDim.x) {
        int tl = i / (2 * NS), j = i % (2 * NS);
        bc_s[tl * SCAN_BC_STRIDE(NS) + j] = tl < valid_rows ? x_dbl[(row0 + tl) * xs + R + j] : 0.0f;
    }
}

// The parallel forward scan, d_state NS a compile-time constant (SCAN_DSTATE
// = 16; the launcher checks the run-time N), so A, the carried state and
// every loop over states are unrolled into registers. Block = SCAN_GROUP
// warps = channels e0 .. e0 + 7 of batch row b, one warp per channel. The
// warp steps through time SCAN_LANE_STEPS * 32 = 128 steps at a time, and
// lane i owns the SCAN_LANE_STEPS consecutive steps from 4i (as mamba_ssm's
// kernels do): per state it composes its steps' (decay, input) pairs
// serially, the 32 lanes' composites are combined by one Hillis-Steele scan
// with shuffles (5 rounds), and each lane then runs its steps serially from
// the state before its first. 12 shuffles per state per 128 steps (one lane
// per step would take 11 per 32). The state is carried between the 128-step
// blocks, so any T works; the state at the end of every 32-step chunk (and
// at T - 1) is stored for the backward pass. The block first stages the
// rows' B and C in shared memory once for all its warps (step 4i + k at row
// 32k + i: lane i reading its k-th step hits bank (i + n) mod 32, no
// conflicts). Warps past E only take part in the barriers.
#define SCAN_LANE_STEPS 4
#define SCAN_FWD_STEPS (SCAN_LANE_STEPS * 32)
template <int NS>
__global__ void selective_scan_forward_chunked_kernel(float* y, float* gated, float* states, const float* u,
                                                      const float* dt, const float* x_dbl, int R, const float* A_log,
                                                      const float* D, const float* xz, const float* h0, int B, int T,
                                                      int E) {
    const int K = SCAN_LANE_STEPS, xs = R + 2 * NS;
    __shared__ float bc_s[SCAN_FWD_STEPS * SCAN_BC_STRIDE(NS)];
    int ngroups = CEIL_DIV(E, SCAN_GROUP);
    int g = blockIdx.x % ngroups, b = blockIdx.x / ngroups;
    int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    int e = g * SCAN_GROUP + w;
    bool active = e < E;
    int nchunks = CEIL_DIV(T, SCAN_CHUNK);
    float A[NS], carry[NS];
#pragma unroll
    for (int n = 0; n < NS; n++) {
        A[n] = active ? -expf(A_log[e * NS + n]) : 0.0f;
        carry[n] = (active && h0) ? h0[((long)b * E + e) * NS + n] : 0.0f;
    }
    for (int t0 = 0; t0 < T; t0 += SCAN_FWD_STEPS) {
        __syncthreads();  // every warp is done with the previous rows
        for (int i = threadIdx.x; i < SCAN_FWD_STEPS * 2 * NS; i += blockDim.x) {
            int step = i / (2 * NS), j = i % (2 * NS);
            int r = (step % K) * 32 + step / K;
            bc_s[r * SCAN_BC_STRIDE(NS) + j] = t0 + step < T ? x_dbl[((long)b * T + t0 + step) * xs + R + j] : 0.0f;
        }
        __syncthreads();
        float dtv[K], uv[K], acc[K];
        bool valid[K];
#pragma unroll
        for (int k = 0; k < K; k++) {
            int t = t0 + lane * K + k;
            valid[k] = active && t < T;
            long row = (long)b * T + (valid[k] ? t : 0);
            dtv[k] = valid[k] ? dt[row * E + e] : 0.0f;
            uv[k] = valid[k] ? u[row * E + e] : 0.0f;
            acc[k] = 0.0f;
        }
#pragma unroll
        for (int n = 0; n < NS; n++) {
            float a[K], bb[K];
            float ac = 1.0f, bc = 0.0f;  // the lane's composite: h_out = ac * h_in + bc
#pragma unroll
            for (int k = 0; k < K; k++) {
                a[k] = valid[k] ? expf(dtv[k] * A[n]) : 1.0f;
                bb[k] = valid[k] ? dtv[k] * bc_s[(k * 32 + lane) * SCAN_BC_STRIDE(NS) + n] * uv[k] : 0.0f;
                bc = a[k] * bc + bb[k];
                ac = a[k] * ac;
            }
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) {  // inclusive scan of the composites over lanes
                float ap = __shfl_up_sync(0xffffffffu, ac, off);
                float bp = __shfl_up_sync(0xffffffffu, bc, off);
                if (lane >= off) { bc = ac * bp + bc; ac = ac * ap; }
            }
            float h_end = ac * carry[n] + bc;  // the state after the lane's last step
            float h = __shfl_up_sync(0xffffffffu, h_end, 1);
            if (lane == 0) h = carry[n];
#pragma unroll
            for (int k = 0; k < K; k++) {
                int t = t0 + lane * K + k;
                h = a[k] * h + bb[k];
                acc[k] += h * bc_s[(k * 32 + lane) * SCAN_BC_STRIDE(NS) + NS + n];
                if (valid[k] && (t % SCAN_CHUNK == SCAN_CHUNK - 1 || t == T - 1))
                    states[((long)(b * E + e) * nchunks + t / SCAN_CHUNK) * NS + n] = h;
            }
            carry[n] = __shfl_sync(0xffffffffu, h_end, 31);  // steps past T keep the state: lane 31 ends at T - 1's
        }
#pragma unroll
        for (int k = 0; k < K; k++)
            if (valid[k]) {
                long row = (long)b * T + t0 + lane * K + k;
                float yv = acc[k] + D[e] * uv[k];
                y[row * E + e] = yv;
                gated[row * E + e] = yv * silu(xz[row * 2 * E + E + e]);
            }
    }
}

// Sum of v[0..NS) (NS a power of two) by halving: v[i] += v[i + NS/2], then
// the same on the first half. A fixed order; each level is one vector add on
// the host (fully unrolled: every trip count is a constant).
template <int NS> __host__ __device__ __forceinline__ float scan_tree_sum(float* v) {
    if constexpr (NS == 1) {
        return v[0];
    } else {
        for (int i = 0; i < NS / 2; i++) v[i] += v[i + NS / 2];
        return scan_tree_sum<NS / 2>(v);
    }
}

// The sequential forward scan with the state count NS a compile-time
// constant (the run-time N must equal it) and every loop over the states a
// fixed-trip loop over arrays of NS: g++ keeps the states in vector
// registers (16 states = two AVX2 or one AVX-512 register) and vectorizes
// the decay exp (fast_expf) and the update; the sum over states is a fixed
// tree. One thread per (b, group of SCAN_GROUP channels), barrier-free; it
// steps the group's channels together (time outer, channel inner), so each
// time step reads 32 contiguous bytes (half a 64-byte cache line) of dt, u,
// z and writes as much of y, gated for the whole group (one thread per
// channel would walk rows E floats apart, a stride the L1 cache holds only a
// few of; the neighbouring group reads the other half later, from the cache
// while a layer's rows fit there). Matches
// selective_scan_forward_seq_kernel up to rounding (exp under 1 ulp, tree order).
template <int NS>
__global__ void selective_scan_forward_vec_kernel(float* y, float* gated, float* states, const float* u,
                                                  const float* dt, const float* x_dbl, int R, const float* A_log,
                                                  const float* D, const float* xz, const float* h0, int B, int T,
                                                  int E) {
    int ngroups = CEIL_DIV(E, SCAN_GROUP);
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * ngroups) return;
    int g = idx % ngroups, b = idx / ngroups;
    int e0 = g * SCAN_GROUP, ne = min(SCAN_GROUP, E - e0);
    int xs = R + 2 * NS, nchunks = CEIL_DIV(T, SCAN_CHUNK);
    float A[SCAN_GROUP][NS], h[SCAN_GROUP][NS];
    for (int j = 0; j < ne; j++)
        for (int n = 0; n < NS; n++) {
            A[j][n] = -expf(A_log[(e0 + j) * NS + n]);
            h[j][n] = h0 ? h0[((long)b * E + e0 + j) * NS + n] : 0.0f;
        }
    for (int t = 0; t < T; t++) {
        long row = (long)b * T + t;
        const float* Bt = x_dbl + row * xs + R;
        const float* Ct = Bt + NS;
        float Bn[NS], Cn[NS];
        for (int n = 0; n < NS; n++) { Bn[n] = Bt[n]; Cn[n] = Ct[n]; }
        bool chunk_end = t % SCAN_CHUNK == SCAN_CHUNK - 1 || t == T - 1;
        const float* dt_row = dt + row * E + e0;
        const float* u_row = u + row * E + e0;
        float ys[SCAN_GROUP];
        for (int j = 0; j < ne; j++) {
            float dtv = dt_row[j], uv = u_row[j];
            float hc[NS];
            for (int n = 0; n < NS; n++) {
                h[j][n] = fmaf(fast_expf(dtv * A[j][n]), h[j][n], dtv * Bn[n] * uv);
                hc[n] = h[j][n] * Cn[n];
            }
            ys[j] = scan_tree_sum<NS>(hc);
        }
        // the per-channel rest, a loop over the group's channels (vectorized too)
        const float* z_row = xz + row * 2 * E + E + e0;
        float* y_row = y + row * E + e0;
        float* g_row = gated + row * E + e0;
        for (int j = 0; j < ne; j++) {
            float yv = ys[j] + D[e0 + j] * u_row[j];
            y_row[j] = yv;
            g_row[j] = yv * silu(z_row[j]);
        }
        if (chunk_end)
            for (int j = 0; j < ne; j++) {
                float* s = states + ((long)(b * E + e0 + j) * nchunks + t / SCAN_CHUNK) * NS;
                for (int n = 0; n < NS; n++) s[n] = h[j][n];
            }
    }
}

// ----------------------------------------------------------------------------
// backward
//
// In: dgated (B,T,E), and what the forward pass saw or stored. Out:
//   du (B,T,E), ddt (B,T,E) = gradient before softplus (w.r.t. dt_proj's
//   output plus bias; sigmoid(x) = 1 - exp(-softplus(x))), dz into the z
//   half of dxz (row distance 2E), dbc_partial (B,T,ngroups,2N) per group
//   [dB | dC], dA_partial (B,E,N) already times A (so it is d/dA_log),
//   dD_partial (B,E).
// h0 (B,E,N): the forward's initial state (null: zeros). No gradient flows
// into it; it enters the gradients of dt and A_log through h_{-1}.

// state n of channel e, row b at the start of chunk c: the stored state at
// the end of chunk c - 1, or for chunk 0 the initial state (h0, or zeros)
__device__ inline float scan_chunk_start(const float* states, const float* h0, int b, int e, int c, int nchunks,
                                         int E, int N, int n) {
    if (c > 0) return states[((long)(b * E + e) * nchunks + c - 1) * N + n];
    return h0 ? h0[((long)b * E + e) * N + n] : 0.0f;
}

__global__ void selective_scan_backward_seq_kernel(float* du, float* ddt, float* dxz, float* dbc_partial,
                                                   float* dA_partial, float* dD_partial, const float* dgated,
                                                   const float* y, const float* u, const float* dt,
                                                   const float* x_dbl, int R, const float* A_log, const float* D,
                                                   const float* xz, const float* states, const float* h0, int B,
                                                   int T, int E, int N) {
    int ngroups = CEIL_DIV(E, SCAN_GROUP);
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * ngroups) return;
    int g = idx % ngroups, b = idx / ngroups;
    int xs = R + 2 * N, nchunks = CEIL_DIV(T, SCAN_CHUNK);
    for (int t = 0; t < T; t++) {
        float* p = dbc_partial + (((long)b * T + t) * ngroups + g) * 2 * N;
        for (int j = 0; j < 2 * N; j++) p[j] = 0.0f;
    }
    int e_end = min(E, (g + 1) * SCAN_GROUP);
    for (int e = g * SCAN_GROUP; e < e_end; e++) {
        float A[MAX_DSTATE], gcarry[MAX_DSTATE], dA[MAX_DSTATE];
        float hs[SCAN_CHUNK + 1][MAX_DSTATE];  // states h_{t0-1} .. h_{t1-1} of one chunk
        float as[SCAN_CHUNK][MAX_DSTATE];      // and the decays exp(dt A) of its steps
        for (int n = 0; n < N; n++) { A[n] = -expf(A_log[e * N + n]); gcarry[n] = 0.0f; dA[n] = 0.0f; }
        float dD = 0.0f;
        for (int c = nchunks - 1; c >= 0; c--) {
            int t0 = c * SCAN_CHUNK, t1 = min(T, t0 + SCAN_CHUNK);
            for (int n = 0; n < N; n++) hs[0][n] = scan_chunk_start(states, h0, b, e, c, nchunks, E, N, n);
            for (int t = t0; t < t1; t++) {  // recompute the chunk's states
                long row = (long)b * T + t;
                float dtv = dt[row * E + e], uv = u[row * E + e];
                const float* Bt = x_dbl + row * xs + R;
                for (int n = 0; n < N; n++) {
                    as[t - t0][n] = expf(dtv * A[n]);
                    hs[t - t0 + 1][n] = as[t - t0][n] * hs[t - t0][n] + dtv * Bt[n] * uv;
                }
            }
            for (int t = t1 - 1; t >= t0; t--) {  // adjoint, backwards in time
                long row = (long)b * T + t;
                float dtv = dt[row * E + e], uv = u[row * E + e];
                const float* Bt = x_dbl + row * xs + R;
                const float* Ct = Bt + N;
                float zv = xz[row * 2 * E + E + e];
                float dg = dgated[row * E + e];
                float dy = dg * silu(zv);
                dxz[row * 2 * E + E + e] = dg * y[row * E + e] * silu_grad(zv);
                float du_acc = D[e] * dy, ddt_acc = 0.0f;
                dD += dy * uv;
                float* p = dbc_partial + (row * ngroups + g) * 2 * N;
                for (int n = 0; n < N; n++) {
                    float a = as[t - t0][n];
                    float gn = dy * Ct[n] + gcarry[n];
                    float hprev = hs[t - t0][n];
                    p[n] += gn * dtv * uv;              // dB
                    p[N + n] += dy * hs[t - t0 + 1][n];  // dC
                    du_acc += gn * dtv * Bt[n];
                    ddt_acc += gn * (Bt[n] * uv + hprev * a * A[n]);
                    dA[n] += gn * hprev * a * dtv;
                    gcarry[n] = a * gn;
                }
                du[row * E + e] = du_acc;
                ddt[row * E + e] = ddt_acc * (1.0f - expf(-dtv));
            }
        }
        for (int n = 0; n < N; n++) dA_partial[((long)b * E + e) * N + n] = dA[n] * A[n];
        dD_partial[(long)b * E + e] = dD;
    }
}

// The sequential backward pass with NS a compile-time constant (= the run-time
// N), every loop over the states a fixed-trip loop over arrays of NS that
// g++ vectorizes: the chunk's recomputed states and decays (fast_expf), the
// adjoint g, the dB, dC rows and the dA sums are vectors over n; the sums
// over n for du and ddt are fixed trees. One thread per (b, group of
// SCAN_GROUP channels), like selective_scan_backward_seq_kernel, whose
// results (and partial-sum layout) it matches up to rounding; but it steps
// the group's channels together within each chunk (time outer, channel
// inner), for the cache lines' sake as the forward kernel, and sums the
// group's dB, dC of a row in registers before one store (no zeroing pass).
template <int NS>
__global__ void selective_scan_backward_vec_kernel(float* du, float* ddt, float* dxz, float* dbc_partial,
                                                   float* dA_partial, float* dD_partial, const float* dgated,
                                                   const float* y, const float* u, const float* dt,
                                                   const float* x_dbl, int R, const float* A_log, const float* D,
                                                   const float* xz, const float* states, const float* h0, int B,
                                                   int T, int E) {
    int ngroups = CEIL_DIV(E, SCAN_GROUP);
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * ngroups) return;
    int g = idx % ngroups, b = idx / ngroups;
    int e0 = g * SCAN_GROUP, ne = min(SCAN_GROUP, E - e0);
    int xs = R + 2 * NS, nchunks = CEIL_DIV(T, SCAN_CHUNK);
    float A[SCAN_GROUP][NS], gcarry[SCAN_GROUP][NS], dA[SCAN_GROUP][NS], dD[SCAN_GROUP];
    float hs[SCAN_GROUP][SCAN_CHUNK + 1][NS];  // per channel: states h_{t0-1} .. h_{t1-1} of one chunk
    float as[SCAN_GROUP][SCAN_CHUNK][NS];      // and the decays exp(dt A) of its steps
    for (int j = 0; j < ne; j++) {
        for (int n = 0; n < NS; n++) { A[j][n] = -expf(A_log[(e0 + j) * NS + n]); gcarry[j][n] = 0.0f; dA[j][n] = 0.0f; }
        dD[j] = 0.0f;
    }
    for (int c = nchunks - 1; c >= 0; c--) {
        int t0 = c * SCAN_CHUNK, t1 = min(T, t0 + SCAN_CHUNK);
        for (int j = 0; j < ne; j++)
            for (int n = 0; n < NS; n++) hs[j][0][n] = scan_chunk_start(states, h0, b, e0 + j, c, nchunks, E, NS, n);
        for (int t = t0; t < t1; t++) {  // recompute the chunk's states, as the forward pass
            long row = (long)b * T + t;
            int tl = t - t0;
            const float* Bt = x_dbl + row * xs + R;
            float Bn[NS];
            for (int n = 0; n < NS; n++) Bn[n] = Bt[n];
            for (int j = 0; j < ne; j++) {
                float dtv = dt[row * E + e0 + j], uv = u[row * E + e0 + j];
                for (int n = 0; n < NS; n++) {
                    float a = fast_expf(dtv * A[j][n]);
                    as[j][tl][n] = a;
                    hs[j][tl + 1][n] = fmaf(a, hs[j][tl][n], dtv * Bn[n] * uv);
                }
            }
        }
        for (int t = t1 - 1; t >= t0; t--) {  // adjoint, backwards in time
            long row = (long)b * T + t;
            int tl = t - t0;
            const float* Bt = x_dbl + row * xs + R;
            const float* Ct = Bt + NS;
            float Bn[NS], Cn[NS], dBn[NS], dCn[NS];
            for (int n = 0; n < NS; n++) { Bn[n] = Bt[n]; Cn[n] = Ct[n]; dBn[n] = 0.0f; dCn[n] = 0.0f; }
            // the per-channel terms first, a loop over the group's channels (vectorized too)
            const float* dt_row = dt + row * E + e0;
            const float* u_row = u + row * E + e0;
            const float* z_row = xz + row * 2 * E + E + e0;
            const float* dg_row = dgated + row * E + e0;
            const float* y_row = y + row * E + e0;
            float* dz_row = dxz + row * 2 * E + E + e0;
            float dys[SCAN_GROUP], dus[SCAN_GROUP], ddts[SCAN_GROUP];
            for (int j = 0; j < ne; j++) {
                float zv = z_row[j], dg = dg_row[j];
                dys[j] = dg * silu(zv);
                dz_row[j] = dg * y_row[j] * silu_grad(zv);
                dD[j] += dys[j] * u_row[j];
            }
            for (int j = 0; j < ne; j++) {
                float dtv = dt_row[j], uv = u_row[j], dy = dys[j];
                float du_terms[NS], ddt_terms[NS];
                for (int n = 0; n < NS; n++) {
                    float a = as[j][tl][n];
                    float gn = fmaf(dy, Cn[n], gcarry[j][n]);
                    float hprev = hs[j][tl][n];
                    dBn[n] += gn * dtv * uv;
                    dCn[n] += dy * hs[j][tl + 1][n];
                    du_terms[n] = gn * Bn[n];
                    ddt_terms[n] = gn * fmaf(hprev * a, A[j][n], Bn[n] * uv);
                    dA[j][n] = fmaf(gn * hprev, a * dtv, dA[j][n]);
                    gcarry[j][n] = a * gn;
                }
                dus[j] = scan_tree_sum<NS>(du_terms);
                ddts[j] = scan_tree_sum<NS>(ddt_terms);
            }
            float* du_row = du + row * E + e0;
            float* ddt_row = ddt + row * E + e0;
            for (int j = 0; j < ne; j++) {
                du_row[j] = fmaf(dt_row[j], dus[j], D[e0 + j] * dys[j]);
                ddt_row[j] = ddts[j] * (1.0f - fast_expf(-dt_row[j]));
            }
            float* p = dbc_partial + (row * ngroups + g) * 2 * NS;
            for (int n = 0; n < NS; n++) { p[n] = dBn[n]; p[NS + n] = dCn[n]; }
        }
    }
    for (int j = 0; j < ne; j++) {
        for (int n = 0; n < NS; n++) dA_partial[((long)b * E + e0 + j) * NS + n] = dA[j][n] * A[j][n];
        dD_partial[(long)b * E + e0 + j] = dD[j];
    }
}

// The parallel backward scan, d_state NS a compile-time constant as the
// forward (A, the adjoint carried between chunks and the dA sums in
// registers). Block = SCAN_GROUP warps = the channels of one group g of
// batch row b, one warp per channel, chunks from the last: the block stages
// the chunk's B and C rows once (scan_load_bc_chunk); each warp recomputes
// the chunk's states from the stored one at its start (a forward scan over
// lanes), then the adjoint g_t = dy_t C_t + a_{t+1} g_{t+1} as a suffix scan
// over lanes, carried into the previous chunk. The warps' dB, dC of each
// step are staged in shared memory (dbc_s[w][lane][.], rows 2NS + 1 floats
// apart: lane i writing column n hits bank (i + n) mod 32, no conflicts) and
// summed over the group's channels in order by the whole block.
template <int NS>
__global__ void selective_scan_backward_chunked_kernel(float* du, float* ddt, float* dxz, float* dbc_partial,
                                                       float* dA_partial, float* dD_partial, const float* dgated,
                                                       const float* y, const float* u, const float* dt,
                                                       const float* x_dbl, int R, const float* A_log, const float* D,
                                                       const float* xz, const float* states, const float* h0,
                                                       int B, int T, int E) {
    __shared__ float bc_s[SCAN_CHUNK * SCAN_BC_STRIDE(NS)];
    __shared__ float dbc_s[SCAN_GROUP][SCAN_CHUNK * SCAN_BC_STRIDE(NS)];
    int ngroups = CEIL_DIV(E, SCAN_GROUP);
    int g = blockIdx.x % ngroups, b = blockIdx.x / ngroups;
    int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    int e = g * SCAN_GROUP + w;
    bool active = e < E;  // inactive warps still take part in the barriers
    int nchunks = CEIL_DIV(T, SCAN_CHUNK);
    float A[NS], gcarry[NS], dA[NS];
#pragma unroll
    for (int n = 0; n < NS; n++) { A[n] = active ? -expf(A_log[e * NS + n]) : 0.0f; gcarry[n] = 0.0f; dA[n] = 0.0f; }
    float dD = 0.0f;
    for (int c = nchunks - 1; c >= 0; c--) {
        int t = c * SCAN_CHUNK + lane;
        bool valid = active && t < T;
        int last = min(SCAN_CHUNK - 1, T - 1 - c * SCAN_CHUNK);
        long row = (long)b * T + (t < T ? t : 0);
        // (the previous chunk's last barrier, after its dbc_s reads, also ends its bc_s reads)
        scan_load_bc_chunk<NS>(bc_s, x_dbl, R, (long)b * T + c * SCAN_CHUNK, last + 1);
        __syncthreads();
        const float* bc = bc_s + lane * SCAN_BC_STRIDE(NS);
        float* dbc = dbc_s[w] + lane * SCAN_BC_STRIDE(NS);
        float dtv = 0.0f, uv = 0.0f, dy = 0.0f;
        if (valid) {
            dtv = dt[row * E + e];
            uv = u[row * E + e];
            float zv = xz[row * 2 * E + E + e];
            float dg = dgated[row * E + e];
            dy = dg * silu(zv);
            dxz[row * 2 * E + E + e] = dg * y[row * E + e] * silu_grad(zv);
        }
        float du_acc = active ? D[e] * dy : 0.0f, ddt_acc = 0.0f;
        dD += dy * uv;
#pragma unroll
        for (int n = 0; n < NS; n++) {
            float hstart = active ? scan_chunk_start(states, h0, b, e, c, nchunks, E, NS, n) : 0.0f;
            float Bn = bc[n];
            // forward: this chunk's states from the stored one at its start
            float a = valid ? expf(dtv * A[n]) : 1.0f;
            float bb = valid ? dtv * Bn * uv : 0.0f;
            float ac = a, bcum = bb;
#pragma unroll
            for (int off = 1; off < SCAN_CHUNK; off <<= 1) {
                float ap = __shfl_up_sync(0xffffffffu, ac, off);
                float bp = __shfl_up_sync(0xffffffffu, bcum, off);
                if (lane >= off) { bcum = ac * bp + bcum; ac = ac * ap; }
            }
            float h = ac * hstart + bcum;
            float hprev = __shfl_up_sync(0xffffffffu, h, 1);
            if (lane == 0) hprev = hstart;
            // backward: g_t = beta_t + alpha_t * g_{t+1}, alpha_t = a_{t+1}, a suffix scan
            float anext = __shfl_down_sync(0xffffffffu, a, 1);
            float alpha = lane < last ? anext : 0.0f;
            float beta = valid ? dy * bc[NS + n] : 0.0f;
            if (lane == last) beta += gcarry[n];
#pragma unroll
            for (int off = 1; off < SCAN_CHUNK; off <<= 1) {
                float an = __shfl_down_sync(0xffffffffu, alpha, off);
                float bn = __shfl_down_sync(0xffffffffu, beta, off);
                if (lane + off < SCAN_CHUNK) { beta = beta + alpha * bn; alpha = alpha * an; }
            }
            float gn = beta;
            gcarry[n] = __shfl_sync(0xffffffffu, a * gn, 0);  // a_{t0} g_{t0}, into the previous chunk
            dbc[n] = valid ? gn * dtv * uv : 0.0f;  // dB
            dbc[NS + n] = valid ? dy * h : 0.0f;    // dC
            if (valid) {
                du_acc += gn * dtv * Bn;
                ddt_acc += gn * (Bn * uv + hprev * a * A[n]);
                dA[n] += gn * hprev * a * dtv;
            }
        }
        if (valid) {
            du[row * E + e] = du_acc;
            ddt[row * E + e] = ddt_acc * (1.0f - expf(-dtv));
        }
        __syncthreads();
        // this group's dB, dC per time step: the 8 channels summed in order
        for (int i = threadIdx.x; i < SCAN_CHUNK * 2 * NS; i += blockDim.x) {
            int tl = i / (2 * NS), j = i % (2 * NS);
            float sum = 0.0f;
            for (int ww = 0; ww < SCAN_GROUP; ww++) sum += dbc_s[ww][tl * SCAN_BC_STRIDE(NS) + j];
            int tg = c * SCAN_CHUNK + tl;
            if (tg < T) dbc_partial[(((long)b * T + tg) * ngroups + g) * 2 * NS + j] = sum;
        }
        __syncthreads();
    }
#pragma unroll
    for (int n = 0; n < NS; n++) {
        float sum = warp_sum(dA[n]);
        if (active && lane == 0) dA_partial[((long)b * E + e) * NS + n] = sum * A[n];
    }
    float sD = warp_sum(dD);
    if (active && lane == 0) dD_partial[(long)b * E + e] = sD;
}

// dx_dbl[row, R + j] = sum over groups of dbc_partial[row, g, j]  (overwrites
// the B, C columns). Row kernel (elementwise.cuh): one block per row, its
// threads over j; each j sums the groups in order (on the host the loop over
// j is innermost: a vector of 2N sums, group by group)
__global__ void scan_reduce_bc_kernel(float* dx_dbl, const float* dbc_partial, int R, int BT, int ngroups, int N,
                                      int span) {
    long row = blockIdx.x;
    const float* part = dbc_partial + row * ngroups * 2 * N;
    float* out = dx_dbl + row * (R + 2 * N) + R;
    ROW_FOR(j, 2 * N, span) out[j] = 0.0f;
    for (int g = 0; g < ngroups; g++)
        ROW_FOR(j, 2 * N, span) out[j] += part[g * 2 * N + j];
}

// dA_log[e,n] += sum_b dA_partial[b,e,n]; dD[e] += sum_b dD_partial[b,e]; one thread per (e, n) and per e
__global__ void scan_reduce_params_kernel(float* dA_log, float* dD, const float* dA_partial, const float* dD_partial,
                                          int B, int E, int N) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < E * N) {
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += dA_partial[(long)b * E * N + idx];
        dA_log[idx] += s;
    } else if (idx < E * N + E) {
        int e = idx - E * N;
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += dD_partial[(long)b * E + e];
        dD[e] += s;
    }
}

// ----------------------------------------------------------------------------
// The time-invariant scan of the selection ablation (-M lti, doc/models.md):
// dt, B and C are per-channel parameters, not functions of the input:
//   dt_e = softplus(dt_bias[e]),  B_lti, C_lti (E, N)
//   h_t = exp(dt_e A[e,n]) h_{t-1} + dt_e B_lti[e,n] u_t
//   y_t = sum_n C_lti[e,n] h_t[n] + D[e] u_t,  gated_t = y_t * silu(z_t)
// One variant for both backends, sequential in time: one thread per (b, e),
// barrier-free (plain loops on the host). The stored states have the
// selective scan's layout (B, E, nchunks, N), so generation's prefill reads
// them the same way. The backward pass recomputes each chunk's states from
// the stored one at its start and runs the adjoint g_t = dy_t C + a g_{t+1}
// backwards; each thread writes its row's parameter gradient sums
// (scan_lti_partial_width floats), and a second kernel adds them over the
// batch in order: deterministic, no atomics.

__global__ void selective_scan_lti_forward_kernel(float* y, float* gated, float* states, const float* u,
                                                  const float* dt_bias, const float* B_lti, const float* C_lti,
                                                  const float* A_log, const float* D, const float* xz,
                                                  const float* h0, int B, int T, int E, int N) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * E) return;
    int e = idx % E, b = idx / E;
    float dtv = fast_softplusf(dt_bias[e]);
    float a[MAX_DSTATE], dtB[MAX_DSTATE], Cn[MAX_DSTATE], h[MAX_DSTATE];
    for (int n = 0; n < N; n++) {
        a[n] = expf(dtv * -expf(A_log[e * N + n]));
        dtB[n] = dtv * B_lti[e * N + n];
        Cn[n] = C_lti[e * N + n];
        h[n] = h0 ? h0[(long)idx * N + n] : 0.0f;
    }
    for (int t = 0; t < T; t++) {
        long row = (long)b * T + t;
        float uv = u[row * E + e];
        float acc = 0.0f;
        for (int n = 0; n < N; n++) {
            h[n] = a[n] * h[n] + dtB[n] * uv;
            acc += h[n] * Cn[n];
        }
        scan_seq_store(y, gated, states, xz, h, acc + D[e] * uv, row, b, e, t, T, E, N);
    }
}

// floats per (b, e) of the backward's partial sums: dA_log (N), dB_lti (N),
// dC_lti (N), ddt_bias, dD
__host__ __device__ inline int scan_lti_partial_width(int N) { return 3 * N + 2; }

// In: dgated (B,T,E) and what the forward saw or stored. Out: du (B,T,E),
// dz into dxz's second half (row distance 2E), and partial (B, E, 3N+2):
// per row b the sums over time of [dA_log | dB_lti | dC_lti | ddt_bias | dD].
__global__ void selective_scan_lti_backward_kernel(float* du, float* dxz, float* partial, const float* dgated,
                                                   const float* y, const float* u, const float* dt_bias,
                                                   const float* B_lti, const float* C_lti, const float* A_log,
                                                   const float* D, const float* xz, const float* states,
                                                   const float* h0, int B, int T, int E, int N) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * E) return;
    int e = idx % E, b = idx / E;
    int nchunks = CEIL_DIV(T, SCAN_CHUNK);
    float dtv = fast_softplusf(dt_bias[e]);
    float A[MAX_DSTATE], a[MAX_DSTATE], Bn[MAX_DSTATE], Cn[MAX_DSTATE];
    float gcarry[MAX_DSTATE], dA[MAX_DSTATE], dB[MAX_DSTATE], dC[MAX_DSTATE];
    float hs[SCAN_CHUNK + 1][MAX_DSTATE];  // states h_{t0-1} .. h_{t1-1} of one chunk
    for (int n = 0; n < N; n++) {
        A[n] = -expf(A_log[e * N + n]);
        a[n] = expf(dtv * A[n]);
        Bn[n] = B_lti[e * N + n];
        Cn[n] = C_lti[e * N + n];
        gcarry[n] = dA[n] = dB[n] = dC[n] = 0.0f;
    }
    float ddt = 0.0f, dD = 0.0f;
    for (int c = nchunks - 1; c >= 0; c--) {
        int t0 = c * SCAN_CHUNK, t1 = min(T, t0 + SCAN_CHUNK);
        for (int n = 0; n < N; n++) hs[0][n] = scan_chunk_start(states, h0, b, e, c, nchunks, E, N, n);
        for (int t = t0; t < t1; t++) {  // recompute the chunk's states
            float uv = u[((long)b * T + t) * E + e];
            for (int n = 0; n < N; n++) hs[t - t0 + 1][n] = a[n] * hs[t - t0][n] + dtv * Bn[n] * uv;
        }
        for (int t = t1 - 1; t >= t0; t--) {  // adjoint, backwards in time
            long row = (long)b * T + t;
            float uv = u[row * E + e];
            float zv = xz[row * 2 * E + E + e];
            float dg = dgated[row * E + e];
            float dy = dg * silu(zv);
            dxz[row * 2 * E + E + e] = dg * y[row * E + e] * silu_grad(zv);
            float du_acc = D[e] * dy;
            dD += dy * uv;
            for (int n = 0; n < N; n++) {
                float gn = dy * Cn[n] + gcarry[n];
                float hprev = hs[t - t0][n];
                dB[n] += gn * dtv * uv;
                dC[n] += dy * hs[t - t0 + 1][n];
                du_acc += gn * dtv * Bn[n];
                ddt += gn * (Bn[n] * uv + hprev * a[n] * A[n]);
                dA[n] += gn * hprev * a[n] * dtv;
                gcarry[n] = a[n] * gn;
            }
            du[row * E + e] = du_acc;
        }
    }
    float* p = partial + (long)idx * scan_lti_partial_width(N);
    for (int n = 0; n < N; n++) {
        p[n] = dA[n] * A[n];  // d/dA_log
        p[N + n] = dB[n];
        p[2 * N + n] = dC[n];
    }
    p[3 * N] = ddt * (1.0f - expf(-dtv));  // through softplus: sigmoid(dt_bias) = 1 - exp(-dt)
    p[3 * N + 1] = dD;
}

// the partial sums added over the batch in order into the accumulated
// gradients; one thread per (e, j), j < 3N+2
__global__ void scan_lti_reduce_kernel(float* dA_log, float* dB_lti, float* dC_lti, float* ddt_bias, float* dD,
                                       const float* partial, int B, int E, int N) {
    int W = scan_lti_partial_width(N);
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= E * W) return;
    int e = idx / W, j = idx % W;
    float s = 0.0f;
    for (int b = 0; b < B; b++) s += partial[((long)b * E + e) * W + j];
    if (j < N) dA_log[e * N + j] += s;
    else if (j < 2 * N) dB_lti[e * N + j - N] += s;
    else if (j < 3 * N) dC_lti[e * N + j - 2 * N] += s;
    else if (j == 3 * N) ddt_bias[e] += s;
    else dD[e] += s;
}

// ----------------------------------------------------------------------------
// launchers

// the sequential variant with the state count fixed at compile time, used
// for N == SCAN_VEC_N (the host's fastest); false: the plain sequential one
#define SCAN_VEC_N 16

inline int scan_num_chunks(int T) { return CEIL_DIV(T, SCAN_CHUNK); }
inline long scan_states_size(int B, int T, int E, int N) { return (long)B * E * scan_num_chunks(T) * N; }
// scratch floats the backward pass needs: dbc_partial, dA_partial, dD_partial
inline long scan_backward_scratch_size(int B, int T, int E, int N) {
    return (long)B * T * CEIL_DIV(E, SCAN_GROUP) * 2 * N + (long)B * E * N + (long)B * E;
}

// d_state N must be 1..MAX_DSTATE, and SCAN_DSTATE when the chunked kernels
// (the GPU's; HOST_VARIANTS=gpu on the host) are selected
inline void scan_check_limits(int N) {
    if (N < 1 || N > MAX_DSTATE) {
        fprintf(stderr, "error: selective scan: d_state %d is not supported (1..%d)\n", N, MAX_DSTATE);
        exit(EXIT_FAILURE);
    }
    if (kernel_choices.scan_chunked && N != SCAN_DSTATE) {
        fprintf(stderr, "error: selective scan: the chunked (GPU) scan is compiled for d_state %d, not %d\n", SCAN_DSTATE, N);
        exit(EXIT_FAILURE);
    }
}

// The dt stretch (train_mamba -Y, a training augmentation): in each row b
// one position p_b has its dt pre-activation (dt_proj's output, before the
// bias and softplus) raised by ln g_b, g_b log-uniform on [1, G]. A small dt
// (softplus(x) ~ e^x) is multiplied by g_b: that step decays a slow channel's
// state as g_b steps would, a stand-in for a gap of up to G tokens, which
// the model's faster channels forget across; a large dt grows by only ln g_b.
// The gradient needs nothing more (d/dx of softplus(x + c) is the scan's
// sigmoid of the shifted value). p_b and g_b come from dropout.cuh's hash of
// (seed, step, site) and b, the same in every layer.
typedef struct {
    DropoutSite site;
    float log_max;  // ln G; 0: no stretch
} DtStretch;
static const DtStretch NO_DT_STRETCH = {NO_DROPOUT_SITE, 0.0f};
#define DT_STRETCH_SITE (1ull << 34)  // its hash site, apart from the dropout sites (layer numbers, 2^32 + l, 2^33)

// row b's stretched row index b*T + p_b and ln g_b
__device__ inline long dt_stretch_draw(DtStretch st, int b, int T, float* log_g) {
    uint64_t r = mix64(dropout_key(st.site.seed, (uint64_t)*st.site.step, st.site.site) + (uint64_t)(b + 1) * DROPOUT_GAMMA);
    *log_g = st.log_max * (float)(r & 0xffffffu) / 16777216.0f;
    return (long)b * T + (long)((r >> 32) % (uint64_t)T);
}

// dt_raw (B,T,E): row b*T + p_b raised by ln g_b; one thread per (b, e)
__global__ void dt_stretch_kernel(float* dt_raw, int B, int T, int E, DtStretch st) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * E) return;
    int b = idx / E, e = idx % E;
    float log_g;
    long row = dt_stretch_draw(st, b, T, &log_g);
    dt_raw[row * E + e] += log_g;
}

void dt_softplus(float* dt, const float* bias, int BT, int E) {
    LAUNCH(dt_softplus_kernel, BT, row_threads(E), 0)(dt, bias, E, row_span(E));
    cudaCheck(cudaGetLastError());
}

// the dt stretch of one layer's dt pre-activations (B,T,E) (a no-op when st.log_max is 0)
void dt_stretch(float* dt_raw, int B, int T, int E, DtStretch st) {
    if (st.log_max <= 0.0f) return;
    LAUNCH(dt_stretch_kernel, CEIL_DIV(B * E, 256), 256, 0)(dt_raw, B, T, E, st);
    cudaCheck(cudaGetLastError());
}

// y, gated (B,T,E); states (B,E,nchunks,N); xz holds z in its second half;
// h0 (B,E,N) the state before position 0, null for zeros
void selective_scan_forward(float* y, float* gated, float* states, const float* u, const float* dt,
                            const float* x_dbl, int R, const float* A_log, const float* D, const float* xz,
                            int B, int T, int E, int N, const float* h0 = nullptr) {
    scan_check_limits(N);
    if (kernel_choices.scan_chunked) {
        LAUNCH(selective_scan_forward_chunked_kernel<SCAN_DSTATE>, B * CEIL_DIV(E, SCAN_GROUP), SCAN_GROUP * 32, 0)(
            y, gated, states, u, dt, x_dbl, R, A_log, D, xz, h0, B, T, E);
    } else if (kernel_choices.scan_vec && N == SCAN_VEC_N) {
        LAUNCH(selective_scan_forward_vec_kernel<SCAN_VEC_N>, CEIL_DIV(B * CEIL_DIV(E, SCAN_GROUP), 32), 32, 0)(
            y, gated, states, u, dt, x_dbl, R, A_log, D, xz, h0, B, T, E);
    } else {
        LAUNCH(selective_scan_forward_seq_kernel, CEIL_DIV(B * E, 64), 64, 0)(
            y, gated, states, u, dt, x_dbl, R, A_log, D, xz, h0, B, T, E, N);
    }
    cudaCheck(cudaGetLastError());
}

// h_final[b,e,n] = the state after position T-1 = states[b,e,nchunks-1,n]
// (both scans, the time-invariant one too); one thread per (b, e, n)
__global__ void scan_final_state_kernel(float* h_final, const float* states, int B, int T, int E, int N) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * E * N) return;
    long be = idx / N;
    int n = idx % N, nchunks = CEIL_DIV(T, SCAN_CHUNK);
    h_final[idx] = states[(be * nchunks + nchunks - 1) * N + n];
}

// the final state (B,E,N) of a forward over T positions, from its stored states
void scan_final_state(float* h_final, const float* states, int B, int T, int E, int N) {
    LAUNCH(scan_final_state_kernel, CEIL_DIV((long)B * E * N, 256), 256, 0)(h_final, states, B, T, E, N);
    cudaCheck(cudaGetLastError());
}

// du, ddt (B,T,E) overwritten; dz into dxz's second half; dB, dC into
// dx_dbl's columns [R, R+2N) (overwritten); dA_log (E,N), dD (E) accumulate.
void selective_scan_backward(float* du, float* ddt, float* dxz, float* dx_dbl, float* dA_log, float* dD,
                             float* scratch, const float* dgated, const float* y, const float* u, const float* dt,
                             const float* x_dbl, int R, const float* A_log, const float* D, const float* xz,
                             const float* states, int B, int T, int E, int N, const float* h0 = nullptr) {
    scan_check_limits(N);
    int ngroups = CEIL_DIV(E, SCAN_GROUP);
    float* dbc_partial = scratch;
    float* dA_partial = dbc_partial + (long)B * T * ngroups * 2 * N;
    float* dD_partial = dA_partial + (long)B * E * N;
    if (kernel_choices.scan_chunked) {
        LAUNCH(selective_scan_backward_chunked_kernel<SCAN_DSTATE>, B * ngroups, SCAN_GROUP * 32, 0)(
            du, ddt, dxz, dbc_partial, dA_partial, dD_partial, dgated, y,
            u, dt, x_dbl, R, A_log, D, xz, states, h0, B, T, E);
    } else if (kernel_choices.scan_vec && N == SCAN_VEC_N) {
        LAUNCH(selective_scan_backward_vec_kernel<SCAN_VEC_N>, CEIL_DIV(B * ngroups, 32), 32, 0)(
            du, ddt, dxz, dbc_partial, dA_partial, dD_partial, dgated, y,
            u, dt, x_dbl, R, A_log, D, xz, states, h0, B, T, E);
    } else {
        LAUNCH(selective_scan_backward_seq_kernel, CEIL_DIV(B * ngroups, 32), 32, 0)(
            du, ddt, dxz, dbc_partial, dA_partial, dD_partial, dgated, y,
            u, dt, x_dbl, R, A_log, D, xz, states, h0, B, T, E, N);
    }
    cudaCheck(cudaGetLastError());
    LAUNCH(scan_reduce_bc_kernel, B * T, row_threads(2 * N), 0)(dx_dbl, dbc_partial, R, B * T, ngroups, N,
                                                                 row_span(2 * N));
    LAUNCH(scan_reduce_params_kernel, CEIL_DIV(E * (N + 1), 256), 256, 0)(dA_log, dD, dA_partial, dD_partial, B, E, N);
    cudaCheck(cudaGetLastError());
}

// The time-invariant scan (-M lti): y, gated (B,T,E); states (B,E,nchunks,N);
// dt_bias (E), B_lti, C_lti (E,N) the layer's parameters; h0 (B,E,N) the
// state before position 0, null for zeros
void selective_scan_lti_forward(float* y, float* gated, float* states, const float* u, const float* dt_bias,
                                const float* B_lti, const float* C_lti, const float* A_log, const float* D,
                                const float* xz, int B, int T, int E, int N, const float* h0 = nullptr) {
    if (N < 1 || N > MAX_DSTATE) fail("selective_scan_lti_forward: d_state %d is not supported (1..%d)", N, MAX_DSTATE);
    LAUNCH(selective_scan_lti_forward_kernel, CEIL_DIV(B * E, 64), 64, 0)(y, gated, states, u, dt_bias, B_lti, C_lti,
                                                                          A_log, D, xz, h0, B, T, E, N);
    cudaCheck(cudaGetLastError());
}

// scratch floats the time-invariant backward needs: its partial sums (B, E, 3N+2)
inline long scan_lti_scratch_size(int B, int E, int N) { return (long)B * E * scan_lti_partial_width(N); }

// du (B,T,E) overwritten; dz into dxz's second half; dA_log, dB_lti, dC_lti
// (E,N), ddt_bias, dD (E) accumulate
void selective_scan_lti_backward(float* du, float* dxz, float* dA_log, float* dB_lti, float* dC_lti, float* ddt_bias,
                                 float* dD, float* scratch, const float* dgated, const float* y, const float* u,
                                 const float* dt_bias, const float* B_lti, const float* C_lti, const float* A_log,
                                 const float* D, const float* xz, const float* states, int B, int T, int E, int N,
                                 const float* h0 = nullptr) {
    if (N < 1 || N > MAX_DSTATE) fail("selective_scan_lti_backward: d_state %d is not supported (1..%d)", N, MAX_DSTATE);
    LAUNCH(selective_scan_lti_backward_kernel, CEIL_DIV(B * E, 64), 64, 0)(du, dxz, scratch, dgated, y, u, dt_bias,
                                                                           B_lti, C_lti, A_log, D, xz, states, h0, B,
                                                                           T, E, N);
    cudaCheck(cudaGetLastError());
    LAUNCH(scan_lti_reduce_kernel, CEIL_DIV(E * scan_lti_partial_width(N), 256), 256, 0)(dA_log, dB_lti, dC_lti,
                                                                                         ddt_bias, dD, scratch, B, E, N);
    cudaCheck(cudaGetLastError());
}

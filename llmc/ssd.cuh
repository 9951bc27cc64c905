/*
Mamba-2's SSD scan (the state-space dual, one group: every head shares the
position's B and C), forward and backward, and the elementwise pieces
around it in the Mamba-2 mixer (dt's softplus, the SiLU(z) gate).

For each batch row b and head h (channels hP .. hP+P-1 of x), over time t:
  S_t = exp(dt_t[h] A[h]) S_{t-1} + dt_t[h] x_t B_t^T     state (P, N); S_{-1} = h0, or 0
  y_t = S_t C_t + D[h] x_t                                 (P)
with A = -exp(A_log), one scalar per head. As the decay is one scalar per
head and step, the scan is, chunk by chunk, made of products (the SSD
algorithm). Time is cut into chunks of SSD_CHUNK = Q positions (the last
may be shorter); s_t is the sum of dt A over the chunk's positions up to t
(s_t <= 0, falling), s_last its value at the chunk's last position, S_in
the state before the chunk:
  y_t   = sum_{tau <= t} (C_t . B_tau) exp(s_t - s_tau) dt_tau x_tau    the chunk's own inputs
        + exp(s_t) S_in C_t + D x_t                                     the state before it
  S_out = exp(s_last) S_in + sum_tau exp(s_last - s_tau) dt_tau x_tau B_tau^T
Every exponent is <= 0: no term can overflow, whatever T.

Forward, four kernels: the running sums s (ssd_cumsum); each chunk's own
contribution to S_out (ssd_chunk_state); the states passed from chunk to
chunk, sequential over chunks, parallel over (b, h, p) (ssd_state_pass);
the outputs, parallel over (b, t, h) (ssd_chunk_output). The forward keeps
the state before every chunk and the final one, states (B, H, nchunks+1,
P, N), and s (B, T, H).

Backward, from dy (B, T, E) (G_c: the gradient w.r.t. chunk c's S_out):
  G_c    = exp(s_last') G_{c+1} + sum_{t in chunk c+1} exp(s_t) dy_t C_t^T      (ssd_dstate, over chunks backwards)
  d(dt x)_tau = sum_{t >= tau} (C_t . B_tau) exp(s_t - s_tau) dy_t + exp(s_last - s_tau) G B_tau
  dx = d(dt x) dt + D dy;  ddt = d(dt x) . x + (sum_{t >= tau} ds_t) A
  ds_t: with m(t, tau) = (C_t . B_tau) exp(s_t - s_tau) dt_tau (x_tau . dy_t),
        + sum_{tau <= t} m(t, tau) - sum_{t' >= t} m(t', t) + exp(s_t) dy_t . (S_in C_t)
        - r_t, r_t = exp(s_last - s_t) dt_t x_t . (G B_t), and at the chunk's last
        position + sum_tau r_tau + exp(s_last) <G, S_in>
  dC_t = sum_h [sum_{tau <= t} exp(s_t - s_tau) dt_tau (x_tau . dy_t) B_tau + exp(s_t) S_in^T dy_t]
  dB_t = sum_h [sum_{t' >= t} exp(s_t' - s_t) dt_t (x_t . dy_t') C_t' + exp(s_last - s_t) dt_t G^T x_t]
  dA = sum (sum_{t' >= t} ds_t') dt_t;  dD = sum dy . x   (sums over b, t and the head's p)
Kernels: ssd_dstate (per (b, h, p)), ssd_chunk_backward (per (b, t, h):
dx, d(dt x) . x, ds without the chunk sums, dD's terms), ssd_dt_backward
(per (b, h, chunk): the chunk sums, ds's reverse running sum, ddt through
the softplus into in_proj's gradient, dA's terms), ssd_bc_backward (per (b,
t): dB and dC, summed over heads in order), ssd_param_reduce (per head: dA_log,
dD, ddt_bias over every (b, t) in order). Deterministic: every sum has one
order, no atomics.

The kernels are barrier-free (plain loops on the host backend, one thread
per row on the GPU): one variant for both backends. ssd_sequential_kernel
is the plain recurrence above, step after step, the reference the chunked
kernels are tested against (test_mamba.cu, dev/cuda/ssd.cu).

Layouts: xbc (B, T, E + 2N), the conv's output after SiLU, x | B | C by
columns; dt (B, T, H) after softplus; y (B, T, E); h0 and the final state
(B, H, P, N). Limits: N <= SSD_MAX_N, P <= SSD_MAX_P; any T.
*/
#pragma once
#include "cuda_common.h"
#include "conv1d.cuh"  // silu, silu_grad
#include "elementwise.cuh"  // ROW_FOR
#include "layernorm.cuh"  // ln_lane_sum
#include "fast_math.cuh"
#include "utils.h"  // fail

#define SSD_CHUNK 32
#define SSD_MAX_N 128  // d_state
#define SSD_MAX_P 128  // headdim

// the chunk of position t: [*t0, *t1)
__device__ __forceinline__ void ssd_chunk_of(int t, int T, int* t0, int* t1) {
    *t0 = t - t % SSD_CHUNK;
    *t1 = min(T, *t0 + SSD_CHUNK);
}

// a . b over n, in ln_lane_sum's fixed order (vectorizes on the host)
__device__ __forceinline__ float ssd_dot(const float* a, const float* b, int n) {
    return ln_lane_sum(n, [&](int i) { return a[i] * b[i]; });
}

// ----------------------------------------------------------------------------
// around the scan: dt = softplus(dt_raw + dt_bias) (B,T,H) from in_proj's
// dt columns (row distance ld); gated = y * silu(z) and its backward, z in
// in_proj's first E columns (row distance ld)

__global__ void ssd_dt_forward_kernel(float* dt, const float* dt_raw, int ld, const float* dt_bias, long BT, int H) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= BT * H) return;
    long row = i / H;
    int h = i % H;
    dt[i] = fast_softplusf(dt_raw[row * ld + h] + dt_bias[h]);
}

// row kernels (elementwise.cuh): one block per row (b, t), its threads over e
__global__ void ssd_gate_forward_kernel(float* gated, const float* y, const float* z, int ld, int E, int span) {
    long row = blockIdx.x;
    const float* zr = z + row * ld;
    ROW_FOR(e, E, span) gated[row * E + e] = y[row * E + e] * silu(zr[e]);
}

// dy (B,T,E) = dgated * silu(z); dz = dgated * y * silu'(z) into in_proj's z columns (row distance ld)
__global__ void ssd_gate_backward_kernel(float* dy, float* dz, const float* dgated, const float* y, const float* z,
                                         int ld, int E, int span) {
    long row = blockIdx.x;
    const float* zr = z + row * ld;
    ROW_FOR(e, E, span) {
        float zv = zr[e], dg = dgated[row * E + e];
        dy[row * E + e] = dg * silu(zv);
        dz[row * ld + e] = dg * y[row * E + e] * silu_grad(zv);
    }
}

// ----------------------------------------------------------------------------
// the plain recurrence, one thread per (b, h, p): y (B,T,E) and, if
// h_final, the state after T-1 (B,H,P,N). The reference of the tests.

__global__ void ssd_sequential_kernel(float* y, float* h_final, const float* xbc, const float* dt, const float* A_log,
                                      const float* D, const float* h0, int B, int T, int H, int P, int N) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * H * P) return;
    int p = idx % P, h = (idx / P) % H, b = idx / (P * H);
    int E = H * P, X = E + 2 * N;
    float S[SSD_MAX_N];
    float A = -expf(A_log[h]);
    for (int n = 0; n < N; n++) S[n] = h0 ? h0[(long)idx * N + n] : 0.0f;
    for (int t = 0; t < T; t++) {
        long row = (long)b * T + t;
        const float* r = xbc + row * X;
        float d = dt[row * H + h], xv = r[h * P + p];
        float a = expf(d * A), acc = 0.0f;
        for (int n = 0; n < N; n++) {
            S[n] = a * S[n] + d * xv * r[E + n];
            acc += S[n] * r[E + N + n];
        }
        y[row * E + h * P + p] = acc + D[h] * xv;
    }
    if (h_final)
        for (int n = 0; n < N; n++) h_final[(long)idx * N + n] = S[n];
}

// ----------------------------------------------------------------------------
// forward

// cum (B,T,H): s_t, the running sum of dt A within t's chunk; one thread per (b, h, chunk)
__global__ void ssd_cumsum_kernel(float* cum, const float* dt, const float* A_log, int B, int T, int H) {
    int nc = CEIL_DIV(T, SSD_CHUNK);
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * H * nc) return;
    int c = idx % nc, h = (idx / nc) % H, b = idx / (nc * H);
    float A = -expf(A_log[h]), s = 0.0f;
    for (int t = c * SSD_CHUNK; t < min(T, (c + 1) * SSD_CHUNK); t++) {
        long i = ((long)b * T + t) * H + h;
        s += dt[i] * A;
        cum[i] = s;
    }
}

// the state slot of (b, h, chunk slot c) in states (B, H, nc+1, P, N)
__device__ __forceinline__ long ssd_state_at(int b, int h, int c, int H, int nc, int P, int N) {
    return (((long)b * H + h) * (nc + 1) + c) * P * N;
}

// states[b,h,c+1] = the chunk's own inputs' part of S_out: row p of
// sum_tau exp(s_last - s_tau) dt_tau x_tau B_tau^T; one thread per (b, h, chunk, p)
__global__ void ssd_chunk_state_kernel(float* states, const float* xbc, const float* dt, const float* cum, int B,
                                       int T, int H, int P, int N) {
    int nc = CEIL_DIV(T, SSD_CHUNK), E = H * P, X = E + 2 * N;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * H * nc * P) return;
    int p = idx % P, c = (idx / P) % nc, h = (idx / ((long)P * nc)) % H, b = idx / ((long)P * nc * H);
    int t0 = c * SSD_CHUNK, t1 = min(T, t0 + SSD_CHUNK);
    float acc[SSD_MAX_N];
    for (int n = 0; n < N; n++) acc[n] = 0.0f;
    float s_last = cum[((long)b * T + t1 - 1) * H + h];
    for (int t = t0; t < t1; t++) {
        long row = (long)b * T + t;
        const float* r = xbc + row * X;
        float w = fast_expf(s_last - cum[row * H + h]) * dt[row * H + h] * r[h * P + p];
        for (int n = 0; n < N; n++) acc[n] += w * r[E + n];
    }
    float* out = states + ssd_state_at(b, h, c + 1, H, nc, P, N) + (long)p * N;
    for (int n = 0; n < N; n++) out[n] = acc[n];
}

// states[b,h,0] = h0 (or 0); states[b,h,c+1] = exp(s_last) states[b,h,c] +
// (the chunk's own part, already there); h_final (may be h0) the last. One
// thread per (b, h, p), over the chunks in order.
__global__ void ssd_state_pass_kernel(float* states, float* h_final, const float* h0, const float* cum, int B, int T,
                                      int H, int P, int N) {
    int nc = CEIL_DIV(T, SSD_CHUNK);
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * H * P) return;
    int p = idx % P, h = (idx / P) % H, b = idx / (P * H);
    float S[SSD_MAX_N];
    for (int n = 0; n < N; n++) S[n] = h0 ? h0[(long)idx * N + n] : 0.0f;
    float* s0 = states + ssd_state_at(b, h, 0, H, nc, P, N) + (long)p * N;
    for (int n = 0; n < N; n++) s0[n] = S[n];
    for (int c = 0; c < nc; c++) {
        float decay = expf(cum[((long)b * T + min(T, (c + 1) * SSD_CHUNK) - 1) * H + h]);
        float* sc = states + ssd_state_at(b, h, c + 1, H, nc, P, N) + (long)p * N;
        for (int n = 0; n < N; n++) {
            S[n] = decay * S[n] + sc[n];
            sc[n] = S[n];
        }
    }
    if (h_final)
        for (int n = 0; n < N; n++) h_final[(long)idx * N + n] = S[n];
}

// y (B,T,E): one thread per (b, t, h), all P channels of the head
__global__ void ssd_chunk_output_kernel(float* y, const float* xbc, const float* dt, const float* cum,
                                        const float* states, const float* D, int B, int T, int H, int P, int N) {
    int nc = CEIL_DIV(T, SSD_CHUNK), E = H * P, X = E + 2 * N;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * T * H) return;
    int h = idx % H, t = (idx / H) % T, b = idx / ((long)H * T);
    int t0, t1;
    ssd_chunk_of(t, T, &t0, &t1);
    long row = (long)b * T + t;
    const float* Ct = xbc + row * X + E + N;
    float st = cum[row * H + h];
    float acc[SSD_MAX_P];
    for (int p = 0; p < P; p++) acc[p] = 0.0f;
    for (int tau = t0; tau <= t; tau++) {  // the chunk's own inputs
        long rt = (long)b * T + tau;
        const float* r = xbc + rt * X;
        float w = ssd_dot(Ct, r + E, N) * fast_expf(st - cum[rt * H + h]) * dt[rt * H + h];
        for (int p = 0; p < P; p++) acc[p] += w * r[h * P + p];
    }
    const float* S = states + ssd_state_at(b, h, t / SSD_CHUNK, H, nc, P, N);  // the state before the chunk
    float es = fast_expf(st);
    const float* xt = xbc + row * X + h * P;
    for (int p = 0; p < P; p++) y[row * E + h * P + p] = acc[p] + es * ssd_dot(S + (long)p * N, Ct, N) + D[h] * xt[p];
}

// ----------------------------------------------------------------------------
// backward

// the gradient slot of (b, h, chunk c) in dstates (B, H, nc, P, N)
__device__ __forceinline__ long ssd_dstate_at(int b, int h, int c, int H, int nc, int P, int N) {
    return (((long)b * H + h) * nc + c) * P * N;
}

// dstates (B,H,nc,P,N): G_c, the gradient w.r.t. chunk c's S_out (0 for the
// last chunk: the final state feeds nothing); one thread per (b, h, p), over
// the chunks backwards
__global__ void ssd_dstate_kernel(float* dstates, const float* dy, const float* xbc, const float* cum, int B, int T,
                                  int H, int P, int N) {
    int nc = CEIL_DIV(T, SSD_CHUNK), E = H * P, X = E + 2 * N;
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * H * P) return;
    int p = idx % P, h = (idx / P) % H, b = idx / (P * H);
    float G[SSD_MAX_N];
    for (int n = 0; n < N; n++) G[n] = 0.0f;
    for (int c = nc - 1; c >= 0; c--) {
        float* out = dstates + ssd_dstate_at(b, h, c, H, nc, P, N) + (long)p * N;
        for (int n = 0; n < N; n++) out[n] = G[n];
        int t0 = c * SSD_CHUNK, t1 = min(T, t0 + SSD_CHUNK);
        float decay = expf(cum[((long)b * T + t1 - 1) * H + h]);
        for (int n = 0; n < N; n++) G[n] *= decay;  // now w.r.t. the state before chunk c
        for (int t = t0; t < t1; t++) {
            long row = (long)b * T + t;
            float w = fast_expf(cum[row * H + h]) * dy[row * E + h * P + p];
            const float* Ct = xbc + row * X + E + N;
            for (int n = 0; n < N; n++) G[n] += w * Ct[n];
        }
    }
}

// One thread per (b, tau, h); i = (b*T + tau)*H + h indexes the (B,T,H) outputs:
//   dxbc's x columns of the head: dx = d(dt x) dt + D dy
//   ddt_x[i] = d(dt x) . x;  ds[i] = ds_tau but for the chunk sums;  r[i] = r_tau;  dD_part[i] = dy . x
__global__ void ssd_chunk_backward_kernel(float* dxbc, float* ddt_x, float* ds, float* r, float* dD_part,
                                          const float* dy, const float* xbc, const float* dt, const float* cum,
                                          const float* states, const float* dstates, const float* D, int B, int T,
                                          int H, int P, int N) {
    int nc = CEIL_DIV(T, SSD_CHUNK), E = H * P, X = E + 2 * N;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * T * H) return;
    int h = idx % H, tau = (idx / H) % T, b = idx / ((long)H * T);
    int t0, t1;
    ssd_chunk_of(tau, T, &t0, &t1);
    int c = tau / SSD_CHUNK;
    long row = (long)b * T + tau;
    const float* xr = xbc + row * X;
    const float* x = xr + h * P;  // (P)
    const float* Bt = xr + E;
    const float* Ct = xr + E + N;
    const float* dyt = dy + row * E + h * P;
    float dtv = dt[row * H + h], st = cum[row * H + h];
    float s_last = cum[((long)b * T + t1 - 1) * H + h];
    const float* S = states + ssd_state_at(b, h, c, H, nc, P, N);       // S_in (P,N)
    const float* G = dstates + ssd_dstate_at(b, h, c, H, nc, P, N);  // G (P,N)
    float dxd[SSD_MAX_P];
    float minus = 0.0f, plus = 0.0f;
    for (int p = 0; p < P; p++) dxd[p] = 0.0f;
    for (int t = tau; t < t1; t++) {  // later positions reading x_tau: d(dt x)_tau and -m(t, tau)
        long rt = (long)b * T + t;
        const float* dyr = dy + rt * E + h * P;
        float w = ssd_dot(xbc + rt * X + E + N, Bt, N) * fast_expf(cum[rt * H + h] - st);
        for (int p = 0; p < P; p++) dxd[p] += w * dyr[p];
        minus += w * dtv * ssd_dot(x, dyr, P);
    }
    for (int u = t0; u <= tau; u++) {  // earlier positions read by y_tau: +m(tau, u)
        long ru = (long)b * T + u;
        const float* xu = xbc + ru * X;
        plus += ssd_dot(Ct, xu + E, N) * fast_expf(st - cum[ru * H + h]) * dt[ru * H + h] * ssd_dot(xu + h * P, dyt, P);
    }
    float es = fast_expf(st), el = fast_expf(s_last - st), rv = 0.0f, ddx = 0.0f, dDv = 0.0f;
    for (int p = 0; p < P; p++) {
        float gb = el * ssd_dot(G + (long)p * N, Bt, N);  // exp(s_last - s_tau) (G B_tau)[p]
        dxd[p] += gb;
        rv += dtv * x[p] * gb;
        plus += es * dyt[p] * ssd_dot(S + (long)p * N, Ct, N);
        dxbc[row * X + h * P + p] = dxd[p] * dtv + D[h] * dyt[p];
        ddx += dxd[p] * x[p];
        dDv += dyt[p] * x[p];
    }
    float extra = 0.0f;  // the chunk's last position: exp(s_last) <G, S_in>
    if (tau == t1 - 1) extra = expf(s_last) * ssd_dot(G, S, P * N);
    ddt_x[idx] = ddx;
    ds[idx] = plus - minus - rv + extra;
    r[idx] = rv;
    dD_part[idx] = dDv;
}

// One thread per (b, h, chunk): adds sum_tau r_tau to ds at the chunk's last
// position, runs ds's sum backwards (da_tau = sum_{t >= tau} ds_t), and writes
// the gradient before the softplus, (ddt_x + da A) sigmoid(dt_raw + dt_bias)
// (sigmoid = 1 - exp(-softplus)), into ddt_raw (row distance ld, in_proj's
// dt columns); dA_part[i] = da_tau dt_tau
__global__ void ssd_dt_backward_kernel(float* ddt_raw, int ld, float* dA_part, const float* ddt_x, const float* ds,
                                       const float* r, const float* dt, const float* A_log, int B, int T, int H) {
    int nc = CEIL_DIV(T, SSD_CHUNK);
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * H * nc) return;
    int c = idx % nc, h = (idx / nc) % H, b = idx / (nc * H);
    int t0 = c * SSD_CHUNK, t1 = min(T, t0 + SSD_CHUNK);
    float A = -expf(A_log[h]), rsum = 0.0f;
    for (int t = t0; t < t1; t++) rsum += r[((long)b * T + t) * H + h];
    float da = rsum;
    for (int t = t1 - 1; t >= t0; t--) {
        long row = (long)b * T + t, i = row * H + h;
        da += ds[i];
        float dtv = dt[i];
        ddt_raw[row * ld + h] = (ddt_x[i] + da * A) * (1.0f - expf(-dtv));
        dA_part[i] = da * dtv;
    }
}

// dB, dC of position t (dxbc's B and C columns, overwritten), summed over the heads in order; one thread per (b, t)
__global__ void ssd_bc_backward_kernel(float* dxbc, const float* dy, const float* xbc, const float* dt,
                                       const float* cum, const float* states, const float* dstates, int B, int T,
                                       int H, int P, int N) {
    int nc = CEIL_DIV(T, SSD_CHUNK), E = H * P, X = E + 2 * N;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * T) return;
    int t = idx % T, b = idx / T;
    int t0, t1;
    ssd_chunk_of(t, T, &t0, &t1);
    int c = t / SSD_CHUNK;
    const float* xr = xbc + idx * X;
    float dB[SSD_MAX_N], dC[SSD_MAX_N];
    for (int n = 0; n < N; n++) { dB[n] = 0.0f; dC[n] = 0.0f; }
    for (int h = 0; h < H; h++) {
        float st = cum[idx * H + h], dtv = dt[idx * H + h];
        const float* x = xr + h * P;
        const float* dyt = dy + idx * E + h * P;
        for (int u = t0; u <= t; u++) {  // C_t reads B_u
            long ru = (long)b * T + u;
            const float* xu = xbc + ru * X;
            float w = fast_expf(st - cum[ru * H + h]) * dt[ru * H + h] * ssd_dot(xu + h * P, dyt, P);
            for (int n = 0; n < N; n++) dC[n] += w * xu[E + n];
        }
        for (int u = t; u < t1; u++) {  // B_t is read by C_u
            long ru = (long)b * T + u;
            const float* xu = xbc + ru * X;
            float w = fast_expf(cum[ru * H + h] - st) * dtv * ssd_dot(x, dy + ru * E + h * P, P);
            for (int n = 0; n < N; n++) dB[n] += w * xu[E + N + n];
        }
        const float* S = states + ssd_state_at(b, h, c, H, nc, P, N);
        const float* G = dstates + ssd_dstate_at(b, h, c, H, nc, P, N);
        float es = fast_expf(st), wl = fast_expf(cum[((long)b * T + t1 - 1) * H + h] - st) * dtv;
        for (int p = 0; p < P; p++) {
            float a = es * dyt[p], g = wl * x[p];
            for (int n = 0; n < N; n++) {
                dC[n] += a * S[(long)p * N + n];
                dB[n] += g * G[(long)p * N + n];
            }
        }
    }
    for (int n = 0; n < N; n++) {
        dxbc[idx * X + E + n] = dB[n];
        dxbc[idx * X + E + N + n] = dC[n];
    }
}

// per head h, sums over every (b, t) in order: dA_log[h] += A sum dA_part,
// dD[h] += sum dD_part, ddt_bias[h] += sum ddt_raw (row distance ld)
__global__ void ssd_param_reduce_kernel(float* dA_log, float* dD, float* ddt_bias, const float* dA_part,
                                        const float* dD_part, const float* ddt_raw, int ld, const float* A_log,
                                        long BT, int H) {
    int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h >= H) return;
    float sa = 0.0f, sd = 0.0f, sb = 0.0f;
    for (long row = 0; row < BT; row++) {
        sa += dA_part[row * H + h];
        sd += dD_part[row * H + h];
        sb += ddt_raw[row * ld + h];
    }
    dA_log[h] += -expf(A_log[h]) * sa;
    dD[h] += sd;
    ddt_bias[h] += sb;
}

// ----------------------------------------------------------------------------
// launchers

inline int ssd_num_chunks(int T) { return CEIL_DIV(T, SSD_CHUNK); }
// the forward's kept states (B, H, nc+1, P, N)
inline long ssd_states_size(int B, int T, int E, int N) { return (long)B * E * (ssd_num_chunks(T) + 1) * N; }
// the backward's scratch: dstates (B,H,nc,P,N), then ddt_x, ds, r, dD_part, dA_part (B,T,H each)
inline long ssd_backward_scratch_size(int B, int T, int E, int H, int N) {
    return (long)B * E * ssd_num_chunks(T) * N + 5L * B * T * H;
}

inline void ssd_check_limits(int E, int P, int N) {
    if (N < 1 || N > SSD_MAX_N || P < 1 || P > SSD_MAX_P || E % P != 0)
        fail("SSD scan: d_state %d (1..%d), headdim %d (1..%d, dividing the inner width %d) not supported", N,
             SSD_MAX_N, P, SSD_MAX_P, E);
}

void ssd_dt_forward(float* dt, const float* dt_raw, int ld, const float* dt_bias, long BT, int H) {
    LAUNCH(ssd_dt_forward_kernel, CEIL_DIV(BT * H, 256), 256, 0)(dt, dt_raw, ld, dt_bias, BT, H);
    cudaCheck(cudaGetLastError());
}

void ssd_gate_forward(float* gated, const float* y, const float* z, int ld, long BT, int E) {
    LAUNCH(ssd_gate_forward_kernel, BT, row_threads(E), 0)(gated, y, z, ld, E, row_span(E));
    cudaCheck(cudaGetLastError());
}

void ssd_gate_backward(float* dy, float* dz, const float* dgated, const float* y, const float* z, int ld, long BT,
                       int E) {
    LAUNCH(ssd_gate_backward_kernel, BT, row_threads(E), 0)(dy, dz, dgated, y, z, ld, E, row_span(E));
    cudaCheck(cudaGetLastError());
}

// the plain recurrence (tests): y (B,T,E); h_final (B,H,P,N) or null; h0 (B,H,P,N) or null
void ssd_sequential(float* y, float* h_final, const float* xbc, const float* dt, const float* A_log, const float* D,
                    const float* h0, int B, int T, int H, int P, int N) {
    ssd_check_limits(H * P, P, N);
    LAUNCH(ssd_sequential_kernel, CEIL_DIV(B * H * P, 64), 64, 0)(y, h_final, xbc, dt, A_log, D, h0, B, T, H, P, N);
    cudaCheck(cudaGetLastError());
}

// y (B,T,E); states (B,H,nc+1,P,N) and cum (B,T,H) kept for the backward;
// h0 (B,H,P,N) the state before position 0 (null: zeros); h_final (may be
// h0, or null) gets the state after T-1
void ssd_forward(float* y, float* states, float* cum, const float* xbc, const float* dt, const float* A_log,
                 const float* D, const float* h0, float* h_final, int B, int T, int H, int P, int N) {
    ssd_check_limits(H * P, P, N);
    int nc = ssd_num_chunks(T);
    LAUNCH(ssd_cumsum_kernel, CEIL_DIV(B * H * nc, 64), 64, 0)(cum, dt, A_log, B, T, H);
    LAUNCH(ssd_chunk_state_kernel, CEIL_DIV((long)B * H * nc * P, 64), 64, 0)(states, xbc, dt, cum, B, T, H, P, N);
    LAUNCH(ssd_state_pass_kernel, CEIL_DIV(B * H * P, 64), 64, 0)(states, h_final, h0, cum, B, T, H, P, N);
    LAUNCH(ssd_chunk_output_kernel, CEIL_DIV((long)B * T * H, 64), 64, 0)(y, xbc, dt, cum, states, D, B, T, H, P, N);
    cudaCheck(cudaGetLastError());
}

// From dy (B,T,E): dxbc (B,T,E+2N) overwritten (dx | dB | dC); the gradient
// before dt's softplus into ddt_raw (row distance ld, overwritten); dA_log,
// dD, ddt_bias (H) accumulate. The forward started from a zero state.
void ssd_backward(float* dxbc, float* ddt_raw, int ld, float* dA_log, float* dD, float* ddt_bias, float* scratch,
                  const float* dy, const float* xbc, const float* dt, const float* cum, const float* states,
                  const float* A_log, const float* D, int B, int T, int H, int P, int N) {
    ssd_check_limits(H * P, P, N);
    int nc = ssd_num_chunks(T);
    long BTH = (long)B * T * H;
    float* dstates = scratch;
    float* ddt_x = dstates + (long)B * H * nc * P * N;
    float *ds = ddt_x + BTH, *r = ds + BTH, *dD_part = r + BTH, *dA_part = dD_part + BTH;
    LAUNCH(ssd_dstate_kernel, CEIL_DIV(B * H * P, 64), 64, 0)(dstates, dy, xbc, cum, B, T, H, P, N);
    LAUNCH(ssd_chunk_backward_kernel, CEIL_DIV(BTH, 64), 64, 0)(dxbc, ddt_x, ds, r, dD_part, dy, xbc, dt, cum, states,
                                                                dstates, D, B, T, H, P, N);
    LAUNCH(ssd_dt_backward_kernel, CEIL_DIV(B * H * nc, 64), 64, 0)(ddt_raw, ld, dA_part, ddt_x, ds, r, dt, A_log, B,
                                                                   T, H);
    LAUNCH(ssd_bc_backward_kernel, CEIL_DIV((long)B * T, 64), 64, 0)(dxbc, dy, xbc, dt, cum, states, dstates, B, T, H,
                                                                    P, N);
    LAUNCH(ssd_param_reduce_kernel, CEIL_DIV(H, 32), 32, 0)(dA_log, dD, ddt_bias, dA_part, dD_part, ddt_raw, ld, A_log,
                                                            (long)B * T, H);
    cudaCheck(cudaGetLastError());
}

/*
Recurrent generation for the pre-norm Transformer block stack
(llmc/transformer_block.cuh, causal): a KV cache per layer, and a step that
takes one new token per batch row at position pos and returns the block
stack's output for it.

KVCache holds, in one device buffer, every layer's keys and values
(L, B, NH, maxT, hs) each, hs = C / NH, and the scratch of one step for B
rows (shared by the layers). A step for rows 0..B'-1 (B' <= B):
  ln = LN1(x); qkv = ln @ qkv_w^T + qkv_b               (cuBLAS, B' rows)
  k, v of the new token -> the cache at position pos
  per head: y = softmax(q . k_j / sqrt(hs), j = 0..pos) @ v_j
  x2 = x + attn_proj(y); x_out = x2 + fc_proj(gelu(fc(LN2(x2))))
(attention_sublayer_step, then mlp_sublayer_step; each also on its own for
models that interleave sublayers with other layers).

The position embedding of the new token (wpe[pos]) is the caller's: it is
added to the token embedding before the first block, as in the parallel
forward.

Prefill: after transformer_block_forward over a (B, T) prompt,
kv_cache_prefill copies that layer's qkv activation (B, T, 3C) (the qkv
Linear's output, which the forward keeps) into positions 0..T-1; the next
step is at pos = T.

A full cache (pos == maxT): the caller keeps the last maxT/2 tokens as a
new window: kv_cache_reset, then the parallel forward over those tokens
(positions 0..maxT/2-1), kv_cache_prefill_stack, and steps from pos =
maxT/2 on. (The kept keys cannot be shifted in place: with learned
absolute positions every key depends on its position in the window.)
Attention reads only positions 0..pos, so reset is not needed for
correctness; it clears the stale positions so that a cache's contents
depend only on what was written since. KVWindow (at the end) keeps the
tokens each row holds in the cache, for that re-prefill.
*/
#pragma once
#include <algorithm>
#include <vector>
#include "cuda_common.h"
#include "transformer_block.cuh"

typedef struct {
    float* memory;  // the one device buffer below
    float* k;       // (L, B, NH, maxT, hs)
    float* v;       // (L, B, NH, maxT, hs)
    // scratch of one step, B rows, shared by the layers
    float* ln;        // (B, C)   LN1, then LN2
    float* qkv;       // (B, 3C)
    float* att;       // (B, NH, maxT)  scores, then probabilities
    float* atty;      // (B, C)   attention output, heads concatenated
    float* proj;      // (B, C)   attproj, then fcproj
    float* fch;       // (B, F)
    float* fch_gelu;  // (B, F)
    int L, B, maxT;
    TransformerDims d;
} KVCache;

static long kv_cache_floats(int L, int B, int maxT, TransformerDims d) {
    long C = d.C, F = d.F;
    return 2L * L * B * maxT * C + (long)B * (C + 3 * C + (long)d.NH * maxT + C + C + F + F);
}

static void kv_cache_reset(KVCache* c) {
    cudaCheck(cudaMemset(c->memory, 0, 2L * c->L * c->B * c->maxT * c->d.C * sizeof(float)));
}

// a cache of maxT positions for L layers and B rows, cleared
static void kv_cache_alloc(KVCache* c, int L, int B, int maxT, TransformerDims d) {
    if (L < 1 || B < 1 || maxT < 1) fail("kv_cache_alloc: %d layers x %d rows x %d positions", L, B, maxT);
    if (d.NH < 1 || d.C % d.NH) fail("kv_cache_alloc: %d channels do not split into %d heads", d.C, d.NH);
    long C = d.C, F = d.F;
    cudaError_t e = cudaMalloc(&c->memory, kv_cache_floats(L, B, maxT, d) * sizeof(float));
    if (e != cudaSuccess) fail("kv_cache_alloc: %d layers x %d rows x %d positions: %s", L, B, maxT, cudaGetErrorString(e));
    float* p = c->memory;
    c->k = p;        p += (long)L * B * maxT * C;
    c->v = p;        p += (long)L * B * maxT * C;
    c->ln = p;       p += (long)B * C;
    c->qkv = p;      p += (long)B * 3 * C;
    c->att = p;      p += (long)B * d.NH * maxT;
    c->atty = p;     p += (long)B * C;
    c->proj = p;     p += (long)B * C;
    c->fch = p;      p += (long)B * F;
    c->fch_gelu = p; p += (long)B * F;
    c->L = L; c->B = B; c->maxT = maxT; c->d = d;
    kv_cache_reset(c);
}

static void kv_cache_free(KVCache* c) {
    cudaCheck(cudaFree(c->memory));
    c->memory = nullptr;
}

// layer l's keys and values (B, NH, maxT, hs)
static float* kv_cache_k(const KVCache* c, int l) { return c->k + (long)l * c->B * c->maxT * c->d.C; }
static float* kv_cache_v(const KVCache* c, int l) { return c->v + (long)l * c->B * c->maxT * c->d.C; }

// ----------------------------------------------------------------------------
// kernels

// Writes the k and v parts of qkv (B, T, 3C) into the cache (B, NH, maxT, hs)
// at positions t0..t0+T-1: k[b, h, t0+t, d] = qkv[b, t, C + h*hs + d], v
// likewise from the last C columns. One thread per (b, t, channel), reading
// coalesced.
__global__ void kv_cache_write_kernel(float* k, float* v, const float* qkv, int B, int T, int t0, int NH, int hs,
                                      int maxT) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    int C = NH * hs;
    if (idx >= (long)B * T * C) return;
    int c = idx % C;
    long bt = idx / C;
    int t = bt % T, b = bt / T;
    int h = c / hs, d = c % hs;
    long dst = (((long)b * NH + h) * maxT + t0 + t) * hs + d;
    k[dst] = qkv[bt * 3 * C + C + c];
    v[dst] = qkv[bt * 3 * C + 2 * C + c];
}

// Attention of one new query per (b, h) over the cached positions 0..pos:
//   s_j = (q . k_j) / sqrt(hs),  p_j = exp(s_j - max s) / sum,  y = sum_j p_j v_j
// in the parallel forward's order of operations (scale after the dot, the
// max subtracted inside the exp, probabilities normalized before the
// product with v). Two passes over the cache with the scores kept in att
// (B, NH, maxT). q is qkv's first C columns (row distance 3C); y goes to
// out (B, C), heads concatenated.
// Rows variant: one thread per (b, h). Barrier-free: the host backend's
// choice. The dot products run in 8 interleaved partials and the softmax in
// softmax_row_exp (attention.cuh), a fixed order each, so that g++
// vectorizes them.
__device__ __forceinline__ float step_dot(const float* a, const float* b, int n) {
    float part[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int nfull = n - n % 8;
    for (int d = 0; d < nfull; d += 8)
        for (int u = 0; u < 8; u++) part[u] += a[d + u] * b[d + u];
    for (int d = nfull; d < n; d++) part[d - nfull] += a[d] * b[d];
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

__global__ void attention_step_rows_kernel(float* out, float* att, const float* qkv, const float* k, const float* v,
                                           int B, int NH, int hs, int maxT, int pos, float scale) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * NH) return;
    int h = idx % NH, b = idx / NH;
    int C = NH * hs, n = pos + 1;
    const float* q = qkv + (long)b * 3 * C + h * hs;
    const float* kh = k + (long)idx * maxT * hs;
    const float* vh = v + (long)idx * maxT * hs;
    float* a = att + (long)idx * maxT;
    for (int j = 0; j < n; j++) a[j] = step_dot(q, kh + (long)j * hs, hs) * scale;
    float inv = 1.0f / softmax_row_exp(a, a, n, 1.0f);  // the scores are scaled already
    float* y = out + (long)b * C + h * hs;
    for (int d = 0; d < hs; d++) y[d] = 0.0f;
    for (int j = 0; j < n; j++) {
        float pj = a[j] * inv;
        for (int d = 0; d < hs; d++) y[d] += pj * vh[(long)j * hs + d];
    }
}

// max over a block whose size is a multiple of 32 (as block_sum); scratch:
// 32 floats of shared memory; every thread gets the result
__device__ __forceinline__ float kv_block_max(float v, float* scratch) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < nwarps; w++) m = fmaxf(m, scratch[w]);
    return m;
}

// The same, block variant: one block per (b, h). Threads stride over the
// positions for the scores and the exps (block max and sum by warp
// shuffles), then over the hs output channels, each summing over the
// positions (reads of v coalesced across threads). The GPU's choice: the
// cache of one head is read by a whole block instead of one thread.
__global__ void attention_step_block_kernel(float* out, float* att, const float* qkv, const float* k, const float* v,
                                            int B, int NH, int hs, int maxT, int pos, float scale) {
    __shared__ float scratch[32];
    int idx = blockIdx.x;  // (b, h)
    int h = idx % NH, b = idx / NH;
    int C = NH * hs;
    const float* q = qkv + (long)b * 3 * C + h * hs;
    const float* kh = k + (long)idx * maxT * hs;
    const float* vh = v + (long)idx * maxT * hs;
    float* a = att + (long)idx * maxT;
    float maxv = -INFINITY;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x) {
        float dot = 0.0f;
        for (int d = 0; d < hs; d++) dot += q[d] * kh[(long)j * hs + d];
        a[j] = dot * scale;
        maxv = fmaxf(maxv, a[j]);
    }
    maxv = kv_block_max(maxv, scratch);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x) { a[j] = expf(a[j] - maxv); sum += a[j]; }
    sum = block_sum(sum, scratch);
    float inv = 1.0f / sum;
    __syncthreads();  // every thread's exps in att are visible to all
    float* y = out + (long)b * C + h * hs;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j <= pos; j++) acc += a[j] * inv * vh[(long)j * hs + d];
        y[d] = acc;
    }
}

// ----------------------------------------------------------------------------
// launchers


static void kv_cache_check(const KVCache* c, int layer, int B, const char* what) {
    if (layer < 0 || layer >= c->L) fail("%s: layer %d of %d", what, layer, c->L);
    if (B < 1 || B > c->B) fail("%s: %d rows, the cache holds %d", what, B, c->B);
}

// positions 0..T-1 of layer `layer` from the parallel forward's qkv
// activation of that layer over a (B, T) prompt, (B, T, 3C)
static void kv_cache_prefill(KVCache* c, int layer, const float* qkv, int B, int T) {
    kv_cache_check(c, layer, B, "kv_cache_prefill");
    if (T < 1 || T > c->maxT) fail("kv_cache_prefill: prompt of %d tokens, the cache holds 1..%d", T, c->maxT);
    int C = c->d.C, NH = c->d.NH;
    long n = (long)B * T * C;
    LAUNCH(kv_cache_write_kernel, CEIL_DIV(n, 256), 256, 0)(kv_cache_k(c, layer), kv_cache_v(c, layer), qkv, B, T, 0,
                                                            NH, C / NH, c->maxT);
    cudaCheck(cudaGetLastError());
}

// every layer, from the stacked activations of transformer_block_forward over (B, T)
static void kv_cache_prefill_stack(KVCache* c, const TransformerStackActs& acts, int B, int T) {
    for (int l = 0; l < c->L; l++) kv_cache_prefill(c, l, transformer_layer_acts(acts, l, B, T, c->d).qkv, B, T);
}

// The attention of one step for any block built on this cache (the GPT's
// attention sublayer below, the Transformer++ block): c->qkv (B, 3C) holds the new
// token's q, k, v (as the block computed them: rotated, for RoPE); its k and
// v go to layer `layer`'s cache at position pos, and c->atty (B, C) gets the
// attention of q over positions 0..pos, with the backend's step kernel.
static void kv_cache_attention_step(KVCache* c, int layer, int pos, int B) {
    kv_cache_check(c, layer, B, "kv_cache_attention_step");
    if (pos < 0 || pos >= c->maxT) fail("kv_cache_attention_step: position %d, the cache holds 0..%d", pos, c->maxT - 1);
    int C = c->d.C, NH = c->d.NH, hs = C / NH;
    float *k = kv_cache_k(c, layer), *v = kv_cache_v(c, layer);
    LAUNCH(kv_cache_write_kernel, CEIL_DIV((long)B * C, 256), 256, 0)(k, v, c->qkv, B, 1, pos, NH, hs, c->maxT);
    cudaCheck(cudaGetLastError());
    float scale = 1.0f / sqrtf((float)hs);
    if (kernel_choices.attention_step_block) {
        LAUNCH(attention_step_block_kernel, B * NH, 128, 0)(c->atty, c->att, c->qkv, k, v, B, NH, hs, c->maxT, pos, scale);
    } else {
        LAUNCH(attention_step_rows_kernel, CEIL_DIV(B * NH, 32), 32, 0)(c->atty, c->att, c->qkv, k, v, B, NH, hs,
                                                                        c->maxT, pos, scale);
    }
    cudaCheck(cudaGetLastError());
}

// One attention sublayer, one token per row at position pos (0 <= pos <
// maxT; positions 0..pos-1 of layer `layer` hold the earlier tokens' keys
// and values): x (B, C) is the sublayer's input on entry and its output
// x + attn(LN(x)) on return; p = the layer's parameters.
static void attention_sublayer_step(cublasHandle_t h, const AttentionParams& p, KVCache* c, int layer, float* x,
                                    int pos, int B, TransformerDims d) {
    if (d.C != c->d.C || d.NH != c->d.NH) fail("attention_sublayer_step: dims differ from the cache's");
    int C = d.C;
    layernorm_forward(c->ln, nullptr, nullptr, x, p.ln_w, p.ln_b, B, C);
    matmul_forward(h, c->qkv, c->ln, p.qkv_w, p.qkv_b, B, C, 3 * C);
    kv_cache_attention_step(c, layer, pos, B);
    matmul_forward(h, c->proj, c->atty, p.proj_w, p.proj_b, B, C, C);
    residual_forward(x, x, c->proj, (long)B * C);
}

// One MLP sublayer, one token per row: x (B, C) in, x + mlp(LN(x)) out.
// Scratch: ln, proj (B, C) and fch, fch_gelu (B, F) (a KVCache's, or the
// caller's when a model has no attention).
static void mlp_sublayer_step(cublasHandle_t h, const MlpParams& p, float* x, float* ln, float* fch, float* fch_gelu,
                              float* proj, int B, TransformerDims d) {
    int C = d.C, F = d.F;
    layernorm_forward(ln, nullptr, nullptr, x, p.ln_w, p.ln_b, B, C);
    matmul_forward(h, fch, ln, p.fc_w, p.fc_b, B, C, F);
    gelu_forward(fch_gelu, fch, (long)B * F);
    matmul_forward(h, proj, fch_gelu, p.proj_w, p.proj_b, B, F, C);
    residual_forward(x, x, proj, (long)B * C);
}

// One block, one token per row at position pos: x (B, C) is the block's
// input on entry and its output on return, the attention sublayer's step
// then the MLP's; p = the layer's parameters (transformer_layer_params).
static void transformer_block_step(cublasHandle_t h, const TransformerStackParams& p, KVCache* c, int layer, float* x,
                                   int pos, int B, TransformerDims d) {
    if (d.F != c->d.F) fail("transformer_block_step: dims differ from the cache's");
    attention_sublayer_step(h, block_attention_params(p), c, layer, x, pos, B, d);
    mlp_sublayer_step(h, block_mlp_params(p), x, c->ln, c->fch, c->fch_gelu, c->proj, B, d);
}

// all L blocks of a stack (stacked parameters), x (B, C) in and out
static void transformer_stack_step(cublasHandle_t h, const TransformerStackParams& stack, KVCache* c, float* x, int pos,
                                   int B) {
    for (int l = 0; l < c->L; l++) transformer_block_step(h, transformer_layer_params(stack, l, c->d), c, l, x, pos, B, c->d);
}

// ----------------------------------------------------------------------------
// The tokens a model's KV caches hold, per row on the host, and the next
// token's position; what a model with caches (the GPT, the Transformer++,
// the hybrid LM) re-prefills its caches from when they are full. The
// context W is the caches' length. A generation starts with
// kv_window_prompt, then takes a token per row with kv_window_push before
// each step; when that says the window slid, the model runs its parallel
// forward over kv_window_rows (positions 0 .. pos-1) into cleared caches
// instead of the step, as a windowed forward would see those tokens.

typedef struct {
    std::vector<int> tokens;  // (B, W)
    int W;                    // the context: positions per row
    int pos;                  // tokens held per row: the next token's position
} KVWindow;

// an empty window of W positions for B rows
static void kv_window_init(KVWindow* w, int B, int W) {
    w->tokens.assign((long)B * W, 0);
    w->W = W;
    w->pos = 0;
}

// A prompt (B, T) (host): its last min(T, W) tokens of each row become the
// window (pos = their count); the caller prefills the caches from them.
static void kv_window_prompt(KVWindow* w, const int* tokens, int B, int T) {
    int W = w->W, keep = T < W ? T : W;
    for (int b = 0; b < B; b++) std::copy(tokens + (long)b * T + (T - keep), tokens + (long)b * T + T, &w->tokens[(long)b * W]);
    w->pos = keep;
}

// One token per row (host, B) into the window before a step. Returns the
// position the step computes them at (pos moves past it); or, when the
// window was full, -1: the newest W/2 tokens (the new ones last) became the
// window, and the caller re-prefills the caches from them instead of stepping.
static int kv_window_push(KVWindow* w, const int* tokens, int B) {
    int W = w->W;
    if (w->pos == W) {
        int keep = W / 2 > 1 ? W / 2 : 1;
        for (int b = 0; b < B; b++) {
            int* row = &w->tokens[(long)b * W];
            std::copy(row + W - (keep - 1), row + W, row);
            row[keep - 1] = tokens[b];
        }
        w->pos = keep;
        return -1;
    }
    for (int b = 0; b < B; b++) w->tokens[(long)b * W + w->pos] = tokens[b];
    return w->pos++;
}

// the window's tokens as rows (B, pos), the input of the forward that prefills the caches
static std::vector<int> kv_window_rows(const KVWindow* w, int B) {
    int T = w->pos;
    std::vector<int> rows((long)B * T);
    for (int b = 0; b < B; b++) std::copy(&w->tokens[(long)b * w->W], &w->tokens[(long)b * w->W] + T, &rows[(long)b * T]);
    return rows;
}

/*
The Transformer++ block (the Mamba paper's strong Transformer baseline, as
LLaMA): pre-norm with RMSNorm, rotary embeddings on q and k, a SwiGLU MLP,
no biases:
  h = RMSNorm1(x);  qkv = h @ qkv_w^T;  q, k rotated at their positions (rope.cuh)
  x2 = x + attn_proj(causal_attention(q, k, v))
  h = RMSNorm2(x2); [a | b] = h @ fc_w^T   (fc_w (2H, C): rows [0, H) are W1, rows [H, 2H) are W3)
  x3 = x2 + fc_proj(silu(a) * b)           (fc_proj_w (C, H) is W2)
forward and backward for a stack of L blocks whose parameters and
activations are each stacked over layers (leading dimension L) in the
model's flat buffers, as transformer_block.cuh's; and one generation step
with the KV cache (kv_cache.cuh), RoPE at the step's absolute position.

H, the SwiGLU hidden width, is plus_hidden_width(F): the plain GPT's MLP of
width F has 2CF + F + C parameters, this one 3CH, so H = 2F/3 rounded to
the nearest multiple of 8 (F = 2C: H ~ 4C/3; C = 64 -> 88, C = 256 -> 344).

Attention is attention.cuh's (materialized or tiled, as the backend picks);
the rotation is applied in place on the qkv Linear's output, which is what
the layer keeps (and what the KV cache copies: keys are cached rotated).
Dropout (transformer_block.cuh's BlockDropout, nanoGPT's places) drops the
attention probabilities and each branch's output before its residual add:
  x2 = x + Dropout(attn_proj(...)),  x3 = x2 + Dropout(fc_proj(...)).
*/
#pragma once
#include "cuda_common.h"
#include "encoder.cuh"  // residual_forward
#include "rmsnorm.cuh"
#include "matmul.cuh"
#include "attention.cuh"
#include "rope.cuh"
#include "swiglu.cuh"
#include "kv_cache.cuh"
#include "model.h"
#include "utils.h"

typedef struct {
    int C;   // channels
    int NH;  // heads
    int H;   // SwiGLU hidden width
} PlusDims;

// the SwiGLU width with about the parameters of a GPT MLP of width F: 2F/3 to the nearest multiple of 8, at least 8
static int plus_hidden_width(int F) {
    int h = 8 * (int)((2.0 * F / 3.0) / 8.0 + 0.5);
    return h < 8 ? 8 : h;
}

// parameters of all L blocks, stacked; or, from plus_layer_params, of one
#define PLUS_STACK_PARAMS 6
typedef struct {
    float* ln1_w;        // (L, C)      RMSNorm weight
    float* qkv_w;        // (L, 3C, C)
    float* attn_proj_w;  // (L, C, C)
    float* ln2_w;        // (L, C)
    float* fc_w;         // (L, 2H, C)  W1 (rows 0..H-1) and W3 (rows H..2H-1)
    float* fc_proj_w;    // (L, C, H)   W2
} PlusStackParams;

// the L blocks' rows of a model's tensor table (model.h), from t; returns
// the next row. Weight decay on the Linear weights only.
static TensorSpec* plus_stack_param_table(TensorSpec* t, int L, PlusDims d) {
    long C = d.C, H = d.H;
    TensorSpec rows[PLUS_STACK_PARAMS] = {
        {"ln1_w", L * C, 0, L},          {"qkv_w", L * 3 * C * C, 1, L}, {"attn_proj_w", L * C * C, 1, L},
        {"ln2_w", L * C, 0, L},          {"fc_w", L * 2 * H * C, 1, L},  {"fc_proj_w", L * C * H, 1, L}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

static PlusStackParams plus_layer_params(const PlusStackParams& s, int l, PlusDims d) {
    long C = d.C, H = d.H;
    PlusStackParams p = {s.ln1_w + l * C, s.qkv_w + l * 3 * C * C, s.attn_proj_w + l * C * C,
                         s.ln2_w + l * C, s.fc_w + l * 2 * H * C,  s.fc_proj_w + l * C * H};
    return p;
}

// Initialization of one stack (host memory), as GPT-2's for what it has:
// Linear weights N(0, 0.02), the residual projections (attn_proj_w,
// fc_proj_w) N(0, 0.02 / sqrt(2L)), RMSNorm weights 1
static void plus_stack_init(const PlusStackParams& p, int L, PlusDims d, Rng* rng) {
    TensorSpec rows[PLUS_STACK_PARAMS];
    plus_stack_param_table(rows, L, d);
    float* const* tensors = (float* const*)&p;
    float proj_std = 0.02f / sqrtf(2.0f * L);
    for (int i = 0; i < PLUS_STACK_PARAMS; i++) {
        const char* name = rows[i].name;
        bool proj = !strcmp(name, "attn_proj_w") || !strcmp(name, "fc_proj_w");
        for (long j = 0; j < rows[i].size; j++)
            tensors[i][j] = rows[i].decay ? rng_normal(rng) * (proj ? proj_std : 0.02f) : 1.0f;
    }
}

// activations of all L blocks kept for backward, stacked; or, from
// plus_layer_acts, of one block
#define PLUS_STACK_ACTS 14
typedef struct {
    float* ln1;         // (L, B, T, C)
    float* ln1_rstd;    // (L, B, T)
    float* qkv;         // (L, B, T, 3C)   the qkv Linear's output, q and k rotated (in place)
    float* qkvr;        // (L, 3, B, NH, T, hs)  q, k, v per head
    float* att;         // (L, attention state)  attention_act_sizes().state per layer
    float* atty;        // (L, B, T, C)    attention output, heads concatenated
    float* attproj;     // (L, B, T, C)
    float* residual2;   // (L, B, T, C)
    float* ln2;         // (L, B, T, C)
    float* ln2_rstd;    // (L, B, T)
    float* fch;         // (L, B, T, 2H)   [W1 x | W3 x]
    float* fch_swiglu;  // (L, B, T, H)    silu(W1 x) * W3 x
    float* fcproj;      // (L, B, T, C)
    float* residual3;   // (L, B, T, C)    block output
} PlusStackActs;

static TensorSpec* plus_stack_act_table(TensorSpec* t, int L, int B, int T, PlusDims d) {
    long BT = (long)B * T, C = d.C, H = d.H;
    long att = attention_act_sizes(B, T, d.C, d.NH).state;  // per layer
    TensorSpec rows[PLUS_STACK_ACTS] = {
        {"ln1", L * BT * C},       {"ln1_rstd", L * BT},        {"qkv", L * BT * 3 * C},  {"qkvr", L * BT * 3 * C},
        {"att", L * att},          {"atty", L * BT * C},        {"attproj", L * BT * C},  {"residual2", L * BT * C},
        {"ln2", L * BT * C},       {"ln2_rstd", L * BT},        {"fch", L * BT * 2 * H},  {"fch_swiglu", L * BT * H},
        {"fcproj", L * BT * C},    {"residual3", L * BT * C}};
    for (TensorSpec r : rows) { r.layers = L; *t++ = r; }
    return t;
}

static PlusStackActs plus_layer_acts(const PlusStackActs& a, int l, int B, int T, PlusDims d) {
    long BT = (long)B * T, C = d.C, H = d.H;
    long att = attention_act_sizes(B, T, d.C, d.NH).state;
    PlusStackActs r = {a.ln1 + l * BT * C,       a.ln1_rstd + l * BT,       a.qkv + l * BT * 3 * C,
                       a.qkvr + l * BT * 3 * C,  a.att + l * att,           a.atty + l * BT * C,
                       a.attproj + l * BT * C,   a.residual2 + l * BT * C,  a.ln2 + l * BT * C,
                       a.ln2_rstd + l * BT,      a.fch + l * BT * 2 * H,    a.fch_swiglu + l * BT * H,
                       a.fcproj + l * BT * C,    a.residual3 + l * BT * C};
    return r;
}

// scratch shared by all layers, forward and backward
#define PLUS_SCRATCH 8
typedef struct {
    float* preatt;  // attention_act_sizes().preatt: (B, NH, T, T), or none (tiled)
    float* attn_y;  // (B, NH, T, hs)
    float* dbtc;    // (B, T, C)
    float* dbth;    // (B, T, H)   gradient of the SwiGLU output
    float* dbth2;   // (B, T, 2H)  gradient of [W1 x | W3 x]
    float* dqkv;    // (B, T, 3C)
    float* dqkvr;   // (3, B, NH, T, hs)
    float* datt;    // attention_act_sizes().datt: (B, NH, T, T), or (B, NH, T) (tiled)
} PlusScratch;

static TensorSpec* plus_scratch_table(TensorSpec* t, int B, int T, PlusDims d) {
    long BT = (long)B * T, C = d.C, H = d.H;
    AttentionSizes att = attention_act_sizes(B, T, d.C, d.NH);
    TensorSpec rows[PLUS_SCRATCH] = {
        {"preatt", att.preatt, 0, 1}, {"attn_y", BT * C, 0, 1},     {"dbtc", BT * C, 0, 1},
        {"dbth", BT * H, 0, 1},       {"dbth2", BT * 2 * H, 0, 1},  {"dqkv", BT * 3 * C, 0, 1},
        {"dqkvr", BT * 3 * C, 0, 1},  {"datt", att.datt, 0, 1}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

// One block: a.residual3 (B,T,C) from x (B,T,C); p and a are the layer's.
// Causal. With dropout, a.attproj and a.fcproj hold the branches' outputs
// after it.
static void plus_block_forward(cublasHandle_t h, const PlusStackParams& p, const PlusStackActs& a, const PlusScratch& s,
                               const float* x, int B, int T, PlusDims d, BlockDropout drop) {
    int BT = B * T, C = d.C, H = d.H;
    long btc = (long)BT * C;
    {
        NVTX_RANGE("ln1_forward");
        rmsnorm_forward(a.ln1, a.ln1_rstd, x, p.ln1_w, BT, C);
    }
    {
        NVTX_RANGE("attention_forward");
        matmul_forward(h, a.qkv, a.ln1, p.qkv_w, nullptr, BT, C, 3 * C);
        rope_forward(a.qkv, a.qkv, B, T, C, d.NH, 0);
        attention_forward(h, a.atty, a.qkvr, a.att, s.preatt, s.attn_y, a.qkv, B, T, C, d.NH, 1, drop.probs_rate,
                          drop.probs);
        matmul_forward(h, a.attproj, a.atty, p.attn_proj_w, nullptr, BT, C, C);
        if (drop.rate > 0.0f) dropout_apply(a.attproj, a.attproj, btc, drop.rate, drop.attn);
        residual_forward(a.residual2, x, a.attproj, btc);
    }
    {
        NVTX_RANGE("ln2_forward");
        rmsnorm_forward(a.ln2, a.ln2_rstd, a.residual2, p.ln2_w, BT, C);
    }
    {
        NVTX_RANGE("mlp_forward");
        matmul_forward(h, a.fch, a.ln2, p.fc_w, nullptr, BT, C, 2 * H);
        swiglu_forward(a.fch_swiglu, a.fch, a.fch + H, 2 * H, BT, H);
        matmul_forward(h, a.fcproj, a.fch_swiglu, p.fc_proj_w, nullptr, BT, H, C);
        if (drop.rate > 0.0f) dropout_apply(a.fcproj, a.fcproj, btc, drop.rate, drop.mlp);
        residual_forward(a.residual3, a.residual2, a.fcproj, btc);
    }
}

// One block backward. dresidual (B,T,C): on entry the gradient w.r.t. the
// block's output, on return w.r.t. its input x (each branch adds to it).
// g: the layer's gradients (accumulated). drop: the forward's; a branch's
// gradient through its mask goes to scratch its backward reads before
// overwriting it (dbtc for the MLP, attn_y for the attention).
static void plus_block_backward(cublasHandle_t h, float* dresidual, const float* x, const PlusStackParams& p,
                                const PlusStackParams& g, const PlusStackActs& a, const PlusScratch& s,
                                const float* ones, int B, int T, PlusDims d, BlockDropout drop) {
    int BT = B * T, C = d.C, H = d.H;
    long btc = (long)BT * C;
    {
        NVTX_RANGE("mlp_backward");
        const float* dbranch = dresidual;
        if (drop.rate > 0.0f) { dropout_apply(s.dbtc, dresidual, btc, drop.rate, drop.mlp); dbranch = s.dbtc; }
        matmul_backward(h, s.dbth, g.fc_proj_w, nullptr, dbranch, a.fch_swiglu, p.fc_proj_w, ones, BT, H, C);
        swiglu_backward(s.dbth2, s.dbth2 + H, s.dbth, a.fch, a.fch + H, 2 * H, BT, H);
        matmul_backward(h, s.dbtc, g.fc_w, nullptr, s.dbth2, a.ln2, p.fc_w, ones, BT, C, 2 * H);
    }
    {
        NVTX_RANGE("ln2_backward");
        rmsnorm_backward(dresidual, g.ln2_w, s.dbtc, a.residual2, p.ln2_w, a.ln2_rstd, BT, C);
    }
    {
        NVTX_RANGE("attention_backward");
        const float* dbranch = dresidual;
        if (drop.rate > 0.0f) { dropout_apply(s.attn_y, dresidual, btc, drop.rate, drop.attn); dbranch = s.attn_y; }
        matmul_backward(h, s.dbtc, g.attn_proj_w, nullptr, dbranch, a.atty, p.attn_proj_w, ones, BT, C, C);
        attention_backward(h, s.dqkv, s.dqkvr, s.attn_y, s.datt, s.dbtc, a.qkvr, a.att, B, T, C, d.NH, 1,
                           drop.probs_rate, drop.probs);
        rope_backward(s.dqkv, B, T, C, d.NH, 0);
        matmul_backward(h, s.dbtc, g.qkv_w, nullptr, s.dqkv, a.ln1, p.qkv_w, ones, BT, C, 3 * C);
    }
    {
        NVTX_RANGE("ln1_backward");
        rmsnorm_backward(dresidual, g.ln1_w, s.dbtc, x, p.ln1_w, a.ln1_rstd, BT, C);
    }
}

// ----------------------------------------------------------------------------
// generation: the KV cache of kv_cache.cuh, sized with plus_cache_dims (its
// MLP scratch holds [W1 x | W3 x] (B, 2H) in fch and the SwiGLU output in
// fch_gelu)

static TransformerDims plus_cache_dims(PlusDims d) {
    TransformerDims t = {d.C, d.NH, 2 * d.H};
    return t;
}

// every layer's cache positions 0..T-1 from the stacked activations of plus_block_forward over (B, T)
static void plus_kv_cache_prefill_stack(KVCache* c, const PlusStackActs& acts, int B, int T, PlusDims d) {
    for (int l = 0; l < c->L; l++) kv_cache_prefill(c, l, plus_layer_acts(acts, l, B, T, d).qkv, B, T);
}

// One block, one token per row at position pos (0 <= pos < maxT; positions
// 0..pos-1 of layer `layer` hold the earlier tokens' rotated keys and
// values): x (B, C) is the block's input on entry and its output on return.
static void plus_block_step(cublasHandle_t h, const PlusStackParams& p, KVCache* c, int layer, float* x, int pos, int B,
                            PlusDims d) {
    TransformerDims cd = plus_cache_dims(d);
    kv_cache_check(c, layer, B, "plus_block_step");
    if (cd.C != c->d.C || cd.NH != c->d.NH || cd.F != c->d.F) fail("plus_block_step: dims differ from the cache's");
    if (pos < 0 || pos >= c->maxT) fail("plus_block_step: position %d, the cache holds 0..%d", pos, c->maxT - 1);
    int C = d.C, H = d.H;
    long bc = (long)B * C;
    rmsnorm_forward(c->ln, nullptr, x, p.ln1_w, B, C);
    matmul_forward(h, c->qkv, c->ln, p.qkv_w, nullptr, B, C, 3 * C);
    rope_forward(c->qkv, c->qkv, B, 1, C, d.NH, pos);
    kv_cache_attention_step(c, layer, pos, B);
    matmul_forward(h, c->proj, c->atty, p.attn_proj_w, nullptr, B, C, C);
    residual_forward(x, x, c->proj, bc);  // in place: x2 = x + attn
    rmsnorm_forward(c->ln, nullptr, x, p.ln2_w, B, C);
    matmul_forward(h, c->fch, c->ln, p.fc_w, nullptr, B, C, 2 * H);
    swiglu_forward(c->fch_gelu, c->fch, c->fch + H, 2 * H, B, H);
    matmul_forward(h, c->proj, c->fch_gelu, p.fc_proj_w, nullptr, B, H, C);
    residual_forward(x, x, c->proj, bc);  // x3 = x2 + mlp
}

// all L blocks of a stack (stacked parameters), x (B, C) in and out
static void plus_stack_step(cublasHandle_t h, const PlusStackParams& stack, KVCache* c, float* x, int pos, int B,
                            PlusDims d) {
    for (int l = 0; l < c->L; l++) plus_block_step(h, plus_layer_params(stack, l, d), c, l, x, pos, B, d);
}

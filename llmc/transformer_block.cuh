/*
The pre-norm Transformer block, x = x + attn(LN1(x)); x = x + mlp(LN2(x)),
forward and backward, for a stack of L blocks whose parameters and
activations are each stacked over layers (leading dimension L) in the
model's flat buffers. Attention: qkv Linear(C, 3C) and proj Linear(C, C)
with bias, NH heads, causal (the GPT) or not (the ViT); MLP: Linear(C, F),
GELU, Linear(F, C).
*/
#pragma once
#include "cuda_common.h"
#include "encoder.cuh"  // residual_forward
#include "layernorm.cuh"
#include "matmul.cuh"
#include "attention.cuh"
#include "gelu.cuh"
#include "utils.h"

typedef struct {
    int C;   // channels
    int NH;  // heads
    int F;   // MLP hidden width
} TransformerDims;

// parameters of all L blocks, stacked; or, from transformer_layer_params, of one
#define TRANSFORMER_STACK_PARAMS 12
typedef struct {
    float* ln1w;      // (L, C)
    float* ln1b;      // (L, C)
    float* qkvw;      // (L, 3C, C)
    float* qkvb;      // (L, 3C)
    float* attprojw;  // (L, C, C)
    float* attprojb;  // (L, C)
    float* ln2w;      // (L, C)
    float* ln2b;      // (L, C)
    float* fcw;       // (L, F, C)
    float* fcb;       // (L, F)
    float* fcprojw;   // (L, C, F)
    float* fcprojb;   // (L, C)
} TransformerStackParams;

static const char* const transformer_stack_param_names[TRANSFORMER_STACK_PARAMS] = {
    "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb"};
// weight decay on the Linear weights only
static const int transformer_stack_param_decay[TRANSFORMER_STACK_PARAMS] = {0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0};

static void transformer_stack_param_sizes(long* sizes, int L, TransformerDims d) {
    long C = d.C, F = d.F;
    long s[TRANSFORMER_STACK_PARAMS] = {L * C, L * C, L * 3 * C * C, L * 3 * C, L * C * C, L * C,
                                        L * C, L * C, L * F * C, L * F, L * C * F, L * C};
    for (int i = 0; i < TRANSFORMER_STACK_PARAMS; i++) sizes[i] = s[i];
}

static TransformerStackParams transformer_layer_params(const TransformerStackParams& s, int l, TransformerDims d) {
    long C = d.C, F = d.F;
    TransformerStackParams p = {s.ln1w + l * C, s.ln1b + l * C, s.qkvw + l * 3 * C * C, s.qkvb + l * 3 * C,
                                s.attprojw + l * C * C, s.attprojb + l * C, s.ln2w + l * C, s.ln2b + l * C,
                                s.fcw + l * F * C, s.fcb + l * F, s.fcprojw + l * C * F, s.fcprojb + l * C};
    return p;
}

// GPT-2's initialization of one stack (host memory): Linear weights
// N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2L)), biases 0,
// LayerNorm weight 1 and bias 0
static void transformer_stack_init(const TransformerStackParams& p, int L, TransformerDims d, Rng* rng) {
    long sizes[TRANSFORMER_STACK_PARAMS];
    transformer_stack_param_sizes(sizes, L, d);
    float* const* tensors = (float* const*)&p;
    float proj_std = 0.02f / sqrtf(2.0f * L);
    for (int i = 0; i < TRANSFORMER_STACK_PARAMS; i++) {
        const char* name = transformer_stack_param_names[i];
        bool ln_weight = !strcmp(name, "ln1w") || !strcmp(name, "ln2w");
        bool proj = !strcmp(name, "attprojw") || !strcmp(name, "fcprojw");
        for (long j = 0; j < sizes[i]; j++)
            tensors[i][j] = ln_weight ? 1.0f
                          : transformer_stack_param_decay[i] ? rng_normal(rng) * (proj ? proj_std : 0.02f) : 0.0f;
    }
}

// activations of all L blocks kept for backward, stacked; or, from
// transformer_layer_acts, of one block
#define TRANSFORMER_STACK_ACTS 16
typedef struct {
    float* ln1;        // (L, B, T, C)
    float* ln1_mean;   // (L, B, T)
    float* ln1_rstd;   // (L, B, T)
    float* qkv;        // (L, B, T, 3C)
    float* qkvr;       // (L, 3, B, NH, T, hs)  q, k, v per head
    float* att;        // (L, attention state)  attention_act_sizes().state per layer: softmax
                       //                       probabilities (B,NH,T,T), or the tiled variant's o, lse
    float* atty;       // (L, B, T, C)          attention output, heads concatenated
    float* attproj;    // (L, B, T, C)
    float* residual2;  // (L, B, T, C)
    float* ln2;        // (L, B, T, C)
    float* ln2_mean;   // (L, B, T)
    float* ln2_rstd;   // (L, B, T)
    float* fch;        // (L, B, T, F)
    float* fch_gelu;   // (L, B, T, F)
    float* fcproj;     // (L, B, T, C)
    float* residual3;  // (L, B, T, C)          block output
} TransformerStackActs;

static void transformer_stack_act_sizes(long* sizes, int L, int B, int T, TransformerDims d) {
    long BT = (long)B * T, C = d.C, F = d.F;
    long att = attention_act_sizes(B, T, d.C, d.NH).state;  // per layer
    long s[TRANSFORMER_STACK_ACTS] = {L * BT * C, L * BT, L * BT, L * BT * 3 * C, L * BT * 3 * C, L * att,
                                      L * BT * C, L * BT * C, L * BT * C, L * BT * C, L * BT, L * BT, L * BT * F,
                                      L * BT * F, L * BT * C, L * BT * C};
    for (int i = 0; i < TRANSFORMER_STACK_ACTS; i++) sizes[i] = s[i];
}

static TransformerStackActs transformer_layer_acts(const TransformerStackActs& a, int l, int B, int T, TransformerDims d) {
    long BT = (long)B * T, C = d.C, F = d.F;
    long att = attention_act_sizes(B, T, d.C, d.NH).state;
    TransformerStackActs r = {a.ln1 + l * BT * C, a.ln1_mean + l * BT, a.ln1_rstd + l * BT, a.qkv + l * BT * 3 * C,
                              a.qkvr + l * BT * 3 * C, a.att + l * att, a.atty + l * BT * C,
                              a.attproj + l * BT * C, a.residual2 + l * BT * C, a.ln2 + l * BT * C,
                              a.ln2_mean + l * BT, a.ln2_rstd + l * BT, a.fch + l * BT * F, a.fch_gelu + l * BT * F,
                              a.fcproj + l * BT * C, a.residual3 + l * BT * C};
    return r;
}

// scratch shared by all layers, forward and backward
#define TRANSFORMER_SCRATCH 7
typedef struct {
    float* preatt;  // attention_act_sizes().preatt: (B, NH, T, T), or none (tiled)
    float* attn_y;  // (B, NH, T, hs)
    float* dbtc;    // (B, T, C)
    float* dbtf;    // (B, T, F)
    float* dqkv;    // (B, T, 3C)
    float* dqkvr;   // (3, B, NH, T, hs)
    float* datt;    // attention_act_sizes().datt: (B, NH, T, T), or (B, NH, T) (tiled)
} TransformerScratch;

static void transformer_scratch_sizes(long* sizes, int B, int T, TransformerDims d) {
    long BT = (long)B * T, C = d.C, F = d.F;
    AttentionSizes att = attention_act_sizes(B, T, d.C, d.NH);
    long s[TRANSFORMER_SCRATCH] = {att.preatt, BT * C, BT * C, BT * F, BT * 3 * C, BT * 3 * C, att.datt};
    for (int i = 0; i < TRANSFORMER_SCRATCH; i++) sizes[i] = s[i];
}

// one block: a.residual3 (B,T,C) from x; p and a are the layer's
static void transformer_block_forward(cublasHandle_t h, const TransformerStackParams& p, const TransformerStackActs& a,
                                      const TransformerScratch& s, const float* x, int B, int T, TransformerDims d,
                                      int causal) {
    int BT = B * T, C = d.C, F = d.F;
    long btc = (long)BT * C;
    {
        NVTX_RANGE("ln1_forward");
        layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, p.ln1w, p.ln1b, BT, C);
    }
    {
        NVTX_RANGE("attention_forward");
        matmul_forward(h, a.qkv, a.ln1, p.qkvw, p.qkvb, BT, C, 3 * C);
        attention_forward(h, a.atty, a.qkvr, a.att, s.preatt, s.attn_y, a.qkv, B, T, C, d.NH, causal);
        matmul_forward(h, a.attproj, a.atty, p.attprojw, p.attprojb, BT, C, C);
        residual_forward(a.residual2, x, a.attproj, btc);
    }
    {
        NVTX_RANGE("ln2_forward");
        layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.residual2, p.ln2w, p.ln2b, BT, C);
    }
    {
        NVTX_RANGE("mlp_forward");
        matmul_forward(h, a.fch, a.ln2, p.fcw, p.fcb, BT, C, F);
        gelu_forward(a.fch_gelu, a.fch, (long)BT * F);
        matmul_forward(h, a.fcproj, a.fch_gelu, p.fcprojw, p.fcprojb, BT, F, C);
        residual_forward(a.residual3, a.residual2, a.fcproj, btc);
    }
}

// one block backward. dresidual (B,T,C): on entry the gradient w.r.t. the
// block's output, on return w.r.t. its input x (the residual stream carries
// it through; each branch adds to it). g: the layer's gradients (accumulated).
static void transformer_block_backward(cublasHandle_t h, float* dresidual, const float* x,
                                       const TransformerStackParams& p, const TransformerStackParams& g,
                                       const TransformerStackActs& a, const TransformerScratch& s, const float* ones,
                                       int B, int T, TransformerDims d, int causal) {
    int BT = B * T, C = d.C, F = d.F;
    {
        NVTX_RANGE("mlp_backward");
        matmul_backward(h, s.dbtf, g.fcprojw, g.fcprojb, dresidual, a.fch_gelu, p.fcprojw, ones, BT, F, C);
        gelu_backward(s.dbtf, a.fch, s.dbtf, (long)BT * F);
        matmul_backward(h, s.dbtc, g.fcw, g.fcb, s.dbtf, a.ln2, p.fcw, ones, BT, C, F);
    }
    {
        NVTX_RANGE("ln2_backward");
        layernorm_backward(dresidual, g.ln2w, g.ln2b, s.dbtc, a.residual2, p.ln2w, a.ln2_mean, a.ln2_rstd, BT, C);
    }
    {
        NVTX_RANGE("attention_backward");
        matmul_backward(h, s.dbtc, g.attprojw, g.attprojb, dresidual, a.atty, p.attprojw, ones, BT, C, C);
        attention_backward(h, s.dqkv, s.dqkvr, s.attn_y, s.datt, s.dbtc, a.qkvr, a.att, B, T, C, d.NH, causal);
        matmul_backward(h, s.dbtc, g.qkvw, g.qkvb, s.dqkv, a.ln1, p.qkvw, ones, BT, C, 3 * C);
    }
    {
        NVTX_RANGE("ln1_backward");
        layernorm_backward(dresidual, g.ln1w, g.ln1b, s.dbtc, x, p.ln1w, a.ln1_mean, a.ln1_rstd, BT, C);
    }
}

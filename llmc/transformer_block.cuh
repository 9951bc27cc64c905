/*
The pre-norm Transformer block, x = x + attn(LN1(x)); x = x + mlp(LN2(x)),
forward and backward, for a stack of L blocks whose parameters and
activations are each stacked over layers (leading dimension L) in the
model's flat buffers. Attention: qkv Linear(C, 3C) and proj Linear(C, C)
with bias, NH heads, causal (the GPT) or not (the ViT); MLP: Linear(C, F),
GELU, Linear(F, C). A dropout rate (the ViT's and the GPT's -D; 0 = none)
drops each residual branch's output before it is added:
  x = x + Dropout(attn_proj(attn(LN1(x)))),  x = x + Dropout(fc_proj(gelu(fc(LN2(x)))))
and in the GPT the attention probabilities too (nanoGPT's places).
The block is two sublayers, attention then MLP, each also available on its
own (attention_sublayer_forward, mlp_sublayer_forward, their backwards and
stacks of either kind) for models that interleave them with other layers.
*/
#pragma once
#include "cuda_common.h"
#include "encoder.cuh"  // residual_forward
#include "layernorm.cuh"
#include "matmul.cuh"
#include "attention.cuh"
#include "gelu.cuh"
#include "dropout.cuh"
#include "model.h"
#include "utils.h"

typedef struct {
    int C;   // channels
    int NH;  // heads
    int F;   // MLP hidden width
} TransformerDims;

// parameters of all L blocks, stacked; or, from transformer_layer_params, of one
#define TRANSFORMER_STACK_PARAMS 12
typedef struct {
    float* ln1_w;      // (L, C)
    float* ln1_b;      // (L, C)
    float* qkv_w;      // (L, 3C, C)
    float* qkv_b;      // (L, 3C)
    float* attn_proj_w;  // (L, C, C)
    float* attn_proj_b;  // (L, C)
    float* ln2_w;      // (L, C)
    float* ln2_b;      // (L, C)
    float* fc_w;       // (L, F, C)
    float* fc_b;       // (L, F)
    float* fc_proj_w;   // (L, C, F)
    float* fc_proj_b;   // (L, C)
} TransformerStackParams;

// the L blocks' rows of a model's tensor table (model.h), from t; returns
// the next row. Weight decay on the Linear weights only.
static TensorSpec* transformer_stack_param_table(TensorSpec* t, int L, TransformerDims d) {
    long C = d.C, F = d.F;
    TensorSpec rows[TRANSFORMER_STACK_PARAMS] = {
        {"ln1_w", L * C, 0, L},          {"ln1_b", L * C, 0, L},
        {"qkv_w", L * 3 * C * C, 1, L},  {"qkv_b", L * 3 * C, 0, L},
        {"attn_proj_w", L * C * C, 1, L}, {"attn_proj_b", L * C, 0, L},
        {"ln2_w", L * C, 0, L},          {"ln2_b", L * C, 0, L},
        {"fc_w", L * F * C, 1, L},       {"fc_b", L * F, 0, L},
        {"fc_proj_w", L * C * F, 1, L},  {"fc_proj_b", L * C, 0, L}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

static TransformerStackParams transformer_layer_params(const TransformerStackParams& s, int l, TransformerDims d) {
    long C = d.C, F = d.F;
    TransformerStackParams p = {s.ln1_w + l * C, s.ln1_b + l * C, s.qkv_w + l * 3 * C * C, s.qkv_b + l * 3 * C,
                                s.attn_proj_w + l * C * C, s.attn_proj_b + l * C, s.ln2_w + l * C, s.ln2_b + l * C,
                                s.fc_w + l * F * C, s.fc_b + l * F, s.fc_proj_w + l * C * F, s.fc_proj_b + l * C};
    return p;
}

// GPT-2's initialization of one stack (host memory): Linear weights
// N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2L)), biases 0,
// LayerNorm weight 1 and bias 0
static void transformer_stack_init(const TransformerStackParams& p, int L, TransformerDims d, Rng* rng) {
    TensorSpec rows[TRANSFORMER_STACK_PARAMS];
    transformer_stack_param_table(rows, L, d);
    float* const* tensors = (float* const*)&p;
    float proj_std = 0.02f / sqrtf(2.0f * L);
    for (int i = 0; i < TRANSFORMER_STACK_PARAMS; i++) {
        const char* name = rows[i].name;
        bool ln_weight = !strcmp(name, "ln1_w") || !strcmp(name, "ln2_w");
        bool proj = !strcmp(name, "attn_proj_w") || !strcmp(name, "fc_proj_w");
        for (long j = 0; j < rows[i].size; j++)
            tensors[i][j] = ln_weight ? 1.0f : rows[i].decay ? rng_normal(rng) * (proj ? proj_std : 0.02f) : 0.0f;
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

// the L blocks' rows of a model's activation table, from t; returns the next
// row. att is what the attention variant keeps (attention_act_sizes).
static TensorSpec* transformer_stack_act_table(TensorSpec* t, int L, int B, int T, TransformerDims d) {
    long BT = (long)B * T, C = d.C, F = d.F;
    long att = attention_act_sizes(B, T, d.C, d.NH).state;  // per layer
    TensorSpec rows[TRANSFORMER_STACK_ACTS] = {
        {"ln1", L * BT * C},         {"ln1_mean", L * BT},        {"ln1_rstd", L * BT},
        {"qkv", L * BT * 3 * C},     {"qkvr", L * BT * 3 * C},    {"att", L * att},
        {"atty", L * BT * C},        {"attproj", L * BT * C},     {"residual2", L * BT * C},
        {"ln2", L * BT * C},         {"ln2_mean", L * BT},        {"ln2_rstd", L * BT},
        {"fch", L * BT * F},         {"fch_gelu", L * BT * F},    {"fcproj", L * BT * C},
        {"residual3", L * BT * C}};
    for (TensorSpec r : rows) { r.layers = L; *t++ = r; }
    return t;
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
#define TRANSFORMER_SCRATCH 8
typedef struct {
    float* preatt;   // attention_act_sizes().preatt: (B, NH, T, T), or none (tiled)
    float* attn_y;   // (B, NH, T, hs)
    float* dbtc;     // (B, T, C)
    float* dbtf;     // (B, T, F)
    float* dqkv;     // (B, T, 3C)
    float* dqkvr;    // (3, B, NH, T, hs)
    float* datt;     // attention_act_sizes().datt: (B, NH, T, T), or (B, NH, T) (tiled)
    float* dbranch;  // (B, T, C)  a residual branch's gradient after dropout
} TransformerScratch;

// the scratch's rows of a model's activation table, from t; returns the next row
static TensorSpec* transformer_scratch_table(TensorSpec* t, int B, int T, TransformerDims d) {
    long BT = (long)B * T, C = d.C, F = d.F;
    AttentionSizes att = attention_act_sizes(B, T, d.C, d.NH);
    TensorSpec rows[TRANSFORMER_SCRATCH] = {
        {"preatt", att.preatt, 0, 1}, {"attn_y", BT * C, 0, 1},     {"dbtc", BT * C, 0, 1},
        {"dbtf", BT * F, 0, 1},       {"dqkv", BT * 3 * C, 0, 1},   {"dqkvr", BT * 3 * C, 0, 1},
        {"datt", att.datt, 0, 1},     {"dbranch", BT * C, 0, 1}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

// The dropout of a block's two residual branches (after the attention
// projection and after the MLP), and of its attention probabilities (the
// language models', nanoGPT's attn_dropout; probs_rate 0 in the ViT); rate 0
// is none (evaluation, a run without -D).
typedef struct {
    float rate;
    DropoutSite attn, mlp;  // dropout.cuh's sites
    float probs_rate;
    DropoutSite probs;
} BlockDropout;

static const BlockDropout NO_DROPOUT = {0.0f, NO_DROPOUT_SITE, NO_DROPOUT_SITE, 0.0f, NO_DROPOUT_SITE};

// the sites a language model's dropout keys beside its layers' (layer l's
// probabilities, the embedding's output) so that no two places share a mask
#define DROPOUT_SITE_PROBS (1ull << 32)
#define DROPOUT_SITE_EMBED (1ull << 33)
static uint64_t probs_dropout_site(int layer) { return DROPOUT_SITE_PROBS + (uint64_t)layer; }

// the ViT's: the branch sites of layer l at the training step in device
// memory, 2l (attention branch) and 2l+1 (MLP branch); no dropout on the probabilities
static BlockDropout block_dropout(float rate, uint64_t seed, const int* step, int layer) {
    BlockDropout b = {rate, dropout_site(seed, step, 2 * (uint64_t)layer), dropout_site(seed, step, 2 * (uint64_t)layer + 1),
                      0.0f, NO_DROPOUT_SITE};
    return b;
}

// the GPT's: the branches as the ViT's, and the probabilities at probs_dropout_site(l), all at one rate
static BlockDropout lm_block_dropout(float rate, uint64_t seed, const int* step, int layer) {
    BlockDropout b = block_dropout(rate, seed, step, layer);
    b.probs_rate = rate;
    b.probs = dropout_site(seed, step, probs_dropout_site(layer));
    return b;
}

// ----------------------------------------------------------------------------
// The block's two sublayers on their own, each a pre-norm residual
//   out = x + Dropout(branch(LN(x)))
// with branch = attention (qkv Linear, NH heads, proj Linear) or the MLP
// (Linear(C, F), GELU, Linear(F, C)). The block is the attention sublayer
// followed by the MLP sublayer; the hybrid LM (train_hybrid.cu) stacks them
// in any order between Mamba layers. Their parameters and activations are
// stacked over layers (leading dimension L) like the block's, or one layer's
// slices (attention_layer_params, ...).

#define ATTENTION_PARAMS 6
typedef struct {
    float* ln_w;    // (L, C)
    float* ln_b;    // (L, C)
    float* qkv_w;   // (L, 3C, C)
    float* qkv_b;   // (L, 3C)
    float* proj_w;  // (L, C, C)
    float* proj_b;  // (L, C)
} AttentionParams;

#define ATTENTION_ACTS 9
typedef struct {
    float* ln;       // (L, B, T, C)
    float* ln_mean;  // (L, B, T)
    float* ln_rstd;  // (L, B, T)
    float* qkv;      // (L, B, T, 3C)
    float* qkvr;     // (L, 3, B, NH, T, hs)
    float* att;      // (L, attention state), as TransformerStackActs.att
    float* atty;     // (L, B, T, C)  heads concatenated
    float* proj;     // (L, B, T, C)  the branch's output (after dropout, if any)
    float* out;      // (L, B, T, C)  x + proj
} AttentionActs;

#define MLP_PARAMS 6
typedef struct {
    float* ln_w;    // (L, C)
    float* ln_b;    // (L, C)
    float* fc_w;    // (L, F, C)
    float* fc_b;    // (L, F)
    float* proj_w;  // (L, C, F)
    float* proj_b;  // (L, C)
} MlpParams;

#define MLP_ACTS 7
typedef struct {
    float* ln;        // (L, B, T, C)
    float* ln_mean;   // (L, B, T)
    float* ln_rstd;   // (L, B, T)
    float* fch;       // (L, B, T, F)
    float* fch_gelu;  // (L, B, T, F)
    float* proj;      // (L, B, T, C)  the branch's output (after dropout, if any)
    float* out;       // (L, B, T, C)  x + proj
} MlpActs;

// the block's halves as sublayers: views of its fields (no copies)
static AttentionParams block_attention_params(const TransformerStackParams& p) {
    AttentionParams r = {p.ln1_w, p.ln1_b, p.qkv_w, p.qkv_b, p.attn_proj_w, p.attn_proj_b};
    return r;
}
static MlpParams block_mlp_params(const TransformerStackParams& p) {
    MlpParams r = {p.ln2_w, p.ln2_b, p.fc_w, p.fc_b, p.fc_proj_w, p.fc_proj_b};
    return r;
}
static AttentionActs block_attention_acts(const TransformerStackActs& a) {
    AttentionActs r = {a.ln1, a.ln1_mean, a.ln1_rstd, a.qkv, a.qkvr, a.att, a.atty, a.attproj, a.residual2};
    return r;
}
static MlpActs block_mlp_acts(const TransformerStackActs& a) {
    MlpActs r = {a.ln2, a.ln2_mean, a.ln2_rstd, a.fch, a.fch_gelu, a.fcproj, a.residual3};
    return r;
}

// Stacks of L sublayers of one kind (the hybrid LM's): the rows of a model's
// parameter table, from t (returns the next row), named "attn.*" and
// "mlp.*"; weight decay on the Linear weights only.
static TensorSpec* attention_stack_param_table(TensorSpec* t, int L, TransformerDims d) {
    long C = d.C;
    TensorSpec rows[ATTENTION_PARAMS] = {
        {"attn.ln_w", L * C, 0, L},          {"attn.ln_b", L * C, 0, L},
        {"attn.qkv_w", L * 3 * C * C, 1, L}, {"attn.qkv_b", L * 3 * C, 0, L},
        {"attn.proj_w", L * C * C, 1, L},    {"attn.proj_b", L * C, 0, L}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

static TensorSpec* mlp_stack_param_table(TensorSpec* t, int L, TransformerDims d) {
    long C = d.C, F = d.F;
    TensorSpec rows[MLP_PARAMS] = {
        {"mlp.ln_w", L * C, 0, L},     {"mlp.ln_b", L * C, 0, L},
        {"mlp.fc_w", L * F * C, 1, L}, {"mlp.fc_b", L * F, 0, L},
        {"mlp.proj_w", L * C * F, 1, L}, {"mlp.proj_b", L * C, 0, L}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

static AttentionParams attention_layer_params(const AttentionParams& s, int l, TransformerDims d) {
    long C = d.C;
    AttentionParams p = {s.ln_w + l * C, s.ln_b + l * C, s.qkv_w + l * 3 * C * C, s.qkv_b + l * 3 * C,
                         s.proj_w + l * C * C, s.proj_b + l * C};
    return p;
}

static MlpParams mlp_layer_params(const MlpParams& s, int l, TransformerDims d) {
    long C = d.C, F = d.F;
    MlpParams p = {s.ln_w + l * C, s.ln_b + l * C, s.fc_w + l * F * C, s.fc_b + l * F, s.proj_w + l * C * F,
                   s.proj_b + l * C};
    return p;
}

// the activations' rows of a model's activation table, from t; returns the next row
static TensorSpec* attention_stack_act_table(TensorSpec* t, int L, int B, int T, TransformerDims d) {
    long BT = (long)B * T, C = d.C;
    long att = attention_act_sizes(B, T, d.C, d.NH).state;  // per layer
    TensorSpec rows[ATTENTION_ACTS] = {
        {"attn.ln", L * BT * C},     {"attn.ln_mean", L * BT},   {"attn.ln_rstd", L * BT},
        {"attn.qkv", L * BT * 3 * C}, {"attn.qkvr", L * BT * 3 * C}, {"attn.att", L * att},
        {"attn.atty", L * BT * C},   {"attn.proj", L * BT * C},  {"attn.out", L * BT * C}};
    for (TensorSpec r : rows) { r.layers = L; *t++ = r; }
    return t;
}

static TensorSpec* mlp_stack_act_table(TensorSpec* t, int L, int B, int T, TransformerDims d) {
    long BT = (long)B * T, C = d.C, F = d.F;
    TensorSpec rows[MLP_ACTS] = {
        {"mlp.ln", L * BT * C},      {"mlp.ln_mean", L * BT},     {"mlp.ln_rstd", L * BT},
        {"mlp.fch", L * BT * F},     {"mlp.fch_gelu", L * BT * F}, {"mlp.proj", L * BT * C},
        {"mlp.out", L * BT * C}};
    for (TensorSpec r : rows) { r.layers = L; *t++ = r; }
    return t;
}

static AttentionActs attention_layer_acts(const AttentionActs& a, int l, int B, int T, TransformerDims d) {
    long BT = (long)B * T, C = d.C;
    long att = attention_act_sizes(B, T, d.C, d.NH).state;
    AttentionActs r = {a.ln + l * BT * C,   a.ln_mean + l * BT,  a.ln_rstd + l * BT,
                       a.qkv + l * BT * 3 * C, a.qkvr + l * BT * 3 * C, a.att + l * att,
                       a.atty + l * BT * C, a.proj + l * BT * C, a.out + l * BT * C};
    return r;
}

static MlpActs mlp_layer_acts(const MlpActs& a, int l, int B, int T, TransformerDims d) {
    long BT = (long)B * T, C = d.C, F = d.F;
    MlpActs r = {a.ln + l * BT * C,     a.ln_mean + l * BT,      a.ln_rstd + l * BT, a.fch + l * BT * F,
                 a.fch_gelu + l * BT * F, a.proj + l * BT * C, a.out + l * BT * C};
    return r;
}

// One attention sublayer: a.out (B,T,C) = x + Dropout(attn(LN(x))); p and a
// are the layer's. With dropout (rate > 0, at drop_site) the branch output
// a.proj is dropped in place before the residual add; with probs_rate > 0
// the attention probabilities are dropped too, at probs_site (attention.cuh).
static void attention_sublayer_forward(cublasHandle_t h, const AttentionParams& p, const AttentionActs& a,
                                       const TransformerScratch& s, const float* x, int B, int T, TransformerDims d,
                                       int causal, float drop_rate, DropoutSite drop_site, float probs_rate = 0.0f,
                                       DropoutSite probs_site = NO_DROPOUT_SITE) {
    int BT = B * T, C = d.C;
    long btc = (long)BT * C;
    {
        NVTX_RANGE("attention_ln_forward");
        layernorm_forward(a.ln, a.ln_mean, a.ln_rstd, x, p.ln_w, p.ln_b, BT, C);
    }
    {
        NVTX_RANGE("attention_forward");
        matmul_forward(h, a.qkv, a.ln, p.qkv_w, p.qkv_b, BT, C, 3 * C);
        attention_forward(h, a.atty, a.qkvr, a.att, s.preatt, s.attn_y, a.qkv, B, T, C, d.NH, causal, probs_rate,
                          probs_site);
        matmul_forward(h, a.proj, a.atty, p.proj_w, p.proj_b, BT, C, C);
        if (drop_rate > 0.0f) dropout_apply(a.proj, a.proj, btc, drop_rate, drop_site);
        residual_forward(a.out, x, a.proj, btc);
    }
}

// One MLP sublayer: a.out (B,T,C) = x + Dropout(fc_proj(gelu(fc(LN(x))))), as above
static void mlp_sublayer_forward(cublasHandle_t h, const MlpParams& p, const MlpActs& a, const float* x, int B, int T,
                                 TransformerDims d, float drop_rate, DropoutSite drop_site) {
    int BT = B * T, C = d.C, F = d.F;
    long btc = (long)BT * C;
    {
        NVTX_RANGE("mlp_ln_forward");
        layernorm_forward(a.ln, a.ln_mean, a.ln_rstd, x, p.ln_w, p.ln_b, BT, C);
    }
    {
        NVTX_RANGE("mlp_forward");
        matmul_forward(h, a.fch, a.ln, p.fc_w, p.fc_b, BT, C, F);
        gelu_forward(a.fch_gelu, a.fch, (long)BT * F);
        matmul_forward(h, a.proj, a.fch_gelu, p.proj_w, p.proj_b, BT, F, C);
        if (drop_rate > 0.0f) dropout_apply(a.proj, a.proj, btc, drop_rate, drop_site);
        residual_forward(a.out, x, a.proj, btc);
    }
}

// One attention sublayer backward. dresidual (B,T,C): on entry the gradient
// w.r.t. the sublayer's output, on return w.r.t. its input x (the residual
// passes it through; the branch adds to it). g: the layer's gradients
// (accumulated). drop_rate, drop_site, probs_rate, probs_site: the forward's.
static void attention_sublayer_backward(cublasHandle_t h, float* dresidual, const float* x, const AttentionParams& p,
                                        const AttentionParams& g, const AttentionActs& a, const TransformerScratch& s,
                                        const float* ones, int B, int T, TransformerDims d, int causal,
                                        float drop_rate, DropoutSite drop_site, float probs_rate = 0.0f,
                                        DropoutSite probs_site = NO_DROPOUT_SITE) {
    int BT = B * T, C = d.C;
    long btc = (long)BT * C;
    const float* dbranch = dresidual;  // the branch's output gradient: through its dropout mask, if any
    {
        NVTX_RANGE("attention_backward");
        if (drop_rate > 0.0f) { dropout_apply(s.dbranch, dresidual, btc, drop_rate, drop_site); dbranch = s.dbranch; }
        matmul_backward(h, s.dbtc, g.proj_w, g.proj_b, dbranch, a.atty, p.proj_w, ones, BT, C, C);
        attention_backward(h, s.dqkv, s.dqkvr, s.attn_y, s.datt, s.dbtc, a.qkvr, a.att, B, T, C, d.NH, causal,
                           probs_rate, probs_site);
        matmul_backward(h, s.dbtc, g.qkv_w, g.qkv_b, s.dqkv, a.ln, p.qkv_w, ones, BT, C, 3 * C);
    }
    {
        NVTX_RANGE("attention_ln_backward");
        layernorm_backward(dresidual, g.ln_w, g.ln_b, s.dbtc, x, p.ln_w, a.ln_mean, a.ln_rstd, BT, C);
    }
}

// One MLP sublayer backward, as attention_sublayer_backward
static void mlp_sublayer_backward(cublasHandle_t h, float* dresidual, const float* x, const MlpParams& p,
                                  const MlpParams& g, const MlpActs& a, const TransformerScratch& s, const float* ones,
                                  int B, int T, TransformerDims d, float drop_rate, DropoutSite drop_site) {
    int BT = B * T, C = d.C, F = d.F;
    long btc = (long)BT * C;
    const float* dbranch = dresidual;
    {
        NVTX_RANGE("mlp_backward");
        if (drop_rate > 0.0f) { dropout_apply(s.dbranch, dresidual, btc, drop_rate, drop_site); dbranch = s.dbranch; }
        matmul_backward(h, s.dbtf, g.proj_w, g.proj_b, dbranch, a.fch_gelu, p.proj_w, ones, BT, F, C);
        gelu_backward(s.dbtf, a.fch, s.dbtf, (long)BT * F);
        matmul_backward(h, s.dbtc, g.fc_w, g.fc_b, s.dbtf, a.ln, p.fc_w, ones, BT, C, F);
    }
    {
        NVTX_RANGE("mlp_ln_backward");
        layernorm_backward(dresidual, g.ln_w, g.ln_b, s.dbtc, x, p.ln_w, a.ln_mean, a.ln_rstd, BT, C);
    }
}

// One block: a.residual3 (B,T,C) from x, the attention sublayer then the
// MLP sublayer; p and a are the layer's. With dropout, the branch outputs
// a.attproj and a.fcproj are dropped in place (they hold the values after
// dropout) before the residual adds.
static void transformer_block_forward(cublasHandle_t h, const TransformerStackParams& p, const TransformerStackActs& a,
                                      const TransformerScratch& s, const float* x, int B, int T, TransformerDims d,
                                      int causal, BlockDropout drop) {
    attention_sublayer_forward(h, block_attention_params(p), block_attention_acts(a), s, x, B, T, d, causal,
                               drop.rate, drop.attn, drop.probs_rate, drop.probs);
    mlp_sublayer_forward(h, block_mlp_params(p), block_mlp_acts(a), a.residual2, B, T, d, drop.rate, drop.mlp);
}

// One block backward. dresidual (B,T,C): on entry the gradient w.r.t. the
// block's output, on return w.r.t. its input x (the residual stream carries
// it through; each branch adds to it). g: the layer's gradients
// (accumulated). drop: the forward's.
static void transformer_block_backward(cublasHandle_t h, float* dresidual, const float* x,
                                       const TransformerStackParams& p, const TransformerStackParams& g,
                                       const TransformerStackActs& a, const TransformerScratch& s, const float* ones,
                                       int B, int T, TransformerDims d, int causal, BlockDropout drop) {
    mlp_sublayer_backward(h, dresidual, a.residual2, block_mlp_params(p), block_mlp_params(g), block_mlp_acts(a), s,
                          ones, B, T, d, drop.rate, drop.mlp);
    attention_sublayer_backward(h, dresidual, x, block_attention_params(p), block_attention_params(g),
                                block_attention_acts(a), s, ones, B, T, d, causal, drop.rate, drop.attn,
                                drop.probs_rate, drop.probs);
}

/*
Char-level hybrid LM on tinyshakespeare: Mamba, Mamba-2, attention and MLP
layers in any order, the model top to bottom.

  config -> tensor table (the parameters' flat buffer) -> activations
  -> init -> forward -> backward -> generation -> main

The model (doc/models.md), mamba_ssm's MixerModel stacking: token
embedding (V,C), plus learned positions (maxT,C) when any layer is
attention; one layer per letter of the pattern (-A), each a pre-norm
residual with its own LayerNorm,
  x = x + mixer(LN(x)),  mixer = M: Mamba(x) (llmc/mamba_block.cuh)
                                 S: Mamba-2(x), the SSD mixer (llmc/mamba2_block.cuh),
                                    d_state 64, headdim 64 (C a multiple of 32)
                                 A: causal self-attention, qkv and proj with bias, H heads
                                 F: MLP Linear(C,F) -> GELU -> Linear(F,C)
  (llmc/transformer_block.cuh's sublayers);
a final LayerNorm; a head Linear(C, V) with bias. Loss: mean cross-entropy.
Dropout (-D, training steps only, nanoGPT's places) drops the embedding's
output (site DROPOUT_SITE_EMBED), every layer's branch before its residual
add, x = x + Dropout(mixer(LN(x))) (site l for layer l), and an A layer's
attention probabilities (DROPOUT_SITE_PROBS + l).
-A MAMA is the Mamba-MHA interleaving, -A MFMF the Mamba-MLP one, -A MMMM a
pre-norm Mamba stack, -A AFAF the GPT.

The parameters of the layers of one kind are stacked in the flat buffer
(mamba.* over the M layers in pattern order, then mamba2.* over the S
layers, then attn.*, then mlp.*); the k-th layer of a kind is slice k of
its stack. Kinds the pattern lacks (and the positions without attention)
take no space. The pattern is stored in one config slot of model files and
checkpoints, layer 0 in the lowest digit: without S, base 4 with M = 1,
A = 2, F = 3 (at most 15 layers; the code of every file written before S
existed); with S, bit 30 set and below it base 5 with S = 4 (at most 12
layers: 5^12 - 1 < 2^30).

Kernels live in llmc/; the buffers every model owns and their update in
llmc/model.h; the training loop, validation and sampling in
llmc/lm_trainer.h (lm_run), which calls this file's hooks.

Build with `make train_hybrid` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/encoder.cuh"
#include "llmc/mamba_block.cuh"
#include "llmc/mamba2_block.cuh"
#include "llmc/mamba_step.cuh"
#include "llmc/transformer_block.cuh"
#include "llmc/kv_cache.cuh"
#include "llmc/lm_head.cuh"
#include "llmc/model.h"
#include "llmc/lm_trainer.h"

#include <initializer_list>
#include <string>
#include <vector>

// ----------------------------------------------------------------------------
// config

#define HYBRID_MAX_LAYERS 15      // base-4 digits below bit 30 (patterns without S)
#define HYBRID_MAX_LAYERS_SSD 12  // base-5 digits below bit 30 (patterns with S): 5^12 - 1 < 2^30
#define HYBRID_SSD_FLAG (1 << 30) // set in the pattern's code: base 5, with S layers
#define HYBRID_D_STATE 16         // the M layers' d_state
#define HYBRID_SSD_D_STATE 64     // the S layers' d_state
#define HYBRID_SSD_HEADDIM 64     // ... and headdim: 2C / 64 heads, so C must be a multiple of 32

enum { LAYER_MAMBA = 1, LAYER_ATTENTION = 2, LAYER_MLP = 3, LAYER_SSD = 4 };  // the pattern's digits
static const char HYBRID_LETTERS[] = " MAFS";                                    // ... and letters

typedef struct {
    // the six config slots of model files and checkpoints
    int max_seq_len;  // maxT: rows of the position table (used when some layer is attention)
    int vocab_size;   // V
    int channels;     // C
    int num_heads;    // H (attention layers)
    int ffn;          // F: hidden width of the MLP layers
    int pattern;      // the layers, base 4, or HYBRID_SSD_FLAG | base 5 with S (see the top)
    // derived from pattern
    int num_layers;                    // L, the pattern's length
    int kind[HYBRID_MAX_LAYERS];       // LAYER_*
    int index[HYBRID_MAX_LAYERS];      // layer l is slice index[l] of its kind's stack
    int count[5];                      // layers per kind (count[LAYER_MAMBA], ...)
    char letters[HYBRID_MAX_LAYERS + 1];
} HybridConfig;

static const char* const hybrid_slot_names[CONFIG_SLOTS] = {"max_seq_len", "vocab_size", "channels", "num_heads",
                                                            "ffn",         "pattern",    "num_params"};

// The pattern of -A (letters) as its code; one clear line for a bad one.
// Without S: base 4 (the codes of files written before S); with S: base 5
// below HYBRID_SSD_FLAG.
static int hybrid_pattern_code(const char* letters) {
    const char* usage = "one letter per layer: M (Mamba), S (Mamba-2), A (attention), F (MLP), e.g. -A MAMA";
    size_t n = strlen(letters);
    if (n == 0) fail("flag -A: the pattern is empty; give %s", usage);
    for (size_t i = 0; i < n; i++)
        if (!strchr(HYBRID_LETTERS + 1, letters[i]))
            fail("flag -A: '%s' has '%c' at position %zu; give %s", letters, letters[i], i + 1, usage);
    bool ssd = strchr(letters, 'S') != nullptr;
    int base = ssd ? 5 : 4, max_layers = ssd ? HYBRID_MAX_LAYERS_SSD : HYBRID_MAX_LAYERS;
    if (n > (size_t)max_layers)
        fail("flag -A: '%s' has %zu layers, at most %d%s", letters, n, max_layers, ssd ? " with S layers" : "");
    int code = 0;
    for (size_t i = n; i-- > 0;) code = code * base + (int)(strchr(HYBRID_LETTERS + 1, letters[i]) - HYBRID_LETTERS);
    return ssd ? HYBRID_SSD_FLAG | code : code;
}

// the config of the six slots, with the layers decoded; where names the source for errors
static HybridConfig hybrid_config(int maxT, int V, int C, int H, int F, int pattern, const char* where) {
    HybridConfig c;
    memset(&c, 0, sizeof(c));
    c.max_seq_len = maxT; c.vocab_size = V; c.channels = C; c.num_heads = H; c.ffn = F; c.pattern = pattern;
    bool ssd = pattern > 0 && (pattern & HYBRID_SSD_FLAG);
    int base = ssd ? 5 : 4, max_layers = ssd ? HYBRID_MAX_LAYERS_SSD : HYBRID_MAX_LAYERS;
    int digits = ssd ? pattern & ~HYBRID_SSD_FLAG : pattern;
    if (digits <= 0) fail("%s: pattern code %d is not a layer pattern", where, pattern);
    for (int code = digits; code > 0; code /= base) {
        int kind = code % base;
        if (kind == 0 || c.num_layers == max_layers) fail("%s: pattern code %d is not a layer pattern", where, pattern);
        c.kind[c.num_layers] = kind;
        c.index[c.num_layers] = c.count[kind]++;
        c.letters[c.num_layers++] = HYBRID_LETTERS[kind];
    }
    // a base-5 code is one with S layers (one without is stored base 4)
    if (ssd && !c.count[LAYER_SSD]) fail("%s: pattern code %d is not a layer pattern", where, pattern);
    if (C < 1 || V < 1 || maxT < 1 || H < 1 || F < 1) fail("%s: a config slot is not positive", where);
    if (c.count[LAYER_ATTENTION] && C % H != 0) fail("%s: channels %d are not divisible by heads %d", where, C, H);
    if (c.count[LAYER_SSD] && C % (HYBRID_SSD_HEADDIM / 2) != 0)
        fail("%s: channels %d are not a multiple of %d, as the Mamba-2 (S) layers need (inner width 2C in heads of %d)",
             where, C, HYBRID_SSD_HEADDIM / 2, HYBRID_SSD_HEADDIM);
    return c;
}

static MambaDims mamba_dims_of(const HybridConfig& c) { return mamba_dims(c.channels, HYBRID_D_STATE); }
static Mamba2Dims mamba2_dims_of(const HybridConfig& c) {
    return mamba2_dims(c.channels, HYBRID_SSD_D_STATE, HYBRID_SSD_HEADDIM);
}
static TransformerDims transformer_dims_of(const HybridConfig& c) {
    TransformerDims d = {c.channels, c.num_heads, c.ffn};
    return d;
}

// A table with rows of size 0 (the kinds a pattern lacks) as model.h's
// allocators take it: the rows of nonzero size, in order. Pointing the
// full table's struct over the same memory (point_tensors) gives the kept
// rows the same addresses.
static int compact_table(TensorSpec* out, const TensorSpec* full, int n) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (full[i].size > 0) out[k++] = full[i];
    return k;
}

// sets the rows of these names among rows[0..n) to size 0 (what compact_table drops)
static void drop_rows(TensorSpec* rows, int n, std::initializer_list<const char*> names) {
    for (const char* name : names) {
        int i = 0;
        while (i < n && strcmp(rows[i].name, name)) i++;
        if (i == n) fail("drop_rows: no row named %s", name);
        rows[i].size = 0;
    }
}

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (each kind's layers stacked)

#define NUM_PARAMETER_TENSORS (2 + MAMBA_STACK_PARAMS + MAMBA2_STACK_PARAMS + ATTENTION_PARAMS + MLP_PARAMS + 4)
typedef struct {
    float* wte;              // (V, C)
    float* wpe;              // (maxT, C), with attention layers only
    MambaStackParams mamba;  // the M layers, "mamba.*": in_proj_w .. out_proj_w, ln_w, ln_b (the pre-norm)
    Mamba2StackParams ssd;   // the S layers, "mamba2.*": in_proj_w .. out_proj_w, ln_w, ln_b (the pre-norm)
    AttentionParams attn;    // the A layers, "attn.*": ln_w, ln_b, qkv_w, qkv_b, proj_w, proj_b
    MlpParams mlp;           // the F layers, "mlp.*": ln_w, ln_b, fc_w, fc_b, proj_w, proj_b
    float* lnf_w;            // (C)
    float* lnf_b;            // (C)
    float* head_w;           // (V, C)
    float* head_b;           // (V)
} ParameterTensors;
static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

// the Mamba stack's rows under the hybrid's names, in mamba_stack_param_table's order
static const char* const hybrid_mamba_names[MAMBA_STACK_PARAMS] = {
    "mamba.in_proj_w", "mamba.conv_w", "mamba.conv_b", "mamba.x_proj_w", "mamba.dt_proj_w", "mamba.dt_proj_b",
    "mamba.A_log",     "mamba.D",      "mamba.out_proj_w", "mamba.ln_w", "mamba.ln_b"};
// ... and the Mamba-2 stack's, in mamba2_stack_param_table's order
static const char* const hybrid_mamba2_names[MAMBA2_STACK_PARAMS] = {
    "mamba2.in_proj_w", "mamba2.conv_w", "mamba2.conv_b",      "mamba2.dt_bias", "mamba2.A_log",
    "mamba2.D",         "mamba2.norm_w", "mamba2.out_proj_w", "mamba2.ln_w",    "mamba2.ln_b"};

// gives a stack's rows (from rows) the hybrid's names, checking they are the stack's in order
static void rename_rows(TensorSpec* rows, const char* const* names, int n, const char* prefix) {
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i] + strlen(prefix), rows[i].name)) fail("hybrid names: row %d is %s, not %s", i, rows[i].name, names[i]);
        rows[i].name = names[i];
    }
}

// name, size, weight decay (the embeddings, the layers' weights and the head's), layers.
// Every row, those of absent kinds with size 0.
static void hybrid_param_table(TensorSpec* t, const HybridConfig& c) {
    long V = c.vocab_size, C = c.channels;
    int nM = c.count[LAYER_MAMBA], nS = c.count[LAYER_SSD], nA = c.count[LAYER_ATTENTION], nF = c.count[LAYER_MLP];
    *t++ = {"wte", V * C, 1, 1};
    *t++ = {"wpe", nA ? (long)c.max_seq_len * C : 0, 1, 1};
    TensorSpec* mamba = t;
    t = mamba_stack_param_table(t, nM, mamba_dims_of(c));
    rename_rows(mamba, hybrid_mamba_names, MAMBA_STACK_PARAMS, "mamba.");
    TensorSpec* mamba2 = t;
    t = mamba2_stack_param_table(t, nS, mamba2_dims_of(c), nS > 0);
    rename_rows(mamba2, hybrid_mamba2_names, MAMBA2_STACK_PARAMS, "mamba2.");
    t = attention_stack_param_table(t, nA, transformer_dims_of(c));
    t = mlp_stack_param_table(t, nF, transformer_dims_of(c));
    *t++ = {"lnf_w", C, 0, 1};
    *t++ = {"lnf_b", C, 0, 1};
    *t++ = {"head_w", V * C, 1, 1};
    *t++ = {"head_b", V, 0, 1};
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for what backward needs, and scratch

#define NUM_ACTIVATION_TENSORS \
    (1 + MAMBA_STACK_ACTS + MAMBA2_STACK_ACTS + ATTENTION_ACTS + MLP_ACTS + 6 + TRANSFORMER_SCRATCH + MAMBA_SCRATCH + \
     MAMBA2_SCRATCH + 3)
typedef struct {
    float* encoded;         // (B, T, C)
    MambaStackActs mamba;   // the M layers' (ln = LN(x), the mixer's input; res = the layer's output)
    Mamba2StackActs ssd;    // the S layers' (the same; also generation's step, at T = 1)
    AttentionActs attn;     // the A layers'
    MlpActs mlp;            // the F layers'
    float* lnf;             // (B, T, C)
    float* lnf_mean;        // (B, T)
    float* lnf_rstd;        // (B, T)
    float* logits;          // (B, T, V)
    float* probs;           // (B, T, V)
    float* losses;          // (B, T)
    // scratch
    TransformerScratch block;  // the A and F layers' (the rows only one kind uses are absent without it)
    MambaScratch mamba_scratch;  // the M layers' backward
    Mamba2Scratch ssd_scratch;   // the S layers' backward
    float* dresidual;       // (B, T, C)  gradient flowing down the residual stream
    float* dnorm;           // (B, T, C)  gradient w.r.t. a LayerNorm's output (the final one, an M or S layer's)
    float* dlogits;         // (B, T, V); also the one-hot scratch of the embedding backward
} ActivationTensors;
static_assert(sizeof(ActivationTensors) == NUM_ACTIVATION_TENSORS * sizeof(float*), "one pointer per tensor");
static_assert(NUM_ACTIVATION_TENSORS <= MAX_ACT_TENSORS, "every row of a pattern with every kind fits the table");

static void hybrid_act_table(TensorSpec* t, const HybridConfig& c, int B, int T) {
    long C = c.channels, V = c.vocab_size, BT = (long)B * T;
    int nM = c.count[LAYER_MAMBA], nS = c.count[LAYER_SSD], nA = c.count[LAYER_ATTENTION], nF = c.count[LAYER_MLP];
    MambaDims md = mamba_dims_of(c);
    Mamba2Dims sd = mamba2_dims_of(c);
    TransformerDims td = transformer_dims_of(c);
    *t++ = {"encoded", BT * C, 0, 1};
    t = mamba_stack_act_table(t, nM, B, T, md);
    t = mamba2_stack_act_table(t, nS, B, T, sd, nS > 0);
    t = attention_stack_act_table(t, nA, B, T, td);
    t = mlp_stack_act_table(t, nF, B, T, td);
    *t++ = {"lnf", BT * C, 0, 1};
    *t++ = {"lnf_mean", BT, 0, 1};
    *t++ = {"lnf_rstd", BT, 0, 1};
    *t++ = {"logits", BT * V, 0, 1};
    *t++ = {"probs", BT * V, 0, 1};
    *t++ = {"losses", BT, 0, 1};
    TensorSpec* scratch = t;
    t = transformer_scratch_table(t, B, T, td);
    if (!nA) drop_rows(scratch, TRANSFORMER_SCRATCH, {"preatt", "attn_y", "dqkv", "dqkvr", "datt"});  // attention's alone
    if (!nF) drop_rows(scratch, TRANSFORMER_SCRATCH, {"dbtf"});                                     // the MLP's alone
    if (!nA && !nF) drop_rows(scratch, TRANSFORMER_SCRATCH, {"dbtc"});                              // both's
    drop_rows(scratch, TRANSFORMER_SCRATCH, {"dbranch"});  // dropout's, which the hybrid has not
    TensorSpec* mscratch = t;
    t = mamba_scratch_table(t, B, T, md);
    if (!nM) for (TensorSpec* r = mscratch; r < t; r++) r->size = 0;
    t = mamba2_scratch_table(t, B, T, sd, nS > 0);
    *t++ = {"dresidual", BT * C, 0, 1};
    *t++ = {"dnorm", BT * C, 0, 1};
    *t++ = {"dlogits", BT * V, 0, 1};
}

// ----------------------------------------------------------------------------
// the model

// one generation step's scratch for the F layers (B rows)
typedef struct {
    float* memory;
    float* ln;        // (B, C)
    float* fch;       // (B, F)
    float* fch_gelu;  // (B, F)
    float* proj;      // (B, C)
} MlpStepScratch;

typedef struct {
    HybridConfig config;
    ParameterTensors params;  // pointers into buf.params_memory
    ParameterTensors grads;   // ... and into buf.grads_memory
    ActivationTensors acts;   // ... and into buf.acts_memory
    TrainDropout dropout;     // the rate at training steps and the masks' seed (llmc/model.h)
    ModelBuffers buf;         // the buffers, the cuBLAS handle, the last loss (llmc/model.h)
    MambaStepState step;      // generation: the M layers' conv and SSM states (llmc/mamba_step.cuh)
    Mamba2State ssd_state;    // ... the S layers' (llmc/mamba2_block.cuh)
    KVCache cache;            // ... the A layers' keys and values (llmc/kv_cache.cuh)
    KVWindow window;          // ... with attention: the tokens they hold and the next position
    MlpStepScratch mlp_step;  // ... the F layers' scratch
    StepBuffers gen;          // ... and one step's tokens, stream and logits (llmc/lm_trainer.h)
} Hybrid;

static void hybrid_build(Hybrid* model, const HybridConfig& c) {
    if (c.count[LAYER_MAMBA]) scan_check_limits(HYBRID_D_STATE);
    if (c.count[LAYER_SSD]) ssd_check_limits(mamba2_dims_of(c).E, HYBRID_SSD_HEADDIM, HYBRID_SSD_D_STATE);
    model->config = c;
    TensorSpec full[NUM_PARAMETER_TENSORS], table[NUM_PARAMETER_TENSORS];
    hybrid_param_table(full, c);
    int n = compact_table(table, full, NUM_PARAMETER_TENSORS);
    float* params[NUM_PARAMETER_TENSORS];  // the kept rows' pointers; the struct is pointed below
    float* grads[NUM_PARAMETER_TENSORS];
    int slots[CONFIG_SLOTS - 1] = {c.max_seq_len, c.vocab_size, c.channels, c.num_heads, c.ffn, c.pattern};
    model_build(&model->buf, MODEL_HYBRID, hybrid_slot_names, slots, table, n, params, grads, n * sizeof(float*));
    point_tensors(&model->params, model->buf.params_memory, full, NUM_PARAMETER_TENSORS);
    point_tensors(&model->grads, model->buf.grads_memory, full, NUM_PARAMETER_TENSORS);
    model->dropout = {0.0f, 0, 0.0f};
    model->gen.B = 0;
}

// sizes the activations for batches up to B x T
static void hybrid_allocate_activations(Hybrid* model, int B, int T) {
    TensorSpec full[NUM_ACTIVATION_TENSORS], table[NUM_ACTIVATION_TENSORS];
    hybrid_act_table(full, model->config, B, T);
    int n = compact_table(table, full, NUM_ACTIVATION_TENSORS);
    float* acts[NUM_ACTIVATION_TENSORS];
    model_allocate_activations(&model->buf, table, n, acts, n * sizeof(float*), B, T, 1, (long)B * T, "-b/-t");
    point_tensors(&model->acts, model->buf.acts_memory, full, NUM_ACTIVATION_TENSORS);
}

// The M and S layers as mamba_ssm initializes them (mamba_stack_init,
// mamba2_stack_init); the A and F
// layers and the embeddings as GPT-2: Linear weights and embeddings
// N(0, 0.02), the residual projections (attn.proj_w, mlp.proj_w)
// N(0, 0.02 / sqrt(L)) with L residual branches, biases 0; LayerNorms 1 and
// 0; the head N(0, 0.02) with zero bias
static void hybrid_init_random(Hybrid* model, uint64_t seed) {
    const HybridConfig& c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->buf.num_parameters, 0.0f);
    TensorSpec full[NUM_PARAMETER_TENSORS];
    hybrid_param_table(full, c);
    ParameterTensors p;  // pointers into the host copy
    point_tensors(&p, host.data(), full, NUM_PARAMETER_TENSORS);
    long V = c.vocab_size, C = c.channels;
    for (long i = 0; i < V * C; i++) p.wte[i] = rng_normal(&rng) * 0.02f;
    if (c.count[LAYER_ATTENTION])
        for (long i = 0; i < (long)c.max_seq_len * C; i++) p.wpe[i] = rng_normal(&rng) * 0.02f;
    if (c.count[LAYER_MAMBA]) mamba_stack_init(p.mamba, c.count[LAYER_MAMBA], mamba_dims_of(c), &rng);
    if (c.count[LAYER_SSD]) mamba2_stack_init(p.ssd, c.count[LAYER_SSD], mamba2_dims_of(c), &rng);
    float proj_std = 0.02f / sqrtf((float)c.num_layers);
    float* const* tensors = (float* const*)&p;
    int first = 2 + MAMBA_STACK_PARAMS + MAMBA2_STACK_PARAMS, last = first + ATTENTION_PARAMS + MLP_PARAMS;  // the attn.* and mlp.* rows
    for (int i = first; i < last; i++) {
        const char* name = full[i].name;
        bool ln_weight = strstr(name, ".ln_w") != nullptr, proj = strstr(name, ".proj_w") != nullptr;
        for (long j = 0; j < full[i].size; j++)
            tensors[i][j] = ln_weight ? 1.0f : full[i].decay ? rng_normal(&rng) * (proj ? proj_std : 0.02f) : 0.0f;
    }
    for (long i = 0; i < C; i++) p.lnf_w[i] = 1.0f;
    for (long i = 0; i < V * C; i++) p.head_w[i] = rng_normal(&rng) * 0.02f;
    model_upload_params(&model->buf, host.data());
}

// ----------------------------------------------------------------------------
// forward: logits for inputs (B, T) (host array); with targets, also the mean
// loss. train_step >= 0: a training step (dropout on, its masks keyed by the
// step); -1: evaluation and generation (no dropout). ssd_carry: the S
// layers run from the states in model->ssd_state (generation's, allocated)
// and leave in them the states after the rows (a forward only); else they
// start empty.

// layer l's output in the activations of a B x T forward (l = -1: the embedding)
static const float* hybrid_layer_output(const Hybrid* model, int l, int B, int T) {
    const HybridConfig& c = model->config;
    const ActivationTensors& a = model->acts;
    if (l < 0) return a.encoded;
    int k = c.index[l];
    switch (c.kind[l]) {
        case LAYER_MAMBA: return mamba_layer_acts(a.mamba, k, B, T, mamba_dims_of(c)).res;
        case LAYER_SSD: return mamba2_layer_acts(a.ssd, k, B, T, mamba2_dims_of(c)).res;
        case LAYER_ATTENTION: return attention_layer_acts(a.attn, k, B, T, transformer_dims_of(c)).out;
        default: return mlp_layer_acts(a.mlp, k, B, T, transformer_dims_of(c)).out;
    }
}

static void hybrid_forward(Hybrid* model, const int* inputs, const int* targets, int B, int T, int train_step,
                           bool ssd_carry = false) {
    NVTX_RANGE("forward");
    const HybridConfig& c = model->config;
    MambaDims md = mamba_dims_of(c);
    Mamba2Dims sd = mamba2_dims_of(c);
    TransformerDims td = transformer_dims_of(c);
    ModelBuffers* m = &model->buf;
    bool positions = c.count[LAYER_ATTENTION] > 0;
    if (B > m->batch_size || T > m->seq_len || (positions && T > c.max_seq_len))
        fail("hybrid_forward: batch %d x %d exceeds the allocation", B, T);
    int C = c.channels, BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    float drop = train_dropout_begin(&model->dropout, m, train_step);
    uint64_t seed = model->dropout.seed;
    const int* step = model_train_step(m);
    if (ssd_carry && c.count[LAYER_SSD] && (drop > 0.0f || B > model->ssd_state.B))
        fail("hybrid_forward: carried S states need %d rows of them (have %d) and no dropout", B, model->ssd_state.B);
    model_stage_batch(m, inputs, BT, targets, BT);

    {
        NVTX_RANGE("encoder_forward");
        encoder_forward(a.encoded, m->inputs, p.wte, positions ? p.wpe : nullptr, B, T, C);
        if (drop > 0.0f)  // in place: the first layer's input is the dropped embedding
            dropout_apply(a.encoded, a.encoded, (long)BT * C, drop, dropout_site(seed, step, DROPOUT_SITE_EMBED));
    }
    for (int l = 0; l < c.num_layers; l++) {
        const float* x = hybrid_layer_output(model, l - 1, B, T);
        int k = c.index[l];
        DropoutSite branch = dropout_site(seed, step, l);
        if (c.kind[l] == LAYER_MAMBA) {
            NVTX_RANGE("mamba_layer_forward");
            mamba_prenorm_forward(h, mamba_layer_params(p.mamba, k, md), mamba_layer_acts(a.mamba, k, B, T, md), x, B, T, md,
                                  drop, branch);
        } else if (c.kind[l] == LAYER_SSD) {
            NVTX_RANGE("mamba2_layer_forward");
            MambaCarry carry = {nullptr, nullptr};
            if (ssd_carry) carry = mamba2_carry(&model->ssd_state, k);
            mamba2_prenorm_forward(h, mamba2_layer_params(p.ssd, k, sd), mamba2_layer_acts(a.ssd, k, B, T, sd), x, B, T, sd,
                                   drop, branch, ssd_carry ? &carry : nullptr);
        } else if (c.kind[l] == LAYER_ATTENTION) {
            NVTX_RANGE("attention_layer_forward");
            attention_sublayer_forward(h, attention_layer_params(p.attn, k, td), attention_layer_acts(a.attn, k, B, T, td),
                                       a.block, x, B, T, td, 1, drop, branch, drop,
                                       dropout_site(seed, step, probs_dropout_site(l)));
        } else {
            NVTX_RANGE("mlp_layer_forward");
            mlp_sublayer_forward(h, mlp_layer_params(p.mlp, k, td), mlp_layer_acts(a.mlp, k, B, T, td), x, B, T, td, drop,
                                 branch);
        }
    }
    lm_head_forward(h, m, lm_head_params(p), lm_head_acts(a), hybrid_layer_output(model, c.num_layers - 1, B, T), BT, C,
                    c.vocab_size, targets != nullptr);
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last forward (with targets)

static void hybrid_backward(Hybrid* model, int B, int T) {
    NVTX_RANGE("backward");
    const HybridConfig& c = model->config;
    MambaDims md = mamba_dims_of(c);
    Mamba2Dims sd = mamba2_dims_of(c);
    TransformerDims td = transformer_dims_of(c);
    ModelBuffers* m = &model->buf;
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    float drop = model->dropout.fwd_rate;
    uint64_t seed = model->dropout.seed;
    const int* step = model_train_step(m);
    model_zero_grads(m);
    lm_head_backward(h, m, lm_head_params(p), lm_head_params(g), lm_head_acts(a), hybrid_layer_output(model, L - 1, B, T),
                     a.dresidual, a.dlogits, a.dnorm, BT, C, V);
    for (int l = L - 1; l >= 0; l--) {
        const float* x = hybrid_layer_output(model, l - 1, B, T);
        int k = c.index[l];
        DropoutSite branch = dropout_site(seed, step, l);
        if (c.kind[l] == LAYER_MAMBA) {
            NVTX_RANGE("mamba_layer_backward");
            mamba_prenorm_backward(h, a.dresidual, a.dnorm, x, mamba_layer_params(p.mamba, k, md),
                                   mamba_layer_params(g.mamba, k, md), mamba_layer_acts(a.mamba, k, B, T, md),
                                   a.mamba_scratch, m->ones, B, T, md, drop, branch);
        } else if (c.kind[l] == LAYER_SSD) {
            NVTX_RANGE("mamba2_layer_backward");
            mamba2_prenorm_backward(h, a.dresidual, a.dnorm, x, mamba2_layer_params(p.ssd, k, sd),
                                    mamba2_layer_params(g.ssd, k, sd), mamba2_layer_acts(a.ssd, k, B, T, sd),
                                    a.ssd_scratch, m->ones, B, T, sd, drop, branch);
        } else if (c.kind[l] == LAYER_ATTENTION) {
            NVTX_RANGE("attention_layer_backward");
            attention_sublayer_backward(h, a.dresidual, x, attention_layer_params(p.attn, k, td),
                                        attention_layer_params(g.attn, k, td), attention_layer_acts(a.attn, k, B, T, td),
                                        a.block, m->ones, B, T, td, 1, drop, branch, drop,
                                        dropout_site(seed, step, probs_dropout_site(l)));
        } else {
            NVTX_RANGE("mlp_layer_backward");
            mlp_sublayer_backward(h, a.dresidual, x, mlp_layer_params(p.mlp, k, td), mlp_layer_params(g.mlp, k, td),
                                  mlp_layer_acts(a.mlp, k, B, T, td), a.block, m->ones, B, T, td, drop, branch);
        }
    }
    {
        NVTX_RANGE("encoder_backward");
        if (drop > 0.0f)
            dropout_apply(a.dresidual, a.dresidual, (long)BT * C, drop, dropout_site(seed, step, DROPOUT_SITE_EMBED));
        encoder_backward(h, g.wte, c.count[LAYER_ATTENTION] ? g.wpe : nullptr, a.dlogits, a.dresidual, m->inputs, B, T, C, V);
    }
}

// ----------------------------------------------------------------------------
// generation: each layer's recurrent step, its state prefilled by the
// parallel forward: an M layer's conv and SSM states (llmc/mamba_step.cuh),
// an A layer's KV cache (llmc/kv_cache.cuh); F layers carry nothing. An S
// layer steps as train_mamba's -M 2 does: its pre-norm forward of one
// position (the activations' first B x 1 rows) with its conv and SSD state
// carried (llmc/mamba2_block.cuh's Mamba2State); the prefill's forward runs
// the S layers from cleared states, which leaves them the states after it.
// Without attention there is no context limit (as the Mamba LM). With
// attention the context is the position table (maxT, or the activations'
// length if shorter), and when it is full the last half of it becomes the
// new window, as the GPT does (train_gpt.cu): every state, the Mamba
// layers' too, is refilled from a parallel forward over those tokens at
// positions 0.., as a windowed forward would see them.

static bool hybrid_has_attention(const Hybrid* model) { return model->config.count[LAYER_ATTENTION] > 0; }

static int hybrid_context(const Hybrid* model) {
    return model->config.max_seq_len < model->buf.seq_len ? model->config.max_seq_len : model->buf.seq_len;
}

static void hybrid_generate_begin(Hybrid* model, int B) {
    const HybridConfig& c = model->config;
    if (c.count[LAYER_MAMBA]) mamba_step_state_alloc(&model->step, c.count[LAYER_MAMBA], B, mamba_dims_of(c));
    if (c.count[LAYER_SSD]) {
        if (B > model->buf.batch_size) fail("flag -b: %d rows of generation, the activations hold %d", B, model->buf.batch_size);
        mamba2_state_alloc(&model->ssd_state, c.count[LAYER_SSD], B, mamba2_dims_of(c));
    }
    if (c.count[LAYER_ATTENTION]) {
        kv_cache_alloc(&model->cache, c.count[LAYER_ATTENTION], B, hybrid_context(model), transformer_dims_of(c));
        kv_window_init(&model->window, B, hybrid_context(model));
    }
    if (c.count[LAYER_MLP]) {
        MlpStepScratch* s = &model->mlp_step;
        long C = c.channels, F = c.ffn;
        if (cudaMalloc(&s->memory, (long)B * (2 * C + 2 * F) * sizeof(float)) != cudaSuccess)
            fail("flag -b: %d rows of generation buffers do not fit in memory", B);
        s->ln = s->memory;
        s->fch = s->ln + B * C;
        s->fch_gelu = s->fch + B * F;
        s->proj = s->fch_gelu + B * F;
    }
    step_buffers_alloc(&model->gen, B, c.channels, c.vocab_size);
}

static void hybrid_generate_end(Hybrid* model) {
    const HybridConfig& c = model->config;
    if (c.count[LAYER_MAMBA]) mamba_step_state_free(&model->step);
    if (c.count[LAYER_SSD]) mamba2_state_free(&model->ssd_state);
    if (c.count[LAYER_ATTENTION]) kv_cache_free(&model->cache);
    if (c.count[LAYER_MLP]) cudaCheck(cudaFree(model->mlp_step.memory));
    step_buffers_free(&model->gen);
}

// every layer's state from the last parallel forward over (B, T) (the S
// layers': that forward's, run with ssd_carry); gen.logits the next token's
static void hybrid_states_from_forward(Hybrid* model, int B, int T) {
    const HybridConfig& c = model->config;
    for (int k = 0; k < c.count[LAYER_MAMBA]; k++)
        mamba_step_prefill(&model->step, k, mamba_layer_acts(model->acts.mamba, k, B, T, mamba_dims_of(c)), B, T);
    if (c.count[LAYER_ATTENTION]) kv_cache_reset(&model->cache);
    for (int k = 0; k < c.count[LAYER_ATTENTION]; k++)
        kv_cache_prefill(&model->cache, k, attention_layer_acts(model->acts.attn, k, B, T, transformer_dims_of(c)).qkv, B, T);
    step_logits_from_forward(&model->gen, model->acts.logits, B, T, c.vocab_size);
}

// with attention: the states from a parallel forward over the window's tokens
static void hybrid_prefill_window(Hybrid* model, int B) {
    int T = model->window.pos;
    if (model->config.count[LAYER_SSD]) mamba2_state_reset(&model->ssd_state);
    hybrid_forward(model, kv_window_rows(&model->window, B).data(), nullptr, B, T, -1, true);
    hybrid_states_from_forward(model, B, T);
}

// one token per row (host, B) through every layer's step; gen.logits (B, V) the next token's
static void hybrid_step(Hybrid* model, const int* tokens, int B) {
    NVTX_RANGE("step");
    const HybridConfig& c = model->config;
    int C = c.channels;
    bool attention = hybrid_has_attention(model);
    int pos = 0;  // with attention, the tokens' position (the window's next); without, positions play no part
    if (attention) {
        pos = kv_window_push(&model->window, tokens, B);
        if (pos < 0) { hybrid_prefill_window(model, B); return; }  // the caches were full
    }
    ParameterTensors p = model->params;
    StepBuffers* g = &model->gen;
    cublasHandle_t h = model->buf.cublas;
    MambaDims md = mamba_dims_of(c);
    Mamba2Dims sd = mamba2_dims_of(c);
    TransformerDims td = transformer_dims_of(c);
    cudaCheck(cudaMemcpy(g->tokens, tokens, B * sizeof(int), cudaMemcpyHostToDevice));
    encoder_forward(g->x, g->tokens, p.wte, attention ? p.wpe + (long)pos * C : nullptr, B, 1, C);
    for (int l = 0; l < c.num_layers; l++) {
        int k = c.index[l];
        if (c.kind[l] == LAYER_MAMBA) {
            mamba_prenorm_step(h, mamba_layer_params(p.mamba, k, md), &model->step, k, g->x, B, md);
        } else if (c.kind[l] == LAYER_SSD) {  // x + Mamba2(LN(x)) at T = 1 into the activations' res, then back to x
            Mamba2StackActs la = mamba2_layer_acts(model->acts.ssd, k, B, 1, sd);
            MambaCarry carry = mamba2_carry(&model->ssd_state, k);
            mamba2_prenorm_forward(h, mamba2_layer_params(p.ssd, k, sd), la, g->x, B, 1, sd, 0.0f, NO_DROPOUT_SITE, &carry);
            cudaCheck(cudaMemcpyAsync(g->x, la.res, (long)B * C * sizeof(float), cudaMemcpyDeviceToDevice, main_stream));
        } else if (c.kind[l] == LAYER_ATTENTION) {
            attention_sublayer_step(h, attention_layer_params(p.attn, k, td), &model->cache, k, g->x, pos, B, td);
        } else {
            const MlpStepScratch& s = model->mlp_step;
            mlp_sublayer_step(h, mlp_layer_params(p.mlp, k, td), g->x, s.ln, s.fch, s.fch_gelu, s.proj, B, td);
        }
    }
    lm_head_step(h, lm_head_params(p), g->logits, g->lnf, g->x, B, C, c.vocab_size);
}

// A prompt (B, T) (host). With attention: its last `context` tokens through
// the parallel forward into every state. Without: its first tokens (as many
// as the activations hold) through the parallel forward, the rest by steps.
// gen.logits: the next token's.
static void hybrid_prefill(Hybrid* model, const int* tokens, int B, int T) {
    NVTX_RANGE("prefill");
    if (hybrid_has_attention(model)) {
        kv_window_prompt(&model->window, tokens, B, T);
        hybrid_prefill_window(model, B);
        return;
    }
    auto prefill = [&](const int* rows, int first) {
        if (model->config.count[LAYER_SSD]) mamba2_state_reset(&model->ssd_state);
        hybrid_forward(model, rows, nullptr, B, first, -1, true);
        hybrid_states_from_forward(model, B, first);
    };
    lm_prefill_recurrent(tokens, B, T, model->buf.seq_len, prefill, [&](const int* column) { hybrid_step(model, column, B); });
}

// the hooks of the training loop, validation and sampling (llmc/lm_trainer.h)
static void lm_forward(Hybrid* m, const int* inputs, const int* targets, int B, int T, int train_step) {
    hybrid_forward(m, inputs, targets, B, T, train_step);
}
static void lm_backward(Hybrid* m, int B, int T) { hybrid_backward(m, B, T); }
static void lm_generate_begin(Hybrid* m, int B) { hybrid_generate_begin(m, B); }
static void lm_generate_end(Hybrid* m) { hybrid_generate_end(m); }
static void lm_prefill(Hybrid* m, const int* tokens, int B, int T) { hybrid_prefill(m, tokens, B, T); }
static void lm_step(Hybrid* m, const int* tokens, int B) { hybrid_step(m, tokens, B); }

// ----------------------------------------------------------------------------
// main

#ifndef TESTING
int main(int argc, char** argv) {
    // the write-up's LM configuration, and one that trains in minutes on 2
    // CPU cores (L is the default pattern's length, MAMA)
    //                        L  C    B   T    steps warmup val  lr
    LMPreset presets[2] = {{4, 256, 64, 256, 5000, 0, 250, 1e-3f},
                           {4, 128, 16, 128, 1500, 50, 250, 2e-3f}};
    TrainConfig tc = default_lm_config();
    tc.H = 4;
    tc.pattern = "MAMA";
    parse_train_flags(argc, argv, &tc, presets,
                      "  -A <str>    the layers, one letter each: M Mamba, S Mamba-2, A attention, F MLP (default\n"
                      "              MAMA; MAMA = Mamba-MHA, MFMF = Mamba-MLP; at most 15, 12 with S)\n"
                      "  -C <int>    channels (seed preset 256, cpu 128; Mamba inner width 2C, d_state 16;\n"
                      "              Mamba-2 d_state 64, headdim 64, so a multiple of 32 with S layers)\n"
                      "  -H <int>    heads of the attention layers (default 4)\n"
                      "  -F <int>    hidden width of the MLP layers (default 4*C)\n", "ACHF");
    print_preset(tc.preset);
    TokenData train, val;
    Vocab vocab;
    load_lm_data(&tc, &train, &val, &vocab);

    HybridConfig config;
    if (tc.init_path) {  // the model file decides the shape
        int s[CONFIG_SLOTS];
        model_file_config(tc.init_path, MODEL_HYBRID, s);
        config = hybrid_config(s[0], s[1], s[2], s[3], s[4], s[5], tc.init_path);
        check_shape_flag(&tc, 'A', tc.pattern, "the pattern", config.letters);
        check_shape_flag_int(&tc, 'C', tc.C, "channels", config.channels);
        check_shape_flag_int(&tc, 'H', tc.H, "num_heads", config.num_heads);
        check_shape_flag_int(&tc, 'F', tc.F, "ffn", config.ffn);
        check_model_vocab(&tc, config.vocab_size, &vocab);
        if (config.count[LAYER_ATTENTION]) check_length_fits(&tc, config.max_seq_len);
    } else {
        config = hybrid_config(tc.T, vocab.size, tc.C, tc.H, tc.F ? tc.F : 4 * tc.C, hybrid_pattern_code(tc.pattern), "flag -C/-H");
    }
    Hybrid model;
    hybrid_build(&model, config);
    if (tc.init_path) load_model_file(&model.buf, tc.init_path);
    else hybrid_init_random(&model, tc.seed);
    // generating only, with attention: the activations cover the whole position table (the context)
    bool attention = config.count[LAYER_ATTENTION] > 0;
    int T = tc.generate_only && attention ? config.max_seq_len : tc.T;
    attention_pin_variant(tc.B, T, config.channels, config.num_heads, tc.dropout);
    hybrid_allocate_activations(&model, tc.B, T);
    cublasCheck(cublasSetMathMode(model.buf.cublas, CUBLAS_TF32_TENSOR_OP_MATH));

    printf("backend %s | hybrid %s (%d Mamba, %d Mamba-2, %d attention, %d MLP) C %d H %d F %d | vocab %d | %s | %ld "
           "parameters | scan %s\n",
           BACKEND_NAME, config.letters, config.count[LAYER_MAMBA], config.count[LAYER_SSD], config.count[LAYER_ATTENTION],
           config.count[LAYER_MLP], config.channels, config.num_heads, config.ffn, config.vocab_size,
           attention ? ("max T " + std::to_string(config.max_seq_len)).c_str() : "no positions",
           model.buf.num_parameters, kernel_choices.scan_chunked ? "chunked parallel" : "sequential");
    int status = lm_run(&model, &tc, &train, &val, &vocab);
    model_free(&model.buf);
    return status;
}
#endif

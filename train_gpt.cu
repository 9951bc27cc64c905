/*
Char-level GPT on tinyshakespeare: the model, top to bottom.

  config -> tensor table (the parameters' flat buffer) -> activations
  -> init -> forward -> backward -> main

The model (doc/models.md): token embedding (V,C) plus learned positions
(maxT,C); L pre-norm blocks x = x + attn(LN1(x)), x = x + mlp(LN2(x)) with
causal 4-head attention and an MLP C -> F -> C with GELU; a final LayerNorm;
a head Linear(C, V) with bias. Loss: mean cross-entropy. Kernels live in
llmc/; the buffers every model owns and their update in llmc/model.h; the
training loop, validation and sampling in llmc/lm_trainer.h (lm_run), which
calls this file's lm_forward and lm_backward.

-M plus selects the Transformer++ instead (the Mamba paper's baseline,
doc/models.md): RMSNorm, rotary embeddings on q and k (no position table),
a SwiGLU MLP of the GPT MLP's parameter count, no biases; its block is
llmc/plus_block.cuh, its section below the GPT's (GPTPlus). The two share
the config, the generation (KV cache) and main; files of kind
MODEL_GPT_PLUS hold it, and a file given with -e or -y decides the variant.

Build with `make train_gpt` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/encoder.cuh"
#include "llmc/layernorm.cuh"
#include "llmc/matmul.cuh"
#include "llmc/transformer_block.cuh"
#include "llmc/rmsnorm.cuh"
#include "llmc/plus_block.cuh"
#include "llmc/kv_cache.cuh"
#include "llmc/crossentropy.cuh"
#include "llmc/model.h"
#include "llmc/lm_trainer.h"

#include <vector>

// ----------------------------------------------------------------------------
// config

typedef struct {
    int max_seq_len;  // maxT: rows of the position table
    int vocab_size;   // V
    int num_layers;   // L
    int num_heads;    // NH
    int channels;     // C
    int ffn;          // F: hidden width of the MLP (plus: the SwiGLU width H)
    int variant;      // GPT_PLAIN or GPT_PLUS (-M; the model kind of files: MODEL_GPT, MODEL_GPT_PLUS)
} GPTConfig;

#define GPT_PLAIN 0
#define GPT_PLUS 1

// the seven config slots of model files and checkpoints
static const char* const gpt_slot_names[CONFIG_SLOTS] = {"max_seq_len", "vocab_size", "num_layers", "num_heads",
                                                         "channels", "ffn", "num_params"};

static TransformerDims dims_of(GPTConfig c) {
    TransformerDims d = {c.channels, c.num_heads, c.ffn};
    return d;
}

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in the table's order (the blocks' stacked over L)

#define NUM_PARAMETER_TENSORS (2 + TRANSFORMER_STACK_PARAMS + 4)
typedef struct {
    float* wte;                    // (V, C)
    float* wpe;                    // (maxT, C)
    TransformerStackParams tower;  // the L blocks: ln1_w .. fc_proj_b, see llmc/transformer_block.cuh
    float* lnf_w;                  // (C)
    float* lnf_b;                  // (C)
    float* head_w;                 // (V, C)
    float* head_b;                 // (V)
} ParameterTensors;
static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

// name, size, weight decay (the embeddings and the Linear weights), layers
static void gpt_param_table(TensorSpec* t, GPTConfig c) {
    long V = c.vocab_size, C = c.channels;
    *t++ = {"wte", V * C, 1, 1};
    *t++ = {"wpe", (long)c.max_seq_len * C, 1, 1};
    t = transformer_stack_param_table(t, c.num_layers, dims_of(c));
    *t++ = {"lnf_w", C, 0, 1};
    *t++ = {"lnf_b", C, 0, 1};
    *t++ = {"head_w", V * C, 1, 1};
    *t++ = {"head_b", V, 0, 1};
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for the forward activations kept for backward,
// and the scratch of both passes

#define NUM_ACTIVATION_TENSORS (1 + TRANSFORMER_STACK_ACTS + 6 + TRANSFORMER_SCRATCH + 2)
typedef struct {
    float* encoded;              // (B, T, C)
    TransformerStackActs tower;  // the L blocks' activations, see llmc/transformer_block.cuh
    float* lnf;                  // (B, T, C)
    float* lnf_mean;             // (B, T)
    float* lnf_rstd;             // (B, T)
    float* logits;               // (B, T, V)
    float* probs;                // (B, T, V)
    float* losses;               // (B, T)
    // scratch
    TransformerScratch block;    // the blocks' scratch
    float* dresidual;            // (B, T, C)  gradient flowing down the residual stream
    float* dlogits;              // (B, T, V); also the one-hot scratch of the embedding backward
} ActivationTensors;
static_assert(sizeof(ActivationTensors) == NUM_ACTIVATION_TENSORS * sizeof(float*), "one pointer per tensor");

static void gpt_act_table(TensorSpec* t, GPTConfig c, int B, int T) {
    long C = c.channels, V = c.vocab_size, BT = (long)B * T;
    *t++ = {"encoded", BT * C, 0, 1};
    t = transformer_stack_act_table(t, c.num_layers, B, T, dims_of(c));
    *t++ = {"lnf", BT * C, 0, 1};
    *t++ = {"lnf_mean", BT, 0, 1};
    *t++ = {"lnf_rstd", BT, 0, 1};
    *t++ = {"logits", BT * V, 0, 1};
    *t++ = {"probs", BT * V, 0, 1};
    *t++ = {"losses", BT, 0, 1};
    t = transformer_scratch_table(t, B, T, dims_of(c));
    *t++ = {"dresidual", BT * C, 0, 1};
    *t++ = {"dlogits", BT * V, 0, 1};
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    GPTConfig config;
    ParameterTensors params;  // pointers into buf.params_memory
    ParameterTensors grads;   // ... and into buf.grads_memory
    ActivationTensors acts;   // ... and into buf.acts_memory
    ModelBuffers buf;         // the buffers, the cuBLAS handle, the last loss (llmc/model.h)
    KVCache cache;            // generation: every layer's keys and values (llmc/kv_cache.cuh)
    StepBuffers gen;          // ... and one step's tokens, stream and logits (llmc/lm_trainer.h)
    std::vector<int> window;  // ... and the tokens in the cache, (B, context) on the host
    int pos;                  // ... and how many of them there are: the next token's position
} GPT;

static void gpt_build(GPT* model, GPTConfig c) {
    if (c.channels % c.num_heads != 0) fail("flag -C/-H: channels %d are not divisible by heads %d", c.channels, c.num_heads);
    model->config = c;
    TensorSpec table[NUM_PARAMETER_TENSORS];
    gpt_param_table(table, c);
    int slots[CONFIG_SLOTS - 1] = {c.max_seq_len, c.vocab_size, c.num_layers, c.num_heads, c.channels, c.ffn};
    model_build(&model->buf, MODEL_GPT, gpt_slot_names, slots, table, NUM_PARAMETER_TENSORS, &model->params,
                &model->grads, sizeof(model->params));
    model->gen.B = 0;
}

// sizes the activations for batches up to B x T
static void gpt_allocate_activations(GPT* model, int B, int T) {
    TensorSpec table[NUM_ACTIVATION_TENSORS];
    gpt_act_table(table, model->config, B, T);
    model_allocate_activations(&model->buf, table, NUM_ACTIVATION_TENSORS, &model->acts, sizeof(model->acts), B, T, 1,
                               (long)B * T, "-b/-t");
}

// GPT-2 style init: embeddings N(0, 0.02), the blocks as transformer_stack_init,
// final LayerNorm 1 and 0, head N(0, 0.02) with zero bias
static void gpt_init_random(GPT* model, uint64_t seed) {
    GPTConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->buf.num_parameters, 0.0f);
    ParameterTensors p;  // pointers into the host copy
    point_tensors(&p, host.data(), model->buf.param_table, NUM_PARAMETER_TENSORS);
    long V = c.vocab_size, C = c.channels;
    for (long i = 0; i < V * C; i++) p.wte[i] = rng_normal(&rng) * 0.02f;
    for (long i = 0; i < (long)c.max_seq_len * C; i++) p.wpe[i] = rng_normal(&rng) * 0.02f;
    transformer_stack_init(p.tower, c.num_layers, dims_of(c), &rng);
    for (long i = 0; i < C; i++) p.lnf_w[i] = 1.0f;
    for (long i = 0; i < V * C; i++) p.head_w[i] = rng_normal(&rng) * 0.02f;
    model_upload_params(&model->buf, host.data());
}

// ----------------------------------------------------------------------------
// forward: logits for inputs (B, T) (host array); with targets, also the mean loss

static void gpt_forward(GPT* model, const int* inputs, const int* targets, int B, int T) {
    NVTX_RANGE("forward");
    GPTConfig c = model->config;
    TransformerDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    if (B > m->batch_size || T > m->seq_len || T > c.max_seq_len) fail("gpt_forward: batch %d x %d exceeds the allocation", B, T);
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    model_stage_batch(m, inputs, BT, targets, BT);

    { NVTX_RANGE("encoder_forward"); encoder_forward(a.encoded, m->inputs, p.wte, p.wpe, B, T, C); }
    const float* x = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        TransformerStackActs la = transformer_layer_acts(a.tower, l, B, T, d);
        transformer_block_forward(h, transformer_layer_params(p.tower, l, d), la, a.block, x, B, T, d, 1, NO_DROPOUT);
        x = la.residual3;
    }
    { NVTX_RANGE("lnf_forward"); layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, x, p.lnf_w, p.lnf_b, BT, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.lnf, p.head_w, p.head_b, BT, C, V); }
    if (targets) {
        NVTX_RANGE("crossentropy_forward");
        crossentropy_forward(a.losses, a.probs, a.logits, m->targets, BT, V);
        model_mean_loss(m, a.losses, BT);
    }
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last forward (with targets)

static void gpt_backward(GPT* model, int B, int T) {
    NVTX_RANGE("backward");
    GPTConfig c = model->config;
    TransformerDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    model_zero_grads(m);
    cudaCheck(cudaMemsetAsync(a.dresidual, 0, (long)BT * C * sizeof(float), main_stream));
    auto block_output = [&](int l) -> const float* { return l < 0 ? a.encoded : transformer_layer_acts(a.tower, l, B, T, d).residual3; };
    {
        NVTX_RANGE("head_backward");
        crossentropy_backward(a.dlogits, a.probs, m->targets, 1.0f / BT, BT, V);
        matmul_backward(h, a.block.dbtc, g.head_w, g.head_b, a.dlogits, a.lnf, p.head_w, m->ones, BT, C, V);
    }
    {
        NVTX_RANGE("lnf_backward");
        layernorm_backward(a.dresidual, g.lnf_w, g.lnf_b, a.block.dbtc, block_output(L - 1), p.lnf_w, a.lnf_mean,
                           a.lnf_rstd, BT, C);
    }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        transformer_block_backward(h, a.dresidual, block_output(l - 1), transformer_layer_params(p.tower, l, d),
                                   transformer_layer_params(g.tower, l, d), transformer_layer_acts(a.tower, l, B, T, d),
                                   a.block, m->ones, B, T, d, 1, NO_DROPOUT);
    }
    {
        NVTX_RANGE("encoder_backward");
        encoder_backward(h, g.wte, g.wpe, a.dlogits, a.dresidual, m->inputs, B, T, C, V);
    }
}

// ----------------------------------------------------------------------------
// generation: a KV cache per layer (llmc/kv_cache.cuh), prefilled by the
// parallel forward; a step appends one position and attends over the cache.
// The context is the position table (maxT, or the activations' length if
// shorter). When it is full, the last half of it (the newest token
// included) becomes the new window: the cache is cleared and prefilled
// from a parallel forward over those tokens at positions 0.., as a windowed
// forward would see them, and stepping goes on from there.

template <typename M> static int gpt_context(const M* model) {
    return model->config.max_seq_len < model->buf.seq_len ? model->config.max_seq_len : model->buf.seq_len;
}

template <typename M> static void gpt_generate_begin(M* model, int B) {
    kv_cache_alloc(&model->cache, model->config.num_layers, B, gpt_context(model), gpt_cache_dims(model));
    step_buffers_alloc(&model->gen, B, model->config.channels, model->config.vocab_size);
    model->window.assign((long)B * gpt_context(model), 0);
    model->pos = 0;
}

template <typename M> static void gpt_generate_end(M* model) {
    kv_cache_free(&model->cache);
    step_buffers_free(&model->gen);
}

// the cache from a parallel forward over the first T tokens of each row's window
template <typename M> static void gpt_prefill_window(M* model, int B, int T) {
    int W = gpt_context(model);
    std::vector<int> rows((long)B * T);
    for (int b = 0; b < B; b++) std::copy(&model->window[(long)b * W], &model->window[(long)b * W] + T, &rows[(long)b * T]);
    gpt_forward_into_cache(model, rows.data(), B, T);
    step_logits_from_forward(&model->gen, model->acts.logits, B, T, model->config.vocab_size);
    model->pos = T;
}

// a prompt (B, T) (host): its last `context` tokens into the cache; gen.logits the next token's
template <typename M> static void gpt_prefill(M* model, const int* tokens, int B, int T) {
    NVTX_RANGE("prefill");
    int W = gpt_context(model), keep = T < W ? T : W;
    for (int b = 0; b < B; b++) std::copy(tokens + (long)b * T + (T - keep), tokens + (long)b * T + T, &model->window[(long)b * W]);
    gpt_prefill_window(model, B, keep);
}

// one token per row (host, B) at position pos; gen.logits (B, V) the next token's
template <typename M> static void gpt_step(M* model, const int* tokens, int B) {
    NVTX_RANGE("step");
    int W = gpt_context(model);
    if (model->pos == W) {  // the cache is full: the newest W/2 tokens become the window
        int keep = W / 2 > 1 ? W / 2 : 1;
        for (int b = 0; b < B; b++) {
            int* row = &model->window[(long)b * W];
            std::copy(row + W - (keep - 1), row + W, row);
            row[keep - 1] = tokens[b];
        }
        gpt_prefill_window(model, B, keep);
        return;
    }
    for (int b = 0; b < B; b++) model->window[(long)b * W + model->pos] = tokens[b];
    cudaCheck(cudaMemcpy(model->gen.tokens, tokens, B * sizeof(int), cudaMemcpyHostToDevice));
    gpt_step_tokens(model, B);
    model->pos++;
}

// what the generation above needs of the plain GPT: the cache's dims, a
// forward that fills the cache, and the step of gen.tokens at position pos
static TransformerDims gpt_cache_dims(const GPT* model) { return dims_of(model->config); }

static void gpt_forward_into_cache(GPT* model, const int* rows, int B, int T) {
    gpt_forward(model, rows, nullptr, B, T);
    kv_cache_reset(&model->cache);
    kv_cache_prefill_stack(&model->cache, model->acts.tower, B, T);
}

static void gpt_step_tokens(GPT* model, int B) {
    GPTConfig c = model->config;
    int C = c.channels;
    ParameterTensors p = model->params;
    StepBuffers* g = &model->gen;
    cublasHandle_t h = model->buf.cublas;
    encoder_forward(g->x, g->tokens, p.wte, p.wpe + (long)model->pos * C, B, 1, C);
    transformer_stack_step(h, p.tower, &model->cache, g->x, model->pos, B);
    step_head(h, g, p.lnf_w, p.lnf_b, p.head_w, p.head_b, B, C, c.vocab_size);
}

// ----------------------------------------------------------------------------
// Transformer++ (-M plus): the same stack but for the block (llmc/plus_block.cuh:
// RMSNorm, rotary q and k, SwiGLU, no biases), no learned positions, a final
// RMSNorm and a head without bias (doc/models.md). Config slots as the GPT's,
// with ffn the SwiGLU width H; its files are of kind MODEL_GPT_PLUS.

static PlusDims plus_dims_of(GPTConfig c) {
    PlusDims d = {c.channels, c.num_heads, c.ffn};
    return d;
}

#define NUM_PLUS_PARAMETER_TENSORS (1 + PLUS_STACK_PARAMS + 2)
typedef struct {
    float* wte;             // (V, C)
    PlusStackParams tower;  // the L blocks: ln1_w .. fc_proj_w, see llmc/plus_block.cuh
    float* lnf_w;           // (C)  RMSNorm weight
    float* head_w;          // (V, C)
} PlusParameterTensors;
static_assert(sizeof(PlusParameterTensors) == NUM_PLUS_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

static void plus_param_table(TensorSpec* t, GPTConfig c) {
    long V = c.vocab_size, C = c.channels;
    *t++ = {"wte", V * C, 1, 1};
    t = plus_stack_param_table(t, c.num_layers, plus_dims_of(c));
    *t++ = {"lnf_w", C, 0, 1};
    *t++ = {"head_w", V * C, 1, 1};
}

#define NUM_PLUS_ACTIVATION_TENSORS (1 + PLUS_STACK_ACTS + 5 + PLUS_SCRATCH + 2)
typedef struct {
    float* encoded;         // (B, T, C)
    PlusStackActs tower;    // the L blocks' activations, see llmc/plus_block.cuh
    float* lnf;             // (B, T, C)
    float* lnf_rstd;        // (B, T)
    float* logits;          // (B, T, V)
    float* probs;           // (B, T, V)
    float* losses;          // (B, T)
    // scratch
    PlusScratch block;      // the blocks' scratch
    float* dresidual;       // (B, T, C)
    float* dlogits;         // (B, T, V); also the one-hot scratch of the embedding backward
} PlusActivationTensors;
static_assert(sizeof(PlusActivationTensors) == NUM_PLUS_ACTIVATION_TENSORS * sizeof(float*), "one pointer per tensor");

static void plus_act_table(TensorSpec* t, GPTConfig c, int B, int T) {
    long C = c.channels, V = c.vocab_size, BT = (long)B * T;
    *t++ = {"encoded", BT * C, 0, 1};
    t = plus_stack_act_table(t, c.num_layers, B, T, plus_dims_of(c));
    *t++ = {"lnf", BT * C, 0, 1};
    *t++ = {"lnf_rstd", BT, 0, 1};
    *t++ = {"logits", BT * V, 0, 1};
    *t++ = {"probs", BT * V, 0, 1};
    *t++ = {"losses", BT, 0, 1};
    t = plus_scratch_table(t, B, T, plus_dims_of(c));
    *t++ = {"dresidual", BT * C, 0, 1};
    *t++ = {"dlogits", BT * V, 0, 1};
}

typedef struct {
    GPTConfig config;               // variant GPT_PLUS
    PlusParameterTensors params;    // pointers into buf.params_memory
    PlusParameterTensors grads;     // ... and into buf.grads_memory
    PlusActivationTensors acts;     // ... and into buf.acts_memory
    ModelBuffers buf;
    KVCache cache;                  // generation, as the GPT's
    StepBuffers gen;
    std::vector<int> window;
    int pos;
} GPTPlus;

static void plus_build(GPTPlus* model, GPTConfig c) {
    if (c.channels % c.num_heads != 0) fail("flag -C/-H: channels %d are not divisible by heads %d", c.channels, c.num_heads);
    if ((c.channels / c.num_heads) % 2)
        fail("flag -C/-H: head size %d is odd; rotary embeddings (-M plus) need an even head size", c.channels / c.num_heads);
    c.variant = GPT_PLUS;
    model->config = c;
    TensorSpec table[NUM_PLUS_PARAMETER_TENSORS];
    plus_param_table(table, c);
    int slots[CONFIG_SLOTS - 1] = {c.max_seq_len, c.vocab_size, c.num_layers, c.num_heads, c.channels, c.ffn};
    model_build(&model->buf, MODEL_GPT_PLUS, gpt_slot_names, slots, table, NUM_PLUS_PARAMETER_TENSORS, &model->params,
                &model->grads, sizeof(model->params));
    model->gen.B = 0;
}

static void plus_allocate_activations(GPTPlus* model, int B, int T) {
    TensorSpec table[NUM_PLUS_ACTIVATION_TENSORS];
    plus_act_table(table, model->config, B, T);
    model_allocate_activations(&model->buf, table, NUM_PLUS_ACTIVATION_TENSORS, &model->acts, sizeof(model->acts), B, T,
                               1, (long)B * T, "-b/-t");
}

// embedding N(0, 0.02), the blocks as plus_stack_init, final RMSNorm 1, head N(0, 0.02)
static void plus_init_random(GPTPlus* model, uint64_t seed) {
    GPTConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->buf.num_parameters, 0.0f);
    PlusParameterTensors p;
    point_tensors(&p, host.data(), model->buf.param_table, NUM_PLUS_PARAMETER_TENSORS);
    long V = c.vocab_size, C = c.channels;
    for (long i = 0; i < V * C; i++) p.wte[i] = rng_normal(&rng) * 0.02f;
    plus_stack_init(p.tower, c.num_layers, plus_dims_of(c), &rng);
    for (long i = 0; i < C; i++) p.lnf_w[i] = 1.0f;
    for (long i = 0; i < V * C; i++) p.head_w[i] = rng_normal(&rng) * 0.02f;
    model_upload_params(&model->buf, host.data());
}

static void plus_forward(GPTPlus* model, const int* inputs, const int* targets, int B, int T) {
    NVTX_RANGE("forward");
    GPTConfig c = model->config;
    PlusDims d = plus_dims_of(c);
    ModelBuffers* m = &model->buf;
    if (B > m->batch_size || T > m->seq_len || T > c.max_seq_len) fail("plus_forward: batch %d x %d exceeds the allocation", B, T);
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    PlusParameterTensors p = model->params;
    PlusActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    model_stage_batch(m, inputs, BT, targets, BT);

    { NVTX_RANGE("encoder_forward"); encoder_forward(a.encoded, m->inputs, p.wte, nullptr, B, T, C); }
    const float* x = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        PlusStackActs la = plus_layer_acts(a.tower, l, B, T, d);
        plus_block_forward(h, plus_layer_params(p.tower, l, d), la, a.block, x, B, T, d);
        x = la.residual3;
    }
    { NVTX_RANGE("lnf_forward"); rmsnorm_forward(a.lnf, a.lnf_rstd, x, p.lnf_w, BT, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.lnf, p.head_w, nullptr, BT, C, V); }
    if (targets) {
        NVTX_RANGE("crossentropy_forward");
        crossentropy_forward(a.losses, a.probs, a.logits, m->targets, BT, V);
        model_mean_loss(m, a.losses, BT);
    }
}

static void plus_backward(GPTPlus* model, int B, int T) {
    NVTX_RANGE("backward");
    GPTConfig c = model->config;
    PlusDims d = plus_dims_of(c);
    ModelBuffers* m = &model->buf;
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    PlusParameterTensors p = model->params, g = model->grads;
    PlusActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    model_zero_grads(m);
    cudaCheck(cudaMemsetAsync(a.dresidual, 0, (long)BT * C * sizeof(float), main_stream));
    auto block_output = [&](int l) -> const float* { return l < 0 ? a.encoded : plus_layer_acts(a.tower, l, B, T, d).residual3; };
    {
        NVTX_RANGE("head_backward");
        crossentropy_backward(a.dlogits, a.probs, m->targets, 1.0f / BT, BT, V);
        matmul_backward(h, a.block.dbtc, g.head_w, nullptr, a.dlogits, a.lnf, p.head_w, m->ones, BT, C, V);
    }
    {
        NVTX_RANGE("lnf_backward");
        rmsnorm_backward(a.dresidual, g.lnf_w, a.block.dbtc, block_output(L - 1), p.lnf_w, a.lnf_rstd, BT, C);
    }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        plus_block_backward(h, a.dresidual, block_output(l - 1), plus_layer_params(p.tower, l, d),
                            plus_layer_params(g.tower, l, d), plus_layer_acts(a.tower, l, B, T, d), a.block, m->ones,
                            B, T, d);
    }
    {
        NVTX_RANGE("encoder_backward");
        encoder_backward(h, g.wte, nullptr, a.dlogits, a.dresidual, m->inputs, B, T, C, V);
    }
}

// generation (gpt_generate_begin .. above): the cache holds rotated keys;
// a step rotates its q and k at the absolute position pos. A full cache is
// re-prefilled from positions 0.. as the GPT's, so that a step's logits
// equal a windowed forward's.
static TransformerDims gpt_cache_dims(const GPTPlus* model) { return plus_cache_dims(plus_dims_of(model->config)); }

static void gpt_forward_into_cache(GPTPlus* model, const int* rows, int B, int T) {
    plus_forward(model, rows, nullptr, B, T);
    kv_cache_reset(&model->cache);
    plus_kv_cache_prefill_stack(&model->cache, model->acts.tower, B, T, plus_dims_of(model->config));
}

static void gpt_step_tokens(GPTPlus* model, int B) {
    GPTConfig c = model->config;
    int C = c.channels;
    PlusParameterTensors p = model->params;
    StepBuffers* g = &model->gen;
    cublasHandle_t h = model->buf.cublas;
    encoder_forward(g->x, g->tokens, p.wte, nullptr, B, 1, C);
    plus_stack_step(h, p.tower, &model->cache, g->x, model->pos, B, plus_dims_of(c));
    rmsnorm_forward(g->lnf, nullptr, g->x, p.lnf_w, B, C);
    matmul_forward(h, g->logits, g->lnf, p.head_w, nullptr, B, C, c.vocab_size);
}

// the hooks of the training loop, validation and sampling (llmc/lm_trainer.h)
static void lm_forward(GPT* m, const int* inputs, const int* targets, int B, int T) { gpt_forward(m, inputs, targets, B, T); }
static void lm_backward(GPT* m, int B, int T) { gpt_backward(m, B, T); }
static void lm_generate_begin(GPT* m, int B) { gpt_generate_begin(m, B); }
static void lm_generate_end(GPT* m) { gpt_generate_end(m); }
static void lm_prefill(GPT* m, const int* tokens, int B, int T) { gpt_prefill(m, tokens, B, T); }
static void lm_step(GPT* m, const int* tokens, int B) { gpt_step(m, tokens, B); }
static void lm_forward(GPTPlus* m, const int* inputs, const int* targets, int B, int T) { plus_forward(m, inputs, targets, B, T); }
static void lm_backward(GPTPlus* m, int B, int T) { plus_backward(m, B, T); }
static void lm_generate_begin(GPTPlus* m, int B) { gpt_generate_begin(m, B); }
static void lm_generate_end(GPTPlus* m) { gpt_generate_end(m); }
static void lm_prefill(GPTPlus* m, const int* tokens, int B, int T) { gpt_prefill(m, tokens, B, T); }
static void lm_step(GPTPlus* m, const int* tokens, int B) { gpt_step(m, tokens, B); }

// ----------------------------------------------------------------------------
// main

#ifndef TESTING
// -M <gpt|plus> out of the arguments (the trainers' common flags are
// parse_train_flags's): GPT_PLAIN, GPT_PLUS, or -1 when not given
static int take_model_flag(int* argc, char** argv) {
    int variant = -1, n = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "-M")) { argv[n++] = argv[i]; continue; }
        if (i + 1 >= *argc) fail("flag -M needs a value (see -h)");
        const char* v = argv[++i];
        if (!strcmp(v, "gpt")) variant = GPT_PLAIN;
        else if (!strcmp(v, "plus")) variant = GPT_PLUS;
        else fail("flag -M: '%s' is not a model (gpt or plus)", v);
    }
    *argc = n;
    return variant;
}

static const char* variant_name(int variant) { return variant == GPT_PLUS ? "plus" : "gpt"; }

// the variant a file of this kind holds; any other kind fails naming the file
static int variant_of_kind(const char* path, int kind) {
    if (kind == MODEL_GPT) return GPT_PLAIN;
    if (kind == MODEL_GPT_PLUS) return GPT_PLUS;
    fail("%s: holds a model of kind %d, not a GPT (kind %d) or a Transformer++ (-M plus, kind %d)", path, kind,
         MODEL_GPT, MODEL_GPT_PLUS);
}

// The model a run starts from decides the variant: the file of -e, or with
// -y the newest checkpoint in -o; -M, when given, must agree with it.
static int resolve_variant(const TrainConfig* tc, int flag) {
    std::string path;
    int kind = 0;
    if (tc->resume && !checkpoint_steps(tc->out_dir).empty()) {
        path = checkpoint_path(tc->out_dir, checkpoint_steps(tc->out_dir).back());
        FILE* f = fopen_or_fail(path.c_str(), "rb");
        int header[3] = {0, 0, 0};
        size_t got = fread(header, sizeof(int), 3, f);
        fclose(f);
        if (got != 3 || header[0] != MAGIC_CHECKPOINT) fail("%s: not a checkpoint file", path.c_str());
        kind = header[2];
    } else if (tc->init_path) {
        path = tc->init_path;
        int slots[CONFIG_SLOTS];
        model_file_peek(tc->init_path, &kind, slots);
    } else {
        return flag < 0 ? GPT_PLAIN : flag;
    }
    int variant = variant_of_kind(path.c_str(), kind);
    if (flag >= 0 && flag != variant)
        fail("flag -M: %s, but %s holds a %s model (-M %s)", variant_name(flag), path.c_str(), variant_name(variant),
             variant_name(variant));
    return variant;
}

// builds a variant's model for the run, its parameters from -e or random
static void setup_model(GPT* m, GPTConfig config, const TrainConfig* tc) {
    gpt_build(m, config);
    if (tc->init_path) load_model_file(&m->buf, tc->init_path);
    else gpt_init_random(m, tc->seed);
    // generating only: the activations cover the whole position table (the context)
    int T = tc->generate_only ? config.max_seq_len : tc->T;
    attention_pin_variant(tc->B, T, config.channels, config.num_heads);
    gpt_allocate_activations(m, tc->B, T);
}

static void setup_model(GPTPlus* m, GPTConfig config, const TrainConfig* tc) {
    plus_build(m, config);
    if (tc->init_path) load_model_file(&m->buf, tc->init_path);
    else plus_init_random(m, tc->seed);
    int T = tc->generate_only ? config.max_seq_len : tc->T;
    attention_pin_variant(tc->B, T, config.channels, config.num_heads);
    plus_allocate_activations(m, tc->B, T);
}

template <typename M> static int run_model(GPTConfig config, TrainConfig* tc, const TokenData* train,
                                           const TokenData* val, const Vocab* vocab) {
    M model;
    setup_model(&model, config, tc);
    cublasCheck(cublasSetMathMode(model.buf.cublas, CUBLAS_TF32_TENSOR_OP_MATH));
    bool plus = config.variant == GPT_PLUS;
    bool tiled = attention_uses_tiled(tc->B, tc->generate_only ? config.max_seq_len : tc->T, config.channels,
                                      config.num_heads);  // as the activations were sized
    printf("backend %s | %s L %d C %d H %d %s %d | vocab %d | max T %d | %ld parameters | attention %s\n", BACKEND_NAME,
           plus ? "Transformer++" : "GPT", config.num_layers, config.channels, config.num_heads, plus ? "SwiGLU" : "F",
           config.ffn, config.vocab_size, config.max_seq_len, model.buf.num_parameters, tiled ? "tiled" : "materialized");
    int status = lm_run(&model, tc, train, val, vocab);
    model_free(&model.buf);
    return status;
}

int main(int argc, char** argv) {
    // the write-up's configuration, and one that trains in minutes on 2 CPU cores
    //                        L  C    B   T    steps warmup val  lr
    LMPreset presets[2] = {{4, 256, 64, 256, 5000, 0, 250, 1e-3f},
                           {3, 128, 16, 128, 1500, 50, 250, 2e-3f}};
    TrainConfig tc = default_lm_config();
    tc.H = 4;
    int variant_flag = take_model_flag(&argc, argv);
    parse_train_flags(argc, argv, &tc, presets,
                      "  -M <name>   model: gpt (default) or plus (Transformer++: RMSNorm, rotary, SwiGLU, no biases);\n"
                      "              a model file or checkpoint decides it (-e, -y)\n"
                      "  -L <int>    layers (seed preset 4, cpu 3)\n"
                      "  -C <int>    channels (seed preset 256, cpu 128)\n"
                      "  -H <int>    heads (default 4)\n"
                      "  -F <int>    MLP hidden width (default 2*C); -M plus: the SwiGLU width is 2F/3 to a multiple of 8\n", "LCHF");
    print_preset(tc.preset);
    TokenData train, val;
    Vocab vocab;
    load_lm_data(&tc, &train, &val, &vocab);

    int variant = resolve_variant(&tc, variant_flag);
    int F = tc.F ? tc.F : 2 * tc.C;
    GPTConfig config = {tc.T, vocab.size, tc.L, tc.H, tc.C, variant == GPT_PLUS ? plus_hidden_width(F) : F, variant};
    if (tc.init_path) {  // the model file decides the shape
        int s[CONFIG_SLOTS];
        read_model_file_shape(tc.init_path, variant == GPT_PLUS ? MODEL_GPT_PLUS : MODEL_GPT,
                              variant == GPT_PLUS ? "Transformer++" : "GPT", s);
        config = {s[0], s[1], s[2], s[3], s[4], s[5], variant};
        check_model_vocab(&tc, config.vocab_size, &vocab);
        if (tc.T > config.max_seq_len) fail("flag -t: %d exceeds the model's maximum sequence length %d (%s)", tc.T, config.max_seq_len, tc.init_path);
    }
    if (variant == GPT_PLUS) return run_model<GPTPlus>(config, &tc, &train, &val, &vocab);
    return run_model<GPT>(config, &tc, &train, &val, &vocab);
}
#endif

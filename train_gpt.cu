/*
Char-level GPT on tinyshakespeare: the model, top to bottom.

  config -> tensor table (the parameters' flat buffer) -> activations
  -> init -> forward -> backward -> generation -> main

The model (doc/models.md), for tokens (B, T):
  x = Dropout(wte[tokens] + wpe[0..T-1])           token embedding (V,C), learned positions (maxT,C)
  L pre-norm blocks (llmc/transformer_block.cuh):
    x = x + Dropout(attn_proj(attention(LN1(x))))  qkv Linear(C,3C), 4 heads of size hs = C/4,
                                                   Dropout(softmax(q k^T / sqrt(hs), causal)) v, proj Linear(C,C)
    x = x + Dropout(fc_proj(gelu(fc(LN2(x)))))     fc Linear(C,F), GELU (erf), fc_proj Linear(F,C)
  logits = head(LNf(x))                            head Linear(C,V) with bias (llmc/lm_head.cuh)
  loss = mean over (B, T) of -log softmax(logits)[target]
Every Linear has a bias; LayerNorms have weight and bias, eps 1e-5.
Dropout (-D, nanoGPT's places: the embedding's output, the attention
probabilities, each residual branch) acts at training steps only, its masks
dropout.cuh's hash of the run's seed, the step and the site: the branches of
layer l at 2l and 2l+1, its probabilities at DROPOUT_SITE_PROBS + l, the
embedding at DROPOUT_SITE_EMBED (llmc/transformer_block.cuh).
Kernels live in llmc/; the buffers every model owns and their update in
llmc/model.h; the config and the start of main, shared with the
Transformer++ (train_gpt_plus.cu), in llmc/gpt_config.h; the training loop,
validation and sampling in llmc/lm_trainer.h (lm_run), which calls this
file's hooks.

Build with `make train_gpt` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/encoder.cuh"
#include "llmc/transformer_block.cuh"
#include "llmc/kv_cache.cuh"
#include "llmc/lm_head.cuh"
#include "llmc/model.h"
#include "llmc/lm_trainer.h"
#include "llmc/gpt_config.h"

#include <vector>

// ----------------------------------------------------------------------------
// config: GPTConfig (llmc/gpt_config.h), files of kind MODEL_GPT

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
    TrainDropout dropout;     // the rate at training steps and the masks' seed (llmc/model.h)
    ModelBuffers buf;         // the buffers, the cuBLAS handle, the last loss (llmc/model.h)
    KVCache cache;            // generation: every layer's keys and values (llmc/kv_cache.cuh)
    KVWindow window;          // ... the tokens they hold and the next position
    StepBuffers gen;          // ... and one step's tokens, stream and logits (llmc/lm_trainer.h)
} GPT;

static void gpt_build(GPT* model, GPTConfig c) {
    gpt_check_heads(c);
    model->config = c;
    TensorSpec table[NUM_PARAMETER_TENSORS];
    gpt_param_table(table, c);
    int slots[CONFIG_SLOTS - 1];
    gpt_config_slots(c, slots);
    model_build(&model->buf, MODEL_GPT, gpt_slot_names, slots, table, NUM_PARAMETER_TENSORS, &model->params,
                &model->grads, sizeof(model->params));
    model->dropout = {0.0f, 0, 0.0f};
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
// forward: logits for inputs (B, T) (host array); with targets, also the mean
// loss. train_step >= 0: a training step (dropout on, its masks keyed by the
// step); -1: evaluation and generation (no dropout).

static void gpt_forward(GPT* model, const int* inputs, const int* targets, int B, int T, int train_step) {
    NVTX_RANGE("forward");
    GPTConfig c = model->config;
    TransformerDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    if (B > m->batch_size || T > m->seq_len || T > c.max_seq_len) fail("gpt_forward: batch %d x %d exceeds the allocation", B, T);
    int L = c.num_layers, C = c.channels, BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    float drop = train_dropout_begin(&model->dropout, m, train_step);
    model_stage_batch(m, inputs, BT, targets, BT);

    {
        NVTX_RANGE("encoder_forward");
        encoder_forward(a.encoded, m->inputs, p.wte, p.wpe, B, T, C);
        if (drop > 0.0f)  // in place: the first block's input is the dropped embedding
            dropout_apply(a.encoded, a.encoded, (long)BT * C, drop,
                          dropout_site(model->dropout.seed, model_train_step(m), DROPOUT_SITE_EMBED));
    }
    const float* x = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        TransformerStackActs la = transformer_layer_acts(a.tower, l, B, T, d);
        transformer_block_forward(h, transformer_layer_params(p.tower, l, d), la, a.block, x, B, T, d, 1,
                                  lm_block_dropout(drop, model->dropout.seed, model_train_step(m), l));
        x = la.residual3;
    }
    lm_head_forward(h, m, lm_head_params(p), lm_head_acts(a), x, BT, C, c.vocab_size, targets != nullptr);
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
    TrainDropout drop = model->dropout;
    model_zero_grads(m);
    auto block_output = [&](int l) -> const float* { return l < 0 ? a.encoded : transformer_layer_acts(a.tower, l, B, T, d).residual3; };
    lm_head_backward(h, m, lm_head_params(p), lm_head_params(g), lm_head_acts(a), block_output(L - 1), a.dresidual,
                     a.dlogits, a.block.dbtc, BT, C, V);
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        transformer_block_backward(h, a.dresidual, block_output(l - 1), transformer_layer_params(p.tower, l, d),
                                   transformer_layer_params(g.tower, l, d), transformer_layer_acts(a.tower, l, B, T, d),
                                   a.block, m->ones, B, T, d, 1,
                                   lm_block_dropout(drop.fwd_rate, drop.seed, model_train_step(m), l));
    }
    {
        NVTX_RANGE("encoder_backward");
        if (drop.fwd_rate > 0.0f)
            dropout_apply(a.dresidual, a.dresidual, (long)BT * C, drop.fwd_rate,
                          dropout_site(drop.seed, model_train_step(m), DROPOUT_SITE_EMBED));
        encoder_backward(h, g.wte, g.wpe, a.dlogits, a.dresidual, m->inputs, B, T, C, V);
    }
}

// ----------------------------------------------------------------------------
// generation: a KV cache per layer (llmc/kv_cache.cuh), prefilled by the
// parallel forward; a step appends one position and attends over the cache.
// The context is the position table (maxT, or the activations' length if
// shorter). When it is full, the last half of it (the newest token
// included) becomes the new window (KVWindow): the cache is cleared and
// prefilled from a parallel forward over those tokens at positions 0.., as
// a windowed forward would see them, and stepping goes on from there.

static void gpt_generate_begin(GPT* model, int B) {
    GPTConfig c = model->config;
    int W = gpt_context(c, &model->buf);
    kv_cache_alloc(&model->cache, c.num_layers, B, W, dims_of(c));
    kv_window_init(&model->window, B, W);
    step_buffers_alloc(&model->gen, B, c.channels, c.vocab_size);
}

static void gpt_generate_end(GPT* model) {
    kv_cache_free(&model->cache);
    step_buffers_free(&model->gen);
}

// the cache from a parallel forward over the window's tokens; gen.logits the next token's
static void gpt_prefill_window(GPT* model, int B) {
    int T = model->window.pos;
    gpt_forward(model, kv_window_rows(&model->window, B).data(), nullptr, B, T, -1);
    kv_cache_reset(&model->cache);
    kv_cache_prefill_stack(&model->cache, model->acts.tower, B, T);
    step_logits_from_forward(&model->gen, model->acts.logits, B, T, model->config.vocab_size);
}

// a prompt (B, T) (host): its last `context` tokens into the cache
static void gpt_prefill(GPT* model, const int* tokens, int B, int T) {
    NVTX_RANGE("prefill");
    kv_window_prompt(&model->window, tokens, B, T);
    gpt_prefill_window(model, B);
}

// one token per row (host, B) at the window's next position; gen.logits (B, V) the next token's
static void gpt_step(GPT* model, const int* tokens, int B) {
    NVTX_RANGE("step");
    int pos = kv_window_push(&model->window, tokens, B);
    if (pos < 0) { gpt_prefill_window(model, B); return; }  // the cache was full
    GPTConfig c = model->config;
    int C = c.channels;
    ParameterTensors p = model->params;
    StepBuffers* g = &model->gen;
    cublasHandle_t h = model->buf.cublas;
    cudaCheck(cudaMemcpy(g->tokens, tokens, B * sizeof(int), cudaMemcpyHostToDevice));
    encoder_forward(g->x, g->tokens, p.wte, p.wpe + (long)pos * C, B, 1, C);
    transformer_stack_step(h, p.tower, &model->cache, g->x, pos, B);
    lm_head_step(h, lm_head_params(p), g->logits, g->lnf, g->x, B, C, c.vocab_size);
}

// the hooks of the training loop, validation and sampling (llmc/lm_trainer.h)
static void lm_forward(GPT* m, const int* inputs, const int* targets, int B, int T, int train_step) {
    gpt_forward(m, inputs, targets, B, T, train_step);
}
static void lm_backward(GPT* m, int B, int T) { gpt_backward(m, B, T); }
static void lm_generate_begin(GPT* m, int B) { gpt_generate_begin(m, B); }
static void lm_generate_end(GPT* m) { gpt_generate_end(m); }
static void lm_prefill(GPT* m, const int* tokens, int B, int T) { gpt_prefill(m, tokens, B, T); }
static void lm_step(GPT* m, const int* tokens, int B) { gpt_step(m, tokens, B); }

// ----------------------------------------------------------------------------
// main

#ifndef TESTING
int main(int argc, char** argv) {
    TrainConfig tc;
    TokenData train, val;
    Vocab vocab;
    gpt_parse_flags_and_data(argc, argv, &tc, &train, &val, &vocab,
                             "  -L <int>    layers (seed preset 4, cpu 3)\n"
                             "  -C <int>    channels (seed preset 256, cpu 128)\n"
                             "  -H <int>    heads (default 4)\n"
                             "  -F <int>    MLP hidden width (default 2*C)\n");
    GPTConfig config = gpt_run_config(&tc, &vocab, MODEL_GPT, tc.F ? tc.F : 2 * tc.C);
    GPT model;
    gpt_build(&model, config);
    if (tc.init_path) load_model_file(&model.buf, tc.init_path);
    else gpt_init_random(&model, tc.seed);
    int T = gpt_run_length(&tc, config);
    attention_pin_variant(tc.B, T, config.channels, config.num_heads, tc.dropout);
    gpt_allocate_activations(&model, tc.B, T);
    cublasCheck(cublasSetMathMode(model.buf.cublas, CUBLAS_TF32_TENSOR_OP_MATH));
    gpt_print_model("GPT", "F", config, model.buf.num_parameters, &tc, T);
    int status = lm_run(&model, &tc, &train, &val, &vocab);
    model_free(&model.buf);
    return status;
}
#endif

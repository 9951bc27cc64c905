/*
Char-level Transformer++ on tinyshakespeare, the Mamba paper's strong
Transformer baseline (as LLaMA): the model, top to bottom.

  config -> tensor table (the parameters' flat buffer) -> activations
  -> init -> forward -> backward -> generation -> main

The model (doc/models.md), for tokens (B, T), with no learned positions:
  x = Dropout(wte[tokens])                         token embedding (V,C)
  L pre-norm blocks (llmc/plus_block.cuh):
    h = RMSNorm1(x);  q, k, v = h @ qkv_w^T        4 heads of size hs = C/4
    q, k rotated at their positions (RoPE, base 10000, llmc/rope.cuh)
    x = x + Dropout(attn_proj(Dropout(softmax(q k^T / sqrt(hs), causal)) v))
    h = RMSNorm2(x);  x = x + Dropout(W2(silu(W1 h) * W3 h))   SwiGLU of width H
  logits = head(RMSNormf(x))                       head Linear(C,V) (llmc/lm_head.cuh)
  loss = mean over (B, T) of -log softmax(logits)[target]
Dropout (-D) acts at training steps only, at the GPT's places and sites
(train_gpt.cu). No biases anywhere; RMSNorm has a weight only, eps 1e-5. H =
plus_hidden_width(F), 2F/3 to a multiple of 8, keeps the parameter count
of the GPT's MLP of width F (train_gpt.cu). The config is the GPT's
(llmc/gpt_config.h) with ffn = H; files of kind MODEL_GPT_PLUS. Kernels
live in llmc/; the buffers every model owns and their update in
llmc/model.h; the training loop, validation and sampling in
llmc/lm_trainer.h (lm_run), which calls this file's hooks.

Build with `make train_gpt_plus` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/encoder.cuh"
#include "llmc/plus_block.cuh"
#include "llmc/kv_cache.cuh"
#include "llmc/lm_head.cuh"
#include "llmc/model.h"
#include "llmc/lm_trainer.h"
#include "llmc/gpt_config.h"

#include <vector>

// ----------------------------------------------------------------------------
// config: GPTConfig (llmc/gpt_config.h) with ffn the SwiGLU width H

static PlusDims dims_of(GPTConfig c) {
    PlusDims d = {c.channels, c.num_heads, c.ffn};
    return d;
}

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in the table's order (the blocks' stacked over L)

#define NUM_PARAMETER_TENSORS (1 + PLUS_STACK_PARAMS + 2)
typedef struct {
    float* wte;             // (V, C)
    PlusStackParams tower;  // the L blocks: ln1_w .. fc_proj_w, see llmc/plus_block.cuh
    float* lnf_w;           // (C)  RMSNorm weight
    float* head_w;          // (V, C)
} ParameterTensors;
static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

// name, size, weight decay (the embedding and the Linear weights), layers
static void plus_param_table(TensorSpec* t, GPTConfig c) {
    long V = c.vocab_size, C = c.channels;
    *t++ = {"wte", V * C, 1, 1};
    t = plus_stack_param_table(t, c.num_layers, dims_of(c));
    *t++ = {"lnf_w", C, 0, 1};
    *t++ = {"head_w", V * C, 1, 1};
}

// the final RMSNorm and the head without bias, as llmc/lm_head.cuh takes them
static LMHeadParams head_params(const ParameterTensors& p) {
    LMHeadParams r = {p.lnf_w, nullptr, p.head_w, nullptr};
    return r;
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for the forward activations kept for backward,
// and the scratch of both passes

#define NUM_ACTIVATION_TENSORS (1 + PLUS_STACK_ACTS + 5 + PLUS_SCRATCH + 2)
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
    float* dresidual;       // (B, T, C)  gradient flowing down the residual stream
    float* dlogits;         // (B, T, V); also the one-hot scratch of the embedding backward
} ActivationTensors;
static_assert(sizeof(ActivationTensors) == NUM_ACTIVATION_TENSORS * sizeof(float*), "one pointer per tensor");

static void plus_act_table(TensorSpec* t, GPTConfig c, int B, int T) {
    long C = c.channels, V = c.vocab_size, BT = (long)B * T;
    *t++ = {"encoded", BT * C, 0, 1};
    t = plus_stack_act_table(t, c.num_layers, B, T, dims_of(c));
    *t++ = {"lnf", BT * C, 0, 1};
    *t++ = {"lnf_rstd", BT, 0, 1};
    *t++ = {"logits", BT * V, 0, 1};
    *t++ = {"probs", BT * V, 0, 1};
    *t++ = {"losses", BT, 0, 1};
    t = plus_scratch_table(t, B, T, dims_of(c));
    *t++ = {"dresidual", BT * C, 0, 1};
    *t++ = {"dlogits", BT * V, 0, 1};
}

// the head's activations as llmc/lm_head.cuh takes them (an RMSNorm keeps no means)
static LMHeadActs head_acts(const ActivationTensors& a) {
    LMHeadActs r = {a.lnf, nullptr, a.lnf_rstd, a.logits, a.probs, a.losses};
    return r;
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
    KVCache cache;            // generation: every layer's rotated keys and values (llmc/kv_cache.cuh)
    KVWindow window;          // ... the tokens they hold and the next position
    StepBuffers gen;          // ... and one step's tokens, stream and logits (llmc/lm_trainer.h)
} GPTPlus;

static void plus_build(GPTPlus* model, GPTConfig c) {
    gpt_check_heads(c);
    if ((c.channels / c.num_heads) % 2)
        fail("flag -C/-H: head size %d is odd; rotary embeddings need an even head size", c.channels / c.num_heads);
    model->config = c;
    TensorSpec table[NUM_PARAMETER_TENSORS];
    plus_param_table(table, c);
    int slots[CONFIG_SLOTS - 1];
    gpt_config_slots(c, slots);
    model_build(&model->buf, MODEL_GPT_PLUS, gpt_slot_names, slots, table, NUM_PARAMETER_TENSORS, &model->params,
                &model->grads, sizeof(model->params));
    model->dropout = {0.0f, 0, 0.0f};
    model->gen.B = 0;
}

// sizes the activations for batches up to B x T
static void plus_allocate_activations(GPTPlus* model, int B, int T) {
    TensorSpec table[NUM_ACTIVATION_TENSORS];
    plus_act_table(table, model->config, B, T);
    model_allocate_activations(&model->buf, table, NUM_ACTIVATION_TENSORS, &model->acts, sizeof(model->acts), B, T,
                               1, (long)B * T, "-b/-t");
}

// embedding N(0, 0.02), the blocks as plus_stack_init, final RMSNorm 1, head N(0, 0.02)
static void plus_init_random(GPTPlus* model, uint64_t seed) {
    GPTConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->buf.num_parameters, 0.0f);
    ParameterTensors p;  // pointers into the host copy
    point_tensors(&p, host.data(), model->buf.param_table, NUM_PARAMETER_TENSORS);
    long V = c.vocab_size, C = c.channels;
    for (long i = 0; i < V * C; i++) p.wte[i] = rng_normal(&rng) * 0.02f;
    plus_stack_init(p.tower, c.num_layers, dims_of(c), &rng);
    for (long i = 0; i < C; i++) p.lnf_w[i] = 1.0f;
    for (long i = 0; i < V * C; i++) p.head_w[i] = rng_normal(&rng) * 0.02f;
    model_upload_params(&model->buf, host.data());
}

// ----------------------------------------------------------------------------
// forward: logits for inputs (B, T) (host array); with targets, also the mean
// loss. train_step >= 0: a training step (dropout on, its masks keyed by the
// step); -1: evaluation and generation (no dropout).

static void plus_forward(GPTPlus* model, const int* inputs, const int* targets, int B, int T, int train_step) {
    NVTX_RANGE("forward");
    GPTConfig c = model->config;
    PlusDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    if (B > m->batch_size || T > m->seq_len) fail("plus_forward: batch %d x %d exceeds the allocation", B, T);
    int L = c.num_layers, C = c.channels, BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    float drop = train_dropout_begin(&model->dropout, m, train_step);
    model_stage_batch(m, inputs, BT, targets, BT);

    {
        NVTX_RANGE("encoder_forward");
        encoder_forward(a.encoded, m->inputs, p.wte, nullptr, B, T, C);
        if (drop > 0.0f)  // in place: the first block's input is the dropped embedding
            dropout_apply(a.encoded, a.encoded, (long)BT * C, drop,
                          dropout_site(model->dropout.seed, model_train_step(m), DROPOUT_SITE_EMBED));
    }
    const float* x = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        PlusStackActs la = plus_layer_acts(a.tower, l, B, T, d);
        plus_block_forward(h, plus_layer_params(p.tower, l, d), la, a.block, x, B, T, d,
                           lm_block_dropout(drop, model->dropout.seed, model_train_step(m), l));
        x = la.residual3;
    }
    lm_head_forward(h, m, head_params(p), head_acts(a), x, BT, C, c.vocab_size, targets != nullptr);
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last forward (with targets)

static void plus_backward(GPTPlus* model, int B, int T) {
    NVTX_RANGE("backward");
    GPTConfig c = model->config;
    PlusDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    TrainDropout drop = model->dropout;
    model_zero_grads(m);
    auto block_output = [&](int l) -> const float* { return l < 0 ? a.encoded : plus_layer_acts(a.tower, l, B, T, d).residual3; };
    lm_head_backward(h, m, head_params(p), head_params(g), head_acts(a), block_output(L - 1), a.dresidual, a.dlogits,
                     a.block.dbtc, BT, C, V);
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        plus_block_backward(h, a.dresidual, block_output(l - 1), plus_layer_params(p.tower, l, d),
                            plus_layer_params(g.tower, l, d), plus_layer_acts(a.tower, l, B, T, d), a.block, m->ones,
                            B, T, d, lm_block_dropout(drop.fwd_rate, drop.seed, model_train_step(m), l));
    }
    {
        NVTX_RANGE("encoder_backward");
        if (drop.fwd_rate > 0.0f)
            dropout_apply(a.dresidual, a.dresidual, (long)BT * C, drop.fwd_rate,
                          dropout_site(drop.seed, model_train_step(m), DROPOUT_SITE_EMBED));
        encoder_backward(h, g.wte, nullptr, a.dlogits, a.dresidual, m->inputs, B, T, C, V);
    }
}

// ----------------------------------------------------------------------------
// generation: the GPT's (train_gpt.cu), a KV cache per layer of the keys as
// the blocks rotated them, a step rotating its q and k at its absolute
// position. A full cache is re-prefilled from the window's newest half at
// positions 0.., so that a step's logits equal a windowed forward's.

static void plus_generate_begin(GPTPlus* model, int B) {
    GPTConfig c = model->config;
    int W = gpt_context(c, &model->buf);
    kv_cache_alloc(&model->cache, c.num_layers, B, W, plus_cache_dims(dims_of(c)));
    kv_window_init(&model->window, B, W);
    step_buffers_alloc(&model->gen, B, c.channels, c.vocab_size);
}

static void plus_generate_end(GPTPlus* model) {
    kv_cache_free(&model->cache);
    step_buffers_free(&model->gen);
}

// the cache from a parallel forward over the window's tokens; gen.logits the next token's
static void plus_prefill_window(GPTPlus* model, int B) {
    int T = model->window.pos;
    plus_forward(model, kv_window_rows(&model->window, B).data(), nullptr, B, T, -1);
    kv_cache_reset(&model->cache);
    plus_kv_cache_prefill_stack(&model->cache, model->acts.tower, B, T, dims_of(model->config));
    step_logits_from_forward(&model->gen, model->acts.logits, B, T, model->config.vocab_size);
}

// a prompt (B, T) (host): its last `context` tokens into the cache
static void plus_prefill(GPTPlus* model, const int* tokens, int B, int T) {
    NVTX_RANGE("prefill");
    kv_window_prompt(&model->window, tokens, B, T);
    plus_prefill_window(model, B);
}

// one token per row (host, B) at the window's next position; gen.logits (B, V) the next token's
static void plus_step(GPTPlus* model, const int* tokens, int B) {
    NVTX_RANGE("step");
    int pos = kv_window_push(&model->window, tokens, B);
    if (pos < 0) { plus_prefill_window(model, B); return; }  // the cache was full
    GPTConfig c = model->config;
    int C = c.channels;
    ParameterTensors p = model->params;
    StepBuffers* g = &model->gen;
    cublasHandle_t h = model->buf.cublas;
    cudaCheck(cudaMemcpy(g->tokens, tokens, B * sizeof(int), cudaMemcpyHostToDevice));
    encoder_forward(g->x, g->tokens, p.wte, nullptr, B, 1, C);
    plus_stack_step(h, p.tower, &model->cache, g->x, pos, B, dims_of(c));
    lm_head_step(h, head_params(p), g->logits, g->lnf, g->x, B, C, c.vocab_size);
}

// the hooks of the training loop, validation and sampling (llmc/lm_trainer.h)
static void lm_forward(GPTPlus* m, const int* inputs, const int* targets, int B, int T, int train_step) {
    plus_forward(m, inputs, targets, B, T, train_step);
}
static void lm_backward(GPTPlus* m, int B, int T) { plus_backward(m, B, T); }
static void lm_generate_begin(GPTPlus* m, int B) { plus_generate_begin(m, B); }
static void lm_generate_end(GPTPlus* m) { plus_generate_end(m); }
static void lm_prefill(GPTPlus* m, const int* tokens, int B, int T) { plus_prefill(m, tokens, B, T); }
static void lm_step(GPTPlus* m, const int* tokens, int B) { plus_step(m, tokens, B); }

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
                             "  -H <int>    heads (default 4; the head size C/H must be even)\n"
                             "  -F <int>    the MLP width of the GPT whose parameter count it keeps (default 2*C);\n"
                             "              the SwiGLU width is 2F/3 to a multiple of 8\n");
    GPTConfig config = gpt_run_config(&tc, &vocab, MODEL_GPT_PLUS, plus_hidden_width(tc.F ? tc.F : 2 * tc.C));
    GPTPlus model;
    plus_build(&model, config);
    if (tc.init_path) load_model_file(&model.buf, tc.init_path);
    else plus_init_random(&model, tc.seed);
    int T = gpt_run_length(&tc, config);
    attention_pin_variant(tc.B, T, config.channels, config.num_heads, tc.dropout);
    plus_allocate_activations(&model, tc.B, T);
    cublasCheck(cublasSetMathMode(model.buf.cublas, CUBLAS_TF32_TENSOR_OP_MATH));
    gpt_print_model("Transformer++", "SwiGLU", config, model.buf.num_parameters, &tc, T);
    int status = lm_run(&model, &tc, &train, &val, &vocab);
    model_free(&model.buf);
    return status;
}
#endif

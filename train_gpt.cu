/*
Char-level GPT on tinyshakespeare: the whole trainer, top to bottom.

  config -> parameters (one flat buffer) -> activations (one flat buffer)
  -> forward -> backward -> AdamW update -> data -> main loop

The model (as dev/reference/gpt.py defines it): token embedding (V,C) plus
learned positions (maxT,C); L pre-norm blocks x = x + attn(LN1(x)),
x = x + mlp(LN2(x)) with causal 4-head attention and an MLP C -> F -> C with
GELU; a final LayerNorm; a head Linear(C, V) with bias. Loss: mean
cross-entropy. Kernels live in llmc/; this file only arranges them.

Build with `make train_gpt` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/encoder.cuh"
#include "llmc/layernorm.cuh"
#include "llmc/matmul.cuh"
#include "llmc/transformer_block.cuh"
#include "llmc/crossentropy.cuh"
#include "llmc/adamw.cuh"
#include "llmc/trainer.h"

#include <string>
#include <vector>

// ----------------------------------------------------------------------------
// config

typedef struct {
    int max_seq_len;  // maxT: rows of the position table
    int vocab_size;   // V
    int num_layers;   // L
    int num_heads;    // NH
    int channels;     // C
    int ffn;          // F: hidden width of the MLP
} GPTConfig;

// the seven config slots of model files and checkpoints
static const char* const gpt_slot_names[CONFIG_SLOTS] = {"max_seq_len", "vocab_size", "num_layers", "num_heads",
                                                         "channels", "ffn", "num_params"};

static TransformerDims dims_of(GPTConfig c) {
    TransformerDims d = {c.channels, c.num_heads, c.ffn};
    return d;
}

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (the blocks' stacked over L)

#define NUM_PARAMETER_TENSORS (2 + TRANSFORMER_STACK_PARAMS + 4)
typedef struct {
    float* wte;                    // (V, C)
    float* wpe;                    // (maxT, C)
    TransformerStackParams tower;  // the L blocks: ln1w .. fcprojb, see llmc/transformer_block.cuh
    float* lnfw;                   // (C)
    float* lnfb;                   // (C)
    float* headw;                  // (V, C)
    float* headb;                  // (V)
} ParameterTensors;

[[maybe_unused]] static const char* const param_names[NUM_PARAMETER_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
    "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb", "headw", "headb"};

// weight decay applies to the embeddings and the Linear weights only
static const int param_decay[NUM_PARAMETER_TENSORS] = {1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0};

static void fill_in_parameter_sizes(long* sizes, GPTConfig c) {
    long V = c.vocab_size, C = c.channels;
    sizes[0] = V * C;
    sizes[1] = (long)c.max_seq_len * C;
    transformer_stack_param_sizes(sizes + 2, c.num_layers, dims_of(c));
    long tail[4] = {C, C, V * C, V};
    for (int i = 0; i < 4; i++) sizes[2 + TRANSFORMER_STACK_PARAMS + i] = tail[i];
}

// points the tensors of a struct of float pointers into one buffer
static void point_tensors(float** ptrs, float* base, const long* sizes, int num) {
    for (int i = 0; i < num; i++) { ptrs[i] = base; base += sizes[i]; }
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

static void fill_in_activation_sizes(long* sizes, GPTConfig c, int B, int T) {
    long C = c.channels, V = c.vocab_size, BT = (long)B * T;
    long* s = sizes;
    *s++ = BT * C;
    transformer_stack_act_sizes(s, c.num_layers, B, T, dims_of(c));
    s += TRANSFORMER_STACK_ACTS;
    long mid[6] = {BT * C, BT, BT, BT * V, BT * V, BT};
    for (long x : mid) *s++ = x;
    transformer_scratch_sizes(s, B, T, dims_of(c));
    s += TRANSFORMER_SCRATCH;
    *s++ = BT * C;
    *s++ = BT * V;
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    GPTConfig config;
    int config_slots[CONFIG_SLOTS];
    ParameterTensors params;
    long param_sizes[NUM_PARAMETER_TENSORS];
    long num_parameters;
    float* params_memory;
    ParameterTensors grads;
    float* grads_memory;
    float* m_memory;  // AdamW moments
    float* v_memory;
    ActivationTensors acts;
    long act_sizes[NUM_ACTIVATION_TENSORS];
    float* acts_memory;
    int batch_size, seq_len;  // what the activations were sized for
    int* inputs;              // device (B, T)
    int* targets;             // device (B, T)
    float* ones;              // device, B*T ones (bias gradients)
    float* norm_buffer;       // device, global-norm scratch: norm, scale, partials
    std::vector<float> host_losses;
    float mean_loss;          // of the last forward with targets
    cublasHandle_t cublas;
} GPT;

static void gpt_build(GPT* model, GPTConfig c) {
    if (c.channels % c.num_heads != 0) fail("flag -C/-H: channels %d are not divisible by heads %d", c.channels, c.num_heads);
    model->config = c;
    fill_in_parameter_sizes(model->param_sizes, c);
    model->num_parameters = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) model->num_parameters += model->param_sizes[i];
    if (model->num_parameters > 2147483647L) fail("flags -L/-C: the model would have %ld parameters, more than 2^31 - 1", model->num_parameters);
    int slots[CONFIG_SLOTS] = {c.max_seq_len, c.vocab_size, c.num_layers, c.num_heads, c.channels, c.ffn,
                               (int)model->num_parameters};
    memcpy(model->config_slots, slots, sizeof(slots));
    allocate_parameter_buffers(model->num_parameters, &model->params_memory, &model->grads_memory, &model->m_memory,
                               &model->v_memory, &model->norm_buffer);
    point_tensors((float**)&model->params, model->params_memory, model->param_sizes, NUM_PARAMETER_TENSORS);
    point_tensors((float**)&model->grads, model->grads_memory, model->param_sizes, NUM_PARAMETER_TENSORS);
    cublasCheck(cublasCreate(&model->cublas));
    model->acts_memory = nullptr;
    model->batch_size = model->seq_len = 0;
}

// GPT-2 style init: embeddings N(0, 0.02), the blocks as transformer_stack_init,
// final LayerNorm 1 and 0, head N(0, 0.02) with zero bias
static void gpt_init_random(GPT* model, uint64_t seed) {
    GPTConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->num_parameters, 0.0f);
    ParameterTensors p;  // pointers into the host copy
    point_tensors((float**)&p, host.data(), model->param_sizes, NUM_PARAMETER_TENSORS);
    long V = c.vocab_size, C = c.channels;
    for (long i = 0; i < V * C; i++) p.wte[i] = rng_normal(&rng) * 0.02f;
    for (long i = 0; i < (long)c.max_seq_len * C; i++) p.wpe[i] = rng_normal(&rng) * 0.02f;
    transformer_stack_init(p.tower, c.num_layers, dims_of(c), &rng);
    for (long i = 0; i < C; i++) p.lnfw[i] = 1.0f;
    for (long i = 0; i < V * C; i++) p.headw[i] = rng_normal(&rng) * 0.02f;
    cudaCheck(cudaMemcpy(model->params_memory, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
}

// sizes the activations for batches up to B x T
static void gpt_allocate_activations(GPT* model, int B, int T) {
    fill_in_activation_sizes(model->act_sizes, model->config, B, T);
    long total = 0;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) total += model->act_sizes[i];
    cudaError_t e = cudaMalloc(&model->acts_memory, total * sizeof(float));
    if (e != cudaSuccess)
        fail("flags -b/-t: batch %d x %d needs %.1f GiB of activations, allocation failed (%s)", B, T,
             total * 4.0 / (1 << 30), cudaGetErrorString(e));
    point_tensors((float**)&model->acts, model->acts_memory, model->act_sizes, NUM_ACTIVATION_TENSORS);
    cudaCheck(cudaMalloc(&model->inputs, (long)B * T * sizeof(int)));
    cudaCheck(cudaMalloc(&model->targets, (long)B * T * sizeof(int)));
    cudaCheck(cudaMalloc(&model->ones, (long)B * T * sizeof(float)));
    fill(model->ones, 1.0f, (long)B * T);
    model->host_losses.resize((long)B * T);
    model->batch_size = B;
    model->seq_len = T;
}

// ----------------------------------------------------------------------------
// forward: logits for inputs (B, T) (host array); with targets, also the mean loss

static void gpt_forward(GPT* model, const int* inputs, const int* targets, int B, int T) {
    NVTX_RANGE("forward");
    GPTConfig c = model->config;
    TransformerDims d = dims_of(c);
    if (B > model->batch_size || T > model->seq_len || T > c.max_seq_len) fail("gpt_forward: batch %d x %d exceeds the allocation", B, T);
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    cudaCheck(cudaMemcpy(model->inputs, inputs, BT * sizeof(int), cudaMemcpyHostToDevice));
    if (targets) cudaCheck(cudaMemcpy(model->targets, targets, BT * sizeof(int), cudaMemcpyHostToDevice));

    { NVTX_RANGE("encoder_forward"); encoder_forward(a.encoded, model->inputs, p.wte, p.wpe, B, T, C); }
    const float* x = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        TransformerStackActs la = transformer_layer_acts(a.tower, l, B, T, d);
        transformer_block_forward(h, transformer_layer_params(p.tower, l, d), la, a.block, x, B, T, d, 1);
        x = la.residual3;
    }
    { NVTX_RANGE("lnf_forward"); layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, x, p.lnfw, p.lnfb, BT, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.lnf, p.headw, p.headb, BT, C, V); }
    if (targets) {
        NVTX_RANGE("crossentropy_forward");
        crossentropy_forward(a.losses, a.probs, a.logits, model->targets, BT, V);
        cudaCheck(cudaMemcpy(model->host_losses.data(), a.losses, BT * sizeof(float), cudaMemcpyDeviceToHost));
        double sum = 0.0;
        for (int i = 0; i < BT; i++) sum += model->host_losses[i];
        model->mean_loss = (float)(sum / BT);
    }
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last forward (with targets)

static void gpt_backward(GPT* model, int B, int T) {
    NVTX_RANGE("backward");
    GPTConfig c = model->config;
    TransformerDims d = dims_of(c);
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    cudaCheck(cudaMemset(model->grads_memory, 0, model->num_parameters * sizeof(float)));
    cudaCheck(cudaMemset(a.dresidual, 0, (long)BT * C * sizeof(float)));
    auto block_output = [&](int l) -> const float* { return l < 0 ? a.encoded : transformer_layer_acts(a.tower, l, B, T, d).residual3; };
    {
        NVTX_RANGE("head_backward");
        crossentropy_backward(a.dlogits, a.probs, model->targets, 1.0f / BT, BT, V);
        matmul_backward(h, a.block.dbtc, g.headw, g.headb, a.dlogits, a.lnf, p.headw, model->ones, BT, C, V);
    }
    {
        NVTX_RANGE("lnf_backward");
        layernorm_backward(a.dresidual, g.lnfw, g.lnfb, a.block.dbtc, block_output(L - 1), p.lnfw, a.lnf_mean,
                           a.lnf_rstd, BT, C);
    }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        transformer_block_backward(h, a.dresidual, block_output(l - 1), transformer_layer_params(p.tower, l, d),
                                   transformer_layer_params(g.tower, l, d), transformer_layer_acts(a.tower, l, B, T, d),
                                   a.block, model->ones, B, T, d, 1);
    }
    {
        NVTX_RANGE("encoder_backward");
        encoder_backward(h, g.wte, g.wpe, a.dlogits, a.dresidual, model->inputs, B, T, C, V);
    }
}

// ----------------------------------------------------------------------------
// update: global-norm clipping, then AdamW per tensor (weight decay per tensor)

// returns the gradient norm before clipping; t is the 1-based step
static float gpt_update(GPT* model, const AdamWConfig* o, float lr, int t) {
    NVTX_RANGE("update");
    return clip_and_adamw(model->params_memory, model->m_memory, model->v_memory, model->grads_memory,
                          model->param_sizes, param_decay, NUM_PARAMETER_TENSORS, model->norm_buffer, o, lr, t);
}

static void gpt_free(GPT* model) {
    cudaCheck(cudaFree(model->params_memory));
    cudaCheck(cudaFree(model->grads_memory));
    cudaCheck(cudaFree(model->m_memory));
    cudaCheck(cudaFree(model->v_memory));
    cudaCheck(cudaFree(model->acts_memory));
    cudaCheck(cudaFree(model->inputs));
    cudaCheck(cudaFree(model->targets));
    cudaCheck(cudaFree(model->ones));
    cudaCheck(cudaFree(model->norm_buffer));
    cublasCheck(cublasDestroy(model->cublas));
}

// ----------------------------------------------------------------------------
// the hooks of the shared training loop, validation and sampling (llmc/trainer.h)

static void lm_forward(GPT* m, const int* inputs, const int* targets, int B, int T) { gpt_forward(m, inputs, targets, B, T); }
static void lm_backward(GPT* m, int B, int T) { gpt_backward(m, B, T); }
static float lm_update(GPT* m, const AdamWConfig* o, float lr, int t) { return gpt_update(m, o, lr, t); }

// ----------------------------------------------------------------------------
// main

#ifndef TESTING

int main(int argc, char** argv) {
    TrainConfig tc = default_lm_config();
    tc.L = 4; tc.C = 256; tc.H = 4;
    parse_train_flags(argc, argv, &tc,
                      "  -L <int>    layers (default 4)\n"
                      "  -C <int>    channels (default 256)\n"
                      "  -H <int>    heads (default 4)\n"
                      "  -F <int>    MLP hidden width (default 2*C)\n", "LCHF");
    int B = tc.B, T = tc.T;

    TokenData train, val;
    Vocab vocab;
    load_lm_data(&tc, &train, &val, &vocab);

    GPTConfig config = {T, vocab.size, tc.L, tc.H, tc.C, tc.F ? tc.F : 2 * tc.C};
    if (tc.init_path) {  // the model file decides the shape
        int kind, s[CONFIG_SLOTS];
        model_file_peek(tc.init_path, &kind, s);
        if (kind != MODEL_GPT) fail("%s: holds a model of kind %d, not a GPT (kind %d)", tc.init_path, kind, MODEL_GPT);
        config = {s[0], s[1], s[2], s[3], s[4], s[5]};
        if (config.vocab_size != vocab.size) fail("%s: vocabulary of %d tokens, but %s has %d", tc.init_path, config.vocab_size, tc.vocab_path, vocab.size);
        if (T > config.max_seq_len) fail("flag -t: %d exceeds the model's maximum sequence length %d (%s)", T, config.max_seq_len, tc.init_path);
    }
    GPT model;
    gpt_build(&model, config);
    if (tc.init_path) model_file_load(tc.init_path, MODEL_GPT, model.config_slots, gpt_slot_names, model.params_memory);
    else gpt_init_random(&model, tc.seed);
    gpt_allocate_activations(&model, B, T);
    cublasCheck(cublasSetMathMode(model.cublas, CUBLAS_TF32_TENSOR_OP_MATH));

    printf("backend %s | GPT L %d C %d H %d F %d | vocab %d | max T %d | %ld parameters\n", BACKEND_NAME,
           config.num_layers, config.channels, config.num_heads, config.ffn, config.vocab_size, config.max_seq_len,
           model.num_parameters);
    int status = lm_run(&model, &tc, MODEL_GPT, gpt_slot_names, &train, &val, &vocab);
    gpt_free(&model);
    return status;
}
#endif

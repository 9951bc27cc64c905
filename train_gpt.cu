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
#include "llmc/attention.cuh"
#include "llmc/gelu.cuh"
#include "llmc/crossentropy.cuh"
#include "llmc/adamw.cuh"
#include "llmc/trainer.h"
#include "llmc/logger.h"

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

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (per-layer tensors stacked over L)

#define NUM_PARAMETER_TENSORS 18
typedef struct {
    float* wte;       // (V, C)
    float* wpe;       // (maxT, C)
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
    float* lnfw;      // (C)
    float* lnfb;      // (C)
    float* headw;     // (V, C)
    float* headb;     // (V)
} ParameterTensors;

static const char* const param_names[NUM_PARAMETER_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
    "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb", "headw", "headb"};

// weight decay applies to the embeddings and the Linear weights only
static const int param_decay[NUM_PARAMETER_TENSORS] = {1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0};

static void fill_in_parameter_sizes(long* sizes, GPTConfig c) {
    long V = c.vocab_size, C = c.channels, L = c.num_layers, F = c.ffn;
    long s[NUM_PARAMETER_TENSORS] = {V * C, (long)c.max_seq_len * C, L * C, L * C, L * 3 * C * C, L * 3 * C,
                                     L * C * C, L * C, L * C, L * C, L * F * C, L * F, L * C * F, L * C, C, C, V * C, V};
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) sizes[i] = s[i];
}

// points the tensors of a struct of NUM pointers into one buffer
static void point_tensors(float** ptrs, float* base, const long* sizes, int num) {
    for (int i = 0; i < num; i++) { ptrs[i] = base; base += sizes[i]; }
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for the forward activations kept for backward,
// and the backward pass's scratch

#define NUM_ACTIVATION_TENSORS 32
typedef struct {
    float* encoded;    // (B, T, C)
    float* ln1;        // (L, B, T, C)
    float* ln1_mean;   // (L, B, T)
    float* ln1_rstd;   // (L, B, T)
    float* qkv;        // (L, B, T, 3C)
    float* qkvr;       // (L, 3, B, NH, T, hs)  q, k, v per head
    float* att;        // (L, B, NH, T, T)      softmax probabilities
    float* atty;       // (L, B, T, C)          attention output, heads concatenated
    float* attproj;    // (L, B, T, C)
    float* residual2;  // (L, B, T, C)
    float* ln2;        // (L, B, T, C)
    float* ln2_mean;   // (L, B, T)
    float* ln2_rstd;   // (L, B, T)
    float* fch;        // (L, B, T, F)
    float* fch_gelu;   // (L, B, T, F)
    float* fcproj;     // (L, B, T, C)
    float* residual3;  // (L, B, T, C)
    float* lnf;        // (B, T, C)
    float* lnf_mean;   // (B, T)
    float* lnf_rstd;   // (B, T)
    float* logits;     // (B, T, V)
    float* probs;      // (B, T, V)
    float* losses;     // (B, T)
    // scratch
    float* preatt;     // (B, NH, T, T)
    float* attn_y;     // (B, NH, T, hs)
    float* dresidual;  // (B, T, C)  gradient flowing down the residual stream
    float* dbtc;       // (B, T, C)
    float* dbtf;       // (B, T, F)
    float* dqkv;       // (B, T, 3C)
    float* dqkvr;      // (3, B, NH, T, hs)
    float* datt;       // (B, NH, T, T)
    float* dlogits;    // (B, T, V); also the one-hot scratch of the embedding backward
} ActivationTensors;

static void fill_in_activation_sizes(long* sizes, GPTConfig c, int B, int T) {
    long L = c.num_layers, C = c.channels, F = c.ffn, V = c.vocab_size, NH = c.num_heads;
    long BT = (long)B * T;
    long s[NUM_ACTIVATION_TENSORS] = {
        BT * C, L * BT * C, L * BT, L * BT, L * BT * 3 * C, L * BT * 3 * C, L * B * NH * T * T, L * BT * C,
        L * BT * C, L * BT * C, L * BT * C, L * BT, L * BT, L * BT * F, L * BT * F, L * BT * C, L * BT * C,
        BT * C, BT, BT, BT * V, BT * V, BT,
        B * NH * T * T, BT * C, BT * C, BT * C, BT * F, BT * 3 * C, BT * 3 * C, B * NH * T * T, BT * V};
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) sizes[i] = s[i];
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
    size_t bytes = model->num_parameters * sizeof(float);
    float** buffers[4] = {&model->params_memory, &model->grads_memory, &model->m_memory, &model->v_memory};
    for (float** b : buffers)
        if (cudaMalloc(b, bytes) != cudaSuccess)
            fail("flags -L/-C: %ld parameters need %.1f GiB with gradients and AdamW moments; allocation failed",
                 model->num_parameters, 4.0 * bytes / (1 << 30));
    cudaCheck(cudaMemset(model->m_memory, 0, bytes));
    cudaCheck(cudaMemset(model->v_memory, 0, bytes));
    point_tensors((float**)&model->params, model->params_memory, model->param_sizes, NUM_PARAMETER_TENSORS);
    point_tensors((float**)&model->grads, model->grads_memory, model->param_sizes, NUM_PARAMETER_TENSORS);
    cudaCheck(cudaMalloc(&model->norm_buffer, (NORM_BLOCKS + 2) * sizeof(float)));
    cublasCheck(cublasCreate(&model->cublas));
    model->acts_memory = nullptr;
    model->batch_size = model->seq_len = 0;
}

// GPT-2 style init: N(0, 0.02) weights and embeddings, residual projections
// N(0, 0.02/sqrt(2L)), zero biases, LayerNorm weight 1 and bias 0
static void gpt_init_random(GPT* model, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->num_parameters);
    long off = 0;
    float proj_std = 0.02f / sqrtf(2.0f * model->config.num_layers);
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        const char* name = param_names[i];
        bool is_ln_weight = !strcmp(name, "ln1w") || !strcmp(name, "ln2w") || !strcmp(name, "lnfw");
        bool is_proj = !strcmp(name, "attprojw") || !strcmp(name, "fcprojw");
        for (long j = 0; j < model->param_sizes[i]; j++) {
            float v = 0.0f;
            if (is_ln_weight) v = 1.0f;
            else if (param_decay[i]) v = rng_normal(&rng) * (is_proj ? proj_std : 0.02f);
            host[off + j] = v;
        }
        off += model->param_sizes[i];
    }
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
    if (B > model->batch_size || T > model->seq_len || T > c.max_seq_len) fail("gpt_forward: batch %d x %d exceeds the allocation", B, T);
    int L = c.num_layers, C = c.channels, NH = c.num_heads, F = c.ffn, V = c.vocab_size;
    int BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cudaCheck(cudaMemcpy(model->inputs, inputs, BT * sizeof(int), cudaMemcpyHostToDevice));
    if (targets) cudaCheck(cudaMemcpy(model->targets, targets, BT * sizeof(int), cudaMemcpyHostToDevice));

    { NVTX_RANGE("encoder_forward"); encoder_forward(a.encoded, model->inputs, p.wte, p.wpe, B, T, C); }
    float* residual = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        long btc = (long)BT * C;
        float* ln1 = a.ln1 + l * btc;
        float* ln1_mean = a.ln1_mean + l * BT;
        float* ln1_rstd = a.ln1_rstd + l * BT;
        float* qkv = a.qkv + l * btc * 3;
        float* qkvr = a.qkvr + l * btc * 3;
        float* att = a.att + (long)l * B * NH * T * T;
        float* atty = a.atty + l * btc;
        float* attproj = a.attproj + l * btc;
        float* residual2 = a.residual2 + l * btc;
        float* ln2 = a.ln2 + l * btc;
        float* ln2_mean = a.ln2_mean + l * BT;
        float* ln2_rstd = a.ln2_rstd + l * BT;
        float* fch = a.fch + (long)l * BT * F;
        float* fch_gelu = a.fch_gelu + (long)l * BT * F;
        float* fcproj = a.fcproj + l * btc;
        float* residual3 = a.residual3 + l * btc;
        {
            NVTX_RANGE("ln1_forward");
            layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, p.ln1w + l * C, p.ln1b + l * C, BT, C);
        }
        {
            NVTX_RANGE("attention_forward");
            matmul_forward(model->cublas, qkv, ln1, p.qkvw + (long)l * 3 * C * C, p.qkvb + l * 3 * C, BT, C, 3 * C);
            attention_forward(model->cublas, atty, qkvr, att, a.preatt, a.attn_y, qkv, B, T, C, NH, 1);
            matmul_forward(model->cublas, attproj, atty, p.attprojw + (long)l * C * C, p.attprojb + l * C, BT, C, C);
            residual_forward(residual2, residual, attproj, btc);
        }
        {
            NVTX_RANGE("ln2_forward");
            layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, p.ln2w + l * C, p.ln2b + l * C, BT, C);
        }
        {
            NVTX_RANGE("mlp_forward");
            matmul_forward(model->cublas, fch, ln2, p.fcw + (long)l * F * C, p.fcb + l * F, BT, C, F);
            gelu_forward(fch_gelu, fch, (long)BT * F);
            matmul_forward(model->cublas, fcproj, fch_gelu, p.fcprojw + (long)l * C * F, p.fcprojb + l * C, BT, F, C);
            residual_forward(residual3, residual2, fcproj, btc);
        }
        residual = residual3;
    }
    { NVTX_RANGE("lnf_forward"); layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, residual, p.lnfw, p.lnfb, BT, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(model->cublas, a.logits, a.lnf, p.headw, p.headb, BT, C, V); }
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
    int L = c.num_layers, C = c.channels, NH = c.num_heads, F = c.ffn, V = c.vocab_size;
    int BT = B * T;
    long btc = (long)BT * C;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    cudaCheck(cudaMemset(model->grads_memory, 0, model->num_parameters * sizeof(float)));
    cudaCheck(cudaMemset(a.dresidual, 0, btc * sizeof(float)));

    {
        NVTX_RANGE("head_backward");
        crossentropy_backward(a.dlogits, a.probs, model->targets, 1.0f / BT, BT, V);
        matmul_backward(h, a.dbtc, g.headw, g.headb, a.dlogits, a.lnf, p.headw, model->ones, BT, C, V);
    }
    float* last_residual = L > 0 ? a.residual3 + (L - 1) * btc : a.encoded;
    {
        NVTX_RANGE("lnf_backward");
        layernorm_backward(a.dresidual, g.lnfw, g.lnfb, a.dbtc, last_residual, p.lnfw, a.lnf_mean, a.lnf_rstd, BT, C);
    }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        float* residual = l == 0 ? a.encoded : a.residual3 + (l - 1) * btc;
        float* ln1 = a.ln1 + l * btc;
        float* qkvr = a.qkvr + l * btc * 3;
        float* att = a.att + (long)l * B * NH * T * T;
        float* atty = a.atty + l * btc;
        float* residual2 = a.residual2 + l * btc;
        float* ln2 = a.ln2 + l * btc;
        float* fch = a.fch + (long)l * BT * F;
        float* fch_gelu = a.fch_gelu + (long)l * BT * F;
        {
            NVTX_RANGE("mlp_backward");
            matmul_backward(h, a.dbtf, g.fcprojw + (long)l * C * F, g.fcprojb + l * C, a.dresidual, fch_gelu,
                            p.fcprojw + (long)l * C * F, model->ones, BT, F, C);
            gelu_backward(a.dbtf, fch, a.dbtf, (long)BT * F);
            matmul_backward(h, a.dbtc, g.fcw + (long)l * F * C, g.fcb + l * F, a.dbtf, ln2, p.fcw + (long)l * F * C,
                            model->ones, BT, C, F);
        }
        {
            NVTX_RANGE("ln2_backward");
            layernorm_backward(a.dresidual, g.ln2w + l * C, g.ln2b + l * C, a.dbtc, residual2, p.ln2w + l * C,
                               a.ln2_mean + l * BT, a.ln2_rstd + l * BT, BT, C);
        }
        {
            NVTX_RANGE("attention_backward");
            matmul_backward(h, a.dbtc, g.attprojw + (long)l * C * C, g.attprojb + l * C, a.dresidual, atty,
                            p.attprojw + (long)l * C * C, model->ones, BT, C, C);
            attention_backward(h, a.dqkv, a.dqkvr, a.attn_y, a.datt, a.dbtc, qkvr, att, B, T, C, NH, 1);
            matmul_backward(h, a.dbtc, g.qkvw + (long)l * 3 * C * C, g.qkvb + l * 3 * C, a.dqkv, ln1,
                            p.qkvw + (long)l * 3 * C * C, model->ones, BT, C, 3 * C);
        }
        {
            NVTX_RANGE("ln1_backward");
            layernorm_backward(a.dresidual, g.ln1w + l * C, g.ln1b + l * C, a.dbtc, residual, p.ln1w + l * C,
                               a.ln1_mean + l * BT, a.ln1_rstd + l * BT, BT, C);
        }
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
// sampling: generate text from a starting token, one token at a time

// prints the prompt, then `length` sampled tokens
static void gpt_sample(GPT* model, const Vocab* vocab, const std::vector<int>& prompt, int length, float temperature,
                       int top_k, Rng* rng) {
    NVTX_RANGE("sample");
    int V = model->config.vocab_size, maxT = model->seq_len;
    std::vector<int> tokens = prompt;
    std::vector<float> logits(V);
    printf("---\n");
    for (int t : tokens) printf("%s", vocab->text[t].c_str());
    for (int i = 0; i < length; i++) {
        int n = (int)tokens.size();
        int T = n < maxT ? n : maxT;  // the model sees the last T tokens
        gpt_forward(model, tokens.data() + (n - T), nullptr, 1, T);
        cudaCheck(cudaMemcpy(logits.data(), model->acts.logits + (long)(T - 1) * V, V * sizeof(float), cudaMemcpyDeviceToHost));
        int next = sample_token(logits.data(), V, temperature, top_k, rng);
        tokens.push_back(next);
        printf("%s", vocab->text[next].c_str());
        fflush(stdout);
    }
    printf("\n---\n");
}

// mean loss over the first max_batches validation batches
static float gpt_validate(GPT* model, const TokenData* val, int B, int T, int max_batches) {
    NVTX_RANGE("validate");
    int n = token_data_num_val_batches(val, B, T);
    if (max_batches > 0 && max_batches < n) n = max_batches;
    std::vector<int> inputs((long)B * T), targets((long)B * T);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        token_data_val_batch(val, i, B, T, inputs.data(), targets.data());
        gpt_forward(model, inputs.data(), targets.data(), B, T);
        sum += model->mean_loss;
    }
    return (float)(sum / n);
}

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
    AdamWConfig opt = {tc.lr, 0.9f, 0.99f, 1e-8f, tc.weight_decay, tc.grad_clip};

    TokenData train, val;
    Vocab vocab;
    load_lm_data(&tc, &train, &val, &vocab);
    std::vector<int> prompt = tokenize_prompt(&vocab, tc.prompt);

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

    Rng train_rng, sample_rng;
    rng_seed(&train_rng, tc.seed);
    rng_seed(&sample_rng, tc.seed + 1);
    int start_step = 0;
    if (tc.out_dir && !tc.generate_only) make_dir_or_fail(tc.out_dir);
    if (tc.resume)
        start_step = resume_from_checkpoint(&tc, MODEL_GPT, model.config_slots, gpt_slot_names, model.params_memory,
                                            model.m_memory, model.v_memory, &train_rng, &sample_rng);
    if (tc.generate_only) {
        gpt_sample(&model, &vocab, prompt, tc.gen_tokens, tc.temperature, tc.top_k, &sample_rng);
        gpt_free(&model);
        return 0;
    }

    printf("backend %s | GPT L %d C %d H %d F %d | vocab %d | max T %d | %ld parameters\n", BACKEND_NAME,
           config.num_layers, config.channels, config.num_heads, config.ffn, config.vocab_size, config.max_seq_len,
           model.num_parameters);
    printf("batch %d x %d | steps %d | lr %g warmup %d final x%g | wd %g | clip %g | train %ld tokens, val %ld\n",
           B, T, tc.max_steps, opt.lr, tc.warmup, tc.final_frac, opt.weight_decay, opt.grad_clip, train.num_tokens, val.num_tokens);

    Logger logger;
    logger_open(&logger, tc.out_dir, start_step);
    std::vector<int> inputs((long)B * T), targets((long)B * T);
    double run_start = host_clock(), train_seconds = 0.0;
    float last_val = NAN;
    for (int step = start_step; step <= tc.max_steps; step++) {
        bool last = step == tc.max_steps;
        if ((tc.val_every > 0 && step % tc.val_every == 0) || last) {
            last_val = gpt_validate(&model, &val, B, T, tc.val_batches);
            printf("val loss %f\n", last_val);
            log_eval(&logger, step, "val_loss", last_val, host_clock() - run_start);
        }
        if ((tc.sample_every > 0 && step > 0 && step % tc.sample_every == 0) || last) {
            if (tc.gen_tokens > 0) gpt_sample(&model, &vocab, prompt, tc.gen_tokens, tc.temperature, tc.top_k, &sample_rng);
        }
        if (tc.out_dir && step > start_step && ((tc.checkpoint_every > 0 && step % tc.checkpoint_every == 0) || last))
            save_checkpoint(&tc, MODEL_GPT, model.config_slots, step, &train_rng, &sample_rng, model.params_memory,
                            model.m_memory, model.v_memory);
        if (last) break;

        NVTX_RANGE("step");
        double t0 = host_clock();
        token_data_train_batch(&train, &train_rng, B, T, inputs.data(), targets.data());
        gpt_forward(&model, inputs.data(), targets.data(), B, T);
        gpt_backward(&model, B, T);
        float lr = learning_rate(opt.lr, step, tc.warmup, tc.max_steps, tc.final_frac);
        float norm = gpt_update(&model, &opt, lr, step + 1);
        cudaCheck(cudaDeviceSynchronize());
        check_finite(&tc, step + 1, model.mean_loss, norm);
        double seconds = host_clock() - t0;
        train_seconds += seconds;
        print_step(step + 1, start_step, tc.max_steps, model.mean_loss, lr, norm, seconds, B * T, "tok/s", train_seconds);
        log_train(&logger, step + 1, model.mean_loss, lr, norm, "tokens_per_s", B * T / seconds, host_clock() - run_start);
    }
    logger_close(&logger);
    if (tc.out_dir) {
        std::string path = std::string(tc.out_dir) + "/model.bin";
        model_file_save(path.c_str(), MODEL_GPT, model.config_slots, model.params_memory);
        printf("wrote %s\n", path.c_str());
    }
    printf("final val loss %f\n", last_val);
    gpt_free(&model);
    return 0;
}
#endif

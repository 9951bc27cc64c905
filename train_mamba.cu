/*
Char-level Mamba on tinyshakespeare: the whole trainer, top to bottom.

  config -> parameters (one flat buffer) -> activations (one flat buffer)
  -> forward -> backward -> AdamW update -> data -> main loop

The model (as dev/reference/mamba.py defines it, after the seed write-up):
token embedding (V,C); L blocks x = LN(x + Mamba(x)) (post-norm); a final
LayerNorm; a head Linear(C, V) with bias. No positions. Loss: mean
cross-entropy. Mamba(x) is mamba_ssm's Mamba(d_model=C, d_state=16,
d_conv=4, expand=2), E = 2C, R = ceil(C/16):
  xz = in_proj(x) (2E) -> x, z;  u = silu(causal depthwise conv1d(x))
  (dt_raw, B, C) = x_proj(u);  dt = softplus(dt_proj(dt_raw))
  y = selective_scan(u, dt, A = -exp(A_log), B, C, D);  out = out_proj(y * silu(z))
Kernels live in llmc/; this file only arranges them.

Build with `make train_mamba` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/encoder.cuh"
#include "llmc/layernorm.cuh"
#include "llmc/matmul.cuh"
#include "llmc/mamba_block.cuh"
#include "llmc/crossentropy.cuh"
#include "llmc/adamw.cuh"
#include "llmc/trainer.h"

#include <string>
#include <vector>

// ----------------------------------------------------------------------------
// config

typedef struct {
    int vocab_size;  // V
    int num_layers;  // L
    int channels;    // C (d_model)
    int inner;       // E = expand * C
    int d_state;     // N
    int dt_rank;     // R = ceil(C / 16)
} MambaConfig;

static const char* const mamba_slot_names[CONFIG_SLOTS] = {"vocab_size", "num_layers", "channels", "inner",
                                                           "d_state", "dt_rank", "num_params"};

static MambaDims dims_of(MambaConfig c) {
    MambaDims d = {c.channels, c.inner, c.d_state, c.dt_rank};
    return d;
}

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (the blocks' stacked over L)

#define NUM_PARAMETER_TENSORS (1 + MAMBA_STACK_PARAMS + 4)
typedef struct {
    float* wte;              // (V, C)
    MambaStackParams tower;  // the L blocks: in_proj_w .. ln_b, see llmc/mamba_block.cuh
    float* lnf_w;            // (C)
    float* lnf_b;            // (C)
    float* head_w;           // (V, C)
    float* head_b;           // (V)
} ParameterTensors;

[[maybe_unused]] static const char* const param_names[NUM_PARAMETER_TENSORS] = {
    "wte", "in_proj_w", "conv_w", "conv_b", "x_proj_w", "dt_proj_w", "dt_proj_b", "A_log",
    "D", "out_proj_w", "ln_w", "ln_b", "lnf_w", "lnf_b", "head_w", "head_b"};

// weight decay: the embedding, the blocks' weights (mamba_stack_param_decay) and the head's
static int param_decay[NUM_PARAMETER_TENSORS];

static void fill_in_parameter_sizes(long* sizes, MambaConfig c) {
    long V = c.vocab_size, C = c.channels;
    sizes[0] = V * C;
    mamba_stack_param_sizes(sizes + 1, c.num_layers, dims_of(c));
    long tail[4] = {C, C, V * C, V};
    for (int i = 0; i < 4; i++) sizes[1 + MAMBA_STACK_PARAMS + i] = tail[i];
    int decay_tail[4] = {0, 0, 1, 0};
    param_decay[0] = 1;
    for (int i = 0; i < MAMBA_STACK_PARAMS; i++) param_decay[1 + i] = mamba_stack_param_decay[i];
    for (int i = 0; i < 4; i++) param_decay[1 + MAMBA_STACK_PARAMS + i] = decay_tail[i];
}

// points the tensors of a struct of float pointers into one buffer
static void point_tensors(float** ptrs, float* base, const long* sizes, int num) {
    for (int i = 0; i < num; i++) { ptrs[i] = base; base += sizes[i]; }
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for what backward needs, and scratch

#define NUM_ACTIVATION_TENSORS (1 + MAMBA_STACK_ACTS + 6 + 1 + MAMBA_SCRATCH + 3)
typedef struct {
    float* encoded;         // (B, T, C)
    MambaStackActs tower;   // the L blocks' activations, see llmc/mamba_block.cuh
    float* lnf;             // (B, T, C)
    float* lnf_mean;        // (B, T)
    float* lnf_rstd;        // (B, T)
    float* logits;          // (B, T, V)
    float* probs;           // (B, T, V)
    float* losses;          // (B, T)
    // scratch
    float* dresidual;       // (B, T, C)  gradient w.r.t. the current block's output
    MambaScratch block;     // the blocks' backward scratch
    float* dres;            // (B, T, C)  ... and w.r.t. its input
    float* dbtc;            // (B, T, C)
    float* dlogits;         // (B, T, V); also the one-hot scratch of the embedding backward
} ActivationTensors;

static void fill_in_activation_sizes(long* sizes, MambaConfig c, int B, int T) {
    long C = c.channels, V = c.vocab_size, BT = (long)B * T;
    long* s = sizes;
    *s++ = BT * C;
    mamba_stack_act_sizes(s, c.num_layers, B, T, dims_of(c));
    s += MAMBA_STACK_ACTS;
    long mid[7] = {BT * C, BT, BT, BT * V, BT * V, BT, BT * C};
    for (long x : mid) *s++ = x;
    mamba_scratch_sizes(s, B, T, dims_of(c));
    s += MAMBA_SCRATCH;
    *s++ = BT * C;
    *s++ = BT * C;
    *s++ = BT * V;
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    MambaConfig config;
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
    float* norm_buffer;       // device, global-norm scratch
    std::vector<float> host_losses;
    float mean_loss;          // of the last forward with targets
    cublasHandle_t cublas;
} Mamba;

static MambaConfig mamba_config(int V, int L, int C, int N) {
    MambaDims d = mamba_dims(C, N);
    MambaConfig c = {V, L, C, d.E, N, d.R};
    return c;
}

static void mamba_build(Mamba* model, MambaConfig c) {
    scan_check_limits(c.d_state);
    model->config = c;
    fill_in_parameter_sizes(model->param_sizes, c);
    model->num_parameters = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) model->num_parameters += model->param_sizes[i];
    if (model->num_parameters > 2147483647L) fail("flags -L/-C: the model would have %ld parameters, more than 2^31 - 1", model->num_parameters);
    int slots[CONFIG_SLOTS] = {c.vocab_size, c.num_layers, c.channels, c.inner, c.d_state, c.dt_rank,
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

// mamba_ssm's initialization for the blocks (mamba_stack_init), PyTorch's
// defaults elsewhere: embedding N(0, 1), head U(+-1/sqrt(C)), LayerNorm 1 and 0
static void mamba_init_random(Mamba* model, uint64_t seed) {
    MambaConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->num_parameters);
    ParameterTensors p;  // pointers into the host copy
    point_tensors((float**)&p, host.data(), model->param_sizes, NUM_PARAMETER_TENSORS);
    long V = c.vocab_size, C = c.channels;
    for (long i = 0; i < V * C; i++) p.wte[i] = rng_normal(&rng);
    mamba_stack_init(p.tower, c.num_layers, dims_of(c), &rng);
    for (long i = 0; i < C; i++) { p.lnf_w[i] = 1.0f; p.lnf_b[i] = 0.0f; }
    for (long i = 0; i < V * C; i++) p.head_w[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    for (long i = 0; i < V; i++) p.head_b[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    cudaCheck(cudaMemcpy(model->params_memory, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
}

static void mamba_allocate_activations(Mamba* model, int B, int T) {
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

static void mamba_forward(Mamba* model, const int* inputs, const int* targets, int B, int T) {
    NVTX_RANGE("forward");
    MambaConfig c = model->config;
    MambaDims d = dims_of(c);
    if (B > model->batch_size || T > model->seq_len) fail("mamba_forward: batch %d x %d exceeds the allocation", B, T);
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    cudaCheck(cudaMemcpy(model->inputs, inputs, BT * sizeof(int), cudaMemcpyHostToDevice));
    if (targets) cudaCheck(cudaMemcpy(model->targets, targets, BT * sizeof(int), cudaMemcpyHostToDevice));

    { NVTX_RANGE("encoder_forward"); encoder_forward(a.encoded, model->inputs, p.wte, nullptr, B, T, C); }
    const float* x = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        MambaStackActs la = mamba_layer_acts(a.tower, l, B, T, d);
        mamba_block_forward(h, mamba_layer_params(p.tower, l, d), la, x, B, T, d);
        x = la.ln;
    }
    { NVTX_RANGE("lnf_forward"); layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, x, p.lnf_w, p.lnf_b, BT, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.lnf, p.head_w, p.head_b, BT, C, V); }
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

static void mamba_backward(Mamba* model, int B, int T) {
    NVTX_RANGE("backward");
    MambaConfig c = model->config;
    MambaDims d = dims_of(c);
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    cudaCheck(cudaMemset(model->grads_memory, 0, model->num_parameters * sizeof(float)));

    {
        NVTX_RANGE("head_backward");
        crossentropy_backward(a.dlogits, a.probs, model->targets, 1.0f / BT, BT, V);
        matmul_backward(h, a.dbtc, g.head_w, g.head_b, a.dlogits, a.lnf, p.head_w, model->ones, BT, C, V);
    }
    float* dout = a.dresidual;  // gradient w.r.t. the current block's output
    float* din = a.dres;        // ... and w.r.t. its input
    auto block_output = [&](int l) -> const float* { return l < 0 ? a.encoded : mamba_layer_acts(a.tower, l, B, T, d).ln; };
    {
        NVTX_RANGE("lnf_backward");
        cudaCheck(cudaMemset(dout, 0, (long)BT * C * sizeof(float)));
        layernorm_backward(dout, g.lnf_w, g.lnf_b, a.dbtc, block_output(L - 1), p.lnf_w, a.lnf_mean, a.lnf_rstd, BT, C);
    }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        mamba_block_backward(h, din, dout, block_output(l - 1), mamba_layer_params(p.tower, l, d),
                             mamba_layer_params(g.tower, l, d), mamba_layer_acts(a.tower, l, B, T, d), a.block,
                             model->ones, B, T, d);
        float* t = dout; dout = din; din = t;
    }
    {
        NVTX_RANGE("encoder_backward");
        encoder_backward(h, g.wte, nullptr, a.dlogits, dout, model->inputs, B, T, C, V);
    }
}

static float mamba_update(Mamba* model, const AdamWConfig* o, float lr, int t) {
    NVTX_RANGE("update");
    return clip_and_adamw(model->params_memory, model->m_memory, model->v_memory, model->grads_memory,
                          model->param_sizes, param_decay, NUM_PARAMETER_TENSORS, model->norm_buffer, o, lr, t);
}

static void mamba_free(Mamba* model) {
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

static void lm_forward(Mamba* m, const int* inputs, const int* targets, int B, int T) { mamba_forward(m, inputs, targets, B, T); }
static void lm_backward(Mamba* m, int B, int T) { mamba_backward(m, B, T); }
static float lm_update(Mamba* m, const AdamWConfig* o, float lr, int t) { return mamba_update(m, o, lr, t); }

// ----------------------------------------------------------------------------
// main

#ifndef TESTING
int main(int argc, char** argv) {
    TrainConfig tc = default_lm_config();
    tc.L = 5; tc.C = 256;
    parse_train_flags(argc, argv, &tc,
                      "  -L <int>    layers (default 5)\n"
                      "  -C <int>    channels, d_model (default 256; inner width 2C, d_state 16, dt rank ceil(C/16))\n",
                      "LC");
    int B = tc.B, T = tc.T;

    TokenData train, val;
    Vocab vocab;
    load_lm_data(&tc, &train, &val, &vocab);

    MambaConfig config = mamba_config(vocab.size, tc.L, tc.C, 16);
    if (tc.init_path) {  // the model file decides the shape
        int kind, s[CONFIG_SLOTS];
        model_file_peek(tc.init_path, &kind, s);
        if (kind != MODEL_MAMBA) fail("%s: holds a model of kind %d, not a Mamba LM (kind %d)", tc.init_path, kind, MODEL_MAMBA);
        config = {s[0], s[1], s[2], s[3], s[4], s[5]};
        if (config.vocab_size != vocab.size) fail("%s: vocabulary of %d tokens, but %s has %d", tc.init_path, config.vocab_size, tc.vocab_path, vocab.size);
    }
    Mamba model;
    mamba_build(&model, config);
    if (tc.init_path) model_file_load(tc.init_path, MODEL_MAMBA, model.config_slots, mamba_slot_names, model.params_memory);
    else mamba_init_random(&model, tc.seed);
    mamba_allocate_activations(&model, B, T);
    cublasCheck(cublasSetMathMode(model.cublas, CUBLAS_TF32_TENSOR_OP_MATH));

    printf("backend %s | Mamba L %d C %d E %d N %d R %d | vocab %d | %ld parameters | scan %s\n", BACKEND_NAME,
           config.num_layers, config.channels, config.inner, config.d_state, config.dt_rank, config.vocab_size,
           model.num_parameters, scan_use_chunked ? "chunked parallel" : "sequential");
    int status = lm_run(&model, &tc, MODEL_MAMBA, mamba_slot_names, &train, &val, &vocab);
    mamba_free(&model);
    return status;
}
#endif

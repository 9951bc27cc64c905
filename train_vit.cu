/*
ViT on CIFAR-10 from 4x4 patches: the whole trainer, top to bottom.

  config -> parameters (one flat buffer) -> activations (one flat buffer)
  -> forward -> backward -> AdamW update -> data -> main loop

The model (as dev/reference/vit.py defines it): images (B, 3, 32, 32) ->
patches 'b c (h p1) (w p2) -> b (h w) (c p1 p2)' (B, T, PD) with T = 64,
PD = 48 for patch 4 -> LN(PD) -> Linear(PD, C) -> LN(C) -> + learned
positions (T, C); L pre-norm encoder blocks x = x + Dropout(attn(LN1(x))),
x = x + Dropout(mlp(LN2(x))) with non-causal 4-head attention and an MLP
C -> F -> C with GELU (dropout on each residual branch, after the attention
projection and after the MLP); a final LayerNorm; the mean over the T
tokens; a head Linear(C, K). Loss: mean cross-entropy over the batch.
Kernels live in llmc/; this file only arranges them.

Build with `make train_vit` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/layernorm.cuh"
#include "llmc/matmul.cuh"
#include "llmc/transformer_block.cuh"
#include "llmc/vision.cuh"
#include "llmc/crossentropy.cuh"
#include "llmc/adamw.cuh"
#include "llmc/trainer.h"
#include "llmc/vision_trainer.h"
#include "llmc/logger.h"

#include <string>
#include <vector>

// ----------------------------------------------------------------------------
// config

typedef struct {
    int patch;        // P: patch size; images are 3 x 32 x 32
    int num_classes;  // K
    int num_layers;   // L
    int num_heads;    // NH
    int channels;     // C
    int ffn;          // F: hidden width of the MLP
} ViTConfig;

// the seven config slots of model files and checkpoints
static const char* const vit_slot_names[CONFIG_SLOTS] = {"patch_size", "num_classes", "num_layers", "num_heads",
                                                         "channels", "ffn", "num_params"};

static TransformerDims dims_of(ViTConfig c) {
    TransformerDims d = {c.channels, c.num_heads, c.ffn};
    return d;
}
static int tokens_of(ViTConfig c) { return (VISION_SIZE / c.patch) * (VISION_SIZE / c.patch); }  // T
static int patch_dim_of(ViTConfig c) { return VISION_CHANNELS * c.patch * c.patch; }              // PD

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (the blocks' stacked over L)

#define NUM_PARAMETER_TENSORS (7 + TRANSFORMER_STACK_PARAMS + 4)
typedef struct {
    float* patch_lnw;              // (PD)
    float* patch_lnb;              // (PD)
    float* patch_w;                // (C, PD)
    float* patch_b;                // (C)
    float* embed_lnw;              // (C)
    float* embed_lnb;              // (C)
    float* wpe;                    // (T, C)
    TransformerStackParams tower;  // the L blocks: ln1w .. fcprojb, see llmc/transformer_block.cuh
    float* lnfw;                   // (C)
    float* lnfb;                   // (C)
    float* headw;                  // (K, C)
    float* headb;                  // (K)
} ParameterTensors;

[[maybe_unused]] static const char* const param_names[NUM_PARAMETER_TENSORS] = {
    "patch_lnw", "patch_lnb", "patch_w", "patch_b", "embed_lnw", "embed_lnb", "wpe",
    "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb",
    "lnfw", "lnfb", "headw", "headb"};

// weight decay applies to the positions and the Linear weights only
static const int param_decay[NUM_PARAMETER_TENSORS] = {0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0,
                                                       0, 0, 1, 0};

static void fill_in_parameter_sizes(long* sizes, ViTConfig c) {
    long C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c);
    long head[7] = {PD, PD, C * PD, C, C, C, T * C};
    for (int i = 0; i < 7; i++) sizes[i] = head[i];
    transformer_stack_param_sizes(sizes + 7, c.num_layers, dims_of(c));
    long tail[4] = {C, C, K * C, K};
    for (int i = 0; i < 4; i++) sizes[7 + TRANSFORMER_STACK_PARAMS + i] = tail[i];
}

// points the tensors of a struct of float pointers into one buffer
static void point_tensors(float** ptrs, float* base, const long* sizes, int num) {
    for (int i = 0; i < num; i++) { ptrs[i] = base; base += sizes[i]; }
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for the forward activations kept for backward,
// and the scratch of both passes

#define NUM_ACTIVATION_TENSORS (11 + TRANSFORMER_STACK_ACTS + 7 + TRANSFORMER_SCRATCH + 7)
typedef struct {
    float* images;               // (B, 3, 32, 32)  the batch, floats in [0, 1]
    float* images_tmp;           // (B, 3, 32, 32)  augmentation's second buffer
    float* patches;              // (B, T, PD)
    float* patch_ln;             // (B, T, PD)
    float* patch_ln_mean;        // (B, T)
    float* patch_ln_rstd;        // (B, T)
    float* embed;                // (B, T, C)
    float* embed_ln;             // (B, T, C)
    float* embed_ln_mean;        // (B, T)
    float* embed_ln_rstd;        // (B, T)
    float* encoded;              // (B, T, C)  embed_ln + positions
    TransformerStackActs tower;  // the L blocks' activations, see llmc/transformer_block.cuh
    float* lnf;                  // (B, T, C)
    float* lnf_mean;             // (B, T)
    float* lnf_rstd;             // (B, T)
    float* pooled;               // (B, C)
    float* logits;               // (B, K)
    float* probs;                // (B, K)
    float* losses;               // (B)
    // scratch
    TransformerScratch block;    // the blocks' scratch
    float* dresidual;            // (B, T, C)  gradient flowing down the residual stream
    float* dbranch;              // (B, T, C)  a residual branch's gradient after dropout
    float* dembed;               // (B, T, C)
    float* dpatch_ln;            // (B, T, PD)
    float* dpatches;             // (B, T, PD) (unused: the images need no gradient)
    float* dpooled;              // (B, C)
    float* dlogits;              // (B, K)
} ActivationTensors;

static void fill_in_activation_sizes(long* sizes, ViTConfig c, int B) {
    long C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c), BT = (long)B * T;
    long img = (long)B * VISION_CHANNELS * VISION_SIZE * VISION_SIZE;
    long* s = sizes;
    long head[11] = {img, img, BT * PD, BT * PD, BT, BT, BT * C, BT * C, BT, BT, BT * C};
    for (long x : head) *s++ = x;
    transformer_stack_act_sizes(s, c.num_layers, B, T, dims_of(c));
    s += TRANSFORMER_STACK_ACTS;
    long mid[7] = {BT * C, BT, BT, B * C, B * K, B * K, B};
    for (long x : mid) *s++ = x;
    transformer_scratch_sizes(s, B, T, dims_of(c));
    s += TRANSFORMER_SCRATCH;
    long tail[7] = {BT * C, BT * C, BT * C, BT * PD, BT * PD, B * C, B * K};
    for (long x : tail) *s++ = x;
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    ViTConfig config;
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
    int batch_size;           // what the activations were sized for
    int* targets;             // device (B)
    float* ones;              // device, B*T ones (bias gradients)
    float* norm_buffer;       // device, global-norm scratch: norm, scale, partials
    std::vector<float> host_losses;
    float mean_loss;          // of the last forward with targets
    float dropout;            // rate at training steps
    uint64_t dropout_seed;    // masks are a hash of (seed, step, layer, branch, element)
    float fwd_dropout;        // what the last forward used (0: none), for the backward
    int fwd_step;
    cublasHandle_t cublas;
} ViT;

static void vit_build(ViT* model, ViTConfig c) {
    if (c.channels % c.num_heads != 0) fail("flag -C/-H: channels %d are not divisible by heads %d", c.channels, c.num_heads);
    model->config = c;
    fill_in_parameter_sizes(model->param_sizes, c);
    model->num_parameters = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) model->num_parameters += model->param_sizes[i];
    if (model->num_parameters > 2147483647L) fail("flags -L/-C: the model would have %ld parameters, more than 2^31 - 1", model->num_parameters);
    int slots[CONFIG_SLOTS] = {c.patch, c.num_classes, c.num_layers, c.num_heads, c.channels, c.ffn,
                               (int)model->num_parameters};
    memcpy(model->config_slots, slots, sizeof(slots));
    allocate_parameter_buffers(model->num_parameters, &model->params_memory, &model->grads_memory, &model->m_memory,
                               &model->v_memory, &model->norm_buffer);
    point_tensors((float**)&model->params, model->params_memory, model->param_sizes, NUM_PARAMETER_TENSORS);
    point_tensors((float**)&model->grads, model->grads_memory, model->param_sizes, NUM_PARAMETER_TENSORS);
    cublasCheck(cublasCreate(&model->cublas));
    model->acts_memory = nullptr;
    model->batch_size = 0;
    model->dropout = 0.0f;
    model->dropout_seed = 0;
    model->fwd_dropout = 0.0f;
    model->fwd_step = -1;
}

// LayerNorms 1 and 0; the patch embedding and the head as PyTorch's Linear
// default (the seed's), U(+-1/sqrt(fan_in)) for weight and bias; positions
// N(0, 0.02); the blocks as transformer_stack_init (GPT-2's)
static void vit_init_random(ViT* model, uint64_t seed) {
    ViTConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->num_parameters, 0.0f);
    ParameterTensors p;  // pointers into the host copy
    point_tensors((float**)&p, host.data(), model->param_sizes, NUM_PARAMETER_TENSORS);
    long C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c);
    float bound = 1.0f / sqrtf((float)PD);
    for (long i = 0; i < PD; i++) p.patch_lnw[i] = 1.0f;
    for (long i = 0; i < C * PD; i++) p.patch_w[i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
    for (long i = 0; i < C; i++) p.patch_b[i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
    for (long i = 0; i < C; i++) p.embed_lnw[i] = 1.0f;
    for (long i = 0; i < T * C; i++) p.wpe[i] = rng_normal(&rng) * 0.02f;
    // the blocks' Linear layers as PyTorch's default: weight and bias U(+-1/sqrt(fan_in)); LayerNorms 1 and 0
    long F = c.ffn, L = c.num_layers;
    TransformerStackParams& w = p.tower;
    struct { float* weight; float* bias; long n_weight, n_bias, fan_in; } linears[4] = {
        {w.qkvw, w.qkvb, L * 3 * C * C, L * 3 * C, C}, {w.attprojw, w.attprojb, L * C * C, L * C, C},
        {w.fcw, w.fcb, L * F * C, L * F, C}, {w.fcprojw, w.fcprojb, L * C * F, L * C, F}};
    for (auto& lin : linears) {
        float b = 1.0f / sqrtf((float)lin.fan_in);
        for (long i = 0; i < lin.n_weight; i++) lin.weight[i] = (2.0f * rng_uniform(&rng) - 1.0f) * b;
        for (long i = 0; i < lin.n_bias; i++) lin.bias[i] = (2.0f * rng_uniform(&rng) - 1.0f) * b;
    }
    for (long i = 0; i < L * C; i++) { w.ln1w[i] = 1.0f; w.ln2w[i] = 1.0f; }
    for (long i = 0; i < C; i++) p.lnfw[i] = 1.0f;
    for (long i = 0; i < K * C; i++) p.headw[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    for (long i = 0; i < K; i++) p.headb[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    cudaCheck(cudaMemcpy(model->params_memory, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
}

// sizes the activations for batches up to B images
static void vit_allocate_activations(ViT* model, int B) {
    int T = tokens_of(model->config);
    fill_in_activation_sizes(model->act_sizes, model->config, B);
    long total = 0;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) total += model->act_sizes[i];
    cudaError_t e = cudaMalloc(&model->acts_memory, total * sizeof(float));
    if (e != cudaSuccess)
        fail("flags -b/-B: batch %d needs %.1f GiB of activations, allocation failed (%s)", B, total * 4.0 / (1 << 30),
             cudaGetErrorString(e));
    point_tensors((float**)&model->acts, model->acts_memory, model->act_sizes, NUM_ACTIVATION_TENSORS);
    cudaCheck(cudaMalloc(&model->targets, (long)B * sizeof(int)));
    cudaCheck(cudaMalloc(&model->ones, (long)B * T * sizeof(float)));
    fill(model->ones, 1.0f, (long)B * T);
    model->host_losses.resize(B);
    model->batch_size = B;
}

// ----------------------------------------------------------------------------
// forward: logits for images (B, 3, 32, 32) (device); with labels (host),
// also the mean loss. train_step >= 0: a training step (dropout on, its masks
// keyed by the step); -1: evaluation (no dropout).

static void vit_forward(ViT* model, const float* images, const int* labels, int B, int train_step) {
    NVTX_RANGE("forward");
    ViTConfig c = model->config;
    TransformerDims d = dims_of(c);
    if (B > model->batch_size) fail("vit_forward: batch %d exceeds the allocation", B);
    int L = c.num_layers, C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c), BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    float drop = train_step >= 0 ? model->dropout : 0.0f;
    model->fwd_dropout = drop;
    model->fwd_step = train_step;
    if (labels) cudaCheck(cudaMemcpy(model->targets, labels, B * sizeof(int), cudaMemcpyHostToDevice));

    {
        NVTX_RANGE("patch_embed_forward");
        patchify(a.patches, images, B, VISION_CHANNELS, VISION_SIZE, VISION_SIZE, c.patch);
        layernorm_forward(a.patch_ln, a.patch_ln_mean, a.patch_ln_rstd, a.patches, p.patch_lnw, p.patch_lnb, BT, PD);
        matmul_forward(h, a.embed, a.patch_ln, p.patch_w, p.patch_b, BT, PD, C);
        layernorm_forward(a.embed_ln, a.embed_ln_mean, a.embed_ln_rstd, a.embed, p.embed_lnw, p.embed_lnb, BT, C);
        add_positions(a.encoded, a.embed_ln, p.wpe, B, T, C);
    }
    const float* x = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        TransformerStackActs la = transformer_layer_acts(a.tower, l, B, T, d);
        vit_block_forward(h, transformer_layer_params(p.tower, l, d), la, a.block, x, B, T, d, drop,
                          vit_dropout_key(model->dropout_seed, train_step, l, 0),
                          vit_dropout_key(model->dropout_seed, train_step, l, 1));
        x = la.residual3;
    }
    { NVTX_RANGE("lnf_forward"); layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, x, p.lnfw, p.lnfb, BT, C); }
    { NVTX_RANGE("pool_forward"); mean_pool_forward(a.pooled, a.lnf, B, T, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.pooled, p.headw, p.headb, B, C, K); }
    if (labels) {
        NVTX_RANGE("crossentropy_forward");
        crossentropy_forward(a.losses, a.probs, a.logits, model->targets, B, K);
        cudaCheck(cudaMemcpy(model->host_losses.data(), a.losses, B * sizeof(float), cudaMemcpyDeviceToHost));
        double sum = 0.0;
        for (int i = 0; i < B; i++) sum += model->host_losses[i];
        model->mean_loss = (float)(sum / B);
    }
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last forward (with labels)

static void vit_backward(ViT* model, int B) {
    NVTX_RANGE("backward");
    ViTConfig c = model->config;
    TransformerDims d = dims_of(c);
    int L = c.num_layers, C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c), BT = B * T;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    float drop = model->fwd_dropout;
    cudaCheck(cudaMemset(model->grads_memory, 0, model->num_parameters * sizeof(float)));
    auto block_output = [&](int l) -> const float* { return l < 0 ? a.encoded : transformer_layer_acts(a.tower, l, B, T, d).residual3; };
    {
        NVTX_RANGE("head_backward");
        crossentropy_backward(a.dlogits, a.probs, model->targets, 1.0f / B, B, K);
        matmul_backward(h, a.dpooled, g.headw, g.headb, a.dlogits, a.pooled, p.headw, model->ones, B, C, K);
    }
    { NVTX_RANGE("pool_backward"); mean_pool_backward(a.block.dbtc, a.dpooled, B, T, C); }
    {
        NVTX_RANGE("lnf_backward");
        cudaCheck(cudaMemset(a.dresidual, 0, (long)BT * C * sizeof(float)));
        layernorm_backward(a.dresidual, g.lnfw, g.lnfb, a.block.dbtc, block_output(L - 1), p.lnfw, a.lnf_mean,
                           a.lnf_rstd, BT, C);
    }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        vit_block_backward(h, a.dresidual, a.dbranch, block_output(l - 1), transformer_layer_params(p.tower, l, d),
                           transformer_layer_params(g.tower, l, d), transformer_layer_acts(a.tower, l, B, T, d),
                           a.block, model->ones, B, T, d, drop,
                           vit_dropout_key(model->dropout_seed, model->fwd_step, l, 0),
                           vit_dropout_key(model->dropout_seed, model->fwd_step, l, 1));
    }
    {
        NVTX_RANGE("patch_embed_backward");  // a.dresidual is now the gradient w.r.t. encoded = embed_ln + wpe
        positions_backward(g.wpe, a.dresidual, B, T, C);
        cudaCheck(cudaMemset(a.dembed, 0, (long)BT * C * sizeof(float)));
        layernorm_backward(a.dembed, g.embed_lnw, g.embed_lnb, a.dresidual, a.embed, p.embed_lnw, a.embed_ln_mean,
                           a.embed_ln_rstd, BT, C);
        matmul_backward(h, a.dpatch_ln, g.patch_w, g.patch_b, a.dembed, a.patch_ln, p.patch_w, model->ones, BT, PD, C);
        cudaCheck(cudaMemset(a.dpatches, 0, (long)BT * PD * sizeof(float)));
        layernorm_backward(a.dpatches, g.patch_lnw, g.patch_lnb, a.dpatch_ln, a.patches, p.patch_lnw, a.patch_ln_mean,
                           a.patch_ln_rstd, BT, PD);
    }
}

// ----------------------------------------------------------------------------
// update: global-norm clipping, then AdamW per tensor (weight decay per tensor)

// returns the gradient norm before clipping; t is the 1-based step
static float vit_update(ViT* model, const AdamWConfig* o, float lr, int t) {
    NVTX_RANGE("update");
    return clip_and_adamw(model->params_memory, model->m_memory, model->v_memory, model->grads_memory,
                          model->param_sizes, param_decay, NUM_PARAMETER_TENSORS, model->norm_buffer, o, lr, t);
}

static void vit_free(ViT* model) {
    cudaCheck(cudaFree(model->params_memory));
    cudaCheck(cudaFree(model->grads_memory));
    cudaCheck(cudaFree(model->m_memory));
    cudaCheck(cudaFree(model->v_memory));
    cudaCheck(cudaFree(model->acts_memory));
    cudaCheck(cudaFree(model->targets));
    cudaCheck(cudaFree(model->ones));
    cudaCheck(cudaFree(model->norm_buffer));
    cublasCheck(cublasDestroy(model->cublas));
}

// ----------------------------------------------------------------------------
// evaluation: mean loss and accuracy (percent) over the test images (the
// first max_batches batches of eval_B when max_batches > 0)

static void vit_evaluate(ViT* model, VisionBatcher* vb, const ImageData* test, int eval_B, int max_batches,
                         float* loss, float* acc) {
    NVTX_RANGE("evaluate");
    int n = test->count, K = model->config.num_classes;
    if (max_batches > 0 && (long)max_batches * eval_B < n) n = max_batches * eval_B;
    std::vector<int> labels(eval_B);
    std::vector<float> logits((long)eval_B * K);
    double loss_sum = 0.0;
    long correct = 0;
    for (int first = 0; first < n; first += eval_B) {
        int B = n - first < eval_B ? n - first : eval_B;
        vision_eval_batch(vb, test, first, B, model->acts.images, labels.data());
        vit_forward(model, model->acts.images, labels.data(), B, -1);
        cudaCheck(cudaMemcpy(logits.data(), model->acts.logits, (long)B * K * sizeof(float), cudaMemcpyDeviceToHost));
        correct += count_correct(logits.data(), labels.data(), B, K);
        loss_sum += (double)model->mean_loss * B;
    }
    *loss = (float)(loss_sum / n);
    *acc = (float)(100.0 * correct / n);
}

// ----------------------------------------------------------------------------
// main

#ifndef TESTING

int main(int argc, char** argv) {
    VisionTrainConfig vc = default_vision_config();
    vc.L = 6; vc.C = 256; vc.H = 4;
    parse_vision_flags(argc, argv, &vc,
                       "  -L <int>    layers (default 6)\n"
                       "  -C <int>    channels (default 256)\n"
                       "  -H <int>    heads (default 4)\n"
                       "  -F <int>    MLP hidden width (default 2*C)\n"
                       "  -P <int>    patch size (default 4: 64 patches of 48 values)\n", "LCHFP");
    AdamWConfig opt = {vc.lr, 0.9f, vc.beta2, 1e-8f, vc.weight_decay, vc.grad_clip};

    ImageData train, test;
    load_vision_data(&vc, &train, &test);

    ViTConfig config = {vc.patch, train.classes, vc.L, vc.H, vc.C, vc.F ? vc.F : 2 * vc.C};
    if (vc.init_path) {  // the model file decides the shape
        int kind, s[CONFIG_SLOTS];
        model_file_peek(vc.init_path, &kind, s);
        if (kind != MODEL_VIT) fail("%s: holds a model of kind %d, not a ViT (kind %d)", vc.init_path, kind, MODEL_VIT);
        config = {s[0], s[1], s[2], s[3], s[4], s[5]};
        if (config.patch < 1 || VISION_SIZE % config.patch != 0) fail("%s: patch size %d does not divide %d", vc.init_path, config.patch, VISION_SIZE);
        if (config.num_classes != train.classes) fail("%s: a model for %d classes, but %s has %d", vc.init_path, config.num_classes, vc.train_path, train.classes);
    }
    ViT model;
    vit_build(&model, config);
    if (vc.init_path) model_file_load(vc.init_path, MODEL_VIT, model.config_slots, vit_slot_names, model.params_memory);
    else vit_init_random(&model, vc.seed);
    int max_B = vc.B > vc.eval_B ? vc.B : vc.eval_B;
    vit_allocate_activations(&model, max_B);
    cublasCheck(cublasSetMathMode(model.cublas, CUBLAS_TF32_TENSOR_OP_MATH));
    int T = tokens_of(config);

    int steps_per_epoch = train.count / vc.B;  // the last partial batch of an epoch is dropped
    int max_steps = vc.max_steps >= 0 ? vc.max_steps : vc.epochs * steps_per_epoch;
    int epochs = CEIL_DIV(max_steps, steps_per_epoch);
    Rng aug_rng;
    rng_seed(&aug_rng, vc.seed);
    uint64_t seed = vc.seed;
    int start_step = 0;
    if (vc.out_dir) make_dir_or_fail(vc.out_dir);
    TrainConfig guard = trainer_view(&vc);
    check_output_dir_fresh(&guard);
    if (vc.resume)
        start_step = vision_resume(&vc, MODEL_VIT, model.config_slots, vit_slot_names, T, model.params_memory,
                                   model.m_memory, model.v_memory, &aug_rng, &seed);
    model.dropout = vc.dropout;
    model.dropout_seed = seed;

    printf("backend %s | ViT L %d C %d H %d F %d | patch %d (%d x %d) | %d classes | %ld parameters\n", BACKEND_NAME,
           config.num_layers, config.channels, config.num_heads, config.ffn, config.patch, T, patch_dim_of(config),
           config.num_classes, model.num_parameters);
    printf("batch %d (eval %d) | %d epochs of %d steps (%d steps) | lr %g warmup %d final x%g | betas 0.9 %g | wd %g | "
           "clip %g | dropout %g\n", vc.B, vc.eval_B, epochs, steps_per_epoch, max_steps, opt.lr, vc.warmup,
           vc.final_frac, opt.beta2, opt.weight_decay, opt.grad_clip, vc.dropout);
    printf("augment: flip %d | crop pad %d | rotate %g deg | erase p %g | perspective p %g | train %d images, test %d\n",
           vc.aug.flip, vc.aug.crop_pad, vc.aug.rotate_deg, vc.aug.erase_p, vc.aug.perspective_p, train.count, test.count);

    Logger logger;
    logger_open(&logger, vc.out_dir, start_step);
    VisionBatcher vb;
    vision_batcher_init(&vb, max_B);
    std::vector<int> labels(vc.B);
    double run_start = host_clock(), train_seconds = 0.0, window_seconds = 0.0, window_loss = 0.0;
    int window_steps = 0;
    float test_loss = NAN, test_acc = NAN;
    for (int step = start_step; step <= max_steps; step++) {
        bool last = step == max_steps;
        int eval_interval = vc.eval_every * steps_per_epoch;
        if ((eval_interval > 0 && step > 0 && step % eval_interval == 0) || last) {
            vit_evaluate(&model, &vb, &test, vc.eval_B, vc.eval_batches, &test_loss, &test_acc);
            print_epoch(step, steps_per_epoch, epochs, window_steps ? (float)(window_loss / window_steps) : NAN,
                        test_loss, test_acc, window_steps ? window_steps * vc.B / window_seconds : NAN,
                        host_clock() - run_start);
            log_test(&logger, step, (double)step / steps_per_epoch, test_loss, test_acc, host_clock() - run_start);
            window_seconds = window_loss = 0.0;
            window_steps = 0;
        }
        if (vc.out_dir && step > start_step && ((vc.checkpoint_every > 0 && step % vc.checkpoint_every == 0) || last))
            vision_save_checkpoint(&vc, MODEL_VIT, model.config_slots, step, T, &aug_rng, seed, model.params_memory,
                                   model.m_memory, model.v_memory, model.norm_buffer);
        if (last) break;

        NVTX_RANGE("step");
        double t0 = host_clock();
        const float* images = vision_train_batch(&vb, &train, &vc.aug, seed, step, steps_per_epoch, vc.B, &aug_rng,
                                                 model.acts.images, model.acts.images_tmp, labels.data());
        vit_forward(&model, images, labels.data(), vc.B, step);
        vit_backward(&model, vc.B);
        float lr = learning_rate(opt.lr, step, vc.warmup, max_steps, vc.final_frac);
        float norm = vit_update(&model, &opt, lr, step + 1);
        cudaCheck(cudaDeviceSynchronize());
        vision_check_finite(&vc, step + 1, model.mean_loss, norm);
        double seconds = host_clock() - t0;
        train_seconds += seconds;
        window_seconds += seconds;
        window_loss += model.mean_loss;
        window_steps++;
        if (vc.print_every > 0 && (step + 1) % vc.print_every == 0)
            print_step(step + 1, start_step, max_steps, model.mean_loss, lr, norm, seconds, vc.B, "images/s", train_seconds);
        log_train(&logger, step + 1, model.mean_loss, lr, norm, "images_per_s", vc.B / seconds, host_clock() - run_start);
    }
    logger_close(&logger);
    if (vc.out_dir) {
        std::string path = std::string(vc.out_dir) + "/model.bin";
        check_params_finite(&guard, max_steps, model.params_memory, model.num_parameters, model.norm_buffer);
        model_file_save(path.c_str(), MODEL_VIT, model.config_slots, model.params_memory);
        printf("wrote %s\n", path.c_str());
    }
    printf("final test acc %.2f%% | test loss %f | %.1f s\n", test_acc, test_loss, host_clock() - run_start);
    vision_batcher_free(&vb);
    vit_free(&model);
    return 0;
}
#endif

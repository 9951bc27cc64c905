/*
Mamba-ViT on CIFAR-10 from 4x4 patches: the whole trainer, top to bottom.

  config -> parameters (one flat buffer) -> activations (one flat buffer)
  -> forward -> backward -> AdamW update -> data -> main loop

The model (as dev/reference/vit.py defines it, after the seed write-up):
images (B, 3, 32, 32) -> patches 'b c (h p1) (w p2) -> b (h w) (c p1 p2)'
(B, T, PD) with T = 64, PD = 48 for patch 4 -> LN(PD) -> Linear(PD, C) ->
LN(C); L blocks x = Dropout(LN(x + Mamba(x))) (post-norm, dropout after the
norm, as the seed's MambaBlock); the mean over the T tokens; a head
Linear(C, K). No positions, no final LayerNorm. Loss: mean cross-entropy
over the batch. Mamba(x) is mamba_ssm's Mamba(d_model=C, d_state=16,
d_conv=4, expand=2), E = 2C, R = ceil(C/16) (see llmc/mamba_block.cuh).
Kernels live in llmc/; this file only arranges them.

Build with `make train_mamba_vit` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/layernorm.cuh"
#include "llmc/matmul.cuh"
#include "llmc/mamba_block.cuh"
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
    int channels;     // C (d_model)
    int inner;        // E = expand * C
    int d_state;      // N
} MambaViTConfig;

// the seven config slots of model files and checkpoints (the dt rank is ceil(C/16))
static const char* const mamba_vit_slot_names[CONFIG_SLOTS] = {"patch_size", "num_classes", "num_layers", "channels",
                                                               "inner", "d_state", "num_params"};

static MambaDims dims_of(MambaViTConfig c) {
    MambaDims d = {c.channels, c.inner, c.d_state, CEIL_DIV(c.channels, 16)};
    return d;
}
static int tokens_of(MambaViTConfig c) { return (VISION_SIZE / c.patch) * (VISION_SIZE / c.patch); }  // T
static int patch_dim_of(MambaViTConfig c) { return VISION_CHANNELS * c.patch * c.patch; }              // PD

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (the blocks' stacked over L)

#define NUM_PARAMETER_TENSORS (6 + MAMBA_STACK_PARAMS + 2)
typedef struct {
    float* patch_ln_w;       // (PD)
    float* patch_ln_b;       // (PD)
    float* patch_w;          // (C, PD)
    float* patch_b;          // (C)
    float* embed_ln_w;       // (C)
    float* embed_ln_b;       // (C)
    MambaStackParams tower;  // the L blocks: in_proj_w .. ln_b, see llmc/mamba_block.cuh
    float* head_w;           // (K, C)
    float* head_b;           // (K)
} ParameterTensors;

[[maybe_unused]] static const char* const param_names[NUM_PARAMETER_TENSORS] = {
    "patch_ln_w", "patch_ln_b", "patch_w", "patch_b", "embed_ln_w", "embed_ln_b",
    "in_proj_w", "conv_w", "conv_b", "x_proj_w", "dt_proj_w", "dt_proj_b", "A_log", "D", "out_proj_w", "ln_w", "ln_b",
    "head_w", "head_b"};

// weight decay: the patch embedding's and the head's weights, and the blocks' (mamba_stack_param_decay)
static int param_decay[NUM_PARAMETER_TENSORS];

static void fill_in_parameter_sizes(long* sizes, MambaViTConfig c) {
    long C = c.channels, K = c.num_classes, PD = patch_dim_of(c);
    long head[6] = {PD, PD, C * PD, C, C, C};
    int decay_head[6] = {0, 0, 1, 0, 0, 0};
    for (int i = 0; i < 6; i++) { sizes[i] = head[i]; param_decay[i] = decay_head[i]; }
    mamba_stack_param_sizes(sizes + 6, c.num_layers, dims_of(c));
    for (int i = 0; i < MAMBA_STACK_PARAMS; i++) param_decay[6 + i] = mamba_stack_param_decay[i];
    sizes[6 + MAMBA_STACK_PARAMS] = K * C;
    sizes[7 + MAMBA_STACK_PARAMS] = K;
    param_decay[6 + MAMBA_STACK_PARAMS] = 1;
    param_decay[7 + MAMBA_STACK_PARAMS] = 0;
}

// points the tensors of a struct of float pointers into one buffer
static void point_tensors(float** ptrs, float* base, const long* sizes, int num) {
    for (int i = 0; i < num; i++) { ptrs[i] = base; base += sizes[i]; }
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for what backward needs, and scratch

#define NUM_ACTIVATION_TENSORS (10 + MAMBA_STACK_ACTS + 5 + MAMBA_SCRATCH + 7)
typedef struct {
    float* images;          // (B, 3, 32, 32)  the batch, floats in [0, 1]
    float* images_tmp;      // (B, 3, 32, 32)  augmentation's second buffer
    float* patches;         // (B, T, PD)
    float* patch_ln;        // (B, T, PD)
    float* patch_ln_mean;   // (B, T)
    float* patch_ln_rstd;   // (B, T)
    float* embed;           // (B, T, C)
    float* embed_ln;        // (B, T, C)  the first block's input
    float* embed_ln_mean;   // (B, T)
    float* embed_ln_rstd;   // (B, T)
    MambaStackActs tower;   // the L blocks' activations, see llmc/mamba_block.cuh
    float* drop;            // (L, B, T, C)  the blocks' outputs after dropout (training only)
    float* pooled;          // (B, C)
    float* logits;          // (B, K)
    float* probs;           // (B, K)
    float* losses;          // (B)
    // scratch
    MambaScratch block;     // the blocks' backward scratch
    float* dout;            // (B, T, C)  gradient w.r.t. the current block's output
    float* din;             // (B, T, C)  ... and w.r.t. its input
    float* dembed;          // (B, T, C)
    float* dpatch_ln;       // (B, T, PD)
    float* dpatches;        // (B, T, PD) (unused: the images need no gradient)
    float* dpooled;         // (B, C)
    float* dlogits;         // (B, K)
} ActivationTensors;

static void fill_in_activation_sizes(long* sizes, MambaViTConfig c, int B) {
    long C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c), BT = (long)B * T;
    long img = (long)B * VISION_CHANNELS * VISION_SIZE * VISION_SIZE;
    long* s = sizes;
    long head[10] = {img, img, BT * PD, BT * PD, BT, BT, BT * C, BT * C, BT, BT};
    for (long x : head) *s++ = x;
    mamba_stack_act_sizes(s, c.num_layers, B, T, dims_of(c));
    s += MAMBA_STACK_ACTS;
    long mid[5] = {c.num_layers * BT * C, B * C, B * K, B * K, B};
    for (long x : mid) *s++ = x;
    mamba_scratch_sizes(s, B, T, dims_of(c));
    s += MAMBA_SCRATCH;
    long tail[7] = {BT * C, BT * C, BT * C, BT * PD, BT * PD, B * C, B * K};
    for (long x : tail) *s++ = x;
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    MambaViTConfig config;
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
    float* norm_buffer;       // device, global-norm scratch
    std::vector<float> host_losses;
    float mean_loss;          // of the last forward with targets
    float dropout;            // rate at training steps
    uint64_t dropout_seed;    // masks are a hash of (seed, step, layer, element)
    float fwd_dropout;        // what the last forward used (0: none), for the backward
    int fwd_step;
    cublasHandle_t cublas;
} MambaViT;

static MambaViTConfig mamba_vit_config(int patch, int K, int L, int C, int N) {
    MambaDims d = mamba_dims(C, N);
    MambaViTConfig c = {patch, K, L, C, d.E, N};
    return c;
}

static void mamba_vit_build(MambaViT* model, MambaViTConfig c) {
    scan_check_limits(c.d_state);
    model->config = c;
    fill_in_parameter_sizes(model->param_sizes, c);
    model->num_parameters = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) model->num_parameters += model->param_sizes[i];
    if (model->num_parameters > 2147483647L) fail("flags -L/-C: the model would have %ld parameters, more than 2^31 - 1", model->num_parameters);
    int slots[CONFIG_SLOTS] = {c.patch, c.num_classes, c.num_layers, c.channels, c.inner, c.d_state,
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

// mamba_ssm's initialization for the blocks (mamba_stack_init), PyTorch's
// defaults elsewhere (the seed's): LayerNorms 1 and 0, the patch embedding
// U(+-1/sqrt(PD)), the head U(+-1/sqrt(C))
static void mamba_vit_init_random(MambaViT* model, uint64_t seed) {
    MambaViTConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->num_parameters, 0.0f);
    ParameterTensors p;  // pointers into the host copy
    point_tensors((float**)&p, host.data(), model->param_sizes, NUM_PARAMETER_TENSORS);
    long C = c.channels, K = c.num_classes, PD = patch_dim_of(c);
    float bound = 1.0f / sqrtf((float)PD);
    for (long i = 0; i < PD; i++) p.patch_ln_w[i] = 1.0f;
    for (long i = 0; i < C * PD; i++) p.patch_w[i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
    for (long i = 0; i < C; i++) p.patch_b[i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
    for (long i = 0; i < C; i++) p.embed_ln_w[i] = 1.0f;
    mamba_stack_init(p.tower, c.num_layers, dims_of(c), &rng);
    for (long i = 0; i < K * C; i++) p.head_w[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    for (long i = 0; i < K; i++) p.head_b[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    cudaCheck(cudaMemcpy(model->params_memory, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
}

// sizes the activations for batches up to B images
static void mamba_vit_allocate_activations(MambaViT* model, int B) {
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

// the output of block l for a B-image batch (l = -1: the embedding, the first
// block's input): after dropout when the last forward used dropout
static const float* block_output(const MambaViT* model, int l, int B) {
    const ActivationTensors& a = model->acts;
    if (l < 0) return a.embed_ln;
    long btc = (long)B * tokens_of(model->config) * model->config.channels;
    if (model->fwd_dropout > 0.0f) return a.drop + l * btc;
    return mamba_layer_acts(a.tower, l, B, tokens_of(model->config), dims_of(model->config)).ln;
}

// ----------------------------------------------------------------------------
// forward: logits for images (B, 3, 32, 32) (device); with labels (host),
// also the mean loss. train_step >= 0: a training step (dropout on, its masks
// keyed by the step); -1: evaluation (no dropout).

static void mamba_vit_forward(MambaViT* model, const float* images, const int* labels, int B, int train_step) {
    NVTX_RANGE("forward");
    MambaViTConfig c = model->config;
    MambaDims d = dims_of(c);
    if (B > model->batch_size) fail("mamba_vit_forward: batch %d exceeds the allocation", B);
    int L = c.num_layers, C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c), BT = B * T;
    long btc = (long)BT * C;
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
        layernorm_forward(a.patch_ln, a.patch_ln_mean, a.patch_ln_rstd, a.patches, p.patch_ln_w, p.patch_ln_b, BT, PD);
        matmul_forward(h, a.embed, a.patch_ln, p.patch_w, p.patch_b, BT, PD, C);
        layernorm_forward(a.embed_ln, a.embed_ln_mean, a.embed_ln_rstd, a.embed, p.embed_ln_w, p.embed_ln_b, BT, C);
    }
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        MambaStackActs la = mamba_layer_acts(a.tower, l, B, T, d);
        mamba_block_forward(h, mamba_layer_params(p.tower, l, d), la, block_output(model, l - 1, B), B, T, d);
        if (drop > 0.0f) {
            NVTX_RANGE("dropout_forward");
            dropout_apply(a.drop + l * btc, la.ln, btc, drop, dropout_key(model->dropout_seed, train_step, l));
        }
    }
    { NVTX_RANGE("pool_forward"); mean_pool_forward(a.pooled, block_output(model, L - 1, B), B, T, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.pooled, p.head_w, p.head_b, B, C, K); }
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

static void mamba_vit_backward(MambaViT* model, int B) {
    NVTX_RANGE("backward");
    MambaViTConfig c = model->config;
    MambaDims d = dims_of(c);
    int L = c.num_layers, C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c), BT = B * T;
    long btc = (long)BT * C;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    float drop = model->fwd_dropout;
    cudaCheck(cudaMemset(model->grads_memory, 0, model->num_parameters * sizeof(float)));

    {
        NVTX_RANGE("head_backward");
        crossentropy_backward(a.dlogits, a.probs, model->targets, 1.0f / B, B, K);
        matmul_backward(h, a.dpooled, g.head_w, g.head_b, a.dlogits, a.pooled, p.head_w, model->ones, B, C, K);
    }
    float* dout = a.dout;  // gradient w.r.t. the current block's output
    float* din = a.din;    // ... and w.r.t. its input
    { NVTX_RANGE("pool_backward"); mean_pool_backward(dout, a.dpooled, B, T, C); }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        if (drop > 0.0f) dropout_apply(dout, dout, btc, drop, dropout_key(model->dropout_seed, model->fwd_step, l));
        mamba_block_backward(h, din, dout, block_output(model, l - 1, B), mamba_layer_params(p.tower, l, d),
                             mamba_layer_params(g.tower, l, d), mamba_layer_acts(a.tower, l, B, T, d), a.block,
                             model->ones, B, T, d);
        float* t = dout; dout = din; din = t;
    }
    {
        NVTX_RANGE("patch_embed_backward");  // dout is now the gradient w.r.t. embed_ln
        cudaCheck(cudaMemset(a.dembed, 0, btc * sizeof(float)));
        layernorm_backward(a.dembed, g.embed_ln_w, g.embed_ln_b, dout, a.embed, p.embed_ln_w, a.embed_ln_mean,
                           a.embed_ln_rstd, BT, C);
        matmul_backward(h, a.dpatch_ln, g.patch_w, g.patch_b, a.dembed, a.patch_ln, p.patch_w, model->ones, BT, PD, C);
        cudaCheck(cudaMemset(a.dpatches, 0, (long)BT * PD * sizeof(float)));
        layernorm_backward(a.dpatches, g.patch_ln_w, g.patch_ln_b, a.dpatch_ln, a.patches, p.patch_ln_w,
                           a.patch_ln_mean, a.patch_ln_rstd, BT, PD);
    }
}

static float mamba_vit_update(MambaViT* model, const AdamWConfig* o, float lr, int t) {
    NVTX_RANGE("update");
    return clip_and_adamw(model->params_memory, model->m_memory, model->v_memory, model->grads_memory,
                          model->param_sizes, param_decay, NUM_PARAMETER_TENSORS, model->norm_buffer, o, lr, t);
}

static void mamba_vit_free(MambaViT* model) {
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

static void mamba_vit_evaluate(MambaViT* model, VisionBatcher* vb, const ImageData* test, int eval_B, int max_batches,
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
        mamba_vit_forward(model, model->acts.images, labels.data(), B, -1);
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
    vc.L = 6; vc.C = 256;
    parse_vision_flags(argc, argv, &vc,
                       "  -L <int>    layers (default 6)\n"
                       "  -C <int>    channels, d_model (default 256; inner width 2C, d_state 16, dt rank ceil(C/16))\n"
                       "  -P <int>    patch size (default 4: 64 patches of 48 values)\n", "LCP");
    AdamWConfig opt = {vc.lr, 0.9f, vc.beta2, 1e-8f, vc.weight_decay, vc.grad_clip};

    ImageData train, test;
    load_vision_data(&vc, &train, &test);

    MambaViTConfig config = mamba_vit_config(vc.patch, train.classes, vc.L, vc.C, 16);
    if (vc.init_path) {  // the model file decides the shape
        int kind, s[CONFIG_SLOTS];
        model_file_peek(vc.init_path, &kind, s);
        if (kind != MODEL_MAMBA_VIT) fail("%s: holds a model of kind %d, not a Mamba-ViT (kind %d)", vc.init_path, kind, MODEL_MAMBA_VIT);
        config = {s[0], s[1], s[2], s[3], s[4], s[5]};
        if (config.patch < 1 || VISION_SIZE % config.patch != 0) fail("%s: patch size %d does not divide %d", vc.init_path, config.patch, VISION_SIZE);
        if (config.num_classes != train.classes) fail("%s: a model for %d classes, but %s has %d", vc.init_path, config.num_classes, vc.train_path, train.classes);
    }
    MambaViT model;
    mamba_vit_build(&model, config);
    if (vc.init_path) model_file_load(vc.init_path, MODEL_MAMBA_VIT, model.config_slots, mamba_vit_slot_names, model.params_memory);
    else mamba_vit_init_random(&model, vc.seed);
    int max_B = vc.B > vc.eval_B ? vc.B : vc.eval_B;
    mamba_vit_allocate_activations(&model, max_B);
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
        start_step = vision_resume(&vc, MODEL_MAMBA_VIT, model.config_slots, mamba_vit_slot_names, T,
                                   model.params_memory, model.m_memory, model.v_memory, &aug_rng, &seed);
    model.dropout = vc.dropout;
    model.dropout_seed = seed;

    MambaDims d = dims_of(config);
    printf("backend %s | Mamba-ViT L %d C %d E %d N %d R %d | patch %d (%d x %d) | %d classes | %ld parameters | scan %s\n",
           BACKEND_NAME, config.num_layers, config.channels, d.E, d.N, d.R, config.patch, T, patch_dim_of(config),
           config.num_classes, model.num_parameters, scan_use_chunked ? "chunked parallel" : "sequential");
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
            mamba_vit_evaluate(&model, &vb, &test, vc.eval_B, vc.eval_batches, &test_loss, &test_acc);
            print_epoch(step, steps_per_epoch, epochs, window_steps ? (float)(window_loss / window_steps) : NAN,
                        test_loss, test_acc, window_steps ? window_steps * vc.B / window_seconds : NAN,
                        host_clock() - run_start);
            log_test(&logger, step, (double)step / steps_per_epoch, test_loss, test_acc, host_clock() - run_start);
            window_seconds = window_loss = 0.0;
            window_steps = 0;
        }
        if (vc.out_dir && step > start_step && ((vc.checkpoint_every > 0 && step % vc.checkpoint_every == 0) || last))
            vision_save_checkpoint(&vc, MODEL_MAMBA_VIT, model.config_slots, step, T, &aug_rng, seed,
                                   model.params_memory, model.m_memory, model.v_memory, model.norm_buffer);
        if (last) break;

        NVTX_RANGE("step");
        double t0 = host_clock();
        const float* images = vision_train_batch(&vb, &train, &vc.aug, seed, step, steps_per_epoch, vc.B, &aug_rng,
                                                 model.acts.images, model.acts.images_tmp, labels.data());
        mamba_vit_forward(&model, images, labels.data(), vc.B, step);
        mamba_vit_backward(&model, vc.B);
        float lr = learning_rate(opt.lr, step, vc.warmup, max_steps, vc.final_frac);
        float norm = mamba_vit_update(&model, &opt, lr, step + 1);
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
        model_file_save(path.c_str(), MODEL_MAMBA_VIT, model.config_slots, model.params_memory);
        printf("wrote %s\n", path.c_str());
    }
    printf("final test acc %.2f%% | test loss %f | %.1f s\n", test_acc, test_loss, host_clock() - run_start);
    vision_batcher_free(&vb);
    mamba_vit_free(&model);
    return 0;
}
#endif

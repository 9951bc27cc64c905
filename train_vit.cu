/*
ViT on images from P x P patches (CIFAR-10, Fashion-MNIST, any shape the
images file has): the model, top to bottom.

  config -> tensor table (the parameters' flat buffer) -> activations
  -> init -> forward -> backward -> main

The model (doc/models.md): images (B, Cc, H, W) ->
patches 'b c (h p1) (w p2) -> b (h w) (c p1 p2)' (B, T, PD) with
T = (H/P)(W/P), PD = Cc P^2 (T = 64, PD = 48 for 3 x 32 x 32 at patch 4;
T = 49, PD = 16 for 1 x 28 x 28) -> LN(PD) -> Linear(PD, C) -> LN(C) ->
+ learned positions (T, C); L pre-norm encoder blocks x = x + Dropout(attn(LN1(x))),
x = x + Dropout(mlp(LN2(x))) with non-causal 4-head attention and an MLP
C -> F -> C with GELU (dropout on each residual branch, after the attention
projection and after the MLP); a final LayerNorm; the mean over the T
tokens; a head Linear(C, K). Loss: mean cross-entropy over the batch.
Kernels live in llmc/; the buffers every model owns and their update in
llmc/model.h; the training loop and evaluation in llmc/vision_trainer.h
(vision_run), which calls this file's vision_forward and vision_backward.

Build with `make train_vit` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/layernorm.cuh"
#include "llmc/matmul.cuh"
#include "llmc/transformer_block.cuh"
#include "llmc/vision.cuh"
#include "llmc/crossentropy.cuh"
#include "llmc/model.h"
#include "llmc/vision_trainer.h"

#include <vector>

// ----------------------------------------------------------------------------
// config

typedef struct {
    int patch;          // P: patch size (divides the images' height and width)
    int num_classes;    // K
    int num_layers;     // L
    int num_heads;      // NH
    int channels;       // C
    int ffn;            // F: hidden width of the MLP
    ImageShape image;   // the images' channels x height x width (in the files' image shape slots)
} ViTConfig;

// the seven config slots of model files and checkpoints
static const char* const vit_slot_names[CONFIG_SLOTS] = {"patch_size", "num_classes", "num_layers", "num_heads",
                                                         "channels", "ffn", "num_params"};

static TransformerDims dims_of(ViTConfig c) {
    TransformerDims d = {c.channels, c.num_heads, c.ffn};
    return d;
}
static int tokens_of(ViTConfig c) { return image_tokens(c.image, c.patch); }        // T
static int patch_dim_of(ViTConfig c) { return image_patch_dim(c.image, c.patch); }  // PD

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (the blocks' stacked over L)

#define NUM_PARAMETER_TENSORS (PATCH_EMBED_PARAMS + 1 + TRANSFORMER_STACK_PARAMS + 4)
typedef struct {
    PatchEmbedParams embed;        // patch_ln_w .. embed_ln_b, see llmc/vision.cuh
    float* wpe;                    // (T, C)
    TransformerStackParams tower;  // the L blocks: ln1_w .. fc_proj_b, see llmc/transformer_block.cuh
    float* lnf_w;                  // (C)
    float* lnf_b;                  // (C)
    float* head_w;                 // (K, C)
    float* head_b;                 // (K)
} ParameterTensors;
static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

// name, size, weight decay (the positions and the Linear weights), layers
static void vit_param_table(TensorSpec* t, ViTConfig c) {
    long C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c);
    t = patch_embed_param_table(t, PD, C);
    *t++ = {"wpe", T * C, 1, 1};
    t = transformer_stack_param_table(t, c.num_layers, dims_of(c));
    *t++ = {"lnf_w", C, 0, 1};
    *t++ = {"lnf_b", C, 0, 1};
    *t++ = {"head_w", K * C, 1, 1};
    *t++ = {"head_b", K, 0, 1};
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for the forward activations kept for backward,
// and the scratch of both passes

#define NUM_ACTIVATION_TENSORS (PATCH_EMBED_ACTS + 1 + TRANSFORMER_STACK_ACTS + 7 + TRANSFORMER_SCRATCH + 3)
typedef struct {
    PatchEmbedActs embed;        // the patch embedding's, see llmc/vision.cuh
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
    float* dpooled;              // (B, C)
    float* dlogits;              // (B, K)
} ActivationTensors;
static_assert(sizeof(ActivationTensors) == NUM_ACTIVATION_TENSORS * sizeof(float*), "one pointer per tensor");

static void vit_act_table(TensorSpec* t, ViTConfig c, int B) {
    long C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c), BT = (long)B * T;
    t = patch_embed_act_table(t, BT, PD, C);
    *t++ = {"encoded", BT * C, 0, 1};
    t = transformer_stack_act_table(t, c.num_layers, B, T, dims_of(c));
    *t++ = {"lnf", BT * C, 0, 1};
    *t++ = {"lnf_mean", BT, 0, 1};
    *t++ = {"lnf_rstd", BT, 0, 1};
    *t++ = {"pooled", B * C, 0, 1};
    *t++ = {"logits", B * K, 0, 1};
    *t++ = {"probs", B * K, 0, 1};
    *t++ = {"losses", B, 0, 1};
    t = transformer_scratch_table(t, B, T, dims_of(c));
    *t++ = {"dresidual", BT * C, 0, 1};
    *t++ = {"dpooled", B * C, 0, 1};
    *t++ = {"dlogits", B * K, 0, 1};
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    ViTConfig config;
    ParameterTensors params;  // pointers into buf.params_memory
    ParameterTensors grads;   // ... and into buf.grads_memory
    ActivationTensors acts;   // ... and into buf.acts_memory
    TrainDropout dropout;     // the rate at training steps and the masks' seed (llmc/model.h)
    ModelBuffers buf;         // the buffers, the cuBLAS handle, the last loss (llmc/model.h)
} ViT;

static void vit_build(ViT* model, ViTConfig c) {
    if (c.channels % c.num_heads != 0) fail("flag -C/-H: channels %d are not divisible by heads %d", c.channels, c.num_heads);
    model->config = c;
    TensorSpec table[NUM_PARAMETER_TENSORS];
    vit_param_table(table, c);
    int slots[CONFIG_SLOTS - 1] = {c.patch, c.num_classes, c.num_layers, c.num_heads, c.channels, c.ffn};
    model_build(&model->buf, MODEL_VIT, vit_slot_names, slots, table, NUM_PARAMETER_TENSORS, &model->params,
                &model->grads, sizeof(model->params));
    image_shape_to_slots(c.image, model->buf.image_shape);
    model->dropout = {0.0f, 0, 0.0f};
}

// sizes the activations for batches up to B images
static void vit_allocate_activations(ViT* model, int B) {
    TensorSpec table[NUM_ACTIVATION_TENSORS];
    vit_act_table(table, model->config, B);
    model_allocate_activations(&model->buf, table, NUM_ACTIVATION_TENSORS, &model->acts, sizeof(model->acts), B,
                               tokens_of(model->config), 0, B, "-b/-B");
}

// The positions' starting values wpe (Gy*Gx, C) for a grid of Gy rows and
// Gx columns of patches (learned from there): a 2D sin-cos table, so that
// from the first step a query can find the patches at a given offset (the
// dot product of two rows depends on their offset only). With K = C/4
// frequencies per axis, w_k = (pi/G)^(k/(K-1)) for that axis' G (from 1 to
// pi/G radians per patch: the slowest is half a period across the grid),
// the token at row y, column x gets sin(wy_k y), cos(wy_k y), sin(wx_k x),
// cos(wx_k x) in channels [0,K), [K,2K), [2K,3K), [3K,4K); channels from
// 4K on (C not a multiple of 4) are 0.
static void sincos_positions(float* wpe, int Gy, int Gx, int C) {
    int K = C / 4;
    std::vector<double> wy(K), wx(K);
    for (int k = 0; k < K; k++) {
        wy[k] = K > 1 ? pow(3.14159265358979 / Gy, (double)k / (K - 1)) : 1.0;
        wx[k] = K > 1 ? pow(3.14159265358979 / Gx, (double)k / (K - 1)) : 1.0;
    }
    for (int y = 0; y < Gy; y++) {
        for (int x = 0; x < Gx; x++) {
            float* row = wpe + (long)(y * Gx + x) * C;
            for (int k = 0; k < K; k++) {
                row[k] = (float)sin(wy[k] * y);
                row[K + k] = (float)cos(wy[k] * y);
                row[2 * K + k] = (float)sin(wx[k] * x);
                row[3 * K + k] = (float)cos(wx[k] * x);
            }
            for (int c = 4 * K; c < C; c++) row[c] = 0.0f;
        }
    }
}

// LayerNorms 1 and 0; the patch embedding, the blocks' Linear layers and
// the head as PyTorch's Linear default (the seed's), U(+-1/sqrt(fan_in)) for
// weight and bias; positions the 2D sin-cos table (not drawn)
static void vit_init_random(ViT* model, uint64_t seed) {
    ViTConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->buf.num_parameters, 0.0f);
    ParameterTensors p;  // pointers into the host copy
    point_tensors(&p, host.data(), model->buf.param_table, NUM_PARAMETER_TENSORS);
    long C = c.channels, K = c.num_classes, PD = patch_dim_of(c);
    patch_embed_init(p.embed, PD, C, &rng);
    sincos_positions(p.wpe, c.image.height / c.patch, c.image.width / c.patch, (int)C);
    long F = c.ffn, L = c.num_layers;
    TransformerStackParams& w = p.tower;
    struct { float* weight; float* bias; long n_weight, n_bias, fan_in; } linears[4] = {
        {w.qkv_w, w.qkv_b, L * 3 * C * C, L * 3 * C, C}, {w.attn_proj_w, w.attn_proj_b, L * C * C, L * C, C},
        {w.fc_w, w.fc_b, L * F * C, L * F, C}, {w.fc_proj_w, w.fc_proj_b, L * C * F, L * C, F}};
    for (auto& lin : linears) {
        float b = 1.0f / sqrtf((float)lin.fan_in);
        for (long i = 0; i < lin.n_weight; i++) lin.weight[i] = (2.0f * rng_uniform(&rng) - 1.0f) * b;
        for (long i = 0; i < lin.n_bias; i++) lin.bias[i] = (2.0f * rng_uniform(&rng) - 1.0f) * b;
    }
    for (long i = 0; i < L * C; i++) { w.ln1_w[i] = 1.0f; w.ln2_w[i] = 1.0f; }
    for (long i = 0; i < C; i++) p.lnf_w[i] = 1.0f;
    for (long i = 0; i < K * C; i++) p.head_w[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    for (long i = 0; i < K; i++) p.head_b[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    model_upload_params(&model->buf, host.data());
}

// ----------------------------------------------------------------------------
// forward: logits for images (B, Cc, H, W) (device); with labels (host),
// also the mean loss. train_step >= 0: a training step (dropout on, its masks
// keyed by the step); -1: evaluation (no dropout).

static void vit_forward(ViT* model, const float* images, const int* labels, int B, int train_step) {
    NVTX_RANGE("forward");
    ViTConfig c = model->config;
    TransformerDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    if (B > m->batch_size) fail("vit_forward: batch %d exceeds the allocation", B);
    int L = c.num_layers, C = c.channels, K = c.num_classes, T = tokens_of(c), BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    float drop = train_dropout_begin(&model->dropout, m, train_step);
    model_stage_batch(m, nullptr, 0, labels, B);

    patch_embed_forward(h, p.embed, a.embed, images, B, c.image, c.patch, C);
    { NVTX_RANGE("positions_forward"); add_positions(a.encoded, a.embed.embed_ln, p.wpe, B, T, C); }
    const float* x = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        TransformerStackActs la = transformer_layer_acts(a.tower, l, B, T, d);
        transformer_block_forward(h, transformer_layer_params(p.tower, l, d), la, a.block, x, B, T, d, 0,
                                  block_dropout(drop, model->dropout.seed, model_train_step(m), l));
        x = la.residual3;
    }
    { NVTX_RANGE("lnf_forward"); layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, x, p.lnf_w, p.lnf_b, BT, C); }
    { NVTX_RANGE("pool_forward"); mean_pool_forward(a.pooled, a.lnf, B, T, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.pooled, p.head_w, p.head_b, B, C, K); }
    if (labels) {
        NVTX_RANGE("crossentropy_forward");
        crossentropy_forward(a.losses, a.probs, a.logits, m->targets, B, K);
        model_mean_loss(m, a.losses, B);
    }
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last forward (with labels)

static void vit_backward(ViT* model, int B) {
    NVTX_RANGE("backward");
    ViTConfig c = model->config;
    TransformerDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    int L = c.num_layers, C = c.channels, K = c.num_classes, T = tokens_of(c), BT = B * T;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    TrainDropout drop = model->dropout;
    model_zero_grads(m);
    auto block_output = [&](int l) -> const float* { return l < 0 ? a.encoded : transformer_layer_acts(a.tower, l, B, T, d).residual3; };
    {
        NVTX_RANGE("head_backward");
        crossentropy_backward_device(a.dlogits, a.probs, m->targets, m->dloss, B, K);  // 1 / the global batch
        matmul_backward(h, a.dpooled, g.head_w, g.head_b, a.dlogits, a.pooled, p.head_w, m->ones, B, C, K);
    }
    { NVTX_RANGE("pool_backward"); mean_pool_backward(a.block.dbtc, a.dpooled, B, T, C); }
    {
        NVTX_RANGE("lnf_backward");
        cudaCheck(cudaMemsetAsync(a.dresidual, 0, (long)BT * C * sizeof(float), main_stream));
        layernorm_backward(a.dresidual, g.lnf_w, g.lnf_b, a.block.dbtc, block_output(L - 1), p.lnf_w, a.lnf_mean,
                           a.lnf_rstd, BT, C);
    }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        transformer_block_backward(h, a.dresidual, block_output(l - 1), transformer_layer_params(p.tower, l, d),
                                   transformer_layer_params(g.tower, l, d), transformer_layer_acts(a.tower, l, B, T, d),
                                   a.block, m->ones, B, T, d, 0, block_dropout(drop.fwd_rate, drop.seed, model_train_step(m), l));
    }
    // a.dresidual is now the gradient w.r.t. encoded = embed_ln + wpe
    { NVTX_RANGE("positions_backward"); positions_backward(g.wpe, a.dresidual, B, T, C); }
    patch_embed_backward(h, g.embed, p.embed, a.embed, a.dresidual, m->ones, B, c.image, c.patch, C);
}

// the hooks of the training loop and evaluation (llmc/vision_trainer.h)
static void vision_forward(ViT* m, const float* images, const int* labels, int B, int train_step) { vit_forward(m, images, labels, B, train_step); }
static void vision_backward(ViT* m, int B) { vit_backward(m, B); }

// ----------------------------------------------------------------------------
// main

#ifndef TESTING
int main(int argc, char** argv) {
    // the write-up's configuration, and one that trains in minutes on 2 CPU cores
    //                            L  C    B    epochs steps warmup lr     clip  dropout augment
    VisionPreset presets[2] = {{6, 256, 128, 100, -1, 0, 3e-4f, 0.0f, 0.1f, 1},
                               {2, 64, 64, 100, 1800, 100, 4e-3f, 1.0f, 0.0f, 0}};
    VisionTrainConfig vc = default_vision_config();
    vc.H = 4;
    parse_vision_flags(argc, argv, &vc, presets,
                       "  -L <int>    layers (seed preset 6, cpu 2)\n"
                       "  -C <int>    channels (seed preset 256, cpu 64)\n"
                       "  -H <int>    heads (default 4)\n"
                       "  -F <int>    MLP hidden width (default 2*C)\n"
                       "  -P <int>    patch size, dividing the images' height and width (default 4: 64 patches of\n"
                       "              48 values on 3 x 32 x 32 images, 49 of 16 on 1 x 28 x 28)\n", "LCHFP");
    print_preset(vc.preset);
    ImageData train, test;
    load_vision_data(&vc, &train, &test);

    ViTConfig config = {vc.patch, train.classes, vc.L, vc.H, vc.C, vc.F ? vc.F : 2 * vc.C, image_shape_of(&train)};
    if (vc.init_path) {  // the model file decides the shape
        int s[CONFIG_SLOTS], image[IMAGE_SHAPE_SLOTS];
        model_file_config(vc.init_path, MODEL_VIT, s, image);
        config = {s[0], s[1], s[2], s[3], s[4], s[5], image_shape_from_slots(vc.init_path, image)};
        check_model_images(&vc, config.patch, config.num_classes, config.image, &train);
        check_shape_flag_int(&vc, 'L', vc.L, "num_layers", config.num_layers);
        check_shape_flag_int(&vc, 'H', vc.H, "num_heads", config.num_heads);
        check_shape_flag_int(&vc, 'C', vc.C, "channels", config.channels);
        check_shape_flag_int(&vc, 'F', vc.F, "ffn", config.ffn);
    } else {
        check_patch_size("flag -P", config.patch, &train);
    }
    ViT model;
    vit_build(&model, config);
    if (vc.init_path) load_model_file(&model.buf, vc.init_path);
    else vit_init_random(&model, vc.seed);
    int max_B = vc.B > vc.eval_B ? vc.B : vc.eval_B;
    attention_pin_variant(max_B, tokens_of(config), config.channels, config.num_heads);
    vit_allocate_activations(&model, max_B);
    cublasCheck(cublasSetMathMode(model.buf.cublas, CUBLAS_TF32_TENSOR_OP_MATH));

    printf("backend %s | ViT L %d C %d H %d F %d | patch %d (%d x %d) | %d classes | %ld parameters\n", BACKEND_NAME,
           config.num_layers, config.channels, config.num_heads, config.ffn, config.patch, tokens_of(config),
           patch_dim_of(config), config.num_classes, model.buf.num_parameters);
    int status = vision_run(&model, &vc, &train, &test);
    model_free(&model.buf);
    return status;
}
#endif

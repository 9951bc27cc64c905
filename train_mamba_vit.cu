/*
Mamba-ViT on images from P x P patches (CIFAR-10, Fashion-MNIST, any shape
the images file has): the model, top to bottom.

  config -> tensor table (the parameters' flat buffer) -> activations
  -> init -> forward -> backward -> main

The model (doc/models.md; the write-up this project reproduces uses it):
images (B, Cc, H, W) -> patches 'b c (h p1) (w p2) -> b (h w) (c p1 p2)'
(B, T, PD) with T = (H/P)(W/P), PD = Cc P^2 (T = 64, PD = 48 for 3 x 32 x 32
at patch 4; T = 49, PD = 16 for 1 x 28 x 28) -> LN(PD) -> Linear(PD, C) ->
LN(C); L blocks x = Dropout(LN(x + Mamba(x))) (post-norm, dropout after the
norm, as the seed's MambaBlock); the mean over the T tokens; a head
Linear(C, K). No positions, no final LayerNorm. Loss: mean cross-entropy
over the batch. Mamba(x) is mamba_ssm's Mamba(d_model=C, d_state=16,
d_conv=4, expand=2), E = 2C, R = ceil(C/16) (see llmc/mamba_block.cuh).

With -M bi the blocks are bidirectional (model kind 7, doc/models.md): two
mixers of their own per block, the second on the tokens reversed in time,
x = Dropout(LN(x + Mamba_f(x) + flip(Mamba_b(flip(x))))); the mixer tensors
stack 2L mixers (layer l's forward one at l, its reverse one at L + l), the
flip is llmc/flip.cuh's kernel.

With -M 2 (model kind 10, doc/models.md) each block's mixer is Mamba-2's
(llmc/mamba2_block.cuh, as the char Mamba LM's -M 2): x = Dropout(LN(x +
Mamba2(x))), Mamba2 = mamba_ssm's Mamba2(d_model=C, d_state=64, headdim=64,
expand=2), E = 2C in E/64 heads (a model file may say other d_state and
headdim). The Mamba-1 tensors' rows of the tables are then empty, and the
Mamba-2 ones otherwise.

Kernels live in llmc/; the buffers every model owns and their update in
llmc/model.h; the training loop and evaluation in llmc/vision_trainer.h
(vision_run), which calls this file's vision_forward and vision_backward.

Build with `make train_mamba_vit` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/layernorm.cuh"
#include "llmc/matmul.cuh"
#include "llmc/mamba_block.cuh"
#include "llmc/mamba2_block.cuh"
#include "llmc/dropout.cuh"
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
    int channels;       // C (d_model)
    int inner;          // E = expand * C
    int d_state;        // N
    ImageShape image;   // the images' channels x height x width (in the files' image shape slots)
    int bidirectional;  // 0: one mixer per block; 1: a forward and a reverse mixer (-M bi, kind MODEL_MAMBA_VIT_BI)
    int mamba2;         // 1: Mamba-2 mixers (-M 2, kind MODEL_MAMBA_VIT2)
    int headdim;        // P, Mamba-2's channels per head (H = E / P heads); 0 for Mamba-1
} MambaViTConfig;

// the seven config slots of model files and checkpoints (the dt rank is mamba_dt_rank(C), ceil(C/16))
static const char* const mamba_vit_slot_names[CONFIG_SLOTS] = {"patch_size", "num_classes", "num_layers", "channels",
                                                               "inner", "d_state", "num_params"};

// -M 2's: the inner width is 2C (not stored); the fifth and sixth slots are
// the d_state N and the headdim P, so a file says its full shape
static const char* const mamba_vit2_slot_names[CONFIG_SLOTS] = {"patch_size", "num_classes", "num_layers", "channels",
                                                                "d_state", "headdim", "num_params"};

static MambaDims dims_of(MambaViTConfig c) {
    MambaDims d = {c.channels, c.inner, c.d_state, mamba_dt_rank(c.channels)};
    return d;
}
static int tokens_of(MambaViTConfig c) { return image_tokens(c.image, c.patch); }        // T
static int patch_dim_of(MambaViTConfig c) { return image_patch_dim(c.image, c.patch); }  // PD
static int mixers_of(MambaViTConfig c) { return c.bidirectional ? 2 : 1; }                // per block
static int kind_of(MambaViTConfig c) {
    return c.mamba2 ? MODEL_MAMBA_VIT2 : c.bidirectional ? MODEL_MAMBA_VIT_BI : MODEL_MAMBA_VIT;
}
static Mamba2Dims dims2_of(MambaViTConfig c) {
    Mamba2Dims d = {c.channels, c.inner, c.d_state, c.headdim, c.headdim ? c.inner / c.headdim : 0};
    return d;
}

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (the blocks' stacked
// over L); with -M 2 the tower rows are empty, otherwise the tower2 rows

#define NUM_PARAMETER_TENSORS (PATCH_EMBED_PARAMS + MAMBA_STACK_PARAMS + MAMBA2_STACK_PARAMS + 2)
typedef struct {
    PatchEmbedParams embed;        // patch_ln_w .. embed_ln_b, see llmc/vision.cuh
    MambaStackParams tower;  // the L blocks: in_proj_w .. ln_b (mixer tensors over 2L when bidirectional), see llmc/mamba_block.cuh
    Mamba2StackParams tower2;  // -M 2's L blocks: in_proj_w .. ln_b, see llmc/mamba2_block.cuh
    float* head_w;           // (K, C)
    float* head_b;           // (K)
} ParameterTensors;
static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

// name, size, weight decay (the patch embedding's and the head's weights, the blocks' weights), layers
static void mamba_vit_param_table(TensorSpec* t, MambaViTConfig c) {
    long C = c.channels, K = c.num_classes, PD = patch_dim_of(c);
    t = patch_embed_param_table(t, PD, C);
    TensorSpec* tower = t;
    t = mamba_stack_param_table(t, c.num_layers, dims_of(c), mixers_of(c));
    if (c.mamba2) empty_rows(tower, t);
    t = mamba2_stack_param_table(t, c.num_layers, dims2_of(c), c.mamba2);
    *t++ = {"head_w", K * C, 1, 1};
    *t++ = {"head_b", K, 0, 1};
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for what backward needs, and scratch

#define NUM_ACTIVATION_TENSORS (PATCH_EMBED_ACTS + MAMBA_STACK_ACTS + MAMBA2_STACK_ACTS + 6 + MAMBA_SCRATCH + \
                                MAMBA2_SCRATCH + 5)
typedef struct {
    PatchEmbedActs embed;        // the patch embedding's, see llmc/vision.cuh
    MambaStackActs tower;   // the L blocks' activations (empty with -M 2), see llmc/mamba_block.cuh
    Mamba2StackActs tower2; // -M 2's L blocks' activations (empty otherwise), see llmc/mamba2_block.cuh
    float* tokens_rev;      // (L, B, T, C)  bidirectional: each block's input reversed in time (empty otherwise)
    float* drop;            // (L, B, T, C)  the blocks' outputs after dropout (training only)
    float* pooled;          // (B, C)
    float* logits;          // (B, K)
    float* probs;           // (B, K)
    float* losses;          // (B)
    // scratch
    MambaScratch block;     // the blocks' backward scratch (empty with -M 2)
    Mamba2Scratch block2;   // -M 2's (empty otherwise)
    float* dresidual;       // (B, T, C)  gradient w.r.t. the current block's output
    float* dresidual_in;    // (B, T, C)  ... and w.r.t. its input (the two swap roles block by block)
    float* dtokens_rev;     // (B, T, C)  bidirectional: gradient w.r.t. tokens_rev of the current block (empty otherwise)
    float* dpooled;         // (B, C)
    float* dlogits;         // (B, K)
} ActivationTensors;
static_assert(sizeof(ActivationTensors) == NUM_ACTIVATION_TENSORS * sizeof(float*), "one pointer per tensor");

static void mamba_vit_act_table(TensorSpec* t, MambaViTConfig c, int B) {
    long C = c.channels, K = c.num_classes, T = tokens_of(c), PD = patch_dim_of(c), BT = (long)B * T;
    int L = c.num_layers;
    long rev = c.bidirectional ? BT * C : 0;
    t = patch_embed_act_table(t, BT, PD, C);
    TensorSpec* tower = t;
    t = mamba_stack_act_table(t, L, B, T, dims_of(c), mixers_of(c));
    if (c.mamba2) empty_rows(tower, t);
    t = mamba2_stack_act_table(t, L, B, T, dims2_of(c), c.mamba2);
    *t++ = {"tokens_rev", L * rev, 0, L};
    *t++ = {"drop", L * BT * C, 0, L};
    *t++ = {"pooled", B * C, 0, 1};
    *t++ = {"logits", B * K, 0, 1};
    *t++ = {"probs", B * K, 0, 1};
    *t++ = {"losses", B, 0, 1};
    TensorSpec* scratch = t;
    t = mamba_scratch_table(t, B, T, dims_of(c));
    if (c.mamba2) empty_rows(scratch, t);
    t = mamba2_scratch_table(t, B, T, dims2_of(c), c.mamba2);
    *t++ = {"dresidual", BT * C, 0, 1};
    *t++ = {"dresidual_in", BT * C, 0, 1};
    *t++ = {"dtokens_rev", rev, 0, 1};
    *t++ = {"dpooled", B * C, 0, 1};
    *t++ = {"dlogits", B * K, 0, 1};
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    MambaViTConfig config;
    ParameterTensors params;  // pointers into buf.params_memory
    ParameterTensors grads;   // ... and into buf.grads_memory
    ActivationTensors acts;   // ... and into buf.acts_memory
    TrainDropout dropout;     // the rate at training steps and the masks' seed (llmc/model.h)
    ModelBuffers buf;         // the buffers, the cuBLAS handle, the last loss (llmc/model.h)
} MambaViT;

static MambaViTConfig mamba_vit_config(int patch, int K, int L, int C, int N, ImageShape image, int bidirectional) {
    MambaDims d = mamba_dims(C, N);
    MambaViTConfig c = {patch, K, L, C, d.E, N, image, bidirectional, 0, 0};
    return c;
}

// -M 2's: Mamba-2 mixers of d_state N and headdim P (E = 2C)
static MambaViTConfig mamba_vit2_config(int patch, int K, int L, int C, int N, int P, ImageShape image) {
    Mamba2Dims d = mamba2_dims(C, N, P);
    MambaViTConfig c = {patch, K, L, C, d.E, N, image, 0, 1, P};
    return c;
}

static void mamba_vit_build(MambaViT* model, MambaViTConfig c) {
    if (c.mamba2) ssd_check_limits(c.inner, c.headdim, c.d_state);
    else scan_check_limits(c.d_state);
    model->config = c;
    TensorSpec table[NUM_PARAMETER_TENSORS];
    mamba_vit_param_table(table, c);
    int slots[CONFIG_SLOTS - 1] = {c.patch, c.num_classes, c.num_layers, c.channels, c.inner, c.d_state};
    if (c.mamba2) { slots[4] = c.d_state; slots[5] = c.headdim; }
    model_build(&model->buf, kind_of(c), c.mamba2 ? mamba_vit2_slot_names : mamba_vit_slot_names, slots, table,
                NUM_PARAMETER_TENSORS, &model->params, &model->grads, sizeof(model->params));
    image_shape_to_slots(c.image, model->buf.image_shape);
    model->dropout = {0.0f, 0, 0.0f};
}

// mamba_ssm's initialization for the blocks (mamba_stack_init, mamba2_stack_init), PyTorch's
// defaults elsewhere (the seed's): LayerNorms 1 and 0, the patch embedding
// U(+-1/sqrt(PD)), the head U(+-1/sqrt(C))
static void mamba_vit_init_random(MambaViT* model, uint64_t seed) {
    MambaViTConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->buf.num_parameters, 0.0f);
    ParameterTensors p;  // pointers into the host copy
    point_tensors(&p, host.data(), model->buf.param_table, NUM_PARAMETER_TENSORS);
    long C = c.channels, K = c.num_classes, PD = patch_dim_of(c);
    patch_embed_init(p.embed, PD, C, &rng);
    if (c.mamba2) mamba2_stack_init(p.tower2, c.num_layers, dims2_of(c), &rng);
    else mamba_stack_init(p.tower, c.num_layers, dims_of(c), &rng, mixers_of(c));
    for (long i = 0; i < K * C; i++) p.head_w[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    for (long i = 0; i < K; i++) p.head_b[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    model_upload_params(&model->buf, host.data());
}

// sizes the activations for batches up to B images
static void mamba_vit_allocate_activations(MambaViT* model, int B) {
    TensorSpec table[NUM_ACTIVATION_TENSORS];
    mamba_vit_act_table(table, model->config, B);
    model_allocate_activations(&model->buf, table, NUM_ACTIVATION_TENSORS, &model->acts, sizeof(model->acts), B,
                               tokens_of(model->config), 0, B, "-b/-B");
}

// the output of block l for a B-image batch (l = -1: the embedding, the first
// block's input): after dropout when the last forward used dropout
static const float* block_output(const MambaViT* model, int l, int B) {
    const ActivationTensors& a = model->acts;
    if (l < 0) return a.embed.embed_ln;
    long btc = (long)B * tokens_of(model->config) * model->config.channels;
    if (model->dropout.fwd_rate > 0.0f) return a.drop + l * btc;
    if (model->config.mamba2) return mamba2_layer_acts(a.tower2, l, B, tokens_of(model->config), dims2_of(model->config)).ln;
    return mamba_layer_acts(a.tower, l, B, tokens_of(model->config), dims_of(model->config)).ln;
}

// ----------------------------------------------------------------------------
// forward: logits for images (B, Cc, H, W) (device); with labels (host),
// also the mean loss. train_step >= 0: a training step (dropout on, its masks
// keyed by the step); -1: evaluation (no dropout).

static void mamba_vit_forward(MambaViT* model, const float* images, const int* labels, int B, int train_step) {
    NVTX_RANGE("forward");
    MambaViTConfig c = model->config;
    MambaDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    if (B > m->batch_size) fail("mamba_vit_forward: batch %d exceeds the allocation", B);
    int L = c.num_layers, C = c.channels, K = c.num_classes, T = tokens_of(c), BT = B * T;
    long btc = (long)BT * C;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    float drop = train_dropout_begin(&model->dropout, m, train_step);
    model_stage_batch(m, nullptr, 0, labels, B);

    patch_embed_forward(h, p.embed, a.embed, images, B, c.image, c.patch, C);
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        MambaStackActs la = mamba_layer_acts(a.tower, l, B, T, d);
        const float* block_ln = la.ln;  // the block's output before dropout
        if (c.mamba2) {
            Mamba2StackActs la2 = mamba2_layer_acts(a.tower2, l, B, T, dims2_of(c));
            mamba2_block_forward(h, mamba2_layer_params(p.tower2, l, dims2_of(c)), la2, block_output(model, l - 1, B),
                                 B, T, dims2_of(c));
            block_ln = la2.ln;
        } else if (c.bidirectional)
            mamba_bi_block_forward(h, mamba_bi_layer_params(p.tower, l, 0, L, d), la,
                                   mamba_bi_layer_params(p.tower, l, 1, L, d), mamba_bi_layer_acts(a.tower, l, 1, L, B, T, d),
                                   a.tokens_rev + l * btc, block_output(model, l - 1, B), B, T, d);
        else
            mamba_block_forward(h, mamba_layer_params(p.tower, l, d), la, block_output(model, l - 1, B), B, T, d);
        if (drop > 0.0f) {
            NVTX_RANGE("dropout_forward");
            dropout_apply(a.drop + l * btc, block_ln, btc, drop, dropout_site(model->dropout.seed, model_train_step(m), l));
        }
    }
    { NVTX_RANGE("pool_forward"); mean_pool_forward(a.pooled, block_output(model, L - 1, B), B, T, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.pooled, p.head_w, p.head_b, B, C, K); }
    if (labels) {
        NVTX_RANGE("crossentropy_forward");
        crossentropy_forward(a.losses, a.probs, a.logits, m->targets, B, K);
        model_mean_loss(m, a.losses, B);
    }
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last forward (with labels)

static void mamba_vit_backward(MambaViT* model, int B) {
    NVTX_RANGE("backward");
    MambaViTConfig c = model->config;
    MambaDims d = dims_of(c);
    int L = c.num_layers, C = c.channels, K = c.num_classes, T = tokens_of(c), BT = B * T;
    long btc = (long)BT * C;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    ModelBuffers* m = &model->buf;
    cublasHandle_t h = m->cublas;
    float drop = model->dropout.fwd_rate;
    model_zero_grads(m);

    {
        NVTX_RANGE("head_backward");
        crossentropy_backward_device(a.dlogits, a.probs, m->targets, m->dloss, B, K);  // 1 / the global batch
        matmul_backward(h, a.dpooled, g.head_w, g.head_b, a.dlogits, a.pooled, p.head_w, m->ones, B, C, K);
    }
    float* dresidual = a.dresidual;        // gradient w.r.t. the current block's output
    float* dresidual_in = a.dresidual_in;  // ... and w.r.t. its input
    { NVTX_RANGE("pool_backward"); mean_pool_backward(dresidual, a.dpooled, B, T, C); }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        if (drop > 0.0f)
            dropout_apply(dresidual, dresidual, btc, drop, dropout_site(model->dropout.seed, model_train_step(m), l));
        if (c.mamba2)
            mamba2_block_backward(h, dresidual_in, dresidual, block_output(model, l - 1, B),
                                  mamba2_layer_params(p.tower2, l, dims2_of(c)), mamba2_layer_params(g.tower2, l, dims2_of(c)),
                                  mamba2_layer_acts(a.tower2, l, B, T, dims2_of(c)), a.block2, m->ones, B, T, dims2_of(c));
        else if (c.bidirectional)
            mamba_bi_block_backward(h, dresidual_in, a.dtokens_rev, dresidual, block_output(model, l - 1, B),
                                    a.tokens_rev + l * btc, mamba_bi_layer_params(p.tower, l, 0, L, d),
                                    mamba_bi_layer_params(g.tower, l, 0, L, d), mamba_bi_layer_acts(a.tower, l, 0, L, B, T, d),
                                    mamba_bi_layer_params(p.tower, l, 1, L, d), mamba_bi_layer_params(g.tower, l, 1, L, d),
                                    mamba_bi_layer_acts(a.tower, l, 1, L, B, T, d), a.block, m->ones, B, T, d);
        else
            mamba_block_backward(h, dresidual_in, dresidual, block_output(model, l - 1, B),
                                 mamba_layer_params(p.tower, l, d), mamba_layer_params(g.tower, l, d),
                                 mamba_layer_acts(a.tower, l, B, T, d), a.block, m->ones, B, T, d);
        std::swap(dresidual, dresidual_in);
    }
    patch_embed_backward(h, g.embed, p.embed, a.embed, dresidual, m->ones, B, c.image, c.patch, C);  // w.r.t. embed_ln
}

// the hooks of the training loop and evaluation (llmc/vision_trainer.h)
static void vision_forward(MambaViT* m, const float* images, const int* labels, int B, int train_step) { mamba_vit_forward(m, images, labels, B, train_step); }
static void vision_backward(MambaViT* m, int B) { mamba_vit_backward(m, B); }

// ----------------------------------------------------------------------------
// main

#ifndef TESTING
int main(int argc, char** argv) {
    // the write-up's configuration, and one that trains in minutes on 2 CPU cores
    //                            L  C    B    epochs steps warmup lr     clip  dropout augment
    VisionPreset presets[2] = {{6, 256, 128, 100, -1, 0, 3e-4f, 0.0f, 0.1f, 1},
                               {2, 64, 64, 100, 1100, 50, 2e-3f, 0.0f, 0.0f, 0}};
    VisionTrainConfig vc = default_vision_config();
    parse_vision_flags(argc, argv, &vc, presets,
                       "  -L <int>    layers (seed preset 6, cpu 2)\n"
                       "  -C <int>    channels, d_model (seed preset 256, cpu 64; inner width 2C, d_state 16, dt rank ceil(C/16))\n"
                       "  -M <name>   blocks: uni, one Mamba mixer (default); bi, bidirectional: a forward mixer and one\n"
                       "              on the patches in reverse order, each block's own; 2, one Mamba-2 (SSD) mixer\n"
                       "              (d_state 64, headdim 64, H = 2C/64 heads) (with -e: the file's unless given)\n"
                       "  -P <int>    patch size, dividing the images' height and width (default 4: 64 patches of\n"
                       "              48 values on 3 x 32 x 32 images, 49 of 16 on 1 x 28 x 28)\n", "LCPM");
    print_preset(vc.preset);
    ImageData train, test;
    load_vision_data(&vc, &train, &test);

    int bidirectional = vc.mixer && !strcmp(vc.mixer, "bi"), mamba2 = vc.mixer && !strcmp(vc.mixer, "2");
    if (vc.init_path && !vc.mixer) {  // the file's blocks
        int kind = model_file_kind(vc.init_path);
        bidirectional = kind == MODEL_MAMBA_VIT_BI;
        mamba2 = kind == MODEL_MAMBA_VIT2;
    }
    const int mamba2_headdim = 64;
    if (mamba2 && !vc.init_path && (2 * vc.C) % mamba2_headdim)
        fail("flag -C: -M 2's inner width 2C = %d is not divisible by its headdim %d", 2 * vc.C, mamba2_headdim);
    MambaViTConfig config =
        mamba2 ? mamba_vit2_config(vc.patch, train.classes, vc.L, vc.C, 64, mamba2_headdim, image_shape_of(&train))
               : mamba_vit_config(vc.patch, train.classes, vc.L, vc.C, 16, image_shape_of(&train), bidirectional);
    if (vc.init_path) {  // the model file decides the shape (its kind must be -M's)
        int s[CONFIG_SLOTS], image[IMAGE_SHAPE_SLOTS];
        model_file_config(vc.init_path, kind_of(config), s, image);
        ImageShape file_image = image_shape_from_slots(vc.init_path, image);
        if (mamba2) config = mamba_vit2_config(s[0], s[1], s[2], s[3], s[4], s[5], file_image);  // N, headdim
        else config = {s[0], s[1], s[2], s[3], s[4], s[5], file_image, bidirectional, 0, 0};
        check_model_images(&vc, config.patch, config.num_classes, config.image, &train);
        check_shape_flag_int(&vc, 'L', vc.L, "num_layers", config.num_layers);
        check_shape_flag_int(&vc, 'C', vc.C, "channels", config.channels);
    } else {
        check_patch_size("flag -P", config.patch, &train);
    }
    MambaViT model;
    mamba_vit_build(&model, config);
    if (vc.init_path) load_model_file(&model.buf, vc.init_path);
    else mamba_vit_init_random(&model, vc.seed);
    mamba_vit_allocate_activations(&model, vc.B > vc.eval_B ? vc.B : vc.eval_B);
    cublasCheck(cublasSetMathMode(model.buf.cublas, CUBLAS_TF32_TENSOR_OP_MATH));

    if (config.mamba2)
        printf("backend %s | Mamba-2 ViT L %d C %d E %d N %d heads %d x %d | patch %d (%d x %d) | %d classes | %ld "
               "parameters | scan SSD chunks of %d\n", BACKEND_NAME, config.num_layers, config.channels, config.inner,
               config.d_state, dims2_of(config).H, config.headdim, config.patch, tokens_of(config),
               patch_dim_of(config), config.num_classes, model.buf.num_parameters, SSD_CHUNK);
    else
        printf("backend %s | %sMamba-ViT L %d C %d E %d N %d R %d | patch %d (%d x %d) | %d classes | %ld parameters | "
               "scan %s\n", BACKEND_NAME, bidirectional ? "bidirectional " : "", config.num_layers, config.channels,
               config.inner, config.d_state, dims_of(config).R, config.patch, tokens_of(config), patch_dim_of(config),
               config.num_classes, model.buf.num_parameters,
               kernel_choices.scan_chunked ? "chunked parallel" : "sequential");
    int status = vision_run(&model, &vc, &train, &test);
    model_free(&model.buf);
    return status;
}
#endif

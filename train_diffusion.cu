/*
A class-conditional denoising diffusion model on images (Fashion-MNIST by
default) whose denoiser is a ViT or a Mamba over patches: the model, top to
bottom.

  config -> tensor table (the parameters' flat buffer) -> activations
  -> init -> forward -> backward -> training loop -> bits/dim -> sampling -> main

The model (doc/models.md, doc/diffusion.md): DDPM with epsilon prediction
(Ho et al. 2020) on the cosine schedule of 1000 steps (Nichol and Dhariwal
2021, llmc/diffusion.cuh). An image's pixels go to x_0 = 2 p / 255 - 1 in
[-1, 1]; a training step draws per image t ~ U{1..1000}, eps ~ N(0, I) and
replaces the label by the null class K with probability -U (so one model
samples with and without classifier-free guidance), and the loss is L_simple,
the mean over batch and pixels of (eps_theta(x_t, t, y) - eps)^2 with
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

The denoiser eps_theta (U-ViT's and DiS's layout, no long skips): x_t
(B, Cc, H, W) -> patches (B, T, PD) (vision.cuh's patchify) -> Linear(PD, C);
the sequence is [time token, class token, T patch tokens] (B, T + 2, C), the
time token the sinusoidal embedding of t (U-ViT's, no MLP), the class token
a row of class_emb (K + 1, C) (row K: no class), plus learned positions
wpe (T + 2, C); then the backbone (-M):
  vit      L pre-norm Transformer blocks (non-causal H-head attention, MLP
           C -> F -> C with GELU; the ViT's, transformer_block.cuh), a final
           LayerNorm
  mamba    L post-norm blocks x = LN(x + Mamba(x)) (the Mamba-ViT's,
           mamba_ssm's Mamba(d_model C, d_state 16, expand 2))
  bimamba  the same with a forward and a reverse mixer per block,
           x = LN(x + Mamba_f(x) + flip(Mamba_b(flip(x)))) (train_mamba_vit -M bi's)
  mamba2   x = LN(x + Mamba2(x)) (d_state 64, headdim 64, train_mamba_vit -M 2's)
and a head Linear(C, PD) on the T patch tokens, back to an image
(B, Cc, H, W): eps_theta. The patches are not layer-normed (the vision
classifiers' patch LayerNorm would discard each patch's level, which the
denoiser needs).

Sampling (-G): DDIM (eta 0) or ancestral DDPM over -k of the 1000 steps,
with guidance eps = eps_u + g (eps_c - eps_u) (-g; 1 is the conditional
model alone, 0 the unconditional one), x_0's prediction clipped to [-1, 1]
at every step; deterministic for a seed (every image's noise is its own).
Bits/dim (-N): the negative ELBO of the first N test images, unconditional
(the null class), every term as Ho et al.: the prior KL at t = 1000, the KL
of every step t = 2..1000 with the reverse variance beta~_t, the
discretized Gaussian decoder at t = 1 (variance beta~_2), in bits per pixel.

Kernels live in llmc/ (this model's own in llmc/diffusion.cuh); the buffers
every model owns and their update in llmc/model.h; flags, data and
checkpoints as the vision classifiers' (llmc/vision_trainer.h).

Build with `make train_diffusion` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/layernorm.cuh"
#include "llmc/matmul.cuh"
#include "llmc/transformer_block.cuh"
#include "llmc/mamba_block.cuh"
#include "llmc/mamba2_block.cuh"
#include "llmc/vision.cuh"
#include "llmc/diffusion.cuh"
#include "llmc/model.h"
#include "llmc/vision_trainer.h"

#include <vector>

// ----------------------------------------------------------------------------
// config

#define BACKBONE_VIT 0
#define BACKBONE_MAMBA 1
#define BACKBONE_BIMAMBA 2
#define BACKBONE_MAMBA2 3
static const char* const backbone_names[4] = {"vit", "mamba", "bimamba", "mamba2"};
static const int backbone_kinds[4] = {MODEL_DIFFUSION_VIT, MODEL_DIFFUSION_MAMBA, MODEL_DIFFUSION_BIMAMBA,
                                      MODEL_DIFFUSION_MAMBA2};

typedef struct {
    int backbone;       // BACKBONE_*
    int patch;          // P
    int num_classes;    // K (the class embedding has K + 1 rows: K is "no class")
    int num_layers;     // L
    int channels;       // C
    int num_heads;      // H (vit)
    int ffn;            // F (vit)
    int inner;          // E = 2C (the Mambas)
    int d_state;        // N (the Mambas)
    int headdim;        // Mamba-2's channels per head
    ImageShape image;
} DiffusionConfig;

// the config slots of model files and checkpoints, per backbone: the ViT's and the Mamba-ViT's
static const char* const vit_slot_names[CONFIG_SLOTS] = {"patch_size", "num_classes", "num_layers", "num_heads",
                                                         "channels", "ffn", "num_params"};
static const char* const mamba_slot_names[CONFIG_SLOTS] = {"patch_size", "num_classes", "num_layers", "channels",
                                                           "inner", "d_state", "num_params"};
static const char* const mamba2_slot_names[CONFIG_SLOTS] = {"patch_size", "num_classes", "num_layers", "channels",
                                                            "d_state", "headdim", "num_params"};

static int patches_of(DiffusionConfig c) { return image_tokens(c.image, c.patch); }      // T
static int tokens_of(DiffusionConfig c) { return patches_of(c) + 2; }                    // TT = T + 2
static int patch_dim_of(DiffusionConfig c) { return image_patch_dim(c.image, c.patch); }  // PD
static long image_dim_of(DiffusionConfig c) { return image_values(c.image); }            // D
static TransformerDims vit_dims(DiffusionConfig c) {  // (one head for the Mambas: their tables' emptied rows)
    TransformerDims d = {c.channels, c.num_heads ? c.num_heads : 1, c.ffn};
    return d;
}
static MambaDims mamba_dims_of(DiffusionConfig c) {
    MambaDims d = {c.channels, c.inner, c.d_state, mamba_dt_rank(c.channels)};
    return d;
}
static Mamba2Dims mamba2_dims_of(DiffusionConfig c) {
    Mamba2Dims d = {c.channels, c.inner, c.d_state, c.headdim, c.headdim ? c.inner / c.headdim : 0};
    return d;
}
static int mixers_of(DiffusionConfig c) { return c.backbone == BACKBONE_BIMAMBA ? 2 : 1; }
static bool is_mamba1(DiffusionConfig c) { return c.backbone == BACKBONE_MAMBA || c.backbone == BACKBONE_BIMAMBA; }

// the config from a model file's slots (or the flags' in the same order)
static DiffusionConfig diffusion_config(int backbone, const int* s, ImageShape image) {
    DiffusionConfig c;
    memset(&c, 0, sizeof(c));
    c.backbone = backbone;
    c.patch = s[0]; c.num_classes = s[1]; c.num_layers = s[2];
    c.image = image;
    if (backbone == BACKBONE_VIT) { c.num_heads = s[3]; c.channels = s[4]; c.ffn = s[5]; }
    else if (backbone == BACKBONE_MAMBA2) { c.channels = s[3]; c.inner = 2 * s[3]; c.d_state = s[4]; c.headdim = s[5]; }
    else { c.channels = s[3]; c.inner = s[4]; c.d_state = s[5]; }
    return c;
}

static void config_slots(DiffusionConfig c, int* s) {
    s[0] = c.patch; s[1] = c.num_classes; s[2] = c.num_layers;
    if (c.backbone == BACKBONE_VIT) { s[3] = c.num_heads; s[4] = c.channels; s[5] = c.ffn; }
    else if (c.backbone == BACKBONE_MAMBA2) { s[3] = c.channels; s[4] = c.d_state; s[5] = c.headdim; }
    else { s[3] = c.channels; s[4] = c.inner; s[5] = c.d_state; }
}

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (the blocks' stacked
// over L); the rows of the backbones not chosen are empty

#define NUM_PARAMETER_TENSORS (4 + TRANSFORMER_STACK_PARAMS + MAMBA_STACK_PARAMS + MAMBA2_STACK_PARAMS + 4)
typedef struct {
    float* patch_w;                 // (C, PD)
    float* patch_b;                 // (C)
    float* class_emb;               // (K + 1, C)
    float* wpe;                     // (T + 2, C)
    TransformerStackParams vit;     // vit: the L blocks, see llmc/transformer_block.cuh
    MambaStackParams mamba;         // mamba, bimamba: the L blocks (2L mixers when bidirectional), see llmc/mamba_block.cuh
    Mamba2StackParams mamba2;       // mamba2: the L blocks, see llmc/mamba2_block.cuh
    float* lnf_w;                   // (C) vit
    float* lnf_b;                   // (C) vit
    float* head_w;                  // (PD, C)
    float* head_b;                  // (PD)
} ParameterTensors;
static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

// name, size, weight decay (the Linear weights and the blocks'), layers
static void diffusion_param_table(TensorSpec* t, DiffusionConfig c) {
    long C = c.channels, K1 = c.num_classes + 1, TT = tokens_of(c), PD = patch_dim_of(c);
    int L = c.num_layers, vit = c.backbone == BACKBONE_VIT;
    *t++ = {"patch_w", C * PD, 1, 1};
    *t++ = {"patch_b", C, 0, 1};
    *t++ = {"class_emb", K1 * C, 0, 1};
    *t++ = {"wpe", TT * C, 0, 1};
    TensorSpec* rows = t;
    t = transformer_stack_param_table(t, L, vit_dims(c));
    if (!vit) empty_rows(rows, t);
    rows = t;
    t = mamba_stack_param_table(t, L, mamba_dims_of(c), mixers_of(c));
    if (!is_mamba1(c)) empty_rows(rows, t);
    t = mamba2_stack_param_table(t, L, mamba2_dims_of(c), c.backbone == BACKBONE_MAMBA2);
    *t++ = {"lnf_w", vit ? C : 0, 0, 1};
    *t++ = {"lnf_b", vit ? C : 0, 0, 1};
    *t++ = {"head_w", PD * C, 1, 1};
    *t++ = {"head_b", PD, 0, 1};
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for what backward needs, the schedule's
// tables, and scratch. The time steps of the rows are buf.inputs (B ints),
// their classes buf.targets (B ints).

#define NUM_ACTIVATION_TENSORS (5 + TRANSFORMER_STACK_ACTS + MAMBA_STACK_ACTS + MAMBA2_STACK_ACTS + 8 + \
                                TRANSFORMER_SCRATCH + MAMBA_SCRATCH + MAMBA2_SCRATCH + 8)
typedef struct {
    float* noise;         // (B, D)  eps, the noise the model predicts (an input)
    float* noisy;         // (B, D)  x_t, the denoiser's input
    float* patches;       // (B, T, PD)
    float* patch_emb;     // (B, T, C)
    float* tokens;        // (B, T + 2, C)  the backbone's input
    TransformerStackActs vit;    // vit's L blocks
    MambaStackActs mamba;        // mamba's, bimamba's L blocks
    Mamba2StackActs mamba2;      // mamba2's L blocks
    float* tokens_rev;    // (L, B, T + 2, C)  bimamba: each block's input reversed
    float* lnf;           // (B, T + 2, C)  vit
    float* lnf_mean;      // (B, T + 2)  vit
    float* lnf_rstd;      // (B, T + 2)  vit
    float* rows;          // (B, T + 2, PD)  the head's output (rows 2.. are the patches')
    float* eps_pred;      // (B, D)
    float* losses;        // (B)
    float* tables;        // the schedule's device tables (diffusion.cuh's DiffusionTables)
    // scratch
    TransformerScratch vit_scratch;
    MambaScratch mamba_scratch;
    Mamba2Scratch mamba2_scratch;
    float* deps;          // (B, D)
    float* drows;         // (B, T + 2, PD)
    float* dfeatures;     // (B, T + 2, C)  gradient w.r.t. the head's input
    float* dresidual;     // (B, T + 2, C)
    float* dresidual_in;  // (B, T + 2, C)
    float* dtokens_rev;   // (B, T + 2, C)  bimamba
    float* dpatch_emb;    // (B, T, C)
    float* dpatches;      // (B, T, PD)  (unused: x_t needs no gradient)
} ActivationTensors;
static_assert(sizeof(ActivationTensors) == NUM_ACTIVATION_TENSORS * sizeof(float*), "one pointer per tensor");

static void diffusion_act_table(TensorSpec* t, DiffusionConfig c, int B) {
    long C = c.channels, T = patches_of(c), TT = tokens_of(c), PD = patch_dim_of(c), D = image_dim_of(c);
    long BT = (long)B * T, BTT = (long)B * TT;
    int L = c.num_layers, vit = c.backbone == BACKBONE_VIT, mamba1 = is_mamba1(c);
    long rev = c.backbone == BACKBONE_BIMAMBA ? BTT * C : 0;
    *t++ = {"noise", B * D, 0, 1};
    *t++ = {"noisy", B * D, 0, 1};
    *t++ = {"patches", BT * PD, 0, 1};
    *t++ = {"patch_emb", BT * C, 0, 1};
    *t++ = {"tokens", BTT * C, 0, 1};
    TensorSpec* rows = t;
    t = transformer_stack_act_table(t, L, B, (int)TT, vit_dims(c));
    if (!vit) empty_rows(rows, t);
    rows = t;
    t = mamba_stack_act_table(t, L, B, (int)TT, mamba_dims_of(c), mixers_of(c));
    if (!mamba1) empty_rows(rows, t);
    t = mamba2_stack_act_table(t, L, B, (int)TT, mamba2_dims_of(c), c.backbone == BACKBONE_MAMBA2);
    *t++ = {"tokens_rev", L * rev, 0, L};
    *t++ = {"lnf", vit ? BTT * C : 0, 0, 1};
    *t++ = {"lnf_mean", vit ? BTT : 0, 0, 1};
    *t++ = {"lnf_rstd", vit ? BTT : 0, 0, 1};
    *t++ = {"rows", BTT * PD, 0, 1};
    *t++ = {"eps_pred", B * D, 0, 1};
    *t++ = {"losses", B, 0, 1};
    *t++ = {"tables", diffusion_tables_size((int)C), 0, 1};
    rows = t;
    t = transformer_scratch_table(t, B, (int)TT, vit_dims(c));
    if (!vit) empty_rows(rows, t);
    rows = t;
    t = mamba_scratch_table(t, B, (int)TT, mamba_dims_of(c));
    if (!mamba1) empty_rows(rows, t);
    t = mamba2_scratch_table(t, B, (int)TT, mamba2_dims_of(c), c.backbone == BACKBONE_MAMBA2);
    *t++ = {"deps", B * D, 0, 1};
    *t++ = {"drows", BTT * PD, 0, 1};
    *t++ = {"dfeatures", BTT * C, 0, 1};
    *t++ = {"dresidual", BTT * C, 0, 1};
    *t++ = {"dresidual_in", BTT * C, 0, 1};
    *t++ = {"dtokens_rev", rev, 0, 1};
    *t++ = {"dpatch_emb", BT * C, 0, 1};
    *t++ = {"dpatches", BT * PD, 0, 1};
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    DiffusionConfig config;
    ParameterTensors params;  // pointers into buf.params_memory
    ParameterTensors grads;   // ... and into buf.grads_memory
    ActivationTensors acts;   // ... and into buf.acts_memory
    DiffusionTables tables;   // into acts.tables
    ModelBuffers buf;         // the buffers, the cuBLAS handle, the last loss (llmc/model.h)
} Diffusion;

static void diffusion_build(Diffusion* model, DiffusionConfig c) {
    if (c.backbone == BACKBONE_VIT && c.channels % c.num_heads)
        fail("flag -C/-H: channels %d are not divisible by heads %d", c.channels, c.num_heads);
    if (c.backbone == BACKBONE_MAMBA2) ssd_check_limits(c.inner, c.headdim, c.d_state);
    if (is_mamba1(c)) scan_check_limits(c.d_state);
    model->config = c;
    TensorSpec table[NUM_PARAMETER_TENSORS];
    diffusion_param_table(table, c);
    int slots[CONFIG_SLOTS - 1];
    config_slots(c, slots);
    const char* const* names = c.backbone == BACKBONE_VIT      ? vit_slot_names
                             : c.backbone == BACKBONE_MAMBA2 ? mamba2_slot_names
                                                               : mamba_slot_names;
    model_build(&model->buf, backbone_kinds[c.backbone], names, slots, table, NUM_PARAMETER_TENSORS, &model->params,
                &model->grads, sizeof(model->params));
    image_shape_to_slots(c.image, model->buf.image_shape);
}

// The blocks as their models' (the ViT's PyTorch defaults, mamba_ssm's
// initialization for the Mambas); the patch and head Linears PyTorch's
// default U(+-1/sqrt(fan_in)); class_emb and wpe N(0, 0.02^2); the final
// LayerNorm 1 and 0
static void diffusion_init_random(Diffusion* model, uint64_t seed) {
    DiffusionConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->buf.num_parameters, 0.0f);
    ParameterTensors p;  // pointers into the host copy
    point_tensors(&p, host.data(), model->buf.param_table, NUM_PARAMETER_TENSORS);
    long C = c.channels, K1 = c.num_classes + 1, TT = tokens_of(c), PD = patch_dim_of(c), L = c.num_layers;
    auto uniform = [&](float* w, long n, long fan_in) {
        for (long i = 0; i < n; i++) w[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)fan_in);
    };
    uniform(p.patch_w, C * PD, PD);
    uniform(p.patch_b, C, PD);
    for (long i = 0; i < K1 * C; i++) p.class_emb[i] = 0.02f * rng_normal(&rng);
    for (long i = 0; i < TT * C; i++) p.wpe[i] = 0.02f * rng_normal(&rng);
    if (c.backbone == BACKBONE_VIT) {
        long F = c.ffn;
        TransformerStackParams& w = p.vit;
        uniform(w.qkv_w, L * 3 * C * C, C); uniform(w.qkv_b, L * 3 * C, C);
        uniform(w.attn_proj_w, L * C * C, C); uniform(w.attn_proj_b, L * C, C);
        uniform(w.fc_w, L * F * C, C); uniform(w.fc_b, L * F, C);
        uniform(w.fc_proj_w, L * C * F, F); uniform(w.fc_proj_b, L * C, F);
        for (long i = 0; i < L * C; i++) { w.ln1_w[i] = 1.0f; w.ln2_w[i] = 1.0f; }
        for (long i = 0; i < C; i++) p.lnf_w[i] = 1.0f;
    } else if (c.backbone == BACKBONE_MAMBA2) {
        mamba2_stack_init(p.mamba2, c.num_layers, mamba2_dims_of(c), &rng);
    } else {
        mamba_stack_init(p.mamba, c.num_layers, mamba_dims_of(c), &rng, mixers_of(c));
    }
    uniform(p.head_w, PD * C, C);
    uniform(p.head_b, PD, C);
    model_upload_params(&model->buf, host.data());
}

// sizes the activations for batches up to B rows (a sampling batch is 2 rows per image), uploads the tables
static void diffusion_allocate_activations(Diffusion* model, int B) {
    TensorSpec table[NUM_ACTIVATION_TENSORS];
    diffusion_act_table(table, model->config, B);
    model_allocate_activations(&model->buf, table, NUM_ACTIVATION_TENSORS, &model->acts, sizeof(model->acts), B,
                               tokens_of(model->config), 1, B, "-b/-B");
    model->tables = diffusion_tables_upload(model->acts.tables, model->config.channels);
}

// The rows' inputs, host to device, before a forward: time steps t (B, in
// 1..1000), classes y (B, K for none), and the noise eps (B, D) when given
static void diffusion_upload_inputs(Diffusion* model, const int* t, const int* y, const float* eps, int B) {
    ModelBuffers* m = &model->buf;
    if (B > m->batch_size) fail("diffusion_upload_inputs: batch %d exceeds the allocation", B);
    model_upload_batch(m, t, B, y, B);
    if (eps)
        cudaCheck(cudaMemcpyAsync(model->acts.noise, eps, (long)B * image_dim_of(model->config) * sizeof(float),
                                  cudaMemcpyHostToDevice, main_stream));
}

// the output of block l (l = -1: the tokens)
static const float* block_output(const Diffusion* model, int l, int B) {
    DiffusionConfig c = model->config;
    const ActivationTensors& a = model->acts;
    if (l < 0) return a.tokens;
    int TT = tokens_of(c);
    if (c.backbone == BACKBONE_VIT) return transformer_layer_acts(a.vit, l, B, TT, vit_dims(c)).residual3;
    if (c.backbone == BACKBONE_MAMBA2) return mamba2_layer_acts(a.mamba2, l, B, TT, mamba2_dims_of(c)).ln;
    return mamba_layer_acts(a.mamba, l, B, TT, mamba_dims_of(c)).ln;
}

// the head's input (B, T + 2, C): the final LayerNorm's output (vit), the last block's (the Mambas)
static const float* features_of(const Diffusion* model, int B) {
    if (model->config.backbone == BACKBONE_VIT) return model->acts.lnf;
    return block_output(model, model->config.num_layers - 1, B);
}

// ----------------------------------------------------------------------------
// forward

// eps_theta(x_t, t, y) into acts.eps_pred (B, D) from x_t (B, Cc, H, W)
// (device), with the rows' t and y on the device (diffusion_upload_inputs)
static void denoiser_forward(Diffusion* model, const float* x_t, int B) {
    NVTX_RANGE("denoiser_forward");
    DiffusionConfig c = model->config;
    ModelBuffers* m = &model->buf;
    int L = c.num_layers, C = c.channels, T = patches_of(c), TT = tokens_of(c), PD = patch_dim_of(c);
    long btc = (long)B * TT * C;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    {
        NVTX_RANGE("tokens_forward");
        patchify(a.patches, x_t, B, c.image.channels, c.image.height, c.image.width, c.patch);
        matmul_forward(h, a.patch_emb, a.patches, p.patch_w, p.patch_b, B * T, PD, C);
        diffusion_tokens_forward(a.tokens, a.patch_emb, p.class_emb, model->tables.time_embedding, p.wpe, m->inputs,
                                 m->targets, B, T, C);
    }
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        const float* x = block_output(model, l - 1, B);
        if (c.backbone == BACKBONE_VIT) {
            transformer_block_forward(h, transformer_layer_params(p.vit, l, vit_dims(c)),
                                      transformer_layer_acts(a.vit, l, B, TT, vit_dims(c)), a.vit_scratch, x, B, TT,
                                      vit_dims(c), 0, NO_DROPOUT);
        } else if (c.backbone == BACKBONE_MAMBA2) {
            mamba2_block_forward(h, mamba2_layer_params(p.mamba2, l, mamba2_dims_of(c)),
                                 mamba2_layer_acts(a.mamba2, l, B, TT, mamba2_dims_of(c)), x, B, TT, mamba2_dims_of(c));
        } else if (c.backbone == BACKBONE_BIMAMBA) {
            MambaDims d = mamba_dims_of(c);
            mamba_bi_block_forward(h, mamba_bi_layer_params(p.mamba, l, 0, L, d), mamba_bi_layer_acts(a.mamba, l, 0, L, B, TT, d),
                                   mamba_bi_layer_params(p.mamba, l, 1, L, d), mamba_bi_layer_acts(a.mamba, l, 1, L, B, TT, d),
                                   a.tokens_rev + l * btc, x, B, TT, d);
        } else {
            MambaDims d = mamba_dims_of(c);
            mamba_block_forward(h, mamba_layer_params(p.mamba, l, d), mamba_layer_acts(a.mamba, l, B, TT, d), x, B, TT, d);
        }
    }
    if (c.backbone == BACKBONE_VIT) {
        NVTX_RANGE("lnf_forward");
        layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, block_output(model, L - 1, B), p.lnf_w, p.lnf_b, B * TT, C);
    }
    {
        NVTX_RANGE("head_forward");
        matmul_forward(h, a.rows, features_of(model, B), p.head_w, p.head_b, B * TT, C, PD);
        patch_rows_to_images(a.eps_pred, a.rows, B, c.image, c.patch);
    }
}

// The training objective on clean images (B, Cc, H, W) in [0, 1] (device),
// with the rows' t, y and eps on the device: x_t, eps_theta, the per-image
// losses and their mean (buf.mean_loss)
static void diffusion_forward(Diffusion* model, const float* images, int B) {
    NVTX_RANGE("forward");
    DiffusionConfig c = model->config;
    ModelBuffers* m = &model->buf;
    ActivationTensors a = model->acts;
    long D = image_dim_of(c);
    { NVTX_RANGE("noise_forward"); noise_images(a.noisy, images, a.noise, m->inputs, model->tables, B, D); }
    denoiser_forward(model, a.noisy, B);
    {
        NVTX_RANGE("mse_forward");
        mse_forward(a.losses, a.eps_pred, a.noise, B, D);
        model_mean_loss(m, a.losses, B);
    }
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last diffusion_forward

static void diffusion_backward(Diffusion* model, int B) {
    NVTX_RANGE("backward");
    DiffusionConfig c = model->config;
    int L = c.num_layers, C = c.channels, T = patches_of(c), TT = tokens_of(c), PD = patch_dim_of(c);
    long D = image_dim_of(c), btc = (long)B * TT * C;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    ModelBuffers* m = &model->buf;
    cublasHandle_t h = m->cublas;
    model_zero_grads(m);
    {
        NVTX_RANGE("head_backward");
        mse_backward(a.deps, a.eps_pred, a.noise, m->dloss, B, D);  // dloss: 1 / the global batch
        images_to_patch_rows(a.drows, a.deps, B, c.image, c.patch);
        matmul_backward(h, a.dfeatures, g.head_w, g.head_b, a.drows, features_of(model, B), p.head_w, m->ones, B * TT,
                        C, PD);
    }
    float* dresidual = a.dresidual;        // gradient w.r.t. the current block's output
    float* dresidual_in = a.dresidual_in;  // ... and w.r.t. its input (the Mambas swap the two)
    if (c.backbone == BACKBONE_VIT) {
        NVTX_RANGE("lnf_backward");
        cudaCheck(cudaMemsetAsync(dresidual, 0, btc * sizeof(float), main_stream));
        layernorm_backward(dresidual, g.lnf_w, g.lnf_b, a.dfeatures, block_output(model, L - 1, B), p.lnf_w,
                           a.lnf_mean, a.lnf_rstd, B * TT, C);
    } else {
        cudaCheck(cudaMemcpyAsync(dresidual, a.dfeatures, btc * sizeof(float), cudaMemcpyDeviceToDevice, main_stream));
    }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        const float* x = block_output(model, l - 1, B);
        if (c.backbone == BACKBONE_VIT) {
            TransformerDims d = vit_dims(c);
            transformer_block_backward(h, dresidual, x, transformer_layer_params(p.vit, l, d),
                                       transformer_layer_params(g.vit, l, d), transformer_layer_acts(a.vit, l, B, TT, d),
                                       a.vit_scratch, m->ones, B, TT, d, 0, NO_DROPOUT);
            continue;  // in place
        }
        if (c.backbone == BACKBONE_MAMBA2) {
            Mamba2Dims d = mamba2_dims_of(c);
            mamba2_block_backward(h, dresidual_in, dresidual, x, mamba2_layer_params(p.mamba2, l, d),
                                  mamba2_layer_params(g.mamba2, l, d), mamba2_layer_acts(a.mamba2, l, B, TT, d),
                                  a.mamba2_scratch, m->ones, B, TT, d);
        } else if (c.backbone == BACKBONE_BIMAMBA) {
            MambaDims d = mamba_dims_of(c);
            mamba_bi_block_backward(h, dresidual_in, a.dtokens_rev, dresidual, x, a.tokens_rev + l * btc,
                                    mamba_bi_layer_params(p.mamba, l, 0, L, d), mamba_bi_layer_params(g.mamba, l, 0, L, d),
                                    mamba_bi_layer_acts(a.mamba, l, 0, L, B, TT, d),
                                    mamba_bi_layer_params(p.mamba, l, 1, L, d), mamba_bi_layer_params(g.mamba, l, 1, L, d),
                                    mamba_bi_layer_acts(a.mamba, l, 1, L, B, TT, d), a.mamba_scratch, m->ones, B, TT, d);
        } else {
            MambaDims d = mamba_dims_of(c);
            mamba_block_backward(h, dresidual_in, dresidual, x, mamba_layer_params(p.mamba, l, d),
                                 mamba_layer_params(g.mamba, l, d), mamba_layer_acts(a.mamba, l, B, TT, d),
                                 a.mamba_scratch, m->ones, B, TT, d);
        }
        std::swap(dresidual, dresidual_in);
    }
    {
        NVTX_RANGE("tokens_backward");  // dresidual: the gradient w.r.t. the tokens
        diffusion_tokens_backward(a.dpatch_emb, g.class_emb, g.wpe, dresidual, m->targets, B, T, c.num_classes + 1, C);
        matmul_backward(h, a.dpatches, g.patch_w, g.patch_b, a.dpatch_emb, a.patches, p.patch_w, m->ones, B * T, PD, C);
    }
}

// ----------------------------------------------------------------------------
// the rows' random draws (diffusion.cuh's keyed generator): a training row
// r of step s draws t, whether its label is dropped (probability p_uncond)
// and eps; an evaluation image i draws t and eps (its label kept)

typedef struct {
    std::vector<int> t, y;
    std::vector<float> eps;
} RowDraws;

static void draw_rows(RowDraws* d, uint64_t seed, int what, uint64_t first_index, const int* labels, int B, long D,
                      float p_uncond, int null_class) {
    d->t.resize(B); d->y.resize(B); d->eps.resize((long)B * D);
    for (int b = 0; b < B; b++) {
        Rng r = keyed_rng(seed, what, first_index + b);
        d->t[b] = 1 + (int)(rng_u32(&r) % DIFFUSION_STEPS);
        d->y[b] = rng_uniform(&r) < p_uncond ? null_class : labels[b];
        draw_normals(&r, d->eps.data() + (long)b * D, D);
    }
}

// ----------------------------------------------------------------------------
// evaluation: L_simple on the first n test images, t and eps of image i
// drawn from seed 0 (the same for every model and run)

static float diffusion_evaluate(Diffusion* model, VisionBatcher* vb, const ImageData* test, int eval_B, int n) {
    NVTX_RANGE("evaluate");
    long D = image_dim_of(model->config);
    std::vector<int> labels(eval_B);
    RowDraws draws;
    double sum = 0.0;
    if (n > test->count || n <= 0) n = test->count;
    for (int first = 0; first < n; first += eval_B) {
        int B = std::min(eval_B, n - first);
        vision_eval_batch(vb, test, first, B, labels.data());
        draw_rows(&draws, 0, DRAW_EVAL, first, labels.data(), B, D, 0.0f, 0);
        diffusion_upload_inputs(model, draws.t.data(), draws.y.data(), draws.eps.data(), B);
        diffusion_forward(model, vb->images, B);
        sum += (double)model->buf.mean_loss * B;
    }
    return (float)(sum / n);
}

// ----------------------------------------------------------------------------
// bits/dim: the negative ELBO of the first n test images (diffusion.cuh's
// terms), unconditional; eps of image i at step t from seed 0. Prints the
// terms and returns the bits per dimension.

static double diffusion_bits_per_dim(Diffusion* model, VisionBatcher* vb, const ImageData* test, int eval_B, int n) {
    NVTX_RANGE("bits_per_dim");
    DiffusionConfig c = model->config;
    long D = image_dim_of(c);
    DiffusionSchedule s = diffusion_schedule();
    int K = c.num_classes;
    if (n > test->count) n = test->count;
    double t0 = host_clock(), prior = 0.0, steps = 0.0, decoder = 0.0;
    std::vector<int> labels(eval_B), t(eval_B), y(eval_B, K);
    std::vector<float> eps(eval_B * D), x0(eval_B * D), x1(eval_B * D), pred(eval_B * D), losses(eval_B);
    for (int first = 0; first < n; first += eval_B) {
        int B = std::min(eval_B, n - first);
        vision_eval_batch(vb, test, first, B, labels.data());
        cudaCheck(cudaMemcpy(x0.data(), vb->images, B * D * sizeof(float), cudaMemcpyDeviceToHost));
        for (long i = 0; i < B * D; i++) x0[i] = 2.0f * x0[i] - 1.0f;
        for (int b = 0; b < B; b++) prior += elbo_prior_term(s, x0.data() + b * D, D);
        for (int step = 1; step <= DIFFUSION_STEPS; step++) {
            for (int b = 0; b < B; b++) {
                Rng r = keyed_rng(0, DRAW_ELBO, (uint64_t)(first + b) * DIFFUSION_STEPS + step - 1);
                draw_normals(&r, eps.data() + b * D, D);
                t[b] = step;
            }
            diffusion_upload_inputs(model, t.data(), y.data(), eps.data(), B);
            diffusion_forward(model, vb->images, B);
            if (step > 1) {
                cudaCheck(cudaMemcpy(losses.data(), model->acts.losses, B * sizeof(float), cudaMemcpyDeviceToHost));
                for (int b = 0; b < B; b++) steps += elbo_step_coefficient(s, step) * (double)losses[b] * D;
                continue;
            }
            cudaCheck(cudaMemcpy(pred.data(), model->acts.eps_pred, B * D * sizeof(float), cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(x1.data(), model->acts.noisy, B * D * sizeof(float), cudaMemcpyDeviceToHost));
            double sigma = sqrt(reverse_variance(s, 1));
            for (long i = 0; i < B * D; i++) decoder += elbo_decoder_term(x0[i], elbo_decoder_mean(s, x1[i], pred[i]), sigma);
        }
    }
    double per_dim = 1.0 / ((double)n * D * log(2.0));
    double bpd = (prior + steps + decoder) * per_dim;
    printf("bits/dim %.4f over the first %d test images (unconditional): prior %.4f + steps 2..%d %.4f + decoder "
           "%.4f | %.1f s\n", bpd, n, prior * per_dim, DIFFUSION_STEPS, steps * per_dim, decoder * per_dim,
           host_clock() - t0);
    return bpd;
}

// ----------------------------------------------------------------------------
// sampling: per_class images of each class, in class order, into an images
// file. Image i's noise is keyed_rng(seed, DRAW_SAMPLE, i): x_T, then z of
// each step that has noise. Batches of up to max_B / 2 images (each row
// twice: with its class and with none).

static void diffusion_sample(Diffusion* model, int per_class, int sampler, int steps, float guidance, uint64_t seed,
                             const char* path) {
    NVTX_RANGE("sample");
    DiffusionConfig c = model->config;
    ModelBuffers* m = &model->buf;
    ActivationTensors a = model->acts;
    long D = image_dim_of(c);
    int K = c.num_classes, n = per_class * K, max_B = m->batch_size / 2;
    if (max_B < 1) fail("flag -B: sampling needs a batch of at least 2 rows");
    DiffusionSchedule s = diffusion_schedule();
    std::vector<unsigned char> pixels(n * D), labels(n);
    std::vector<float> x(max_B * D), z(max_B * D);
    std::vector<int> t(2 * max_B), y(2 * max_B);
    std::vector<Rng> rngs(max_B);
    double t0 = host_clock();
    for (int first = 0; first < n; first += max_B) {
        int B = std::min(max_B, n - first);
        for (int b = 0; b < B; b++) {
            rngs[b] = keyed_rng(seed, DRAW_SAMPLE, first + b);
            draw_normals(&rngs[b], x.data() + b * D, D);
            y[b] = (first + b) / per_class;
            y[B + b] = K;
        }
        cudaCheck(cudaMemcpy(a.noisy, x.data(), B * D * sizeof(float), cudaMemcpyHostToDevice));
        for (int i = steps - 1; i >= 0; i--) {
            SamplerStep st = sampler_step(s, sampler, steps, i);
            for (int b = 0; b < 2 * B; b++) t[b] = st.t;
            diffusion_upload_inputs(model, t.data(), y.data(), nullptr, 2 * B);
            cudaCheck(cudaMemcpyAsync(a.noisy + B * D, a.noisy, B * D * sizeof(float), cudaMemcpyDeviceToDevice, main_stream));
            denoiser_forward(model, a.noisy, 2 * B);
            if (st.sigma > 0.0f) {
                for (int b = 0; b < B; b++) draw_normals(&rngs[b], z.data() + b * D, D);
                cudaCheck(cudaMemcpyAsync(a.noise, z.data(), B * D * sizeof(float), cudaMemcpyHostToDevice, main_stream));
            }
            sampler_apply(a.noisy, a.eps_pred, a.noise, guidance, st, B, D);
        }
        cudaCheck(cudaMemcpy(x.data(), a.noisy, B * D * sizeof(float), cudaMemcpyDeviceToHost));
        for (long i = 0; i < B * D; i++) {
            float v = roundf((x[i] + 1.0f) * 127.5f);
            pixels[first * D + i] = (unsigned char)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
        }
        for (int b = 0; b < B; b++) labels[first + b] = (unsigned char)y[b];
    }
    double seconds = host_clock() - t0;
    image_data_write(path, labels.data(), pixels.data(), n, c.image.channels, c.image.height, c.image.width, K);
    printf("sampled %d images (%d per class, %s %d steps, guidance %g) in %.1f s, %.1f ms per image; wrote %s\n", n,
           per_class, sampler == SAMPLER_DDPM ? "DDPM" : "DDIM", steps, guidance, seconds, 1000.0 * seconds / n, path);
}

// ----------------------------------------------------------------------------
// the training loop: batches as the vision classifiers' (vision_train_batch:
// shuffled per epoch, augmented as -A says), the rows' draws keyed by the
// seed, the step and the global row, an evaluation (L_simple on the test
// images) every -v epochs and at the end, checkpoints every -n, exact resume.
// Returns the last test loss.

static float diffusion_train(Diffusion* model, VisionTrainConfig* vc, const ImageData* train, const ImageData* test,
                             float p_uncond) {
    ModelBuffers* m = &model->buf;
    int T = m->seq_len, G = vc->B * dist.world, K = model->config.num_classes;
    long D = image_dim_of(model->config);
    AdamWConfig opt = {vc->lr, 0.9f, vc->beta2, 1e-8f, vc->weight_decay, vc->grad_clip};
    if (train->count < G) fail("flag -b: the global batch %d is larger than the %d images of %s", G, train->count, vc->train_path);
    int steps_per_epoch = train->count / G;
    int max_steps = vc->max_steps >= 0 ? vc->max_steps : vc->epochs * steps_per_epoch;
    int epochs = CEIL_DIV(max_steps, steps_per_epoch);
    int eval_n = vc->eval_batches > 0 ? vc->eval_batches * vc->eval_B : test->count;
    Rng aug_rng;
    rng_seed(&aug_rng, vc->seed);
    uint64_t seed = vc->seed;
    const char* out_dir = open_output_dir(vc->out_dir, vc->resume, max_steps == 0);  // null: the run writes nowhere
    std::vector<int> found_steps = out_dir ? checkpoint_steps(out_dir) : std::vector<int>();
    int start_step = vc->resume ? vision_resume(m, vc, train, G, max_steps, &aug_rng, &seed) : 0;
    check_ranks_alike(m, {vc->B, vc->eval_B, T, max_steps, start_step, dist.zero, train->count, test->count,
                          (long)aug_rng.state, (long)seed, (long)(p_uncond * 1e6f)});
    printf("batch %d (eval %d images) | %d epochs of %d steps (%d steps) | lr %g warmup %d final x%g | betas 0.9 %g | "
           "wd %g | clip %g | label drop %g\n", vc->B, eval_n, epochs, steps_per_epoch, max_steps, opt.lr, vc->warmup,
           vc->final_frac, opt.beta2, opt.weight_decay, opt.grad_clip, p_uncond);

    VisionLoop L;
    vision_loop_begin(&L, m, out_dir, start_step, vc->B, train);
    RowDraws draws;
    float test_loss = NAN;
    for (int step = start_step; step <= max_steps; step++) {
        bool last = step == max_steps;
        int eval_interval = vc->eval_every * steps_per_epoch;
        if ((eval_interval > 0 && step > 0 && step % eval_interval == 0) || last) {
            test_loss = diffusion_evaluate(model, &L.vb, test, vc->eval_B, eval_n);
            char t[32];
            format_duration(t, sizeof(t), host_clock() - L.run_start);
            printf("evaluation at step %d (epoch %.2f): test loss %f | %s\n", step, (double)step / steps_per_epoch,
                   test_loss, t);
            fflush(stdout);
            log_eval(&L.logger, step, "test_loss", test_loss, host_clock() - L.run_start);
        }
        if (vc->out_dir && step > start_step && ((vc->checkpoint_every > 0 && step % vc->checkpoint_every == 0) || last))
            save_checkpoint(m, out_dir, step, aug_rng.state, seed, G, T, (int)seed, train->count, found_steps);
        if (last) break;
        vision_loop_step(
            &L, m, vc, &opt, train, seed, step, start_step, max_steps, &aug_rng, out_dir,
            [&](const int* labels) {  // the rows' t, classes (some dropped) and noise
                draw_rows(&draws, seed, DRAW_TRAIN, (uint64_t)step * G + dist_rows(vc->B), labels, vc->B, D, p_uncond, K);
                diffusion_upload_inputs(model, draws.t.data(), draws.y.data(), draws.eps.data(), vc->B);
            },
            [&](const float* images) {
                diffusion_forward(model, images, vc->B);
                diffusion_backward(model, vc->B);
            });
    }
    vision_loop_end(&L, m, out_dir, max_steps);
    printf("final test loss %f | %.1f s\n", test_loss, host_clock() - L.run_start);
    return test_loss;
}

// ----------------------------------------------------------------------------
// main

#ifndef TESTING
// this model's own flags (parse_vision_flags takes them first)
static struct {
    int backbone = BACKBONE_VIT;  // -M
    float p_uncond = 0.1f;        // -U
    int per_class = 0;            // -G
    const char* samples_path = nullptr;  // -O
    int sampler = SAMPLER_DDIM;   // -K
    int steps = 100;              // -k
    float guidance = 4.0f;        // -g
    int elbo_images = 0;          // -N
} df;

static bool diffusion_flag(char letter, const char* f, const char* v) {
    switch (letter) {
        case 'M':
            for (int b = 0; b < 4; b++)
                if (!strcmp(v, backbone_names[b])) { df.backbone = b; return true; }
            fail("flag -M: '%s' is not a denoiser (vit, mamba, bimamba or mamba2)", v);
        case 'U': df.p_uncond = parse_float_flag(f, v, 0.0f, 1.0f); return true;
        case 'G': df.per_class = parse_int_flag(f, v, 0, 1 << 16); return true;
        case 'O': df.samples_path = v; return true;
        case 'K':
            if (!strcmp(v, "ddim")) df.sampler = SAMPLER_DDIM;
            else if (!strcmp(v, "ddpm")) df.sampler = SAMPLER_DDPM;
            else fail("flag -K: '%s' is not a sampler (ddim or ddpm)", v);
            return true;
        case 'k': df.steps = parse_int_flag(f, v, 1, DIFFUSION_STEPS); return true;
        case 'g': df.guidance = parse_float_flag(f, v, -100.0f, 100.0f); return true;
        case 'N': df.elbo_images = parse_int_flag(f, v, 0, 1 << 30); return true;
        case 'W': fail("flag -W: the classifiers' (train_vit, train_mamba_vit); train_diffusion has no pooled features");
        default: return false;
    }
}

int main(int argc, char** argv) {
    // the write-up's widths for a GPU, and a run of minutes on 2 CPU cores
    //                            L  C    B    epochs steps warmup lr     clip  dropout augment
    VisionPreset presets[2] = {{6, 256, 128, 100, -1, 500, 2e-4f, 1.0f, 0.0f, 0},
                               {4, 96, 64, 100, 6000, 100, 1e-3f, 1.0f, 0.0f, 0}};
    VisionTrainConfig vc = default_vision_config();
    vc.train_path = "data/fashion_mnist_train.bin";
    vc.test_path = "data/fashion_mnist_test.bin";
    vc.H = 4;
    vc.eval_batches = 4;
    vc.print_every = 100;
    parse_vision_flags(argc, argv, &vc, presets,
                       "  -M <name>   the denoiser: vit (default), mamba, bimamba (a forward and a reverse mixer per\n"
                       "              block) or mamba2\n"
                       "  -L <int>    layers (seed preset 6, cpu 4)\n"
                       "  -C <int>    channels (seed preset 256, cpu 96; the Mambas' inner width 2C)\n"
                       "  -H <int>    vit: heads (default 4)\n"
                       "  -F <int>    vit: MLP hidden width (default 4C)\n"
                       "  -P <int>    patch size, dividing the images' height and width (default 4)\n"
                       "  -U <float>  probability of dropping a training image's label (default 0.1)\n"
                       "  -G <int>    after training (or with -e), sample this many images of each class (default 0)\n"
                       "  -O <path>   the sampled images file (default: samples.bin in -o; needed without -o)\n"
                       "  -K <name>   sampler: ddim (default) or ddpm (ancestral)\n"
                       "  -k <int>    sampling steps, of the 1000 (default 100; ddpm with 1000 is Ho et al.'s sampler)\n"
                       "  -g <float>  classifier-free guidance scale: 1 conditional, 0 unconditional (default 4)\n"
                       "  -N <int>    after training, bits/dim (the negative ELBO) on the first N test images (default 0)\n",
                       "LCHFPM", diffusion_flag);
    print_preset(vc.preset);
    if (vc.dropout > 0.0f) fail("flag -D: train_diffusion has no dropout");
    if ((df.per_class > 0 || df.elbo_images > 0) && dist.on)
        fail("flags -G and -N: not under mpirun (sample and evaluate in a run of one process)");
    std::string samples_path;  // -O, or samples.bin in the output directory of a run that trains
    if (df.per_class > 0) {
        if (df.samples_path) {
            check_output_file("-O", df.samples_path, MAGIC_IMAGES, "an images file", nullptr);
            samples_path = df.samples_path;
        } else if (vc.out_dir && vc.max_steps != 0) {
            samples_path = std::string(vc.out_dir) + "/samples.bin";
        } else {
            fail("flag -G: give the samples file with -O (or an output directory -o to a run that trains)");
        }
    }
    ImageData train, test;
    load_vision_data(&vc, &train, &test);

    int s[CONFIG_SLOTS], image[IMAGE_SHAPE_SLOTS];
    DiffusionConfig config;
    if (vc.init_path) {  // the model file decides the denoiser and its shape
        int kind = model_file_kind(vc.init_path), backbone = -1;
        for (int b = 0; b < 4; b++) if (kind == backbone_kinds[b]) backbone = b;
        if (backbone < 0)
            fail("%s: holds a %s; train_diffusion takes diffusion models (kinds 11..14)", vc.init_path,
                 model_kind_name(kind));
        if (find_flag(argc, argv, "-M") && backbone != df.backbone)
            fail("flag -M: %s, but %s holds a %s denoiser", backbone_names[df.backbone], vc.init_path, backbone_names[backbone]);
        model_file_config(vc.init_path, kind, s, image);
        config = diffusion_config(backbone, s, image_shape_from_slots(vc.init_path, image));
        check_model_images(&vc, config.patch, config.num_classes, config.image, &train);
        check_shape_flag_int(&vc, 'L', vc.L, "num_layers", config.num_layers);
        check_shape_flag_int(&vc, 'C', vc.C, "channels", config.channels);
    } else {
        check_patch_size("flag -P", vc.patch, &train);
        int b = df.backbone;
        if (b == BACKBONE_MAMBA2 && (2 * vc.C) % 64)
            fail("flag -C: mamba2's inner width 2C = %d is not divisible by its headdim 64", 2 * vc.C);
        int slots[6] = {vc.patch, train.classes, vc.L, 0, 0, 0};
        if (b == BACKBONE_VIT) { slots[3] = vc.H; slots[4] = vc.C; slots[5] = vc.F ? vc.F : 4 * vc.C; }
        else if (b == BACKBONE_MAMBA2) { slots[3] = vc.C; slots[4] = 64; slots[5] = 64; }
        else { slots[3] = vc.C; slots[4] = 2 * vc.C; slots[5] = 16; }
        config = diffusion_config(b, slots, image_shape_of(&train));
    }
    Diffusion model;
    diffusion_build(&model, config);
    if (vc.init_path) load_model_file(&model.buf, vc.init_path);
    else diffusion_init_random(&model, vc.seed);
    int max_B = std::max(vc.B, 2 * vc.eval_B);  // sampling runs 2 rows per image
    if (config.backbone == BACKBONE_VIT) attention_pin_variant(max_B, tokens_of(config), config.channels, config.num_heads);
    diffusion_allocate_activations(&model, max_B);
    cublasCheck(cublasSetMathMode(model.buf.cublas, CUBLAS_TF32_TENSOR_OP_MATH));

    printf("backend %s | diffusion, %s denoiser L %d C %d", BACKEND_NAME, backbone_names[config.backbone],
           config.num_layers, config.channels);
    if (config.backbone == BACKBONE_VIT) printf(" H %d F %d", config.num_heads, config.ffn);
    else if (config.backbone == BACKBONE_MAMBA2) printf(" E %d N %d headdim %d", config.inner, config.d_state, config.headdim);
    else printf(" E %d N %d", config.inner, config.d_state);
    printf(" | patch %d (%d tokens of %d + time + class) | %d classes | %ld parameters | %d noise steps, cosine\n",
           config.patch, patches_of(config), patch_dim_of(config), config.num_classes, model.buf.num_parameters,
           DIFFUSION_STEPS);
    diffusion_train(&model, &vc, &train, &test, df.p_uncond);
    if (dist.rank == 0) {
        VisionBatcher vb;
        vision_batcher_init(&vb, vc.eval_B, image_shape_of(&train));
        if (df.elbo_images > 0) diffusion_bits_per_dim(&model, &vb, &test, vc.eval_B, df.elbo_images);
        vision_batcher_free(&vb);
        if (df.per_class > 0)
            diffusion_sample(&model, df.per_class, df.sampler, df.steps, df.guidance, vc.seed, samples_path.c_str());
    }
    model_free(&model.buf);
    return 0;
}
#endif

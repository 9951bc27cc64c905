/*
The vision models' own layers; the rest (LayerNorm, Linear, the Transformer
and Mamba blocks, cross-entropy) is shared with the language models.

  image shape the (channels, height, width) of a model's images, from the
              images file; P x P patches tile them (P divides height and width)

  patchify    images (B, Cc, H, W) -> patches (B, T, Cc*p*p), T = (H/p)(W/p),
              einops 'b c (h p1) (w p2) -> b (h w) (c p1 p2)'. The images are
              the input, so it has no backward.
  positions   out = x + wpe[t] (the ViT's learned positions); the backward
              reuses encoder.cuh's position_backward_kernel (dwpe += sum over
              the batch, in order of b: deterministic)
  mean pool   over the T tokens, forward and backward
  patch embedding  patches -> LN(PD) -> Linear(PD, C) -> LN(C), forward and
              backward, with its parameter and activation table rows

The ViT's blocks are transformer_block.cuh's with a dropout rate.
*/
#pragma once
#include <cstdint>
#include "cuda_common.h"
#include "encoder.cuh"  // residual_forward, position_backward_kernel
#include "layernorm.cuh"
#include "matmul.cuh"
#include "model.h"
#include "utils.h"

// ----------------------------------------------------------------------------
// the image shape

// the images a vision model takes: channels x height x width
typedef struct {
    int channels, height, width;
} ImageShape;

// CIFAR-10's, and what a model file or checkpoint whose shape slots are 0 0 0 was written for
static const ImageShape CIFAR_IMAGE_SHAPE = {3, 32, 32};

static int image_tokens(ImageShape s, int P) { return (s.height / P) * (s.width / P); }  // T: patches per image
static int image_patch_dim(ImageShape s, int P) { return s.channels * P * P; }           // PD: values per patch
static long image_values(ImageShape s) { return (long)s.channels * s.height * s.width; }
static bool image_shape_equal(ImageShape a, ImageShape b) {
    return a.channels == b.channels && a.height == b.height && a.width == b.width;
}

// a model's shape as the three slots of its files (checkpoint.h's IMAGE_SHAPE_SLOT)
static void image_shape_to_slots(ImageShape s, int* slots) {
    slots[0] = s.channels; slots[1] = s.height; slots[2] = s.width;
}

// The shape the slots of a file (path) say: 0 0 0 (written before the slots
// existed) is 3 x 32 x 32; anything else must be a shape an images file can have.
static ImageShape image_shape_from_slots(const char* path, const int* slots) {
    if (slots[0] == 0 && slots[1] == 0 && slots[2] == 0) return CIFAR_IMAGE_SHAPE;
    if (slots[0] < 1 || slots[0] > 64 || slots[1] < 1 || slots[1] > 4096 || slots[2] < 1 || slots[2] > 4096)
        fail("%s: image shape %d x %d x %d is out of range (channels 1..64, height and width 1..4096)", path, slots[0],
             slots[1], slots[2]);
    ImageShape s = {slots[0], slots[1], slots[2]};
    return s;
}

// ----------------------------------------------------------------------------
// patches, positions, pooling

// out[b, t, (c, p1, p2)] = img[b, c, hy*P + p1, wx*P + p2] with t = hy*(W/P) + wx.
// One thread per output element.
__global__ void patchify_kernel(float* out, const float* img, int B, int Cc, int H, int W, int P) {
    int gw = W / P, T = (H / P) * gw, PD = Cc * P * P;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * T * PD) return;
    int pd = idx % PD;
    long bt = idx / PD;
    int t = bt % T, b = bt / T;
    int c = pd / (P * P), p1 = (pd / P) % P, p2 = pd % P;
    int y = (t / gw) * P + p1, x = (t % gw) * P + p2;
    out[idx] = img[(((long)b * Cc + c) * H + y) * W + x];
}

// out[b, t, c] = x[b, t, c] + wpe[t, c]; one thread per element
__global__ void add_positions_kernel(float* out, const float* x, const float* wpe, int B, int T, int C) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * T * C) return;
    out[idx] = x[idx] + wpe[idx % ((long)T * C)];
}

// pooled[b, c] = (sum over t of x[b, t, c]) / T, summed in order of t.
// One thread per (b, c).
__global__ void mean_pool_forward_kernel(float* pooled, const float* x, int B, int T, int C) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * C) return;
    int c = idx % C, b = idx / C;
    const float* xb = x + (long)b * T * C + c;
    float s = 0.0f;
    for (int t = 0; t < T; t++) s += xb[(long)t * C];
    pooled[idx] = s / T;
}

// dx[b, t, c] = dpooled[b, c] / T (overwrites dx); one thread per element
__global__ void mean_pool_backward_kernel(float* dx, const float* dpooled, int B, int T, int C) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * T * C) return;
    int c = idx % C;
    long b = idx / ((long)T * C);
    dx[idx] = dpooled[b * C + c] / T;
}

// ----------------------------------------------------------------------------
// launchers

// images (B, Cc, H, W) -> patches (B, (H/P)(W/P), Cc*P*P)
void patchify(float* out, const float* img, int B, int Cc, int H, int W, int P) {
    long n = (long)B * Cc * H * W;
    LAUNCH(patchify_kernel, CEIL_DIV(n, 256), 256, 0)(out, img, B, Cc, H, W, P);
    cudaCheck(cudaGetLastError());
}

void add_positions(float* out, const float* x, const float* wpe, int B, int T, int C) {
    long n = (long)B * T * C;
    LAUNCH(add_positions_kernel, CEIL_DIV(n, 256), 256, 0)(out, x, wpe, B, T, C);
    cudaCheck(cudaGetLastError());
}

// dwpe (T, C) += sum over b of dout (B, T, C)
void positions_backward(float* dwpe, const float* dout, int B, int T, int C) {
    LAUNCH(position_backward_kernel, CEIL_DIV(T * C, 256), 256, 0)(dwpe, dout, B, T, C);
    cudaCheck(cudaGetLastError());
}

void mean_pool_forward(float* pooled, const float* x, int B, int T, int C) {
    LAUNCH(mean_pool_forward_kernel, CEIL_DIV((long)B * C, 256), 256, 0)(pooled, x, B, T, C);
    cudaCheck(cudaGetLastError());
}

void mean_pool_backward(float* dx, const float* dpooled, int B, int T, int C) {
    long n = (long)B * T * C;
    LAUNCH(mean_pool_backward_kernel, CEIL_DIV(n, 256), 256, 0)(dx, dpooled, B, T, C);
    cudaCheck(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// the patch embedding both vision models start with:
//   images (B, Cc, H, W) -> patches (B, T, PD) -> LN(PD) -> Linear(PD, C) -> LN(C)
//   with T = (H/P)(W/P), PD = Cc P^2

#define PATCH_EMBED_PARAMS 6
typedef struct {
    float* patch_ln_w;  // (PD)
    float* patch_ln_b;  // (PD)
    float* patch_w;     // (C, PD)
    float* patch_b;     // (C)
    float* embed_ln_w;  // (C)
    float* embed_ln_b;  // (C)
} PatchEmbedParams;

// its rows of a model's tensor table, from t; returns the next row. Weight decay on the Linear weight.
static TensorSpec* patch_embed_param_table(TensorSpec* t, long PD, long C) {
    TensorSpec rows[PATCH_EMBED_PARAMS] = {{"patch_ln_w", PD, 0, 1}, {"patch_ln_b", PD, 0, 1}, {"patch_w", C * PD, 1, 1},
                                           {"patch_b", C, 0, 1},     {"embed_ln_w", C, 0, 1},   {"embed_ln_b", C, 0, 1}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

// (host memory) LayerNorms 1 and 0; the Linear as PyTorch's default, weight
// then bias U(+-1/sqrt(PD)). The caller zeroed the buffer.
static void patch_embed_init(const PatchEmbedParams& p, long PD, long C, Rng* rng) {
    float bound = 1.0f / sqrtf((float)PD);
    for (long i = 0; i < PD; i++) p.patch_ln_w[i] = 1.0f;
    for (long i = 0; i < C * PD; i++) p.patch_w[i] = (2.0f * rng_uniform(rng) - 1.0f) * bound;
    for (long i = 0; i < C; i++) p.patch_b[i] = (2.0f * rng_uniform(rng) - 1.0f) * bound;
    for (long i = 0; i < C; i++) p.embed_ln_w[i] = 1.0f;
}

// its activations (kept for backward) and the scratch of its backward
#define PATCH_EMBED_ACTS 11
typedef struct {
    float* patches;        // (B, T, PD)
    float* patch_ln;       // (B, T, PD)
    float* patch_ln_mean;  // (B, T)
    float* patch_ln_rstd;  // (B, T)
    float* embed;          // (B, T, C)
    float* embed_ln;       // (B, T, C)  the output
    float* embed_ln_mean;  // (B, T)
    float* embed_ln_rstd;  // (B, T)
    float* dembed;         // (B, T, C)
    float* dpatch_ln;      // (B, T, PD)
    float* dpatches;       // (B, T, PD) (unused: the images need no gradient)
} PatchEmbedActs;

static TensorSpec* patch_embed_act_table(TensorSpec* t, long BT, long PD, long C) {
    TensorSpec rows[PATCH_EMBED_ACTS] = {
        {"patches", BT * PD, 0, 1}, {"patch_ln", BT * PD, 0, 1}, {"patch_ln_mean", BT, 0, 1}, {"patch_ln_rstd", BT, 0, 1},
        {"embed", BT * C, 0, 1},    {"embed_ln", BT * C, 0, 1},  {"embed_ln_mean", BT, 0, 1}, {"embed_ln_rstd", BT, 0, 1},
        {"dembed", BT * C, 0, 1},   {"dpatch_ln", BT * PD, 0, 1}, {"dpatches", BT * PD, 0, 1}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

// a.embed_ln (B, T, C) from images (B, Cc, H, W) of shape s cut into P x P patches
static void patch_embed_forward(cublasHandle_t h, const PatchEmbedParams& p, const PatchEmbedActs& a,
                                const float* images, int B, ImageShape s, int P, int C) {
    NVTX_RANGE("patch_embed_forward");
    int T = image_tokens(s, P), PD = image_patch_dim(s, P), BT = B * T;
    patchify(a.patches, images, B, s.channels, s.height, s.width, P);
    layernorm_forward(a.patch_ln, a.patch_ln_mean, a.patch_ln_rstd, a.patches, p.patch_ln_w, p.patch_ln_b, BT, PD);
    matmul_forward(h, a.embed, a.patch_ln, p.patch_w, p.patch_b, BT, PD, C);
    layernorm_forward(a.embed_ln, a.embed_ln_mean, a.embed_ln_rstd, a.embed, p.embed_ln_w, p.embed_ln_b, BT, C);
}

// the parameters' gradients g (accumulated) from dout (B, T, C), the gradient w.r.t. a.embed_ln
static void patch_embed_backward(cublasHandle_t h, const PatchEmbedParams& g, const PatchEmbedParams& p,
                                 const PatchEmbedActs& a, const float* dout, const float* ones, int B, ImageShape s,
                                 int P, int C) {
    NVTX_RANGE("patch_embed_backward");
    int T = image_tokens(s, P), PD = image_patch_dim(s, P), BT = B * T;
    cudaCheck(cudaMemsetAsync(a.dembed, 0, (long)BT * C * sizeof(float), main_stream));
    layernorm_backward(a.dembed, g.embed_ln_w, g.embed_ln_b, dout, a.embed, p.embed_ln_w, a.embed_ln_mean,
                       a.embed_ln_rstd, BT, C);
    matmul_backward(h, a.dpatch_ln, g.patch_w, g.patch_b, a.dembed, a.patch_ln, p.patch_w, ones, BT, PD, C);
    cudaCheck(cudaMemsetAsync(a.dpatches, 0, (long)BT * PD * sizeof(float), main_stream));
    layernorm_backward(a.dpatches, g.patch_ln_w, g.patch_ln_b, a.dpatch_ln, a.patches, p.patch_ln_w, a.patch_ln_mean,
                       a.patch_ln_rstd, BT, PD);
}

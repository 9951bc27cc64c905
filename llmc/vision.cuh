/*
The vision models' own layers; the rest (LayerNorm, Linear, the Transformer
and Mamba blocks, cross-entropy) is shared with the language models.

  patchify    images (B, Cc, H, W) -> patches (B, T, Cc*p*p), T = (H/p)(W/p),
              einops 'b c (h p1) (w p2) -> b (h w) (c p1 p2)'. The images are
              the input, so it has no backward.
  positions   out = x + wpe[t] (the ViT's learned positions); the backward
              reuses encoder.cuh's position_backward_kernel (dwpe += sum over
              the batch, in order of b: deterministic)
  mean pool   over the T tokens, forward and backward
  dropout     inverted dropout (kept values scaled by 1/(1-p)) whose mask is a
              counter-based hash of (seed, step, site, element index): nothing
              is stored, backward recomputes the mask, and a run resumed at
              step k draws the same masks as the uninterrupted run
  ViT block   the pre-norm Transformer block of transformer_block.cuh with
              dropout on each residual branch:
                x = x + Dropout(attproj(attn(LN1(x))))
                x = x + Dropout(fcproj(gelu(fc(LN2(x)))))
              without dropout (p = 0, or evaluation) it is exactly
              transformer_block_forward/backward with causal = 0.
*/
#pragma once
#include <cstdint>
#include "cuda_common.h"
#include "encoder.cuh"  // residual_forward, position_backward_kernel
#include "layernorm.cuh"
#include "matmul.cuh"
#include "attention.cuh"
#include "gelu.cuh"
#include "transformer_block.cuh"

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
// dropout

#define DROPOUT_GAMMA 0x9E3779B97F4A7C15ull

// splitmix64's finalizer: a bijective mix of 64 bits
__host__ __device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// the key of one dropout site (layer and branch) at one training step
static uint64_t dropout_key(uint64_t seed, uint64_t step, uint64_t site) {
    return mix64(mix64(mix64(seed + DROPOUT_GAMMA) + step + DROPOUT_GAMMA) + site + DROPOUT_GAMMA);
}

// an element is dropped when the top 24 bits of its hash fall below p * 2^24
static uint32_t dropout_threshold(float p) { return (uint32_t)((double)p * 16777216.0); }

__device__ __forceinline__ bool dropout_keep(uint64_t key, long idx, uint32_t threshold) {
    return (uint32_t)(mix64(key + (uint64_t)(idx + 1) * DROPOUT_GAMMA) >> 40) >= threshold;
}

// out[i] = keep(i) ? in[i] * scale : 0, in place allowed. The forward pass
// applies it to the activation, the backward pass to the gradient (same key:
// same mask). One thread per element.
__global__ void dropout_kernel(float* out, const float* in, long n, uint64_t key, uint32_t threshold, float scale) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = dropout_keep(key, i, threshold) ? in[i] * scale : 0.0f;
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

// dropout with rate p in [0, 1) under `key`; the backward pass is the same call on the gradient
void dropout_apply(float* out, const float* in, long n, float p, uint64_t key) {
    LAUNCH(dropout_kernel, CEIL_DIV(n, 256), 256, 0)(out, in, n, key, dropout_threshold(p), 1.0f / (1.0f - p));
    cudaCheck(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// the ViT block: transformer_block.cuh's, with dropout on the residual branches

// The two dropout keys of layer l: sites 2l (attention branch) and 2l+1 (MLP branch)
static uint64_t vit_dropout_key(uint64_t seed, uint64_t step, int layer, int branch) {
    return dropout_key(seed, step, 2 * (uint64_t)layer + branch);
}

// One block: a.residual3 (B,T,C) from x. dropout 0 (evaluation) is the plain
// transformer block; otherwise the branch outputs a.attproj and a.fcproj are
// dropped in place (they hold the values after dropout) before the residual adds.
static void vit_block_forward(cublasHandle_t h, const TransformerStackParams& p, const TransformerStackActs& a,
                              const TransformerScratch& s, const float* x, int B, int T, TransformerDims d,
                              float dropout, uint64_t key_attn, uint64_t key_mlp) {
    if (dropout <= 0.0f) { transformer_block_forward(h, p, a, s, x, B, T, d, 0); return; }
    int BT = B * T, C = d.C, F = d.F;
    long btc = (long)BT * C;
    {
        NVTX_RANGE("ln1_forward");
        layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, p.ln1w, p.ln1b, BT, C);
    }
    {
        NVTX_RANGE("attention_forward");
        matmul_forward(h, a.qkv, a.ln1, p.qkvw, p.qkvb, BT, C, 3 * C);
        attention_forward(h, a.atty, a.qkvr, a.att, s.preatt, s.attn_y, a.qkv, B, T, C, d.NH, 0);
        matmul_forward(h, a.attproj, a.atty, p.attprojw, p.attprojb, BT, C, C);
        dropout_apply(a.attproj, a.attproj, btc, dropout, key_attn);
        residual_forward(a.residual2, x, a.attproj, btc);
    }
    {
        NVTX_RANGE("ln2_forward");
        layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.residual2, p.ln2w, p.ln2b, BT, C);
    }
    {
        NVTX_RANGE("mlp_forward");
        matmul_forward(h, a.fch, a.ln2, p.fcw, p.fcb, BT, C, F);
        gelu_forward(a.fch_gelu, a.fch, (long)BT * F);
        matmul_forward(h, a.fcproj, a.fch_gelu, p.fcprojw, p.fcprojb, BT, F, C);
        dropout_apply(a.fcproj, a.fcproj, btc, dropout, key_mlp);
        residual_forward(a.residual3, a.residual2, a.fcproj, btc);
    }
}

// One block backward. dresidual (B,T,C): on entry the gradient w.r.t. the
// block's output, on return w.r.t. its input x. dbranch (B,T,C) is scratch
// for a branch's gradient after dropout. g: the layer's gradients (accumulated).
static void vit_block_backward(cublasHandle_t h, float* dresidual, float* dbranch, const float* x,
                               const TransformerStackParams& p, const TransformerStackParams& g,
                               const TransformerStackActs& a, const TransformerScratch& s, const float* ones, int B,
                               int T, TransformerDims d, float dropout, uint64_t key_attn, uint64_t key_mlp) {
    if (dropout <= 0.0f) { transformer_block_backward(h, dresidual, x, p, g, a, s, ones, B, T, d, 0); return; }
    int BT = B * T, C = d.C, F = d.F;
    long btc = (long)BT * C;
    {
        NVTX_RANGE("mlp_backward");
        dropout_apply(dbranch, dresidual, btc, dropout, key_mlp);
        matmul_backward(h, s.dbtf, g.fcprojw, g.fcprojb, dbranch, a.fch_gelu, p.fcprojw, ones, BT, F, C);
        gelu_backward(s.dbtf, a.fch, s.dbtf, (long)BT * F);
        matmul_backward(h, s.dbtc, g.fcw, g.fcb, s.dbtf, a.ln2, p.fcw, ones, BT, C, F);
    }
    {
        NVTX_RANGE("ln2_backward");
        layernorm_backward(dresidual, g.ln2w, g.ln2b, s.dbtc, a.residual2, p.ln2w, a.ln2_mean, a.ln2_rstd, BT, C);
    }
    {
        NVTX_RANGE("attention_backward");
        dropout_apply(dbranch, dresidual, btc, dropout, key_attn);
        matmul_backward(h, s.dbtc, g.attprojw, g.attprojb, dbranch, a.atty, p.attprojw, ones, BT, C, C);
        attention_backward(h, s.dqkv, s.dqkvr, s.attn_y, s.datt, s.dbtc, a.qkvr, a.att, B, T, C, d.NH, 0);
        matmul_backward(h, s.dbtc, g.qkvw, g.qkvb, s.dqkv, a.ln1, p.qkvw, ones, BT, C, 3 * C);
    }
    {
        NVTX_RANGE("ln1_backward");
        layernorm_backward(dresidual, g.ln1w, g.ln1b, s.dbtc, x, p.ln1w, a.ln1_mean, a.ln1_rstd, BT, C);
    }
}

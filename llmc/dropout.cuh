/*
Inverted dropout (kept values scaled by 1/(1-p)) whose mask is a
counter-based hash of (seed, step, site, element index): nothing is stored,
the backward pass recomputes the mask, and a run resumed at step k draws the
same masks as the uninterrupted run. A site is one place in the model
(a layer's branch); dropout_key names it. The kernel reads the step from
device memory (DropoutSite), where the trainers write it before each
training step, so that a step captured in a CUDA graph draws new masks at
every replay.
*/
#pragma once
#include <cstdint>
#include "cuda_common.h"

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
__host__ __device__ __forceinline__ uint64_t dropout_key(uint64_t seed, uint64_t step, uint64_t site) {
    return mix64(mix64(mix64(seed + DROPOUT_GAMMA) + step + DROPOUT_GAMMA) + site + DROPOUT_GAMMA);
}

// an element is dropped when the top 24 bits of its hash fall below p * 2^24
static uint32_t dropout_threshold(float p) { return (uint32_t)((double)p * 16777216.0); }

__device__ __forceinline__ bool dropout_keep(uint64_t key, long idx, uint32_t threshold) {
    return (uint32_t)(mix64(key + (uint64_t)(idx + 1) * DROPOUT_GAMMA) >> 40) >= threshold;
}

// One dropout site of a model: seed and site by value, the training step in
// device memory (read when the kernel runs); its key is
// dropout_key(seed, *step, site)
typedef struct {
    uint64_t seed, site;
    const int* step;
} DropoutSite;

static DropoutSite dropout_site(uint64_t seed, const int* step, uint64_t site) {
    DropoutSite s = {seed, site, step};
    return s;
}
static const DropoutSite NO_DROPOUT_SITE = {0, 0, nullptr};  // with rate 0: never launched

// out[i] = keep(i) ? in[i] * scale : 0, in place allowed. The forward pass
// applies it to the activation, the backward pass to the gradient (same key:
// same mask). One thread per element; each derives the site's key.
__global__ void dropout_kernel(float* out, const float* in, long n, DropoutSite site, uint32_t threshold, float scale) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint64_t key = dropout_key(site.seed, (uint64_t)*site.step, site.site);
    out[i] = dropout_keep(key, i, threshold) ? in[i] * scale : 0.0f;
}

// ----------------------------------------------------------------------------
// launcher

// dropout with rate p in [0, 1) at `site`; the backward pass is the same call on the gradient
void dropout_apply(float* out, const float* in, long n, float p, DropoutSite site) {
    LAUNCH(dropout_kernel, CEIL_DIV(n, 256), 256, 0)(out, in, n, site, dropout_threshold(p), 1.0f / (1.0f - p));
    cudaCheck(cudaGetLastError());
}

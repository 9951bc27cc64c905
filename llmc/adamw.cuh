/*
AdamW as torch.optim.AdamW computes it, with the gradient scaled first by a
global-norm clipping factor:
  g = grad * grad_scale
  p = p * (1 - lr * wd)
  m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
  p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
A span kernel (elementwise.cuh): one parameter per thread on the GPU, a
contiguous span per thread on the host.

The global gradient norm is computed deterministically in two passes: a
fixed number of partial sums of squares, then one thread adds the partials
in order. Two variants of the first pass: a fixed grid of blocks, each
summing a grid-stride range with block_sum (the GPU's), or one thread per
partial summing a contiguous share (barrier-free, the host backend's). The clipping factor
min(1, max_norm / (norm + 1e-6)) is that of torch.nn.utils.clip_grad_norm_.
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"

__global__ void adamw_kernel(float* params, float* m, float* v, const float* grads, long n, float lr, float beta1,
                             float beta2, float bias_correction1, float bias_correction2_sqrt, float eps, float wd,
                             const float* grad_scale, int span) {
    long i0, i1;
    span_range(&i0, &i1, n, span);
    float scale = *grad_scale;
    for (long i = i0; i < i1; i++) {
        float g = grads[i] * scale;
        float p = params[i] * (1.0f - lr * wd);
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] = p - (lr / bias_correction1) * mi / (sqrtf(vi) / bias_correction2_sqrt + eps);
    }
}

#define NORM_BLOCKS 64
#define NORM_THREADS 256

// partials[block] = sum of squares over the block's grid-stride share
__global__ void norm_squared_partial_kernel(float* partials, const float* x, long n) {
    __shared__ float scratch[32];
    float s = 0.0f;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) s += x[i] * x[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// partials[i] = sum of squares of the i-th of NORM_BLOCKS contiguous shares; one thread per share
__global__ void norm_squared_partial_rows_kernel(float* partials, const float* x, long n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= NORM_BLOCKS) return;
    long per = CEIL_DIV(n, NORM_BLOCKS);
    float s = 0.0f;
    for (long j = i * per; j < n && j < (i + 1) * per; j++) s += x[j] * x[j];
    partials[i] = s;
}

// out[0] = norm = sqrt(sum of partials); out[1] = clipping scale (1 if max_norm <= 0)
__global__ void norm_finish_kernel(float* out, const float* partials, int nparts, float max_norm) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    float s = 0.0f;
    for (int i = 0; i < nparts; i++) s += partials[i];
    float norm = sqrtf(s);
    out[0] = norm;
    out[1] = (max_norm > 0.0f && norm + 1e-6f > max_norm) ? max_norm / (norm + 1e-6f) : 1.0f;
}

// norm_out: device buffer of NORM_BLOCKS + 2 floats; on return norm_out[0] is
// the norm and norm_out[1] the gradient scale to pass to adamw_update
#ifdef __CUDACC__
static bool norm_use_blocks = true;
#else
static bool norm_use_blocks = host_variants_gpu();  // HOST_VARIANTS=gpu: the GPU's choice
#endif

void global_norm(float* norm_out, const float* grads, long n, float max_norm) {
    float* partials = norm_out + 2;
    if (norm_use_blocks) {
        LAUNCH(norm_squared_partial_kernel, NORM_BLOCKS, NORM_THREADS, 0)(partials, grads, n);
    } else {
        LAUNCH(norm_squared_partial_rows_kernel, 1, NORM_BLOCKS, 0)(partials, grads, n);
    }
    LAUNCH(norm_finish_kernel, 1, 1, 0)(norm_out, partials, NORM_BLOCKS, max_norm);
    cudaCheck(cudaGetLastError());
}

// t: the 1-based step number; grad_scale: device pointer to the clipping factor
void adamw_update(float* params, float* m, float* v, const float* grads, long n, float lr, float beta1, float beta2,
                  float eps, float wd, int t, const float* grad_scale) {
    float bc1 = 1.0f - powf(beta1, (float)t);
    float bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)t));
    LAUNCH(adamw_kernel, span_blocks(n), elementwise_threads, 0)(params, m, v, grads, n, lr, beta1, beta2, bc1,
                                                                 bc2_sqrt, eps, wd, grad_scale, elementwise_span);
    cudaCheck(cudaGetLastError());
}

/*
AdamW as torch.optim.AdamW computes it, with the gradient scaled first by a
global-norm clipping factor:
  g = grad * grad_scale
  p = p * (1 - lr * wd)
  m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
  p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
One launch updates the whole flat parameter buffer: a span kernel
(elementwise.cuh), one parameter per thread on the GPU, a contiguous span
per thread on the host; the weight decay of each element is its tensor's,
from a small table of tensor ends and decay flags passed by value
(AdamWDecayTable, built once by the model). What changes from step to step
(the learning rate and the bias corrections of step t, AdamWStep) is read
from device memory when the kernel runs, not passed as kernel arguments, so
that a training step captured in a CUDA graph takes the new values the
trainer writes before each replay. A grad_scale that is not finite (the norm
was not finite) skips the update on the device: the step's non-finite check
needs no round trip to the host.

The global gradient norm is computed deterministically in two passes: a
fixed number of partial sums of squares, then one thread adds the partials
in order. Two variants of the first pass: NORM_BLOCKS blocks (enough to
fill an H200's 132 SMs several times), each summing a grid-stride range
with block_sum (the GPU's), or one thread per partial summing a contiguous
share of NORM_ROWS_PARTS (barrier-free, the host backend's). The clipping
factor min(1, max_norm / (norm + 1e-6)) is that of
torch.nn.utils.clip_grad_norm_.
*/
#pragma once
#include <cfloat>
#include <cstring>
#include "cuda_common.h"
#include "elementwise.cuh"

// finite (neither infinite nor NaN), the same on both backends
__host__ __device__ __forceinline__ bool float_is_finite(float x) { return fabsf(x) <= FLT_MAX; }

#define ADAMW_MAX_TENSORS 64

// The tensors of a flat buffer for AdamW's weight decay: tensor k covers
// [end[k-1], end[k]) (end[-1] = 0) and decays when decay[k] is set. Passed
// to the kernel by value (kernel parameter space, 776 bytes).
typedef struct {
    int count;
    long end[ADAMW_MAX_TENSORS];
    unsigned char decay[ADAMW_MAX_TENSORS];
} AdamWDecayTable;

// the first tensor of the table whose end is past i (binary search)
__device__ __forceinline__ int adamw_tensor_of(const AdamWDecayTable& table, long i) {
    int lo = 0, hi = table.count - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (table.end[mid] > i) hi = mid; else lo = mid + 1;
    }
    return lo;
}

// What AdamW's step t needs besides its constants, in device memory:
// lr and the bias corrections 1 - beta1^t and sqrt(1 - beta2^t)
typedef struct {
    float lr, bias_correction1, bias_correction2_sqrt;
} AdamWStep;

// step t's AdamWStep at learning rate lr (computed on the host, in float, as always)
static AdamWStep adamw_step_of(float lr, float beta1, float beta2, int t) {
    AdamWStep s = {lr, 1.0f - powf(beta1, (float)t), sqrtf(1.0f - powf(beta2, (float)t))};
    return s;
}

// params, m, v, grads: (n); each element decays by wd when its tensor's flag
// is set. step: device pointer to the step's lr and bias corrections.
// grad_scale: device pointer to the clipping factor; not finite: no update
__global__ void adamw_kernel(float* params, float* m, float* v, const float* grads, long n, const AdamWStep* step,
                             float beta1, float beta2, float eps, float wd, AdamWDecayTable table,
                             const float* grad_scale, int span) {
    long i0, i1;
    span_range(&i0, &i1, n, span);
    float scale = *grad_scale;
    if (!float_is_finite(scale) || i0 >= i1) return;
    float lr = step->lr, bias_correction1 = step->bias_correction1, bias_correction2_sqrt = step->bias_correction2_sqrt;
    int k = adamw_tensor_of(table, i0);
    for (long i = i0; i < i1; i++) {
        while (i >= table.end[k]) k++;
        float wd_i = table.decay[k] ? wd : 0.0f;
        float g = grads[i] * scale;
        float p = params[i] * (1.0f - lr * wd_i);
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] = p - (lr / bias_correction1) * mi / (sqrtf(vi) / bias_correction2_sqrt + eps);
    }
}

#define NORM_BLOCKS 512     // the block variant's partials (and the most partials of either variant)
#define NORM_THREADS 256
#define NORM_ROWS_PARTS 64  // the rows variant's partials

// partials[block] = sum of squares over the block's grid-stride share
__global__ void norm_squared_partial_kernel(float* partials, const float* x, long n) {
    __shared__ float scratch[32];
    float s = 0.0f;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) s += x[i] * x[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// partials[i] = sum of squares of the i-th of NORM_ROWS_PARTS contiguous shares; one thread per share
__global__ void norm_squared_partial_rows_kernel(float* partials, const float* x, long n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= NORM_ROWS_PARTS) return;
    long per = CEIL_DIV(n, NORM_ROWS_PARTS);
    float s = 0.0f;
    for (long j = i * per; j < n && j < (i + 1) * per; j++) s += x[j] * x[j];
    partials[i] = s;
}

// norm_out: device buffer of NORM_BLOCKS + 2 floats (NORM_BUFFER_FLOATS); global_norm leaves in
// norm_out[0] the norm and in norm_out[1] the gradient scale to pass to adamw_update, in two
// halves: global_norm_squared writes the sum of the partials (in order) to norm_out[0], and
// global_norm_finish replaces it with its square root and writes the clipping factor
// min(1, max_norm / (norm + 1e-6)) (1 if max_norm <= 0; NaN if the norm is not finite, which
// makes adamw_kernel skip the update). Over several ranks (model.h) each rank's squares are its
// share of the buffer, summed over the ranks between the halves.
#define NORM_BUFFER_FLOATS (NORM_BLOCKS + 2)

__global__ void norm_sum_kernel(float* out, const float* partials, int nparts) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    float s = 0.0f;
    for (int i = 0; i < nparts; i++) s += partials[i];
    out[0] = s;
}

__global__ void norm_scale_kernel(float* out, float max_norm) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    float norm = sqrtf(out[0]);
    out[0] = norm;
    float scale = (max_norm > 0.0f && norm + 1e-6f > max_norm) ? max_norm / (norm + 1e-6f) : 1.0f;
    out[1] = float_is_finite(norm) ? scale : NAN;
}

void global_norm_squared(float* norm_out, const float* grads, long n) {
    float* partials = norm_out + 2;
    if (kernel_choices.norm_blocks) {
        LAUNCH(norm_squared_partial_kernel, NORM_BLOCKS, NORM_THREADS, 0)(partials, grads, n);
    } else {
        LAUNCH(norm_squared_partial_rows_kernel, 1, NORM_BLOCKS, 0)(partials, grads, n);
    }
    LAUNCH(norm_sum_kernel, 1, 1, 0)(norm_out, partials, kernel_choices.norm_blocks ? NORM_BLOCKS : NORM_ROWS_PARTS);
    cudaCheck(cudaGetLastError());
}

void global_norm_finish(float* norm_out, float max_norm) {
    LAUNCH(norm_scale_kernel, 1, 1, 0)(norm_out, max_norm);
    cudaCheck(cudaGetLastError());
}

void global_norm(float* norm_out, const float* grads, long n, float max_norm) {
    global_norm_squared(norm_out, grads, n);
    global_norm_finish(norm_out, max_norm);
}

// One AdamW launch over the n floats of a flat buffer, each tensor of the
// table decaying by wd where its flag is set. step: device pointer to the
// step's AdamWStep (the model's, written before each training step);
// grad_scale: device pointer to the clipping factor (global_norm's norm_out + 1)
void adamw_update_table(float* params, float* m, float* v, const float* grads, long n, const AdamWDecayTable* table,
                        const AdamWStep* step, float beta1, float beta2, float eps, float wd, const float* grad_scale) {
    if (table->count < 1 || table->count > ADAMW_MAX_TENSORS || table->end[table->count - 1] != n) {
        fprintf(stderr, "error: adamw_update_table: a table of %d tensors ending at %ld for a buffer of %ld floats\n",
                table->count, table->count > 0 && table->count <= ADAMW_MAX_TENSORS ? table->end[table->count - 1] : -1L, n);
        exit(EXIT_FAILURE);
    }
    LAUNCH(adamw_kernel, span_blocks(n), kernel_choices.elementwise_threads, 0)(params, m, v, grads, n, step, beta1, beta2, eps, wd,
                                                                 *table, grad_scale, kernel_choices.elementwise_span);
    cudaCheck(cudaGetLastError());
}

// The same at learning rate lr and the 1-based step t given on the host (the
// tests): copies step t's AdamWStep into a device scratch first (a synchronous
// copy: not inside a stream capture; the trainers use the form above)
static AdamWStep* adamw_step_scratch() {
    static AdamWStep* scratch = nullptr;
    if (!scratch) cudaCheck(cudaMalloc(&scratch, sizeof(AdamWStep)));
    return scratch;
}
void adamw_update_table(float* params, float* m, float* v, const float* grads, long n, const AdamWDecayTable* table,
                        float lr, float beta1, float beta2, float eps, float wd, int t, const float* grad_scale) {
    AdamWStep step = adamw_step_of(lr, beta1, beta2, t);
    AdamWStep* step_dev = adamw_step_scratch();
    cudaCheck(cudaMemcpy(step_dev, &step, sizeof(step), cudaMemcpyHostToDevice));
    adamw_update_table(params, m, v, grads, n, table, step_dev, beta1, beta2, eps, wd, grad_scale);
}

// AdamW on one tensor of n floats with weight decay wd
void adamw_update(float* params, float* m, float* v, const float* grads, long n, float lr, float beta1, float beta2,
                  float eps, float wd, int t, const float* grad_scale) {
    AdamWDecayTable table;
    memset(&table, 0, sizeof(table));
    table.count = 1;
    table.end[0] = n;
    table.decay[0] = 1;
    adamw_update_table(params, m, v, grads, n, &table, lr, beta1, beta2, eps, wd, t, grad_scale);
}

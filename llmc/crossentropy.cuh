/*
Softmax and cross-entropy over the vocabulary, fused.

Forward: probs[n,:] = softmax(logits[n,:]), losses[n] = -log probs[n, target[n]].
The mean loss is model.h's (model_mean_loss, deterministic).
Backward: dlogits[n,:] = (probs[n,:] - onehot(target[n])) * dloss, with
dloss = 1/N for the mean loss. Forward: one thread per row (V is small, 65
for characters, and the rows are many); backward: one block per row.

A row whose target is negative (TARGET_IGNORED: a task file's positions
without a target) has no loss: losses[n] = 0 and dlogits[n,:] = 0, as
PyTorch's cross_entropy(..., ignore_index) treats it. The mean over the
other rows is then model_mean_target_loss's (model.h), which leaves the
backward's dloss (1 / the number of rows with a target) in device memory:
crossentropy_backward_device reads it there.

argmax_rows: each row's predicted class (the first largest logit), for
accuracies.
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"
#include "utils.h"  // TARGET_IGNORED; any negative target is skipped

__global__ void crossentropy_forward_kernel(float* losses, float* probs, const float* logits, const int* targets,
                                            int N, int V) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* x = logits + (long)n * V;
    float* p = probs + (long)n * V;
    float maxv = -INFINITY;
    for (int i = 0; i < V; i++) maxv = fmaxf(maxv, x[i]);
    float sum = 0.0f;
    for (int i = 0; i < V; i++) { p[i] = expf(x[i] - maxv); sum += p[i]; }
    float inv = 1.0f / sum;
    for (int i = 0; i < V; i++) p[i] *= inv;
    // log p[target] computed from the logits, accurate even when p underflows
    int target = targets[n];
    if (losses) losses[n] = target < 0 ? 0.0f : -(x[target] - maxv - logf(sum));
}

// row kernel (elementwise.cuh): one block per row n, its threads over the
// vocabulary; the scale is dloss, or *dloss_device when that is not null
__global__ void crossentropy_backward_kernel(float* dlogits, const float* probs, const int* targets, float dloss,
                                             const float* dloss_device, int N, int V, int span) {
    long n = blockIdx.x;
    int target = targets[n];
    float scale = target < 0 ? 0.0f : (dloss_device ? *dloss_device : dloss);
    const float* p = probs + n * V;
    float* d = dlogits + n * V;
    ROW_FOR(i, V, span) d[i] = (p[i] - (i == target ? 1.0f : 0.0f)) * scale;
}

// one thread per row: out[n] = the index of the first largest of logits[n, 0..V)
__global__ void argmax_rows_kernel(int* out, const float* logits, int N, int V) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* x = logits + (long)n * V;
    int best = 0;
    for (int i = 1; i < V; i++) if (x[i] > x[best]) best = i;
    out[n] = best;
}

void crossentropy_forward(float* losses, float* probs, const float* logits, const int* targets, int N, int V) {
    LAUNCH(crossentropy_forward_kernel, CEIL_DIV(N, 64), 64, 0)(losses, probs, logits, targets, N, V);
    cudaCheck(cudaGetLastError());
}

// dloss given by the host (the mean over all N rows: 1/N)
void crossentropy_backward(float* dlogits, const float* probs, const int* targets, float dloss, int N, int V) {
    LAUNCH(crossentropy_backward_kernel, N, row_threads(V), 0)(dlogits, probs, targets, dloss, nullptr, N, V, row_span(V));
    cudaCheck(cudaGetLastError());
}

// dloss read from device memory (model_mean_target_loss's: 1 / the rows with a target)
void crossentropy_backward_device(float* dlogits, const float* probs, const int* targets, const float* dloss, int N,
                                  int V) {
    LAUNCH(crossentropy_backward_kernel, N, row_threads(V), 0)(dlogits, probs, targets, 0.0f, dloss, N, V, row_span(V));
    cudaCheck(cudaGetLastError());
}

void argmax_rows(int* out, const float* logits, int N, int V) {
    LAUNCH(argmax_rows_kernel, CEIL_DIV(N, 64), 64, 0)(out, logits, N, V);
    cudaCheck(cudaGetLastError());
}

/*
Softmax and cross-entropy over the vocabulary, fused.

Forward: probs[n,:] = softmax(logits[n,:]), losses[n] = -log probs[n, target[n]].
The mean loss is summed on the host in row order (deterministic).
Backward: dlogits[n,:] = (probs[n,:] - onehot(target[n])) * dloss, with
dloss = 1/N for the mean loss. Forward: one thread per row (V is small, 65
for characters, and the rows are many); backward: one block per row.
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"

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
    if (losses) losses[n] = -(x[targets[n]] - maxv - logf(sum));
}

// row kernel (elementwise.cuh): one block per row n, its threads over the vocabulary
__global__ void crossentropy_backward_kernel(float* dlogits, const float* probs, const int* targets, float dloss,
                                             int N, int V, int span) {
    long n = blockIdx.x;
    int target = targets[n];
    const float* p = probs + n * V;
    float* d = dlogits + n * V;
    ROW_FOR(i, V, span) d[i] = (p[i] - (i == target ? 1.0f : 0.0f)) * dloss;
}

void crossentropy_forward(float* losses, float* probs, const float* logits, const int* targets, int N, int V) {
    LAUNCH(crossentropy_forward_kernel, CEIL_DIV(N, 64), 64, 0)(losses, probs, logits, targets, N, V);
    cudaCheck(cudaGetLastError());
}

void crossentropy_backward(float* dlogits, const float* probs, const int* targets, float dloss, int N, int V) {
    LAUNCH(crossentropy_backward_kernel, N, row_threads(V), 0)(dlogits, probs, targets, dloss, N, V, row_span(V));
    cudaCheck(cudaGetLastError());
}

/*
Reversing a batch of sequences in time: out[b, t, :] = in[b, T-1-t, :] for
x (B, T, C). The bidirectional Mamba block (mamba_block.cuh) runs its
reverse mixer on flip(x) and adds flip of that mixer's output to the
residual.

The flip is a permutation that is its own inverse and its own transpose, so
its backward is the same call on the gradient: for y = flip(x),
dx = flip(dy). With accumulate set the result is added to out (a residual
sum, or a gradient that already holds another branch's part).
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"

// out[b, t, c] (+)= in[b, T-1-t, c]; out and in must not overlap. One block
// per output row (b, t), its threads over the C channels (ROW_FOR).
__global__ void flip_tokens_kernel(float* out, const float* in, int T, int C, int accumulate, int span) {
    long row = blockIdx.x;  // b * T + t
    int t = (int)(row % T);
    const float* src = in + (row + (T - 1 - 2 * t)) * C;  // row (b, T-1-t)
    float* dst = out + row * C;
    ROW_FOR(c, C, span) dst[c] = accumulate ? dst[c] + src[c] : src[c];
}

// out (B, T, C) = flip(in), or out += flip(in) when accumulate; forward and backward alike
void flip_tokens(float* out, const float* in, int B, int T, int C, int accumulate) {
    LAUNCH(flip_tokens_kernel, B * T, row_threads(C), 0)(out, in, T, C, accumulate, row_span(C));
    cudaCheck(cudaGetLastError());
}

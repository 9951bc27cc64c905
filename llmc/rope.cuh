/*
Rotary position embedding (RoPE) of the queries and keys, on the qkv buffer
(B, T, 3C) of the attention: columns [0, C) are q, [C, 2C) k, [2C, 3C) v;
head h of q (and of k) is channels [h*hs, (h+1)*hs), hs = C / NH (even).

Convention: rotate-half (GPT-NeoX, and LLaMA as Hugging Face implements it):
channel i < hs/2 of a head is paired with channel i + hs/2, and the pair is
rotated by the angle pos * theta_i, theta_i = base^(-2i/hs), base 10000:
  out[i]        = x[i] cos - x[i + hs/2] sin
  out[i + hs/2] = x[i + hs/2] cos + x[i] sin
pos is the token's absolute position: pos0 + t for row t of the buffer (the
parallel forward has pos0 = 0, a generation step its position). The
backward pass is the inverse rotation (the transpose: the angle negated),
applied to the gradient of the rotated q and k. v is not rotated.

Row kernel (elementwise.cuh): one block per (b, t), its threads striding
over the C pairs of the row's q and k (GPU: one pair per thread, coalesced;
host: one thread walks the row). Angles are computed in fp32 per pair
(powf, sinf, cosf), the same arithmetic for the forward, its inverse and a
generation step, so a step's rotation is bit-identical to the forward's at
the same position.
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"
#include "utils.h"

#define ROPE_BASE 10000.0f

// out, inp: (B, T, 3C), may be the same buffer (in place). direction +1:
// the rotation, -1: its inverse. With out != inp the v columns are copied.
__global__ void rope_kernel(float* out, const float* inp, int T, int C, int NH, int pos0, float direction, int span) {
    long bt = blockIdx.x;
    int pos = pos0 + (int)(bt % T);
    int hs = C / NH, half = hs / 2, pairs = C / 2;  // pairs per part (q or k)
    const float* x = inp + bt * 3 * C;
    float* o = out + bt * 3 * C;
    ROW_FOR(j, 2 * pairs, span) {
        int part = j / pairs, r = j % pairs;  // part 0 q, 1 k; r: pair within the part
        int h = r / half, i = r % half;
        int base = part * C + h * hs;
        float theta = powf(ROPE_BASE, -2.0f * i / hs);
        float angle = (float)pos * theta;
        float c = cosf(angle), s = direction * sinf(angle);
        float x1 = x[base + i], x2 = x[base + i + half];
        o[base + i] = x1 * c - x2 * s;
        o[base + i + half] = x2 * c + x1 * s;
    }
    if (out != inp) ROW_FOR(j, C, span) o[2 * C + j] = x[2 * C + j];
}

static void rope_check(int C, int NH, const char* what) {
    if (NH < 1 || C % NH || (C / NH) % 2) fail("%s: head size %d / %d is not an even integer (rotary embeddings pair channels)", what, C, NH);
}

// out (B, T, 3C) = qkv with q and k rotated at positions pos0 .. pos0+T-1 (in place allowed)
void rope_forward(float* out, const float* qkv, int B, int T, int C, int NH, int pos0) {
    rope_check(C, NH, "rope_forward");
    LAUNCH(rope_kernel, B * T, row_threads(C), 0)(out, qkv, T, C, NH, pos0, 1.0f, row_span(C));
    cudaCheck(cudaGetLastError());
}

// dqkv (B, T, 3C) in place: the gradients of the rotated q and k become
// those of the unrotated ones (the inverse rotation); dv unchanged
void rope_backward(float* dqkv, int B, int T, int C, int NH, int pos0) {
    rope_check(C, NH, "rope_backward");
    LAUNCH(rope_kernel, B * T, row_threads(C), 0)(dqkv, dqkv, T, C, NH, pos0, -1.0f, row_span(C));
    cudaCheck(cudaGetLastError());
}

/*
The SwiGLU gate of Transformer++'s MLP, W2(silu(W1 x) * W3 x): elementwise
  out[n, j] = silu(a[n, j]) * b[n, j],  silu(a) = a * sigmoid(a)
and its backward
  da[n, j] = dout[n, j] * b[n, j] * silu'(a[n, j]),  db[n, j] = dout[n, j] * silu(a[n, j])
over N rows of H values. a and b are column slices of one wider buffer
(row distance ld): the MLP computes W1 x and W3 x as one Linear into
(N, 2H), a = its first H columns, b = the last H, and the backward writes
da, db into the same layout (the gradient of that Linear's output).
silu and silu' are conv1d.cuh's (fast_expf: vectorizes on the host, under
1 ulp).

Row kernels (elementwise.cuh): one block per row n, its threads striding
over j (GPU: coalesced; host: one thread walks the row, vectorized).
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"
#include "conv1d.cuh"  // silu, silu_grad

// out (N, H) from a, b (N rows of H, row distance ld)
__global__ void swiglu_forward_kernel(float* out, const float* a, const float* b, int ld, int H, int span) {
    long n = blockIdx.x;
    const float* ar = a + n * ld;
    const float* br = b + n * ld;
    float* o = out + n * H;
    ROW_FOR(j, H, span) o[j] = silu(ar[j]) * br[j];
}

// da, db (row distance ld) from dout (N, H) and the forward's a, b (row distance ld)
__global__ void swiglu_backward_kernel(float* da, float* db, const float* dout, const float* a, const float* b, int ld,
                                       int H, int span) {
    long n = blockIdx.x;
    const float* ar = a + n * ld;
    const float* br = b + n * ld;
    const float* g = dout + n * H;
    float* dar = da + n * ld;
    float* dbr = db + n * ld;
    ROW_FOR(j, H, span) {
        float x = ar[j], gj = g[j];
        dar[j] = gj * br[j] * silu_grad(x);
        dbr[j] = gj * silu(x);
    }
}

// out (N, H) = silu(a) * b; a, b: N rows of H with row distance ld
void swiglu_forward(float* out, const float* a, const float* b, int ld, int N, int H) {
    LAUNCH(swiglu_forward_kernel, N, row_threads(H), 0)(out, a, b, ld, H, row_span(H));
    cudaCheck(cudaGetLastError());
}

// da, db (overwritten; row distance ld) from dout (N, H); da, db must not alias dout
void swiglu_backward(float* da, float* db, const float* dout, const float* a, const float* b, int ld, int N, int H) {
    LAUNCH(swiglu_backward_kernel, N, row_threads(H), 0)(da, db, dout, a, b, ld, H, row_span(H));
    cudaCheck(cudaGetLastError());
}

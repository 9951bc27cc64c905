/*
Token and position embedding (GPT, ViT positions) and the residual add.
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]   (wpe may be null: no positions)
// Row kernel (elementwise.cuh): one block per (b,t), its threads striding over C.
__global__ void encoder_forward_kernel(float* out, const int* inp, const float* wte, const float* wpe,
                                       int B, int T, int C, int span) {
    int bt = blockIdx.x, t = bt % T;
    const float* e = wte + (long)inp[bt] * C;
    float* o = out + (long)bt * C;
    if (wpe) {
        const float* pos = wpe + (long)t * C;
        ROW_FOR(c, C, span) o[c] = e[c] + pos[c];
    } else {
        ROW_FOR(c, C, span) o[c] = e[c];
    }
}

// onehot[bt, v] = (inp[bt] == v). Row kernel: one block per bt, threads over
// v. The token-embedding gradient is then a deterministic matmul:
// dwte += onehot^T @ dout.
__global__ void onehot_kernel(float* onehot, const int* inp, int BT, int V, int span) {
    int bt = blockIdx.x, token = inp[bt];
    float* o = onehot + (long)bt * V;
    ROW_FOR(v, V, span) o[v] = v == token ? 1.0f : 0.0f;
}

// dwpe[t,c] += sum over b of dout[b,t,c], summed in order of b.
// One thread per (t, c).
__global__ void position_backward_kernel(float* dwpe, const float* dout, int B, int T, int C) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)T * C) return;
    float s = 0.0f;
    for (int b = 0; b < B; b++) s += dout[(long)b * T * C + idx];
    dwpe[idx] += s;
}

// out = a + b elementwise; span kernel (elementwise.cuh)
__global__ void residual_forward_kernel(float* out, const float* a, const float* b, long n, int span) {
    long i0, i1;
    span_range(&i0, &i1, n, span);
    for (long i = i0; i < i1; i++) out[i] = a[i] + b[i];
}

// ----------------------------------------------------------------------------
// launchers

void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) {
    LAUNCH(encoder_forward_kernel, B * T, row_threads(C), 0)(out, inp, wte, wpe, B, T, C, row_span(C));
    cudaCheck(cudaGetLastError());
}

// dwte (V,C) and dwpe (T,C) accumulate; onehot is scratch of B*T*V floats
void encoder_backward(cublasHandle_t handle, float* dwte, float* dwpe, float* onehot, const float* dout,
                      const int* inp, int B, int T, int C, int V) {
    int BT = B * T;
    LAUNCH(onehot_kernel, BT, row_threads(V), 0)(onehot, inp, BT, V, row_span(V));
    cudaCheck(cudaGetLastError());
    // column-major: dwte^T (C,V) += dout^T (C,BT) @ onehot (BT,V)
    const float one = 1.0f;
    cublasCheck(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, C, V, BT, &one, dout, C, onehot, V, &one, dwte, C));
    if (dwpe) {
        LAUNCH(position_backward_kernel, CEIL_DIV(T * C, 256), 256, 0)(dwpe, dout, B, T, C);
        cudaCheck(cudaGetLastError());
    }
}

void residual_forward(float* out, const float* a, const float* b, long n) {
    LAUNCH(residual_forward_kernel, span_blocks(n), kernel_choices.elementwise_threads, 0)(out, a, b, n, kernel_choices.elementwise_span);
    cudaCheck(cudaGetLastError());
}

/*
Linear layers through cuBLAS (the host backend maps cuBLAS onto OpenBLAS).
Weights are stored as PyTorch stores them, (OC, C) row-major; activations are
(N, C) row-major with N = B*T. In cuBLAS's column-major view a row-major
(N, C) matrix is a (C, N) matrix with leading dimension C.

Bias gradients are a matrix-vector product with a vector of ones (cuBLAS
gemv), which sums in a fixed order: deterministic.
*/
#pragma once
#include "cuda_common.h"
#include "elementwise.cuh"

// out[n, oc] = bias[oc]; row kernel (elementwise.cuh): one block per row n,
// its threads striding over oc (no index division; coalesced on the GPU, a
// contiguous copy per row on the host)
__global__ void broadcast_bias_kernel(float* out, const float* bias, int OC, int span) {
    float* row = out + (long)blockIdx.x * OC;
    ROW_FOR(oc, OC, span) row[oc] = bias[oc];
}

// out[i] = value; span kernel (elementwise.cuh)
__global__ void fill_kernel(float* out, float value, long n, int span) {
    long i0, i1;
    span_range(&i0, &i1, n, span);
    for (long i = i0; i < i1; i++) out[i] = value;
}

// out (N,OC) = inp (N,C) @ weight(OC,C)^T + bias (bias may be null).
// ld_inp: distance between rows of inp (C when packed; more when inp is a
// column slice of a wider activation)
void matmul_forward_ld(cublasHandle_t handle, float* out, const float* inp, int ld_inp, const float* weight,
                       const float* bias, int N, int C, int OC) {
    const float one = 1.0f, zero = 0.0f;
    if (bias) {
        LAUNCH(broadcast_bias_kernel, N, row_threads(OC), 0)(out, bias, OC, row_span(OC));
        cudaCheck(cudaGetLastError());
    }
    // column-major view: out (OC,N) = weight^T-view (OC,C) @ inp (C,N)
    cublasCheck(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &one, weight, C, inp, ld_inp,
                            bias ? &one : &zero, out, OC));
}

void matmul_forward(cublasHandle_t handle, float* out, const float* inp, const float* weight, const float* bias,
                    int N, int C, int OC) {
    matmul_forward_ld(handle, out, inp, C, weight, bias, N, C, OC);
}

// dinp (N,C) = dout (N,OC) @ weight (OC,C), overwritten or, with
//                                 accumulate_dinp, added (dinp may be null)
// dweight (OC,C) += dout^T @ inp  (accumulated)
// dbias (OC) += sum over rows of dout  (accumulated; may be null)
// ld_inp, ld_dinp: row distances of inp and dinp; ones: >= N ones on the device
void matmul_backward_ld(cublasHandle_t handle, float* dinp, int ld_dinp, int accumulate_dinp, float* dweight,
                        float* dbias, const float* dout, const float* inp, int ld_inp, const float* weight,
                        const float* ones, int N, int C, int OC) {
    const float one = 1.0f, zero = 0.0f;
    if (dinp) {
        cublasCheck(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, weight, C, dout, OC,
                                accumulate_dinp ? &one : &zero, dinp, ld_dinp));
    }
    cublasCheck(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, &one, inp, ld_inp, dout, OC, &one, dweight, C));
    if (dbias) {
        cublasCheck(cublasSgemv(handle, CUBLAS_OP_N, OC, N, &one, dout, OC, ones, 1, &one, dbias, 1));
    }
}

void matmul_backward(cublasHandle_t handle, float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, const float* ones, int N, int C, int OC) {
    matmul_backward_ld(handle, dinp, C, 0, dweight, dbias, dout, inp, C, weight, ones, N, C, OC);
}

void fill(float* out, float value, long n) {
    LAUNCH(fill_kernel, span_blocks(n), kernel_choices.elementwise_threads, 0)(out, value, n, kernel_choices.elementwise_span);
    cudaCheck(cudaGetLastError());
}

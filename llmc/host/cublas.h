/*
cuBLAS on the CPU (host backend, part 5): the handle, its stream and math
mode, and the products the kernels use (Sgemm, SgemmStridedBatched, Sgemv),
column-major as cuBLAS, on the system's CBLAS (OpenBLAS); with HOST_TF32 the
products' inputs are rounded to TF32 as a GPU's tensor cores take them.
*/
#pragma once

#include <cblas.h>
#include "profile.h"
#include "runtime.h"

// ----------------------------------------------------------------------------
// cuBLAS (column-major, as cuBLAS) on CBLAS

enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_EXECUTION_FAILED = 13 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3, CUBLAS_PEDANTIC_MATH = 2 };
// A handle's products go to its stream (cublasSetStream; recorded while that
// stream is captured, refused on the legacy stream during a capture) with the
// workspace of cublasSetWorkspace, which cublasSetStream resets as cuBLAS does.
struct HostBlasHandle {
    cublasMath_t math_mode;
    cudaStream_t stream;
    void* workspace;
    size_t workspace_bytes;
};
typedef HostBlasHandle* cublasHandle_t;

inline cublasStatus_t cublasCreate(cublasHandle_t* h) {
    *h = new HostBlasHandle{CUBLAS_DEFAULT_MATH, nullptr, nullptr, 0};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h) { delete h; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    h->math_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetMathMode(cublasHandle_t h, cublasMath_t* mode) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = h->math_mode;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    h->stream = s;
    h->workspace = nullptr;
    h->workspace_bytes = 0;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t* s) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    *s = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void* workspace, size_t bytes) {
    if (!h || (bytes && !workspace)) return CUBLAS_STATUS_INVALID_VALUE;
    h->workspace = workspace;
    h->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}
inline const char* cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "success" : s == CUBLAS_STATUS_INVALID_VALUE ? "invalid value" : "execution failed";
}

// a product runs on the handle's stream: now, recorded into its capture, or refused
template <typename F> inline cublasStatus_t host_blas_op(cublasHandle_t h, F&& op) {
    return host_stream_op(h->stream, false, std::forward<F>(op)) == cudaSuccess ? CUBLAS_STATUS_SUCCESS
                                                                                : CUBLAS_STATUS_EXECUTION_FAILED;
}

// HOST_TF32 (host_settings.tf32): which products take TF32 inputs
inline bool host_tf32_for(cublasHandle_t h) {
    HostTf32Mode m = host_settings.tf32;
    return m == HOST_TF32_ALL || (m == HOST_TF32_HANDLE && h && h->math_mode == CUBLAS_TF32_TENSOR_OP_MATH);
}

// x rounded to TF32: 10 mantissa bits, to nearest, ties to even (Inf and NaN kept)
inline float host_round_tf32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {
        u += 0x0fffu + ((u >> 13) & 1u);
        u &= 0xffffe000u;
    }
    memcpy(&x, &u, 4);
    return x;
}

// the n floats from src rounded to TF32, in a scratch buffer of the caller's
inline const float* host_tf32_copy(std::vector<float>& scratch, const float* src, long n) {
    if ((long)scratch.size() < n) scratch.resize(n);
    float* dst = scratch.data();
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (long i = 0; i < n; i++) dst[i] = host_round_tf32(src[i]);
    return dst;
}

// C = alpha op(A) op(B) + beta C (column-major, cuBLAS's meaning) when n == 1 or m == 1, as one
// sgemv. n == 1: C's column (m) = op(A) (m x k) times op(B)'s column (k; stride 1, or ldb when B is
// transposed). m == 1: C's row (n, stride ldc) = op(B)^T (n x k) times op(A)'s row (k; stride lda, or
// 1 when A is transposed). With beta 0, C is not read (it may hold anything, as on a GPU).
inline void host_gemm_as_gemv(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                              const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    if (n == 1) {
        if (beta == 0.0f) memset(C, 0, sizeof(float) * m);
        int incx = tb == CUBLAS_OP_T ? ldb : 1;
        if (ta == CUBLAS_OP_T) cblas_sgemv(CblasColMajor, CblasTrans, k, m, alpha, A, lda, B, incx, beta, C, 1);
        else cblas_sgemv(CblasColMajor, CblasNoTrans, m, k, alpha, A, lda, B, incx, beta, C, 1);
    } else {
        if (beta == 0.0f) for (int j = 0; j < n; j++) C[(long)j * ldc] = 0.0f;
        int incx = ta == CUBLAS_OP_T ? 1 : lda;
        if (tb == CUBLAS_OP_T) cblas_sgemv(CblasColMajor, CblasNoTrans, n, k, alpha, B, ldb, A, incx, beta, C, ldc);
        else cblas_sgemv(CblasColMajor, CblasTrans, k, n, alpha, B, ldb, A, incx, beta, C, ldc);
    }
}

// C = alpha op(A) op(B) + beta C as cublasSgemm computes it (tf32: with TF32 inputs); not counted
inline void host_sgemm_run(bool tf32, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                           const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    if (m == 0 || n == 0) return;
    HostProfileScope profile_scope("cublasSgemm");
    if (k > 0 && tf32) {
        // op(A) is m x k and op(B) k x n; the spans below are what column-major storage with lda, ldb covers
        static thread_local std::vector<float> a_tf32, b_tf32;
        long a_rows = ta == CUBLAS_OP_T ? k : m, a_cols = ta == CUBLAS_OP_T ? m : k;
        long b_rows = tb == CUBLAS_OP_T ? n : k, b_cols = tb == CUBLAS_OP_T ? k : n;
        A = host_tf32_copy(a_tf32, A, (long)lda * (a_cols - 1) + a_rows);
        B = host_tf32_copy(b_tf32, B, (long)ldb * (b_cols - 1) + b_rows);
    }
    if (n == 1 || m == 1) {
        // a product with one column or one row is a matrix-vector product: OpenBLAS's sgemm packs its
        // operands first and takes several times longer than sgemv there (one token at a time in generation)
        host_gemm_as_gemv(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, tb == CUBLAS_OP_T ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// cuBLAS's argument checks (CUBLAS_STATUS_INVALID_VALUE): sizes not
// negative, each leading dimension at least the rows of its matrix as stored
// (column-major), strides not negative; and where the operands are, which a
// GPU faults on: the matrices in device (or pinned) memory, spanning no more
// than their allocation, the scalars on the host (host pointer mode).

// the floats a column-major rows x cols matrix with leading dimension ld spans
inline size_t host_matrix_span(long rows, long cols, long ld) { return rows > 0 && cols > 0 ? (size_t)(ld * (cols - 1) + rows) : 0; }

inline bool host_blas_operand_valid(const char* call, const char* name, const float* p, size_t floats) {
    if (floats == 0 || host_device_accessible(p, floats * sizeof(float))) return true;
    fprintf(stderr, "host backend: %s: %s (%zu floats from %p) is not in device memory\n", call, name, floats, (const void*)p);
    return false;
}
inline bool host_blas_scalars_valid(const char* call, const float* alpha, const float* beta) {
    if (alpha && beta && host_accessible(alpha, sizeof(float)) && host_accessible(beta, sizeof(float))) return true;
    fprintf(stderr, "host backend: %s: alpha and beta must be host pointers (host pointer mode)\n", call);
    return false;
}
inline bool host_gemm_valid(const char* call, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                            int k, const float* alpha, const float* A, int lda, long long strideA, const float* B,
                            int ldb, long long strideB, const float* beta, const float* C, int ldc, long long strideC,
                            int batch) {
    long a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
    long b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
    if (!h || m < 0 || n < 0 || k < 0 || batch < 0 || strideA < 0 || strideB < 0 || strideC < 0 ||
        lda < std::max(1l, a_rows) || ldb < std::max(1l, b_rows) || ldc < std::max(1, m)) {
        fprintf(stderr, "host backend: %s: invalid sizes or leading dimensions (m %d n %d k %d lda %d ldb %d ldc %d batch %d)\n",
                call, m, n, k, lda, ldb, ldc, batch);
        return false;
    }
    if (batch == 0 || m == 0 || n == 0) return true;
    size_t last = (size_t)(batch - 1);
    return host_blas_scalars_valid(call, alpha, beta) &&
           host_blas_operand_valid(call, "A", A, k ? last * strideA + host_matrix_span(a_rows, a_cols, lda) : 0) &&
           host_blas_operand_valid(call, "B", B, k ? last * strideB + host_matrix_span(b_rows, b_cols, ldb) : 0) &&
           host_blas_operand_valid(call, "C", C, last * strideC + host_matrix_span(m, n, ldc));
}

// The host's cuBLAS calls: the arguments are checked and the scalars read
// now (host pointer mode, as cuBLAS reads them when called, so a captured
// call keeps the values of capture time), the TF32 choice too; the product
// runs on the handle's stream (host_blas_op).
inline cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float* alpha, const float* A, int lda, const float* B, int ldb,
                                  const float* beta, float* C, int ldc) {
    if (!host_gemm_valid("cublasSgemm", handle, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    bool tf32 = host_tf32_for(handle);
    float a = *alpha, b = *beta;
    return host_blas_op(handle, [=]() {
        host_counts().blas++;
        host_sgemm_run(tf32, ta, tb, m, n, k, a, A, lda, B, ldb, b, C, ldc);
    });
}

inline void host_sgemm_batched_run(bool tf32, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   float alpha, const float* A, int lda, long long strideA, const float* B, int ldb,
                                   long long strideB, float beta, float* C, int ldc, long long strideC, int batch) {
    if (m == 0 || n == 0 || batch == 0) return;
    if (k > 0 && tf32) {  // TF32 rounds each product's inputs, as cublasSgemm does
        for (int i = 0; i < batch; i++)
            host_sgemm_run(true, ta, tb, m, n, k, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta, C + i * strideC, ldc);
        return;
    }
    HostProfileScope profile_scope("cublasSgemmStridedBatched");
    // the products spread over the workers, one single-threaded BLAS call each (OpenMP OpenBLAS runs a
    // call made inside a parallel region on its caller's thread): one fork-join per batch instead of
    // one per product (attention: B * NH products of T x T x hs)
    #pragma omp parallel for schedule(static) if (batch > 1)
    for (int i = 0; i < batch; i++)
        cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, tb == CUBLAS_OP_T ? CblasTrans : CblasNoTrans,
                    m, n, k, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta, C + i * strideC, ldc);
}

inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                                int m, int n, int k, const float* alpha,
                                                const float* A, int lda, long long strideA,
                                                const float* B, int ldb, long long strideB, const float* beta,
                                                float* C, int ldc, long long strideC, int batch) {
    if (!host_gemm_valid("cublasSgemmStridedBatched", h, ta, tb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta,
                         C, ldc, strideC, batch))
        return CUBLAS_STATUS_INVALID_VALUE;
    bool tf32 = host_tf32_for(h);
    float a = *alpha, b = *beta;
    return host_blas_op(h, [=]() {
        host_counts().blas++;
        host_sgemm_batched_run(tf32, ta, tb, m, n, k, a, A, lda, strideA, B, ldb, strideB, b, C, ldc, strideC, batch);
    });
}

inline cublasStatus_t cublasSgemv(cublasHandle_t h, cublasOperation_t ta, int m, int n, const float* alpha,
                                  const float* A, int lda, const float* x, int incx, const float* beta,
                                  float* y, int incy) {
    long x_len = ta == CUBLAS_OP_N ? n : m, y_len = ta == CUBLAS_OP_N ? m : n;
    if (!h || m < 0 || n < 0 || lda < std::max(1, m) || incx == 0 || incy == 0) {
        fprintf(stderr, "host backend: cublasSgemv: invalid sizes, leading dimension or increments (m %d n %d lda %d incx %d incy %d)\n",
                m, n, lda, incx, incy);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m > 0 && n > 0 &&
        !(host_blas_scalars_valid("cublasSgemv", alpha, beta) &&
          host_blas_operand_valid("cublasSgemv", "A", A, host_matrix_span(m, n, lda)) &&
          host_blas_operand_valid("cublasSgemv", "x", x, host_matrix_span(1, x_len, std::abs(incx))) &&
          host_blas_operand_valid("cublasSgemv", "y", y, host_matrix_span(1, y_len, std::abs(incy)))))
        return CUBLAS_STATUS_INVALID_VALUE;
    float a = *alpha, b = *beta;
    return host_blas_op(h, [=]() {
        host_counts().blas++;
        HostProfileScope profile_scope("cublasSgemv");
        cblas_sgemv(CblasColMajor, ta == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, m, n, a, A, lda, x, incx, b, y, incy);
    });
}

/*
Common vocabulary of every .cu file, on both backends.

nvcc sees the CUDA runtime, cuBLAS and NVTX; g++ sees host_backend.h, which
provides the same names on the CPU. Kernels are written once; they differ
between backends only through two macros:
  LAUNCH(kernel, grid, block, shared_bytes)(args...)   a kernel launch on main_stream
  DYNAMIC_SHARED(type, name);                           the dynamic shared memory
Plus small helpers every kernel header uses: error checks, NVTX ranges, and
warp/block reductions built on plain intrinsics.

Kernel variants: a launcher picks between a host-friendly and a GPU-friendly
kernel by a field of `kernel_choices` (llmc/kernel_choices.h, the one place
where those choices and the environment variables are decided). Tests set
the fields to check every variant on both backends.
*/
#pragma once

#include <cstdio>
#include <cstdlib>
#include "kernel_choices.h"

#ifdef __CUDACC__
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <nvtx3/nvToolsExt.h>
#define BACKEND_NAME "cuda"
// The stream every LAUNCH goes to: the legacy default stream unless a program
// sets it, as the trainers do (llmc/trainer.h) so that a training step can be
// captured into a CUDA graph. host_backend.h declares the same for g++.
inline cudaStream_t main_stream = 0;
#define LAUNCH(kernel, grid, block, shared_bytes) kernel<<<(grid), (block), (shared_bytes), main_stream>>>
#define DYNAMIC_SHARED(T, name) \
    extern __shared__ __align__(16) unsigned char name##_bytes[]; \
    T* name = reinterpret_cast<T*>(name##_bytes)
#else
#include "host_backend.h"
#endif

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

// ----------------------------------------------------------------------------
// error checks: one line naming the call site, then exit

inline void cuda_check(cudaError_t e, const char* file, int line) {
    if (e != cudaSuccess) {
        fprintf(stderr, "[CUDA ERROR] at %s:%d: %s\n", file, line, cudaGetErrorString(e));
        exit(EXIT_FAILURE);
    }
}
#define cudaCheck(call) cuda_check((call), __FILE__, __LINE__)

inline void cublas_check(cublasStatus_t s, const char* file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "[cuBLAS ERROR] %d at %s:%d\n", (int)s, file, line);
        exit(EXIT_FAILURE);
    }
}
#define cublasCheck(call) cublas_check((call), __FILE__, __LINE__)

// ----------------------------------------------------------------------------
// TF32: whether the cuBLAS products of a test take TF32 inputs, and the
// tolerance of a comparison with an fp32 (or float64) reference that follows.
// Tests leave their handles in the default (fp32) math mode, so this is
// false under nvcc; on the host, HOST_TF32=1 rounds every product's inputs
// to TF32 (llmc/host/cublas.h), so that the suite runs the arithmetic the
// trainers use on a GPU, with its own, stated tolerance.

inline bool tf32_products() {
#ifdef __CUDACC__
    return false;
#else
    return host_settings.tf32 == HOST_TF32_ALL;
#endif
}
inline double tf32_tolerance(double fp32_tol, double tf32_tol) { return tf32_products() ? tf32_tol : fp32_tol; }

// ----------------------------------------------------------------------------
// NVTX: a scoped range, so Nsight shows each layer's forward and backward

struct NvtxRange {
    explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
    ~NvtxRange() { nvtxRangePop(); }
};
#define NVTX_CONCAT_(a, b) a##b
#define NVTX_CONCAT(a, b) NVTX_CONCAT_(a, b)
#define NVTX_RANGE(name) NvtxRange NVTX_CONCAT(nvtx_range_, __LINE__)(name)

// ----------------------------------------------------------------------------
// reductions (fixed order of operations: deterministic)

// Sum over the 32 lanes of a warp by butterfly shuffles; every lane gets the sum.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over a block whose size is a multiple of 32 (at most 1024): warp sums,
// then warp 0 sums the per-warp partials. `scratch` is 32 floats of shared
// memory. Every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < nwarps; w++) total += scratch[w];
    return total;
}

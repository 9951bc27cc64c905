/*
Unit test of the backend itself: elementwise, warp-reduction, block-reduction
and scan kernels, multi-dimensional launches, dynamic shared memory, atomics
and the cuBLAS calls, each against a plain C reference on the host. On the
host backend it also checks that a barrier some threads never reach aborts
with a message instead of hanging, and that an invalid launch is reported.

Inputs are small integers stored as floats, so every sum below is exact in
fp32 whatever the order: expected and computed values must be equal.
*/
#include "llmc/cuda_common.h"
#include "llmc/testing.h"
#include "llmc/adamw.cuh"

#include <vector>
#ifndef __CUDACC__
#include <sys/wait.h>
#endif

// ----------------------------------------------------------------------------
// kernels under test

// out[i] = a[i] * b[i] + 1, one thread per element
__global__ void elementwise_kernel(float* out, const float* a, const float* b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] * b[i] + 1.0f;
}

// out[w] = sum of the 32 values of warp w, by xor shuffles (warp_sum) and
// by down shuffles (lane 0's result), both written
__global__ void warp_reduce_kernel(float* out_xor, float* out_down, const float* in, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? in[i] : 0.0f;
    float s = warp_sum(v);
    float d = v;
    for (int offset = 16; offset > 0; offset >>= 1) d += __shfl_down_sync(0xffffffffu, d, offset);
    int w = i / 32;
    if (threadIdx.x % 32 == 0) { out_xor[w] = s; out_down[w] = d; }
}

// out[block] = sum of the block's elements: grid-stride load, then a
// shared-memory tree with __syncthreads (blockDim a power of two)
__global__ void block_reduce_tree_kernel(float* out, const float* in, int n) {
    __shared__ float buf[1024];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    buf[t] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) buf[t] += buf[t + stride];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}

// out[block] = sum via the block_sum helper (warps, then partials)
__global__ void block_reduce_helper_kernel(float* out, const float* in, int n) {
    __shared__ float scratch[32];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float s = block_sum(i < n ? in[i] : 0.0f, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// inclusive prefix sum within each block: Hillis-Steele in dynamic shared
// memory, double-buffered, one barrier per step
__global__ void block_scan_kernel(float* out, const float* in, int n) {
    DYNAMIC_SHARED(float, buf);  // 2 * blockDim.x floats
    int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    int src = 0;
    buf[t] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int offset = 1; offset < (int)blockDim.x; offset <<= 1) {
        int dst = 1 - src;
        float v = buf[src * blockDim.x + t];
        if (t >= offset) v += buf[src * blockDim.x + t - offset];
        buf[dst * blockDim.x + t] = v;
        __syncthreads();
        src = dst;
    }
    if (i < n) out[i] = buf[src * blockDim.x + t];
}

// inclusive prefix sum within each warp by up shuffles
__global__ void warp_scan_kernel(float* out, const float* in, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
    float v = i < n ? in[i] : 0.0f;
    for (int offset = 1; offset < 32; offset <<= 1) {
        float u = __shfl_up_sync(0xffffffffu, v, offset);
        if (lane >= offset) v += u;
    }
    if (i < n) out[i] = v;
}

// a 3-d grid of 3-d blocks: each thread writes its linear id at its place
__global__ void index_kernel(int* out) {
    int tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int nt = blockDim.x * blockDim.y * blockDim.z;
    out[bx * nt + tx] = bx * 1000 + tx;
}

// warp 0 returns at once; the other warps vote and broadcast (exited lanes
// in other warps do not matter to a warp sync)
__global__ void early_exit_vote_kernel(int* out) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp == 0) return;
    unsigned int ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
    int from_lane_5 = __shfl_sync(0xffffffffu, lane * 10 + warp, 5);
    if (lane == 0) { out[2 * warp] = (int)__popc(ballot); out[2 * warp + 1] = from_lane_5; }
}

// counts threads with atomics
__global__ void atomic_count_kernel(int* count, float* fsum) {
    atomicAdd(count, 1);
    atomicAdd(fsum, 1.0f);
}

// a barrier only half the block reaches: a deadlock on a GPU
__global__ void divergent_barrier_kernel(float* out) {
    if (threadIdx.x < 16) {
        __syncthreads();
        out[threadIdx.x] = 1.0f;
    }
}

// ----------------------------------------------------------------------------

static float* to_device(const std::vector<float>& h) {
    float* d; cudaCheck(cudaMalloc(&d, h.size() * sizeof(float)));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static std::vector<float> to_host(const float* d, size_t n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}
static int count_mismatch(const std::vector<float>& a, const std::vector<float>& b) {
    int bad = 0;
    for (size_t i = 0; i < a.size(); i++) bad += a[i] != b[i];
    return bad;
}

int main() {
    Tests tests;
    printf("backend: %s\n", BACKEND_NAME);
    const int n = 100003;  // not a multiple of any block size
    std::vector<float> a(n), b(n);
    uint64_t rng = 42;
    for (int i = 0; i < n; i++) { a[i] = (float)(random_u32(&rng) % 17) - 8; b[i] = (float)(random_u32(&rng) % 9) - 4; }
    float* d_a = to_device(a);
    float* d_b = to_device(b);
    float* d_out; cudaCheck(cudaMalloc(&d_out, n * sizeof(float)));
    float* d_out2; cudaCheck(cudaMalloc(&d_out2, n * sizeof(float)));

    {   // elementwise
        LAUNCH(elementwise_kernel, CEIL_DIV(n, 256), 256, 0)(d_out, d_a, d_b, n);
        cudaCheck(cudaGetLastError());
        std::vector<float> ref(n);
        for (int i = 0; i < n; i++) ref[i] = a[i] * b[i] + 1.0f;
        int bad = count_mismatch(to_host(d_out, n), ref);
        tests.check(bad == 0, "elementwise: %d of %d differ", bad, n);
    }
    {   // warp reductions
        int nw = CEIL_DIV(n, 32);
        LAUNCH(warp_reduce_kernel, CEIL_DIV(n, 128), 128, 0)(d_out, d_out2, d_a, n);
        cudaCheck(cudaGetLastError());
        std::vector<float> ref(nw, 0.0f);
        for (int i = 0; i < n; i++) ref[i / 32] += a[i];
        int bad1 = count_mismatch(to_host(d_out, nw), ref), bad2 = count_mismatch(to_host(d_out2, nw), ref);
        tests.check(bad1 == 0 && bad2 == 0, "warp reduction: xor %d, down %d of %d warps differ", bad1, bad2, nw);
    }
    {   // block reductions: tree with barriers, and the block_sum helper
        for (int bs : {32, 256, 1024}) {
            int nb = CEIL_DIV(n, bs);
            LAUNCH(block_reduce_tree_kernel, nb, bs, 0)(d_out, d_a, n);
            LAUNCH(block_reduce_helper_kernel, nb, bs, 0)(d_out2, d_a, n);
            cudaCheck(cudaGetLastError());
            std::vector<float> ref(nb, 0.0f);
            for (int i = 0; i < n; i++) ref[i / bs] += a[i];
            int bad1 = count_mismatch(to_host(d_out, nb), ref), bad2 = count_mismatch(to_host(d_out2, nb), ref);
            tests.check(bad1 == 0 && bad2 == 0, "block reduction (block %d): tree %d, helper %d of %d blocks differ",
                        bs, bad1, bad2, nb);
        }
    }
    {   // scans
        int bs = 512;
        LAUNCH(block_scan_kernel, CEIL_DIV(n, bs), bs, 2 * bs * sizeof(float))(d_out, d_a, n);
        LAUNCH(warp_scan_kernel, CEIL_DIV(n, 64), 64, 0)(d_out2, d_a, n);
        cudaCheck(cudaGetLastError());
        std::vector<float> ref_block(n), ref_warp(n);
        for (int i = 0; i < n; i++) {
            ref_block[i] = a[i] + (i % bs ? ref_block[i - 1] : 0.0f);
            ref_warp[i] = a[i] + (i % 32 ? ref_warp[i - 1] : 0.0f);
        }
        int bad1 = count_mismatch(to_host(d_out, n), ref_block), bad2 = count_mismatch(to_host(d_out2, n), ref_warp);
        tests.check(bad1 == 0, "block scan (shared memory, barriers): %d of %d differ", bad1, n);
        tests.check(bad2 == 0, "warp scan (up shuffles): %d of %d differ", bad2, n);
    }
    {   // 3-d grids and blocks
        dim3 grid(3, 2, 2), block(4, 8, 2);
        int total = 12 * 64;
        int* d_idx; cudaCheck(cudaMalloc(&d_idx, total * sizeof(int)));
        LAUNCH(index_kernel, grid, block, 0)(d_idx);
        std::vector<int> h(total);
        cudaCheck(cudaMemcpy(h.data(), d_idx, total * sizeof(int), cudaMemcpyDeviceToHost));
        int bad = 0;
        for (int i = 0; i < total; i++) bad += h[i] != (i / 64) * 1000 + i % 64;
        tests.check(bad == 0, "3-d grid and block indices: %d of %d differ", bad, total);
        cudaCheck(cudaFree(d_idx));
    }
    {   // early exit of one warp, votes and broadcast in the others
        int* d_v; cudaCheck(cudaMalloc(&d_v, 8 * sizeof(int)));
        cudaCheck(cudaMemset(d_v, 0, 8 * sizeof(int)));
        LAUNCH(early_exit_vote_kernel, 1, 128, 0)(d_v);
        std::vector<int> h(8);
        cudaCheck(cudaMemcpy(h.data(), d_v, 8 * sizeof(int), cudaMemcpyDeviceToHost));
        int bad = 0;
        for (int w = 1; w < 4; w++) bad += h[2 * w] != 11 || h[2 * w + 1] != 50 + w;
        tests.check(bad == 0 && h[0] == 0, "ballot and broadcast after another warp exited: %d warps wrong", bad);
        cudaCheck(cudaFree(d_v));
    }
    {   // atomics across concurrently running blocks
        int* d_c; float* d_f;
        cudaCheck(cudaMalloc(&d_c, sizeof(int))); cudaCheck(cudaMalloc(&d_f, sizeof(float)));
        cudaCheck(cudaMemset(d_c, 0, sizeof(int))); cudaCheck(cudaMemset(d_f, 0, sizeof(float)));
        LAUNCH(atomic_count_kernel, 64, 256, 0)(d_c, d_f);
        int c; float f;
        cudaCheck(cudaMemcpy(&c, d_c, sizeof(int), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(&f, d_f, sizeof(float), cudaMemcpyDeviceToHost));
        tests.check(c == 64 * 256 && f == 64.0f * 256.0f, "atomicAdd: count %d, float sum %.1f (expected %d)", c, f, 64 * 256);
        cudaCheck(cudaFree(d_c)); cudaCheck(cudaFree(d_f));
    }
    {   // cuBLAS sgemm, column-major, every transpose combination, beta accumulation
        cublasHandle_t handle; cublasCheck(cublasCreate(&handle));
        int m = 37, nn = 29, k = 41;
        std::vector<float> A(m * k), B(k * nn), C0(m * nn);
        for (auto& x : A) x = (float)(random_u32(&rng) % 7) - 3;
        for (auto& x : B) x = (float)(random_u32(&rng) % 7) - 3;
        for (auto& x : C0) x = (float)(random_u32(&rng) % 5) - 2;
        for (int ta = 0; ta < 2; ta++) for (int tb = 0; tb < 2; tb++) {
            // op(A) is m x k, op(B) is k x n; stored so that op() gives those shapes
            int lda = ta ? k : m, ldb = tb ? nn : k;
            float* dA = to_device(A); float* dB = to_device(B); float* dC = to_device(C0);
            float alpha = 2.0f, beta = 1.0f;
            cublasCheck(cublasSgemm(handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    m, nn, k, &alpha, dA, lda, dB, ldb, &beta, dC, m));
            std::vector<float> C = to_host(dC, m * nn), ref(m * nn);
            for (int i = 0; i < m; i++) for (int j = 0; j < nn; j++) {
                float s = 0.0f;
                for (int p = 0; p < k; p++) {
                    float av = ta ? A[p + i * lda] : A[i + p * lda];
                    float bv = tb ? B[j + p * ldb] : B[p + j * ldb];
                    s += av * bv;
                }
                ref[i + j * m] = alpha * s + beta * C0[i + j * m];
            }
            int bad = count_mismatch(C, ref);
            tests.check(bad == 0, "cublasSgemm op(A)=%c op(B)=%c: %d of %d differ", ta ? 'T' : 'N', tb ? 'T' : 'N', bad, m * nn);
            cudaFree(dA); cudaFree(dB); cudaFree(dC);
        }
        {   // strided batched: 3 independent products
            int batch = 3, mm = 8, n2 = 5, k2 = 6;
            std::vector<float> A2(batch * mm * k2), B2(batch * k2 * n2);
            for (auto& x : A2) x = (float)(random_u32(&rng) % 5) - 2;
            for (auto& x : B2) x = (float)(random_u32(&rng) % 5) - 2;
            float* dA = to_device(A2); float* dB = to_device(B2);
            float* dC; cudaCheck(cudaMalloc(&dC, batch * mm * n2 * sizeof(float)));
            float one = 1.0f, zero = 0.0f;
            cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, mm, n2, k2, &one, dA, mm, mm * k2,
                                                  dB, k2, k2 * n2, &zero, dC, mm, mm * n2, batch));
            std::vector<float> C = to_host(dC, batch * mm * n2);
            int bad = 0;
            for (int q = 0; q < batch; q++) for (int i = 0; i < mm; i++) for (int j = 0; j < n2; j++) {
                float s = 0.0f;
                for (int p = 0; p < k2; p++) s += A2[q * mm * k2 + i + p * mm] * B2[q * k2 * n2 + p + j * k2];
                bad += C[q * mm * n2 + i + j * mm] != s;
            }
            tests.check(bad == 0, "cublasSgemmStridedBatched: %d of %d differ", bad, batch * mm * n2);
            cudaFree(dA); cudaFree(dB); cudaFree(dC);
        }
        cublasCheck(cublasDestroy(handle));
    }
    {   // the global norm and clipping factor, both first-pass variants, against double. Not exact:
        // fp32 sums of ~15,600 positive squares per partial drift by about sqrt(15600) * 6e-8 = 7.5e-6
        // relative at most in a random walk, so 1e-5
        long m = 1000003;
        std::vector<float> g(m);
        double ref = 0.0;
        for (long i = 0; i < m; i++) { g[i] = random_uniform(&rng) - 0.5f; ref += (double)g[i] * g[i]; }
        ref = sqrt(ref);
        float* d_g = to_device(g);
        float* d_norm; cudaCheck(cudaMalloc(&d_norm, (NORM_BLOCKS + 2) * sizeof(float)));
        for (int variant = 0; variant < 2; variant++) {
            norm_use_blocks = variant == 1;
            global_norm(d_norm, d_g, m, 100.0f);
            std::vector<float> h = to_host(d_norm, 2);
            double err = fabs(h[0] - ref) / ref, scale_err = fabs(h[1] - 100.0 / (ref + 1e-6)) * ref / 100.0;
            tests.check(err < 1e-5 && scale_err < 1e-5, "global norm (%s): %.6f vs %.6f (rel err %.1e), clip scale rel err %.1e",
                        variant ? "blocks" : "one thread per share", h[0], ref, err, scale_err);
        }
        cudaFree(d_g); cudaFree(d_norm);
    }
#ifndef __CUDACC__
    {   // an invalid launch is an error, not a crash
        LAUNCH(elementwise_kernel, 1, 2048, 0)(d_out, d_a, d_b, n);
        cudaError_t e = cudaGetLastError();
        tests.check(e == cudaErrorInvalidConfiguration, "launch with 2048 threads per block reports: %s", cudaGetErrorString(e));
    }
    {   // a divergent barrier aborts with a message (run in a child process)
        int pipefd[2];
        if (pipe(pipefd) != 0) { perror("pipe"); return 1; }
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            dup2(pipefd[1], 2);
            close(pipefd[0]);
            LAUNCH(divergent_barrier_kernel, 1, 32, 0)(d_out);
            _exit(0);  // not reached if the deadlock is caught
        }
        close(pipefd[1]);
        char msg[512] = {0};
        ssize_t got = read(pipefd[0], msg, sizeof(msg) - 1);
        close(pipefd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        if (got > 0 && msg[got - 1] == '\n') msg[got - 1] = 0;
        bool aborted = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        tests.check(aborted && strstr(msg, "deadlock") != nullptr, "divergent barrier aborts: \"%s\"", msg);
    }
#endif
    cudaFree(d_a); cudaFree(d_b); cudaFree(d_out); cudaFree(d_out2);
    return tests.summary();
}

/*
Unit test of the backend itself: elementwise, warp-reduction, block-reduction
and scan kernels, multi-dimensional launches, dynamic shared memory, atomics
and the cuBLAS calls, each against a plain C reference on the host. On the
host backend it also checks that a barrier some threads never reach aborts
with a message instead of hanging, and that an invalid launch is reported.

Launch limits (threads, block and grid dimensions, dynamic shared memory
with and without cudaFuncSetAttribute) are checked on both backends: the
host's must be the GPU's. The deterministic kernels (LayerNorm forward and
backward, the selective scan forward and backward, the global norm, AdamW;
every variant) must give bitwise the same results on every run; on the host
backend each run uses another schedule (natural, reversed, random orders of
blocks and threads), and the schedules, the poisoned allocations and the
TF32 rounding of the host backend are checked themselves.

Inputs are small integers stored as floats, so every sum below is exact in
fp32 whatever the order: expected and computed values must be equal.

Then the kernels written for host speed (check_fast_kernels): the accuracy
of fast_math.cuh's functions and of the GELU against double precision (max
relative error printed); the span and row kernel shapes of elementwise.cuh
against the GPU's shapes run on the same backend (bitwise equal: every
element is computed the same way whatever the shape); LayerNorm's tiled
parameter gradient against one channel per thread (bitwise: same order);
and the selective scan's vec variant against seq and chunked.

CUDA graphs (check_graphs): a short sequence of launches (one with
barriers, one reading a scalar from device memory), a cuBLAS sgemm and
async copies and memsets, captured once on a stream and replayed three
times with new inputs written to its device buffers between replays, must
give bitwise what the same sequence gives run eagerly; the capture itself
runs nothing; and what a capture must not contain (a synchronous copy to
the host, a device synchronization, cudaMalloc outside relaxed mode, a
launch on the legacy stream) is an error that invalidates the capture, on
the host backend as on a GPU.
*/
#include "llmc/cuda_common.h"
#include "llmc/testing.h"
#include "llmc/adamw.cuh"
#include "llmc/fast_math.cuh"
#include "llmc/elementwise.cuh"
#include "llmc/gelu.cuh"
#include "llmc/encoder.cuh"
#include "llmc/matmul.cuh"
#include "llmc/conv1d.cuh"
#include "llmc/crossentropy.cuh"
#include "llmc/layernorm.cuh"
#include "llmc/attention.cuh"
#include "llmc/selective_scan.cuh"

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

// sum of the first n floats of dynamic shared memory, each thread filling a
// strided share with 1s; one block (checks that the launch ran and the memory is there)
__global__ void dynamic_shared_kernel(float* out, int n) {
    DYNAMIC_SHARED(float, buf);
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int i = 0; i < n; i++) s += buf[i];
        out[0] = s;
    }
}

// out[block] = the first float of dynamic shared memory, read before any thread wrote it
__global__ void shared_first_read_kernel(float* out) {
    DYNAMIC_SHARED(float, buf);
    if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

// does nothing (launch-limit checks)
__global__ void empty_kernel() {}

// racy on purpose: every thread writes the one location; the last writer wins
__global__ void last_writer_kernel(int* out) { out[0] = threadIdx.x; }
// the same after a barrier (fiber mode on the host)
__global__ void last_writer_after_sync_kernel(int* out) {
    __syncthreads();
    out[0] = threadIdx.x;
}
// the order blocks ran in: the k-th block to run writes its index at k
__global__ void block_order_kernel(int* order, int* count) {
    if (threadIdx.x == 0) order[atomicAdd(count, 1)] = blockIdx.x;
}

// ----------------------------------------------------------------------------

static float* to_device(const std::vector<float>& h) {
    float* d; cudaCheck(cudaMalloc(&d, h.size() * sizeof(float)));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static int* to_device_int(const std::vector<int>& h) {
    int* d; cudaCheck(cudaMalloc(&d, h.size() * sizeof(int)));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice));
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
static std::vector<float> random_vector(long n, uint64_t* rng, float lo, float hi) {
    std::vector<float> v(n);
    for (auto& x : v) x = lo + (hi - lo) * random_uniform(rng);
    return v;
}

// Runs the deterministic kernels on fixed inputs, with the variant flags as
// they are, and returns every output (bitwise comparable: each buffer is
// zeroed before the kernels write it, also where they leave parts untouched).
static std::vector<float> run_deterministic_kernels() {
    std::vector<float> all;
    auto append = [&](const float* d, long n) { std::vector<float> h = to_host(d, n); all.insert(all.end(), h.begin(), h.end()); };
    auto zeros = [](long n) { float* d; cudaCheck(cudaMalloc(&d, n * sizeof(float))); cudaCheck(cudaMemset(d, 0, n * sizeof(float))); return d; };
    uint64_t rng = 7;
    {   // LayerNorm forward and backward: N rows of C
        int N = 67, C = 100;
        float* inp = to_device(random_vector((long)N * C, &rng, -2.0f, 2.0f));
        float* w = to_device(random_vector(C, &rng, 0.5f, 1.5f));
        float* bias = to_device(random_vector(C, &rng, -0.5f, 0.5f));
        float* dout = to_device(random_vector((long)N * C, &rng, -1.0f, 1.0f));
        float *out = zeros((long)N * C), *mean = zeros(N), *rstd = zeros(N);
        float *dinp = zeros((long)N * C), *dw = zeros(C), *db = zeros(C);
        layernorm_forward(out, mean, rstd, inp, w, bias, N, C);
        layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
        append(out, (long)N * C); append(mean, N); append(rstd, N); append(dinp, (long)N * C); append(dw, C); append(db, C);
        for (float* p : {inp, w, bias, dout, out, mean, rstd, dinp, dw, db}) cudaFree(p);
    }
    {   // selective scan forward and backward; T not a multiple of the chunk, E not of the group
        int B = 2, T = 70, E = 20, N = 16, R = 4;
        long BTE = (long)B * T * E, rows = (long)B * T;
        float* u = to_device(random_vector(BTE, &rng, -1.0f, 1.0f));
        float* dt = to_device(random_vector(BTE, &rng, 0.01f, 0.5f));
        float* x_dbl = to_device(random_vector(rows * (R + 2 * N), &rng, -1.0f, 1.0f));
        float* A_log = to_device(random_vector((long)E * N, &rng, 0.0f, 2.0f));
        float* D = to_device(random_vector(E, &rng, -1.0f, 1.0f));
        float* xz = to_device(random_vector(2 * BTE, &rng, -2.0f, 2.0f));
        float* dgated = to_device(random_vector(BTE, &rng, -1.0f, 1.0f));
        long nstates = scan_states_size(B, T, E, N);
        float *y = zeros(BTE), *gated = zeros(BTE), *states = zeros(nstates);
        float *du = zeros(BTE), *ddt = zeros(BTE), *dxz = zeros(2 * BTE), *dx_dbl = zeros(rows * (R + 2 * N));
        float *dA_log = zeros((long)E * N), *dD = zeros(E), *scratch = zeros(scan_backward_scratch_size(B, T, E, N));
        selective_scan_forward(y, gated, states, u, dt, x_dbl, R, A_log, D, xz, B, T, E, N);
        selective_scan_backward(du, ddt, dxz, dx_dbl, dA_log, dD, scratch, dgated, y, u, dt, x_dbl, R, A_log, D, xz,
                                states, B, T, E, N);
        append(y, BTE); append(gated, BTE); append(states, nstates); append(du, BTE); append(ddt, BTE);
        append(dxz, 2 * BTE); append(dx_dbl, rows * (R + 2 * N)); append(dA_log, (long)E * N); append(dD, E);
        for (float* p : {u, dt, x_dbl, A_log, D, xz, dgated, y, gated, states, du, ddt, dxz, dx_dbl, dA_log, dD, scratch})
            cudaFree(p);
    }
    {   // global norm with clipping, then AdamW with its scale
        long n = 300007;
        float* grads = to_device(random_vector(n, &rng, -1.0f, 1.0f));
        float* params = to_device(random_vector(n, &rng, -1.0f, 1.0f));
        float *m = zeros(n), *v = zeros(n), *norm = zeros(NORM_BLOCKS + 2);
        global_norm(norm, grads, n, 1.0f);
        adamw_update(params, m, v, grads, n, 1e-3f, 0.9f, 0.99f, 1e-8f, 0.1f, 1, norm + 1);
        AdamWDecayTable table;  // then the one launch over three tensors, the middle one without decay
        memset(&table, 0, sizeof(table));
        table.count = 3;
        table.end[0] = 1000; table.end[1] = 201000; table.end[2] = n;
        table.decay[0] = table.decay[2] = 1;
        adamw_update_table(params, m, v, grads, n, &table, 1e-3f, 0.9f, 0.99f, 1e-8f, 0.1f, 2, norm + 1);
        append(norm, NORM_BLOCKS + 2); append(params, n); append(m, n); append(v, n);
        for (float* p : {grads, params, m, v, norm}) cudaFree(p);
    }
    {   // the mean loss on the device
        int n = 5000;
        float* losses = to_device(random_vector(n, &rng, 0.0f, 4.0f));
        float* out = zeros(1);
        LAUNCH(mean_loss_kernel, 1, kernel_choices.mean_loss_threads, 0)(out, losses, nullptr, nullptr, n, nullptr);
        append(out, 1);
        std::vector<int> targets(n);  // ... and over the rows with a target (every third row has none)
        for (int i = 0; i < n; i++) targets[i] = i % 3 == 1 ? TARGET_IGNORED : i % 7;
        int* d_targets = to_device_int(targets);
        float* dloss = zeros(1);
        LAUNCH(mean_loss_kernel, 1, kernel_choices.mean_loss_threads, 0)(out, losses, d_targets, dloss, n, nullptr);
        append(out, 1); append(dloss, 1);
        cudaFree(losses); cudaFree(out); cudaFree(d_targets); cudaFree(dloss);
    }
    return all;
}

// the deterministic kernels with every variant flag at `gpu_variants`
static std::vector<float> run_deterministic_variant(bool gpu_variants) {
    bool ln = kernel_choices.layernorm_warp, scan = kernel_choices.scan_chunked, norm = kernel_choices.norm_blocks;
    int tile = kernel_choices.layernorm_param_tile, loss_threads = kernel_choices.mean_loss_threads;
    kernel_choices.layernorm_warp = kernel_choices.scan_chunked = kernel_choices.norm_blocks = gpu_variants;
    kernel_choices.layernorm_param_tile = gpu_variants ? 1 : LN_TILE;
    kernel_choices.mean_loss_threads = gpu_variants ? MEAN_LOSS_THREADS : 1;
    std::vector<float> out = run_deterministic_kernels();
    kernel_choices.layernorm_warp = ln; kernel_choices.scan_chunked = scan; kernel_choices.norm_blocks = norm;
    kernel_choices.layernorm_param_tile = tile; kernel_choices.mean_loss_threads = loss_threads;
    return out;
}

static long count_bit_mismatch(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return -1;
    long bad = 0;
    for (size_t i = 0; i < a.size(); i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return bad;
}
static long count_nan(const std::vector<float>& a) {
    long k = 0;
    for (float x : a) k += x != x;
    return k;
}

// one launch's error: cudaGetLastError after it (and clears it)
static cudaError_t launch_error() { cudaDeviceSynchronize(); return cudaGetLastError(); }

#ifndef __CUDACC__
static const char* schedule_name(HostScheduleKind kind) {
    return kind == HOST_SCHEDULE_NATURAL ? "natural" : kind == HOST_SCHEDULE_REVERSE ? "reverse" : "random";
}
#endif

// ----------------------------------------------------------------------------
// kernels written for host speed

// max relative error of f against ref over xs, |ref| >= floor (below, absolute / floor)
template <typename F, typename R>
static double max_rel_error(const std::vector<double>& xs, F f, R ref, double floor, double* worst_x) {
    double worst = 0.0;
    for (double x : xs) {
        double r = ref(x), got = f((float)x);
        double e = fabs(got - r) / fmax(fabs(r), floor);
        if (e > worst || e != e) { worst = e; *worst_x = x; }
    }
    return worst;
}

// runs `launch` with the host's shapes and with the GPU's (span 1, 256
// threads; row kernels 256 threads, span 1), from the same inputs (`reset`
// restores them), and counts the floats of `out` (n) that differ
template <typename Reset, typename Launch>
static int shapes_mismatch(Reset reset, Launch launch, const float* out, long n) {
    int saved_span = kernel_choices.elementwise_span, saved_threads = kernel_choices.elementwise_threads, saved_row = kernel_choices.row_threads_max;
    reset();
    launch();
    cudaCheck(cudaGetLastError());
    std::vector<float> a = to_host(out, n);
    kernel_choices.elementwise_span = 1; kernel_choices.elementwise_threads = 256; kernel_choices.row_threads_max = 256;
    reset();
    launch();
    cudaCheck(cudaGetLastError());
    std::vector<float> b = to_host(out, n);
    kernel_choices.elementwise_span = saved_span; kernel_choices.elementwise_threads = saved_threads; kernel_choices.row_threads_max = saved_row;
    int bad = 0;
    for (long i = 0; i < n; i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return bad;
}

// ----------------------------------------------------------------------------
// CUDA graphs

// out[i] = in[i] * scale[0] + i % 7: a per-run scalar read from device memory
__global__ void scale_shift_kernel(float* out, const float* in, const float* scale, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] * scale[0] + (float)(i % 7);
}

// The buffers of check_graphs' sequence: inputs x (n) and scale (1) written
// before each run; outputs y (n), block sums (n / 256), C (m x q) = Y (m x k,
// y's first m*k values, column-major) W (k x q), and copies of C and y
typedef struct {
    int n, m, k, q;
    float *x, *scale, *y, *sums, *w, *c, *c_copy, *y_tail;
    cublasHandle_t handle;
} GraphBuffers;

// the sequence: all device work on main_stream and the handle's stream
static void graph_sequence(const GraphBuffers& g) {
    const float one = 1.0f, zero = 0.0f;
    cudaCheck(cudaMemsetAsync(g.y, 0, g.n * sizeof(float), main_stream));
    LAUNCH(scale_shift_kernel, CEIL_DIV(g.n, 256), 256, 0)(g.y, g.x, g.scale, g.n);
    LAUNCH(block_reduce_tree_kernel, g.n / 256, 256, 0)(g.sums, g.y, g.n);
    cublasCheck(cublasSgemm(g.handle, CUBLAS_OP_N, CUBLAS_OP_N, g.m, g.q, g.k, &one, g.y, g.m, g.w, g.k, &zero, g.c, g.m));
    cudaCheck(cudaMemcpyAsync(g.c_copy, g.c, (long)g.m * g.q * sizeof(float), cudaMemcpyDeviceToDevice, main_stream));
    LAUNCH(elementwise_kernel, CEIL_DIV(g.n / 2, 128), 128, 0)(g.y_tail, g.y + g.n / 2, g.y, g.n / 2);
    cudaCheck(cudaGetLastError());
}

// the inputs of run r: x and scale differ from run to run; the outputs are poisoned (all bits set)
static void graph_inputs(const GraphBuffers& g, int r) {
    std::vector<float> x(g.n);
    for (int i = 0; i < g.n; i++) x[i] = (float)((i * 7 + r * 13) % 23) - 11.0f;
    float scale = 0.5f + r;
    cudaCheck(cudaMemcpy(g.x, x.data(), g.n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(g.scale, &scale, sizeof(float), cudaMemcpyHostToDevice));
    for (float* p : {g.y, g.sums, g.c, g.c_copy, g.y_tail}) cudaCheck(cudaMemset(p, 0xff, g.n * sizeof(float)));
}

// the outputs of a run, one after another
static std::vector<float> graph_outputs(const GraphBuffers& g) {
    cudaCheck(cudaDeviceSynchronize());
    std::vector<float> out;
    const float* outputs[] = {g.y, g.sums, g.c, g.c_copy, g.y_tail};
    long sizes[] = {g.n, g.n / 256, (long)g.m * g.q, (long)g.m * g.q, g.n / 2};
    for (int i = 0; i < 5; i++) {
        std::vector<float> h = to_host(outputs[i], sizes[i]);
        out.insert(out.end(), h.begin(), h.end());
    }
    return out;
}

// Begins a capture on s, makes the call `what` does, and ends the capture:
// the call must fail, and the capture end with cudaErrorStreamCaptureInvalidated
// and no graph. mode: the capture's.
template <typename F> static void check_refused_in_capture(Tests& tests, cudaStream_t s, cudaStreamCaptureMode mode,
                                                         const char* what, F call) {
    cudaCheck(cudaStreamBeginCapture(s, mode));
    cudaError_t e = call();
    cudaGraph_t graph = nullptr;
    cudaError_t end = cudaStreamEndCapture(s, &graph);
    cudaGetLastError();
    tests.check(e != cudaSuccess && end == cudaErrorStreamCaptureInvalidated && graph == nullptr,
                "graph: %s during a capture fails (%s); the capture ends invalidated (%s)", what, cudaGetErrorString(e),
                cudaGetErrorString(end));
    if (graph) cudaGraphDestroy(graph);
}

static void check_graphs(Tests& tests) {
    GraphBuffers g;
    g.n = 4096; g.m = 64; g.k = 48; g.q = 40;
    float** buffers[] = {&g.x, &g.scale, &g.y, &g.sums, &g.w, &g.c, &g.c_copy, &g.y_tail};
    for (float** b : buffers) cudaCheck(cudaMalloc(b, g.n * sizeof(float)));
    std::vector<float> w(g.n);
    for (int i = 0; i < g.n; i++) w[i] = (float)(i % 5) - 2.0f;
    cudaCheck(cudaMemcpy(g.w, w.data(), g.n * sizeof(float), cudaMemcpyHostToDevice));
    cudaStream_t stream;
    cudaCheck(cudaStreamCreate(&stream));
    void* workspace;
    size_t workspace_bytes = (size_t)4 << 20;
    cudaCheck(cudaMalloc(&workspace, workspace_bytes));
    cublasCheck(cublasCreate(&g.handle));
    cublasCheck(cublasSetStream(g.handle, stream));
    cublasCheck(cublasSetWorkspace(g.handle, workspace, workspace_bytes));
    main_stream = stream;

    const int runs = 3;
    std::vector<std::vector<float>> eager(runs);
    for (int r = 0; r < runs; r++) {
        graph_inputs(g, r);
        graph_sequence(g);
        eager[r] = graph_outputs(g);
    }
    graph_inputs(g, 0);
    std::vector<float> ones(g.n, 1.0f);  // y finite, so that any of the sequence's work run now would change an output
    cudaCheck(cudaMemcpy(g.y, ones.data(), g.n * sizeof(float), cudaMemcpyHostToDevice));
    std::vector<float> before = graph_outputs(g);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cudaCheck(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    graph_sequence(g);
    cudaCheck(cudaStreamEndCapture(stream, &graph));
    cudaCheck(cudaGraphInstantiate(&exec, graph, 0));
    std::vector<float> after = graph_outputs(g);
    tests.check(count_bit_mismatch(before, after) == 0, "graph: the capture runs nothing (%ld of %ld outputs changed)",
                count_bit_mismatch(before, after), (long)after.size());
#ifndef __CUDACC__
    HostDeviceCounts counts0 = host_counts();
#endif
    for (int r = 0; r < runs; r++) {
        graph_inputs(g, r);
        cudaCheck(cudaGraphLaunch(exec, stream));
        std::vector<float> replay = graph_outputs(g);
        long bad = count_bit_mismatch(replay, eager[r]), nans = count_nan(replay);
        char changed[64] = "";
        if (r > 0) snprintf(changed, sizeof(changed), "; %ld differ from the previous run's", count_bit_mismatch(eager[r], eager[r - 1]));
        tests.check(bad == 0 && nans == 0, "graph: replay %d (new x and scale in device memory) equals the eager run "
                    "bitwise (%ld of %ld outputs differ, %ld NaN%s)", r + 1, bad, (long)replay.size(), nans, changed);
    }
#ifndef __CUDACC__
    HostDeviceCounts counts1 = host_counts();
    tests.check(counts1.graph_launches - counts0.graph_launches == runs && counts1.graph_kernels - counts0.graph_kernels == 3 * runs,
                "graph: %ld graph launches replayed %ld kernel launches (3 per replay)",
                counts1.graph_launches - counts0.graph_launches, counts1.graph_kernels - counts0.graph_kernels);
#endif
    cudaCheck(cudaGraphExecDestroy(exec));
    cudaCheck(cudaGraphDestroy(graph));

    // what a capture must not contain
    float host_value;
    check_refused_in_capture(tests, stream, cudaStreamCaptureModeGlobal, "a synchronous device-to-host cudaMemcpy", [&]() {
        return cudaMemcpy(&host_value, g.y, sizeof(float), cudaMemcpyDeviceToHost);
    });
    check_refused_in_capture(tests, stream, cudaStreamCaptureModeGlobal, "cudaStreamSynchronize of the capturing stream",
                             [&]() { return cudaStreamSynchronize(stream); });
    check_refused_in_capture(tests, stream, cudaStreamCaptureModeGlobal, "cudaDeviceSynchronize",
                             [&]() { return cudaDeviceSynchronize(); });
    check_refused_in_capture(tests, stream, cudaStreamCaptureModeGlobal, "cudaMalloc (global mode)", [&]() {
        float* p = nullptr;
        cudaError_t e = cudaMalloc(&p, 1024);
        if (e == cudaSuccess) cudaFree(p);
        return e;
    });
    check_refused_in_capture(tests, stream, cudaStreamCaptureModeGlobal, "a launch on the legacy stream", [&]() {
        main_stream = 0;
        LAUNCH(elementwise_kernel, 1, 32, 0)(g.y_tail, g.y, g.y, 32);
        main_stream = stream;
        return cudaGetLastError();
    });
    {   // relaxed mode allows cudaMalloc
        float* p = nullptr;
        cudaCheck(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
        cudaError_t e = cudaMalloc(&p, 1024);
        cudaCheck(cudaStreamEndCapture(stream, &graph));
        tests.check(e == cudaSuccess && graph != nullptr, "graph: cudaMalloc during a relaxed capture is allowed (%s)",
                    cudaGetErrorString(e));
        if (p) cudaCheck(cudaFree(p));
        if (graph) cudaCheck(cudaGraphDestroy(graph));
    }

    main_stream = 0;
    cublasCheck(cublasDestroy(g.handle));
    cudaCheck(cudaFree(workspace));
    cudaCheck(cudaStreamDestroy(stream));
    for (float** b : buffers) cudaCheck(cudaFree(*b));
}

static void check_fast_kernels(Tests& tests) {
    uint64_t rng = 7;
    {   // fast_expf over [-87, 88]: a dense grid plus random points, against exp of the same fp32 input.
        // Measured 7.6e-8 (under 1 ulp; 1 ulp is 6e-8 to 1.2e-7 relative); tolerance 1.5e-7 (1.25 ulp)
        std::vector<double> xs;
        for (long i = 0; i <= 2000000; i++) xs.push_back(-87.0 + 175.0 * i / 2000000.0);
        for (int i = 0; i < 1000000; i++) xs.push_back(-87.0 + 175.0 * random_uniform(&rng));
        double wx = 0.0;
        auto exp_ref = [](double x) { return exp((double)(float)x); };  // of the fp32 input the function sees
        double e = max_rel_error(xs, [](float x) { return (double)fast_expf(x); }, exp_ref, 0.0, &wx);
        tests.check(e <= 1.5e-7, "fast_expf on [-87, 88]: max rel err %.3e at x = %.6f (tol 1.5e-7)", e, wx);
        // the scan's range (dt * A <= 0) separately, and the flush to 0 far below
        std::vector<double> neg;
        for (long i = 0; i <= 1000000; i++) neg.push_back(-87.0 * i / 1000000.0);
        e = max_rel_error(neg, [](float x) { return (double)fast_expf(x); }, exp_ref, 0.0, &wx);
        tests.check(e <= 1.5e-7, "fast_expf on [-87, 0]: max rel err %.3e at x = %.6f (tol 1.5e-7)", e, wx);
        float nan = fast_expf(NAN), tiny = fast_expf(-200.0f), big = fast_expf(200.0f);
        tests.check(nan != nan && tiny == 0.0f && big > 1e38f, "fast_expf(NaN) = %g, (-200) = %g, (200) = %g (clamped to e^88)",
                    nan, tiny, big);
    }
    {   // fast_log1pf over [0, 1e30] (log-spaced) and [0, 1] (uniform), softplus over [-40, 40]: measured
        // 2.2e-7 and 2.6e-7 (about 2 ulp: the series, the correction term and the exp add up); tolerance 3e-7
        std::vector<double> us;
        for (int i = 0; i <= 1000000; i++) us.push_back(i / 1000000.0);
        for (int i = 0; i <= 1000000; i++) us.push_back(pow(10.0, -30.0 + 60.0 * i / 1000000.0));
        double wx = 0.0;
        double e = max_rel_error(us, [](float u) { return (double)fast_log1pf(u); }, [](double u) { return log1p((double)(float)u); },
                                 1e-300, &wx);
        tests.check(e <= 3e-7, "fast_log1pf on [0, 1e30]: max rel err %.3e at u = %.3e (tol 3e-7)", e, wx);
        std::vector<double> xs;
        for (int i = 0; i <= 1000000; i++) xs.push_back(-40.0 + 80.0 * i / 1000000.0);
        e = max_rel_error(xs, [](float x) { return (double)fast_softplusf(x); },
                          [](double x) { x = (float)x; return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }, 1e-300, &wx);
        tests.check(e <= 3e-7, "fast_softplusf on [-40, 40]: max rel err %.3e at x = %.4f (tol 3e-7)", e, wx);
    }
    {   // GELU's Phi and phi: the fitted erfc (2.3e-7 in fp32), fast_expf, the products; measured 4.0e-7 and
        // 2.5e-7 relative over [-12, 12] (the whole tail too); tolerance 5e-7 and 3e-7
        std::vector<double> xs;
        for (int i = 0; i <= 2000000; i++) xs.push_back(-12.0 + 24.0 * i / 2000000.0);
        double wx = 0.0;
        auto cdf_ref = [](double x) { return 0.5 * erfc(-(double)(float)x / sqrt(2.0)); };
        double e = max_rel_error(xs, [](float x) { float c, p; gelu_phi(x, &c, &p); return (double)c; }, cdf_ref, 1e-30, &wx);
        tests.check(e <= 5e-7, "GELU Phi(x) on [-12, 12]: max rel err %.3e at x = %.5f (tol 5e-7)", e, wx);
        e = max_rel_error(xs, [](float x) { float c, p; gelu_phi(x, &c, &p); return (double)p; },
                          [](double x) { x = (float)x; return exp(-0.5 * x * x) / sqrt(2.0 * M_PI); }, 1e-30, &wx);
        tests.check(e <= 3e-7, "GELU phi(x) on [-12, 12]: max rel err %.3e at x = %.5f (tol 3e-7)", e, wx);
        // glibc's erff form, for comparison (what the kernels computed before): its negative tail cancels
        double e_erff = max_rel_error(xs, [](float x) { return (double)(0.5f * (1.0f + erff(x * GELU_INV_SQRT2))); }, cdf_ref,
                                      1e-30, &wx);
        printf("     (for comparison, 0.5 (1 + erff(x / sqrt2)): max rel err %.3e at x = %.5f)\n", e_erff, wx);
    }
    {   // span and row kernels: host shapes vs GPU shapes, bitwise
        int B = 3, T = 37, C = 45, V = 13, E = 29, NH = 3, hs = 15;  // odd sizes: partial spans and rows
        long BT = (long)B * T, n = 4 * BT * C + 5;  // room for every case's inputs and outputs
        std::vector<float> a(n), b(n), pos(n);
        for (long i = 0; i < n; i++) { a[i] = 8.0f * random_uniform(&rng) - 4.0f; b[i] = random_uniform(&rng) - 0.5f; pos[i] = random_uniform(&rng) + 0.1f; }
        float *d_a = to_device(a), *d_b = to_device(b), *d_pos = to_device(pos), *d_o;
        cudaCheck(cudaMalloc(&d_o, 3 * n * sizeof(float)));
        std::vector<int> tok(BT);
        for (auto& x : tok) x = random_u32(&rng) % V;
        int* d_tok; cudaCheck(cudaMalloc(&d_tok, BT * sizeof(int)));
        cudaCheck(cudaMemcpy(d_tok, tok.data(), BT * sizeof(int), cudaMemcpyHostToDevice));
        auto none = []() {};
        auto zero_out = [&]() { cudaCheck(cudaMemset(d_o, 0, 3 * n * sizeof(float))); };
        auto copy_b = [&]() { cudaCheck(cudaMemcpy(d_o, d_b, n * sizeof(float), cudaMemcpyDeviceToDevice)); };
        struct Case { const char* name; int bad; };
        std::vector<Case> cases;
        cases.push_back({"gelu_forward", shapes_mismatch(none, [&]() { gelu_forward(d_o, d_a, n); }, d_o, n)});
        cases.push_back({"gelu_backward (in place)", shapes_mismatch(copy_b, [&]() { gelu_backward(d_o, d_a, d_o, n); }, d_o, n)});
        cases.push_back({"residual_forward", shapes_mismatch(none, [&]() { residual_forward(d_o, d_a, d_b, n); }, d_o, n)});
        cases.push_back({"fill", shapes_mismatch(zero_out, [&]() { fill(d_o, 3.5f, n); }, d_o, n)});
        cases.push_back({"broadcast_bias", shapes_mismatch(zero_out, [&]() {
            LAUNCH(broadcast_bias_kernel, BT, row_threads(C), 0)(d_o, d_b, C, row_span(C)); }, d_o, BT * C)});
        cases.push_back({"encoder_forward", shapes_mismatch(none, [&]() { encoder_forward(d_o, d_tok, d_a, d_b, B, T, C); }, d_o, BT * C)});
        cases.push_back({"encoder_forward, no positions", shapes_mismatch(none, [&]() { encoder_forward(d_o, d_tok, d_a, nullptr, B, T, C); }, d_o, BT * C)});
        cases.push_back({"onehot", shapes_mismatch(none, [&]() {
            LAUNCH(onehot_kernel, BT, row_threads(V), 0)(d_o, d_tok, (int)BT, V, row_span(V)); }, d_o, BT * V)});
        cases.push_back({"crossentropy_backward", shapes_mismatch(none, [&]() {
            crossentropy_backward(d_o, d_a, d_tok, 0.25f, (int)BT, V); }, d_o, BT * V)});
        cases.push_back({"adamw (params)", shapes_mismatch(
            [&]() { cudaCheck(cudaMemcpy(d_o, d_a, n * sizeof(float), cudaMemcpyDeviceToDevice));
                    cudaCheck(cudaMemcpy(d_o + n, d_b, n * sizeof(float), cudaMemcpyDeviceToDevice));
                    cudaCheck(cudaMemcpy(d_o + 2 * n, d_pos, n * sizeof(float), cudaMemcpyDeviceToDevice)); },
            [&]() { adamw_update(d_o, d_o + n, d_o + 2 * n, d_b, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, d_pos); }, d_o, 3 * n)});
        cases.push_back({"dt_softplus", shapes_mismatch(copy_b, [&]() { dt_softplus(d_o, d_a, (int)BT, E); }, d_o, BT * E)});
        // conv1d + SiLU: x is a column slice (row distance 2E) of a; then the backward pass's input gradient
        cases.push_back({"conv1d_silu_forward (conv | u)", shapes_mismatch(zero_out, [&]() {
            conv1d_silu_forward(d_o, d_o + BT * E, d_a, 2 * E, d_b, d_pos, B, T, E); }, d_o, 2 * BT * E)});
        cases.push_back({"conv1d_silu_backward (dx)", shapes_mismatch(
            [&]() { zero_out(); cudaCheck(cudaMemcpy(d_o + n, d_b, BT * E * sizeof(float), cudaMemcpyDeviceToDevice)); },
            [&]() { conv1d_silu_backward(d_o, 2 * E, d_o + 2 * n, d_o + 2 * n + E * CONV_K, d_o + 2 * n + E * (CONV_K + 1),
                                         d_o + n, d_pos, d_a, 2 * E, d_b, B, T, E); }, d_o, BT * 2 * E)});
        // attention permutes: qkv (B,T,3C') with C' = NH * hs
        int Cq = NH * hs;
        long nq = BT * Cq;
        cases.push_back({"attention_permute (q | k | v)", shapes_mismatch(zero_out, [&]() {
            LAUNCH(attention_permute_kernel, B * NH * T, row_threads(hs), 0)(d_o, d_o + nq, d_o + 2 * nq, d_a, B, T, NH, hs,
                                                                              row_span(hs)); }, d_o, 3 * nq)});
        cases.push_back({"attention_permute_backward", shapes_mismatch(zero_out, [&]() {
            LAUNCH(attention_permute_backward_kernel, B * NH * T, row_threads(hs), 0)(d_o, d_a, d_a + nq, d_a + 2 * nq, B, T,
                                                                                       NH, hs, row_span(hs)); }, d_o, 3 * nq)});
        cases.push_back({"attention_unpermute", shapes_mismatch(zero_out, [&]() {
            LAUNCH(attention_unpermute_kernel, B * NH * T, row_threads(hs), 0)(d_o, d_a, B, T, NH, hs, 1, row_span(hs)); }, d_o, nq)});
        cases.push_back({"attention_unpermute (reverse)", shapes_mismatch(zero_out, [&]() {
            LAUNCH(attention_unpermute_kernel, B * NH * T, row_threads(hs), 0)(d_a, d_o, B, T, NH, hs, 0, row_span(hs)); }, d_o, nq)});
        for (auto& c : cases) tests.check(c.bad == 0, "host shapes vs GPU shapes, %-30s: %d floats differ", c.name, c.bad);
        // the layernorm parameter gradient (two stages: BT = 111 rows are two chunks, one partial): LN_TILE
        // channels per thread vs one (C = 45: two full tiles and a partial one), bitwise; and against double
        // sums, relative to the sum of the terms' magnitudes: a term has 3 roundings (a difference, two
        // products), each float sum adds at most LN_PARAM_ROWS terms within a chunk, then the 2 chunks,
        // so the error is under (3 + 64 + 2) * 2^-24 = 4.1e-6 of that
        float* d_mr; cudaCheck(cudaMalloc(&d_mr, 2 * BT * sizeof(float)));
        cudaCheck(cudaMemcpy(d_mr, d_b, BT * sizeof(float), cudaMemcpyDeviceToDevice));
        cudaCheck(cudaMemcpy(d_mr + BT, d_pos, BT * sizeof(float), cudaMemcpyDeviceToDevice));
        std::vector<float> got[2];
        int tiles[2] = {LN_TILE, 1};
        for (int v = 0; v < 2; v++) {
            zero_out();
            layernorm_param_backward(d_o, d_o + C, d_a, d_b, d_mr, d_mr + BT, (int)BT, C, tiles[v]);
            got[v] = to_host(d_o, 2 * C);
        }
        int bad = 0;
        for (int i = 0; i < 2 * C; i++) bad += memcmp(&got[0][i], &got[1][i], sizeof(float)) != 0;
        tests.check(bad == 0, "layernorm parameter gradient, %d channels per thread vs 1: %d of %d differ", LN_TILE, bad, 2 * C);
        double worst = 0.0;
        for (int c = 0; c < C; c++) {
            double sw = 0, sb = 0, aw = 0, ab = 0;
            for (long r = 0; r < BT; r++) {
                double g = a[r * C + c], t = g * ((double)b[r * C + c] - b[r]) * pos[r];
                sw += t; aw += fabs(t); sb += g; ab += fabs(g);
            }
            worst = std::max(worst, std::max(fabs(got[0][c] - sw) / aw, fabs(got[0][C + c] - sb) / ab));
        }
        tests.check(worst < 4.1e-6, "layernorm parameter gradient against double sums: max error %.1e of the terms' "
                    "magnitude (bound 4.1e-6)", worst);
        cudaFree(d_mr);
        cudaFree(d_a); cudaFree(d_b); cudaFree(d_pos); cudaFree(d_o); cudaFree(d_tok);
    }
    {   // the selective scan's vec variant (N = 16) against seq and chunked: T = 101 (a partial chunk), E = 19
        // (a partial group). Tolerance 1e-5 relative (test_mamba's variant tolerance): the variants differ in
        // exp (expf vs fast_expf, ~1 ulp), fma and the order of the sums over states
        int B = 2, T = 101, E = 19, N = 16, R = 3, X = R + 2 * N;
        long BT = (long)B * T;
        auto rv = [&](long cnt, float lo, float hi) { std::vector<float> v(cnt); for (auto& x : v) x = lo + (hi - lo) * random_uniform(&rng); return v; };
        std::vector<float> u = rv(BT * E, -1, 1), dt = rv(BT * E, 1e-3f, 0.2f), xd = rv(BT * X, -1, 1), Al = rv(E * N, -0.5f, 1.5f);
        std::vector<float> D = rv(E, 0.5f, 1.5f), xz = rv(BT * 2 * E, -2, 2), dg = rv(BT * E, -1, 1);
        float *d_u = to_device(u), *d_dt = to_device(dt), *d_x = to_device(xd), *d_A = to_device(Al), *d_D = to_device(D);
        float *d_xz = to_device(xz), *d_dg = to_device(dg);
        float *d_y, *d_g, *d_s, *d_du, *d_ddt, *d_dxz, *d_dx, *d_dA, *d_dD, *d_scr;
        long ns = scan_states_size(B, T, E, N);
        for (auto pp : {&d_y, &d_g, &d_du, &d_ddt}) cudaCheck(cudaMalloc(pp, BT * E * sizeof(float)));
        cudaCheck(cudaMalloc(&d_s, ns * sizeof(float)));
        cudaCheck(cudaMalloc(&d_dxz, BT * 2 * E * sizeof(float)));
        cudaCheck(cudaMalloc(&d_dx, BT * X * sizeof(float)));
        cudaCheck(cudaMalloc(&d_dA, E * N * sizeof(float)));
        cudaCheck(cudaMalloc(&d_dD, E * sizeof(float)));
        cudaCheck(cudaMalloc(&d_scr, scan_backward_scratch_size(B, T, E, N) * sizeof(float)));
        const char* names[3] = {"seq", "vec", "chunked"};
        std::vector<std::vector<float>> res[3];
        bool saved_chunked = kernel_choices.scan_chunked, saved_vec = kernel_choices.scan_vec;
        for (int v = 0; v < 3; v++) {
            kernel_choices.scan_chunked = v == 2;
            kernel_choices.scan_vec = v == 1;
            cudaCheck(cudaMemset(d_dxz, 0, BT * 2 * E * sizeof(float)));
            cudaCheck(cudaMemset(d_dx, 0, BT * X * sizeof(float)));
            cudaCheck(cudaMemset(d_dA, 0, E * N * sizeof(float)));
            cudaCheck(cudaMemset(d_dD, 0, E * sizeof(float)));
            selective_scan_forward(d_y, d_g, d_s, d_u, d_dt, d_x, R, d_A, d_D, d_xz, B, T, E, N);
            selective_scan_backward(d_du, d_ddt, d_dxz, d_dx, d_dA, d_dD, d_scr, d_dg, d_y, d_u, d_dt, d_x, R, d_A, d_D, d_xz,
                                    d_s, B, T, E, N);
            res[v] = {to_host(d_y, BT * E), to_host(d_g, BT * E), to_host(d_s, ns), to_host(d_du, BT * E),
                      to_host(d_ddt, BT * E), to_host(d_dxz, BT * 2 * E), to_host(d_dx, BT * X), to_host(d_dA, E * N),
                      to_host(d_dD, E)};
        }
        kernel_choices.scan_chunked = saved_chunked;
        kernel_choices.scan_vec = saved_vec;
        const char* fields[9] = {"y", "gated", "chunk states", "du", "ddt", "dxz", "dx_dbl", "dA_log", "dD"};
        for (int v : {0, 2})
            for (int f = 0; f < 9; f++) {
                char label[64];
                snprintf(label, sizeof(label), "scan vec vs %s: %s", names[v], fields[f]);
                check_tensor(tests, label, res[1][f].data(), res[v][f].data(), (long)res[v][f].size(), 1e-5);
            }
        for (float* q : {d_u, d_dt, d_x, d_A, d_D, d_xz, d_dg, d_y, d_g, d_s, d_du, d_ddt, d_dxz, d_dx, d_dA, d_dD, d_scr}) cudaFree(q);
    }
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
    {   // cuBLAS sgemm, column-major, every transpose combination, beta accumulation and beta 0 over NaN
        // (C is then not read); padded leading dimensions; one column and one row too (the host's sgemv path)
        cublasHandle_t handle; cublasCheck(cublasCreate(&handle));
        int k = 41;
        const int shapes[3][2] = {{37, 29}, {37, 1}, {1, 29}};
        for (auto& shape : shapes) for (int zero_beta = 0; zero_beta < 2; zero_beta++)
        for (int ta = 0; ta < 2; ta++) for (int tb = 0; tb < 2; tb++) {
            int m = shape[0], nn = shape[1];
            // op(A) is m x k, op(B) is k x n; stored so that op() gives those shapes, columns padded
            int lda = (ta ? k : m) + 3, ldb = (tb ? nn : k) + 2, ldc = m + 1;
            std::vector<float> A((long)lda * (ta ? m : k)), B((long)ldb * (tb ? k : nn)), C0((long)ldc * nn);
            for (auto& x : A) x = (float)(random_u32(&rng) % 7) - 3;
            for (auto& x : B) x = (float)(random_u32(&rng) % 7) - 3;
            for (auto& x : C0) x = zero_beta ? NAN : (float)(random_u32(&rng) % 5) - 2;
            float* dA = to_device(A); float* dB = to_device(B); float* dC = to_device(C0);
            float alpha = 2.0f, beta = zero_beta ? 0.0f : 1.0f;
            cublasCheck(cublasSgemm(handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    m, nn, k, &alpha, dA, lda, dB, ldb, &beta, dC, ldc));
            std::vector<float> Cd = to_host(dC, ldc * nn), C(m * nn), ref(m * nn);
            for (int i = 0; i < m; i++) for (int j = 0; j < nn; j++) {
                float s = 0.0f;
                for (int p = 0; p < k; p++) {
                    float av = ta ? A[p + i * lda] : A[i + p * lda];
                    float bv = tb ? B[j + p * ldb] : B[p + j * ldb];
                    s += av * bv;
                }
                ref[i + j * m] = alpha * s + (zero_beta ? 0.0f : beta * C0[i + j * ldc]);
                C[i + j * m] = Cd[i + j * ldc];
            }
            int bad = count_mismatch(C, ref);
            tests.check(bad == 0, "cublasSgemm %dx%dx%d op(A)=%c op(B)=%c beta %g: %d of %d differ", m, nn, k,
                        ta ? 'T' : 'N', tb ? 'T' : 'N', beta, bad, m * nn);
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
            kernel_choices.norm_blocks = variant == 1;
            global_norm(d_norm, d_g, m, 100.0f);
            std::vector<float> h = to_host(d_norm, 2);
            double err = fabs(h[0] - ref) / ref, scale_err = fabs(h[1] - 100.0 / (ref + 1e-6)) * ref / 100.0;
            tests.check(err < 1e-5 && scale_err < 1e-5, "global norm (%s): %.6f vs %.6f (rel err %.1e), clip scale rel err %.1e",
                        variant ? "blocks" : "one thread per share", h[0], ref, err, scale_err);
        }
        cudaFree(d_g); cudaFree(d_norm);
    }
    {   // the one AdamW launch over a flat buffer of several tensors (decay per tensor) against one launch per
        // tensor: bitwise, every element is computed the same way. Tensor sizes that split spans and blocks
        // unevenly, decay flags mixed. Then a non-finite gradient: the norm is NaN, its clipping factor too,
        // and the launch leaves parameters and moments bitwise untouched (the step's check on the device)
        long sizes[5] = {1, 4099, 37, 70001, 3}, n = 0;
        int decay[5] = {1, 0, 1, 1, 0};
        AdamWDecayTable table;
        memset(&table, 0, sizeof(table));
        table.count = 5;
        for (int i = 0; i < 5; i++) { n += sizes[i]; table.end[i] = n; table.decay[i] = (unsigned char)decay[i]; }
        std::vector<float> p0 = random_vector(n, &rng, -1.0f, 1.0f), g0 = random_vector(n, &rng, -1.0f, 1.0f);
        float* d_g = to_device(g0);
        float* d_scale = to_device({0.7f});
        std::vector<float> got[2];
        for (int way = 0; way < 2; way++) {
            float* d_p = to_device(p0);
            float *d_m = to_device(std::vector<float>(n, 0.0f)), *d_v = to_device(std::vector<float>(n, 0.0f));
            for (int t = 1; t <= 2; t++) {
                if (way == 0) {
                    adamw_update_table(d_p, d_m, d_v, d_g, n, &table, 1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f, t, d_scale);
                } else {
                    long off = 0;
                    for (int i = 0; i < 5; i++) {
                        adamw_update(d_p + off, d_m + off, d_v + off, d_g + off, sizes[i], 1e-2f, 0.9f, 0.99f, 1e-8f,
                                     decay[i] ? 0.1f : 0.0f, t, d_scale);
                        off += sizes[i];
                    }
                }
            }
            got[way] = to_host(d_p, n);
            std::vector<float> mv = to_host(d_m, n), vv = to_host(d_v, n);
            got[way].insert(got[way].end(), mv.begin(), mv.end());
            got[way].insert(got[way].end(), vv.begin(), vv.end());
            cudaFree(d_p); cudaFree(d_m); cudaFree(d_v);
        }
        long bad = count_bit_mismatch(got[0], got[1]);
        tests.check(bad == 0 && got[0][0] != p0[0], "AdamW: one launch over 5 tensors (decay per tensor) vs one per tensor: "
                    "%ld of %ld parameters and moments differ bitwise", bad, (long)got[0].size());
        std::vector<float> g_bad = g0;
        g_bad[4100] = NAN;
        float* d_gbad = to_device(g_bad);
        float* d_p = to_device(p0);
        float *d_m = to_device(std::vector<float>(n, 0.5f)), *d_v = to_device(std::vector<float>(n, 0.25f));
        float* d_norm; cudaCheck(cudaMalloc(&d_norm, NORM_BUFFER_FLOATS * sizeof(float)));
        long untouched = 0;
        bool saved_norm_variant = kernel_choices.norm_blocks;
        for (int variant = 0; variant < 2; variant++) {
            kernel_choices.norm_blocks = variant == 1;
            for (float clip : {1.0f, 0.0f}) {
                global_norm(d_norm, d_gbad, n, clip);
                adamw_update_table(d_p, d_m, d_v, d_gbad, n, &table, 1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f, 1, d_norm + 1);
                std::vector<float> ns = to_host(d_norm, 2), p1 = to_host(d_p, n), m1 = to_host(d_m, n), v1 = to_host(d_v, n);
                bool same = !memcmp(p1.data(), p0.data(), n * sizeof(float)) && m1 == std::vector<float>(n, 0.5f) &&
                            v1 == std::vector<float>(n, 0.25f);
                untouched += same && ns[0] != ns[0] && ns[1] != ns[1];
            }
        }
        kernel_choices.norm_blocks = saved_norm_variant;
        tests.check(untouched == 4, "a NaN gradient: norm and clipping factor NaN, AdamW skips the update (%ld of 4 cases: "
                    "both norm variants, clip 1 and none)", untouched);
        for (float* q : {d_g, d_scale, d_gbad, d_p, d_m, d_v, d_norm}) cudaFree(q);
    }
    {   // the mean loss on the device: one thread (the host's launch) is the plain double sum in order;
        // MEAN_LOSS_THREADS threads (the GPU's) a fixed tree; both against a double reference (the fp32
        // rounding of the mean: 6e-8 relative, so 1e-7)
        int n = 16411;
        std::vector<float> losses = random_vector(n, &rng, 0.0f, 5.0f);
        double ref = 0.0;
        for (float x : losses) ref += x;
        float plain = (float)(ref / n);
        float* d_l = to_device(losses);
        float* d_out; cudaCheck(cudaMalloc(&d_out, sizeof(float)));
        for (int threads : {1, 32, MEAN_LOSS_THREADS}) {
            LAUNCH(mean_loss_kernel, 1, threads, 0)(d_out, d_l, nullptr, nullptr, n, nullptr);
            float got = to_host(d_out, 1)[0];
            double err = fabs(got - ref / n) / (ref / n);
            tests.check(err < 1e-7 && (threads != 1 || got == plain),
                        "mean loss kernel, %d threads: %.8f vs %.8f (rel err %.1e)%s", threads, got, ref / n, err,
                        threads == 1 ? ", bitwise the host's old sum" : "");
        }
        // over the rows with a target: rows without one (their losses 0, as the cross-entropy
        // writes them) count neither in the sum nor in the divisor; dloss = 1 / the rows counted;
        // with every row a target, the mean and 1.0f / n exactly
        std::vector<int> targets(n), all_targets(n, 3);
        double kept_sum = 0.0;
        int kept = 0;
        for (int i = 0; i < n; i++) {
            targets[i] = i % 5 < 2 ? TARGET_IGNORED : 1;
            if (targets[i] < 0) losses[i] = 0.0f;
            else { kept_sum += losses[i]; kept++; }
        }
        float* d_masked = to_device(losses);
        int* d_targets = to_device_int(targets);
        int* d_all = to_device_int(all_targets);
        float* d_dloss; cudaCheck(cudaMalloc(&d_dloss, sizeof(float)));
        for (int threads : {1, 32, MEAN_LOSS_THREADS}) {
            LAUNCH(mean_loss_kernel, 1, threads, 0)(d_out, d_masked, d_targets, d_dloss, n, nullptr);
            float got = to_host(d_out, 1)[0], dloss = to_host(d_dloss, 1)[0];
            double want = kept_sum / kept, err = fabs(got - want) / want;
            tests.check(err < 1e-7 && dloss == 1.0f / (float)kept,
                        "mean loss kernel over %d of %d rows with a target, %d threads: %.8f vs %.8f (rel err %.1e), "
                        "dloss 1/%d", kept, n, threads, got, want, err, kept);
            LAUNCH(mean_loss_kernel, 1, threads, 0)(d_out, d_l, d_all, d_dloss, n, nullptr);
            float all = to_host(d_out, 1)[0];
            LAUNCH(mean_loss_kernel, 1, threads, 0)(d_out, d_l, nullptr, nullptr, n, nullptr);
            tests.check(all == to_host(d_out, 1)[0] && to_host(d_dloss, 1)[0] == 1.0f / n,
                        "mean loss kernel, %d threads: every row a target gives the plain mean and 1/n, bit for bit",
                        threads);
        }
        cudaFree(d_l); cudaFree(d_out); cudaFree(d_masked); cudaFree(d_targets); cudaFree(d_all); cudaFree(d_dloss);
    }
    {   // launch limits as sm_90 has them: the host backend must refuse what the GPU refuses
        cudaCheck(cudaGetLastError());
        struct { dim3 grid, block; bool ok; } configs[] = {
            {dim3(1), dim3(1024), true}, {dim3(1), dim3(1025), false}, {dim3(1), dim3(1, 1024), true},
            {dim3(1), dim3(1, 1025), false}, {dim3(1), dim3(1, 1, 64), true}, {dim3(1), dim3(1, 1, 65), false},
            {dim3(1), dim3(32, 32, 2), false}, {dim3(1), dim3(0), false}, {dim3(0), dim3(32), false},
            {dim3(1, 65535), dim3(1), true}, {dim3(1, 65536), dim3(1), false}, {dim3(1, 1, 65536), dim3(1), false},
            {dim3(2147483648u), dim3(1), false}};
        int bad = 0;
        for (auto& c : configs) {
            LAUNCH(empty_kernel, c.grid, c.block, 0)();
            cudaError_t e = launch_error();
            bool want = c.ok ? e == cudaSuccess : e == cudaErrorInvalidConfiguration;
            if (!want) {
                bad++;
                printf("     grid (%u,%u,%u) block (%u,%u,%u): %s\n", c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y,
                       c.block.z, cudaGetErrorString(e));
            }
        }
        tests.check(bad == 0, "launch limits (1024 threads, block (1024,1024,64), grid (2^31-1,65535,65535)): %d of %d "
                    "configurations answered otherwise than on sm_90", bad, (int)(sizeof(configs) / sizeof(configs[0])));
    }
    {   // dynamic shared memory: 48 KB without asking, more after cudaFuncSetAttribute, at most 227 KB
        float* d_s; cudaCheck(cudaMalloc(&d_s, sizeof(float)));
        auto run = [&](size_t bytes) {
            cudaCheck(cudaMemset(d_s, 0, sizeof(float)));
            LAUNCH(dynamic_shared_kernel, 1, 256, bytes)(d_s, (int)(bytes / sizeof(float)));
            cudaError_t e = launch_error();
            float h; cudaCheck(cudaMemcpy(&h, d_s, sizeof(float), cudaMemcpyDeviceToHost));
            return e == cudaSuccess && h == (float)(bytes / sizeof(float)) ? cudaSuccess : e == cudaSuccess ? cudaErrorInvalidValue : e;
        };
        cudaError_t at_48k = run(48 * 1024), above_48k = run(48 * 1024 + 4);
        cudaError_t set_100k = cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024);
        cudaError_t at_100k = run(100 * 1024), above_100k = run(100 * 1024 + 4);
        cudaError_t set_228k = cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 * 1024);
        cudaGetLastError();
        tests.check(at_48k == cudaSuccess && above_48k == cudaErrorInvalidValue,
                    "dynamic shared memory without the attribute: 48 KB %s, 48 KB + 4 %s", cudaGetErrorString(at_48k),
                    cudaGetErrorString(above_48k));
        tests.check(set_100k == cudaSuccess && at_100k == cudaSuccess && above_100k == cudaErrorInvalidValue &&
                    set_228k == cudaErrorInvalidValue,
                    "dynamic shared memory after cudaFuncSetAttribute(100 KB): 100 KB %s, 100 KB + 4 %s; attribute 228 KB %s",
                    cudaGetErrorString(at_100k), cudaGetErrorString(above_100k), cudaGetErrorString(set_228k));
        cudaFree(d_s);
    }
    check_fast_kernels(tests);
    check_graphs(tests);
    {   // the deterministic kernels, every variant, give bitwise the same results every run (on the
        // host backend: under natural, reversed and random orders of blocks and threads)
#ifndef __CUDACC__
        struct { HostScheduleKind kind; uint64_t seed; } schedules[] = {
            {HOST_SCHEDULE_NATURAL, 0}, {HOST_SCHEDULE_REVERSE, 0}, {HOST_SCHEDULE_RANDOM, 1}, {HOST_SCHEDULE_RANDOM, 2}};
        HostSchedule saved = host_schedule();
#endif
        for (int variant = 0; variant < 2; variant++) {
            std::vector<float> ref;
            for (int run = 0; run < 4; run++) {
                const char* what = "re-run";
#ifndef __CUDACC__
                host_set_schedule(schedules[run].kind, schedules[run].seed);
                what = schedule_name(schedules[run].kind);
#endif
                std::vector<float> out = run_deterministic_variant(variant == 1);
                if (run == 0) {
                    ref = out;
                    long nans = count_nan(out);
                    tests.check(nans == 0, "deterministic kernels (%s variants): %ld outputs, %ld NaN", variant ? "gpu" : "host",
                                (long)out.size(), nans);
                    continue;
                }
                long bad = count_bit_mismatch(out, ref);
                tests.check(bad == 0, "deterministic kernels (%s variants), run %d (%s%s): %ld of %ld outputs differ bitwise "
                            "from the first run", variant ? "gpu" : "host", run + 1, what, run >= 2 ? ", new seed" : "",
                            bad, (long)ref.size());
            }
        }
#ifndef __CUDACC__
        host_schedule() = saved;
#endif
    }
#ifndef __CUDACC__
    {   // the schedules themselves: every order is a permutation, and each changes what a race gives
        int bad_perm = 0;
        for (int kind = 0; kind < 3; kind++) for (long n = 1; n <= 1100; n += (n < 70 ? 1 : 37)) {
            HostOrder o = host_order((HostScheduleKind)kind, n, 12345 + n);
            std::vector<char> seen(n, 0);
            for (long p = 0; p < n; p++) {
                long i = host_order_at(o, p);
                if (i < 0 || i >= n || seen[i]) { bad_perm++; break; }
                seen[i] = 1;
            }
        }
        tests.check(bad_perm == 0, "schedule orders are permutations of 0..n-1 (n 1..1100, 3 kinds): %d wrong", bad_perm);
        HostSchedule saved = host_schedule();
        int* d_w; cudaCheck(cudaMalloc(&d_w, 2 * sizeof(int)));
        const int nb = 50;
        int* d_order; cudaCheck(cudaMalloc(&d_order, (nb + 1) * sizeof(int)));
        int last[3], last_sync[3];
        std::vector<int> orders[3];
        int threads = omp_get_max_threads();
        omp_set_num_threads(1);  // one worker: the order the blocks ran in is the schedule's
        for (int kind = 0; kind < 3; kind++) {
            host_set_schedule((HostScheduleKind)kind, 5);
            LAUNCH(last_writer_kernel, 1, 64, 0)(d_w);
            LAUNCH(last_writer_after_sync_kernel, 1, 64, 0)(d_w + 1);
            cudaCheck(cudaMemset(d_order + nb, 0, sizeof(int)));
            LAUNCH(block_order_kernel, nb, 32, 0)(d_order, d_order + nb);
            cudaCheck(cudaGetLastError());
            int h[2]; cudaCheck(cudaMemcpy(h, d_w, sizeof(h), cudaMemcpyDeviceToHost));
            last[kind] = h[0]; last_sync[kind] = h[1];
            orders[kind].resize(nb);
            cudaCheck(cudaMemcpy(orders[kind].data(), d_order, nb * sizeof(int), cudaMemcpyDeviceToHost));
        }
        omp_set_num_threads(threads);
        host_schedule() = saved;
        bool natural = true, reversed = true, is_perm = true;
        std::vector<char> seen(nb, 0);
        for (int i = 0; i < nb; i++) {
            natural &= orders[0][i] == i;
            reversed &= orders[1][i] == nb - 1 - i;
            int b = orders[2][i];
            if (b < 0 || b >= nb || seen[b]) is_perm = false; else seen[b] = 1;
        }
        bool random_differs = orders[2] != orders[0] && orders[2] != orders[1];
        tests.check(natural && reversed && is_perm && random_differs,
                    "block order (one worker, %d blocks): natural %s, reverse %s, random a permutation %s, unlike both %s",
                    nb, natural ? "ascending" : "WRONG", reversed ? "descending" : "WRONG", is_perm ? "yes" : "NO",
                    random_differs ? "yes" : "NO");
        tests.check(last[0] == 63 && last[1] == 0 && last[2] != 63 && last[2] != 0,
                    "thread order without syncs (last writer of 64): natural %d, reverse %d, random %d", last[0], last[1], last[2]);
        tests.check(last_sync[0] != last_sync[1] && last_sync[2] != last_sync[0] && last_sync[2] != last_sync[1],
                    "thread order after a barrier (fibers; last writer of 64): natural %d, reverse %d, random %d",
                    last_sync[0], last_sync[1], last_sync[2]);
        cudaFree(d_w); cudaFree(d_order);
    }
    {   // poisoned allocations: new memory reads as NaN (0xff bytes), unless HOST_POISON=0
        const long count = 3 << 20;  // 12 MB: several of the parallel fill's pieces, and a partial one
        float* d_p; cudaCheck(cudaMalloc(&d_p, count * sizeof(float) + 12));
        float* h_p; cudaCheck(cudaMallocHost(&h_p, 1000 * sizeof(float)));
        std::vector<float> h = to_host(d_p, count + 3);
        long nan_device = count_nan(h), nan_host = 0;
        for (int i = 0; i < 1000; i++) nan_host += h_p[i] != h_p[i];
        unsigned char last_byte; memcpy(&last_byte, (char*)d_p + count * sizeof(float) + 11, 1);
        if (host_settings.poison)
            tests.check(nan_device == count + 3 && last_byte == 0xff && nan_host == 1000,
                        "poisoned allocations: cudaMalloc %ld of %ld floats NaN, last byte 0x%02x; cudaMallocHost %ld of 1000 NaN",
                        nan_device, count + 3, last_byte, nan_host);
        else
            printf("     HOST_POISON=0: poisoned allocations not checked\n");
        // dynamic shared memory as a block finds it, after other blocks filled it with 1s
        float* d_s; cudaCheck(cudaMalloc(&d_s, 8 * sizeof(float)));
        LAUNCH(dynamic_shared_kernel, 8, 64, 1024)(d_s, 256);
        LAUNCH(shared_first_read_kernel, 8, 64, 1024)(d_s);
        std::vector<float> first = to_host(d_s, 8);
        if (host_settings.poison)
            tests.check(count_nan(first) == 8, "dynamic shared memory poisoned at every block's start: %ld of 8 blocks read NaN",
                        count_nan(first));
        cudaFree(d_s);
        cudaFreeHost(h_p); cudaFree(d_p);
    }
    {   // TF32: rounding to 10 mantissa bits, to nearest even, and the products that use it
        const float one = 1.0f, half_ulp = ldexpf(1.0f, -11);
        struct { float x, want; } cases[] = {
            {one + half_ulp, one},                                         // tie, to even (down)
            {one + 3 * half_ulp, one + 4 * half_ulp},                      // tie, to even (up)
            {one + half_ulp + ldexpf(1.0f, -20), one + 2 * half_ulp},      // above the tie
            {-(one + 3 * half_ulp), -(one + 4 * half_ulp)},                // sign kept
            {ldexpf(3.0f, -130), ldexpf(3.0f, -130)},                      // subnormal, exact in TF32
            {ldexpf(3.0f, -140), 0.0f},                                    // below half TF32's least subnormal 2^-136
            {INFINITY, INFINITY}, {65504.0f, 65504.0f}};
        int bad = 0;
        for (auto& c : cases) { float got = host_round_tf32(c.x); bad += memcmp(&c.want, &got, 4) != 0; }
        bad += host_round_tf32(NAN) == host_round_tf32(NAN);  // NaN stays NaN
        tests.check(bad == 0, "TF32 rounding (ties to even, sign, subnormal, Inf, NaN): %d of %d cases wrong", bad,
                    (int)(sizeof(cases) / sizeof(cases[0])) + 1);
        // C = A B with A (m x k) ^T stored, B (k x n): TF32 products against a float64 product of the rounded inputs
        int m = 45, nn = 33, k = 300;
        std::vector<float> A = random_vector((long)k * m, &rng, -1.0f, 1.0f), B = random_vector((long)k * nn, &rng, -1.0f, 1.0f);
        float* dA = to_device(A); float* dB = to_device(B);
        float* dC; cudaCheck(cudaMalloc(&dC, m * nn * sizeof(float)));
        cublasHandle_t handle; cublasCheck(cublasCreate(&handle));
        HostTf32Mode saved = host_settings.tf32;
        auto product = [&](HostTf32Mode mode) {
            host_settings.tf32 = mode;
            float alpha = 1.0f, beta = 0.0f;
            cublasCheck(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &alpha, dA, k, dB, k, &beta, dC, m));
            return to_host(dC, m * nn);
        };
        std::vector<float> fp32 = product(HOST_TF32_OFF), tf32 = product(HOST_TF32_ALL);
        std::vector<float> handle_default = product(HOST_TF32_HANDLE);
        cublasCheck(cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH));
        std::vector<float> handle_tf32 = product(HOST_TF32_HANDLE), off_tf32 = product(HOST_TF32_OFF);
        host_settings.tf32 = saved;
        double err_tf32 = 0.0, err_fp32 = 0.0, scale = 0.0;
        for (int i = 0; i < m; i++) for (int j = 0; j < nn; j++) {
            double s = 0.0, s_exact = 0.0, mag = 0.0;
            for (int p = 0; p < k; p++) {
                s += (double)host_round_tf32(A[p + i * k]) * host_round_tf32(B[p + j * k]);
                s_exact += (double)A[p + i * k] * B[p + j * k];
                mag += fabs((double)A[p + i * k] * B[p + j * k]);
            }
            err_tf32 = fmax(err_tf32, fabs(tf32[i + j * m] - s) / mag);
            err_fp32 = fmax(err_fp32, fabs(tf32[i + j * m] - s_exact) / mag);
            scale = fmax(scale, mag);
        }
        // fp32 accumulation of k = 300 products: |error| <= k * 2^-24 * sum|a b| = 1.8e-5 of sum|a b| (worst case);
        // TF32 inputs are each off by up to 2^-11 relative, so the product differs from the exact one by up to 2^-10
        tests.check(err_tf32 < 300 * 6e-8 && err_fp32 > 1e-5 && err_fp32 < 1e-3,
                    "TF32 sgemm (k %d): against float64 of the rounded inputs %.1e of sum|ab| (tol 1.8e-5); against the "
                    "exact inputs %.1e (expected 1e-5..1e-3)", k, err_tf32, err_fp32);
        long same_default = count_bit_mismatch(handle_default, fp32), same_tf32 = count_bit_mismatch(handle_tf32, tf32);
        long same_off = count_bit_mismatch(off_tf32, fp32);
        tests.check(same_default == 0 && same_tf32 == 0 && same_off == 0,
                    "HOST_TF32=handle follows the math mode (default: %ld differ from fp32; TF32 mode: %ld differ from TF32); "
                    "HOST_TF32=0 ignores it (%ld differ from fp32)", same_default, same_tf32, same_off);
        cublasCheck(cublasDestroy(handle));
        cudaFree(dA); cudaFree(dB); cudaFree(dC);
    }
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
    {   // the memory checks that stand in for a GPU's faults, each shown on a planted mistake (the
        // "host backend: ..." lines on stderr are theirs) beside the correct call
        std::vector<float> host(64, 1.0f);
        float *d_x, *d_freed, *pinned;
        cudaCheck(cudaMalloc(&d_x, 64 * sizeof(float)));
        cudaCheck(cudaMallocHost(&pinned, 64 * sizeof(float)));
        cudaCheck(cudaMalloc(&d_freed, 64 * sizeof(float)));
        cudaCheck(cudaFree(d_freed));
        LAUNCH(elementwise_kernel, 1, 64, 0)(d_x, pinned, d_x, 64);
        cudaError_t ok_launch = cudaGetLastError();
        LAUNCH(elementwise_kernel, 1, 64, 0)(host.data(), d_x, d_x, 64);
        cudaError_t host_arg = cudaGetLastError();
        LAUNCH(elementwise_kernel, 1, 64, 0)(d_x, d_freed, d_x, 64);
        cudaError_t freed_arg = cudaGetLastError();
        tests.check(ok_launch == cudaSuccess && host_arg == cudaErrorIllegalAddress && freed_arg == cudaErrorIllegalAddress,
                    "kernel pointer arguments: device and pinned %s; host pointer: %s; freed pointer: %s",
                    cudaGetErrorString(ok_launch), cudaGetErrorString(host_arg), cudaGetErrorString(freed_arg));
        size_t bytes = 64 * sizeof(float);
        cudaError_t ok_copy = cudaMemcpy(d_x, host.data(), bytes, cudaMemcpyHostToDevice);
        cudaError_t wrong_way = cudaMemcpy(host.data(), d_x, bytes, cudaMemcpyHostToDevice);
        cudaError_t past_end = cudaMemcpy(d_x, host.data(), bytes + 4, cudaMemcpyHostToDevice);
        cudaError_t host_memset = cudaMemset(host.data(), 0, bytes);
        cudaGetLastError();
        tests.check(ok_copy == cudaSuccess && wrong_way == cudaErrorInvalidValue && past_end == cudaErrorInvalidValue &&
                        host_memset == cudaErrorInvalidValue,
                    "copies: host to device %s; the kind against its pointers: %s; past the allocation: %s; "
                    "cudaMemset of host memory: %s", cudaGetErrorString(ok_copy), cudaGetErrorString(wrong_way),
                    cudaGetErrorString(past_end), cudaGetErrorString(host_memset));
        cublasHandle_t handle; cublasCheck(cublasCreate(&handle));
        const float one = 1.0f, zero = 0.0f;
        float* d_one; cudaCheck(cudaMalloc(&d_one, sizeof(float)));
        cudaCheck(cudaMemcpy(d_one, &one, sizeof(float), cudaMemcpyHostToDevice));
        // C (8 x 8) = A (8 x 8) B (8 x 8), column-major, every operand in d_x
        cublasStatus_t ok_gemm = cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, d_x, 8, d_x, 8, &zero, d_x, 8);
        cublasStatus_t short_lda = cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, d_x, 4, d_x, 8, &zero, d_x, 8);
        cublasStatus_t short_ldb = cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, 8, 8, 4, &one, d_x, 8, d_x, 4, &zero, d_x, 8);
        cublasStatus_t host_matrix = cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, host.data(), 8, d_x, 8, &zero, d_x, 8);
        cublasStatus_t past_matrix = cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 8, 9, 8, &one, d_x, 8, d_x, 8, &zero, d_x, 8);
        cublasStatus_t device_alpha = cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, d_one, d_x, 8, d_x, 8, &zero, d_x, 8);
        cublasStatus_t batched_past = cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, d_x, 4, 16, d_x,
                                                                4, 16, &zero, d_x, 4, 16, 5);
        cublasStatus_t ok_gemv = cublasSgemv(handle, CUBLAS_OP_N, 8, 8, &one, d_x, 8, d_x, 1, &zero, d_x + 8, 1);
        cublasStatus_t zero_inc = cublasSgemv(handle, CUBLAS_OP_N, 8, 8, &one, d_x, 8, d_x, 0, &zero, d_x + 8, 1);
        cublasStatus_t host_vector = cublasSgemv(handle, CUBLAS_OP_N, 8, 8, &one, d_x, 8, host.data(), 1, &zero, d_x + 8, 1);
        const cublasStatus_t invalid = CUBLAS_STATUS_INVALID_VALUE;
        tests.check(ok_gemm == CUBLAS_STATUS_SUCCESS && short_lda == invalid && short_ldb == invalid && host_matrix == invalid &&
                        past_matrix == invalid && device_alpha == invalid && batched_past == invalid &&
                        ok_gemv == CUBLAS_STATUS_SUCCESS && zero_inc == invalid && host_vector == invalid,
                    "cuBLAS checks (status; 7 is invalid value): gemm %d; lda below m %d; ldb below n (transposed) %d; "
                    "host matrix %d; B and C past their allocation %d; alpha in device memory %d; batch past the allocation %d; "
                    "gemv %d; incx 0 %d; host vector %d", ok_gemm, short_lda, short_ldb, host_matrix, past_matrix,
                    device_alpha, batched_past, ok_gemv, zero_inc, host_vector);
        cublasCheck(cublasDestroy(handle));
        cudaFree(d_one); cudaFree(d_x); cudaFreeHost(pinned);
    }
#endif
    cudaFree(d_a); cudaFree(d_b); cudaFree(d_out); cudaFree(d_out2);
    return tests.summary();
}

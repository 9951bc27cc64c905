/*
Host backend: the CUDA vocabulary on the CPU, so that g++ compiles the same
kernel sources that nvcc compiles, and every test runs the real kernels on a
machine without a GPU.

How a launch runs
- Blocks are spread over OpenMP threads ("workers"). All state a kernel sees
  (threadIdx, blockIdx, blockDim, gridDim, the dynamic shared memory) lives in
  thread_local storage of the worker running the block. Static __shared__
  variables are `static thread_local`: one copy per worker, shared by all the
  threads of the block it runs. Like on a GPU, shared memory is not cleared
  between blocks.
- Fast path: a block's threads run one after another on the worker's own
  stack. Running threads in sequence is a legal CUDA schedule up to the first
  synchronizing call, so barrier-free kernels never leave this path.
- Exact path: when some thread first calls a synchronizing primitive
  (__syncthreads, __syncwarp, a shuffle, a vote), the block is turned into
  fibers in place: the threads that already returned count as exited, the
  calling frame becomes a suspended fiber, and the threads not yet run start
  lazily on their own stacks. A scheduler fiber then runs every thread until
  it blocks, releasing a barrier only when every thread of the block (or
  every lane of the warp mask) has reached it. Fibers switch through
  Boost.Context (a few ns a switch).
- A barrier that some thread can never reach (a thread exited, or everything
  left waits on something else) aborts with a message naming the kernel.
- Lanes do not run in lockstep, as on sm_70 and later.

Runtime, cuBLAS and NVTX calls are synchronous CPU versions; cuBLAS maps onto
the CBLAS interface of the system BLAS (OpenBLAS). Memory is ordinary host
memory, so "device" pointers can also be read by the host; portable code
still copies with cudaMemcpy.
*/
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cblas.h>
#include <boost/context/detail/fcontext.hpp>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define HOST_ASAN 1
#endif

#define BACKEND_NAME "host"

// ----------------------------------------------------------------------------
// language vocabulary

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __align__(n) alignas(n)
#define __restrict__ __restrict

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 { unsigned int x, y, z; };

static const int warpSize = 32;

// What the thread now running sees. The scheduler rewrites it at every switch.
// Constant-initialized (constexpr dim3, every member initialized), so that
// each access is a plain thread-local load, not a call to a TLS init function.
struct HostThreadState {
    uint3 thread_idx = {0, 0, 0};
    uint3 block_idx = {0, 0, 0};
    dim3 block_dim;
    dim3 grid_dim;
    unsigned char* dynamic_shared = nullptr;
};
inline thread_local HostThreadState host_ts;

#define threadIdx (host_ts.thread_idx)
#define blockIdx (host_ts.block_idx)
#define blockDim (host_ts.block_dim)
#define gridDim (host_ts.grid_dim)

// ----------------------------------------------------------------------------
// block execution: fast path and fibers

namespace hostbk = boost::context::detail;

enum HostThreadStatus : unsigned char {
    HOST_NEW,          // not started yet (starts lazily as a fiber)
    HOST_READY,        // can run
    HOST_WAIT_BLOCK,   // waiting at __syncthreads
    HOST_WAIT_WARP,    // waiting at a warp-level sync
    HOST_DONE          // returned from the kernel
};

struct HostWarp {
    unsigned int arrived;   // lanes that reached the current warp sync
    unsigned int mask;      // mask of the current warp sync
    unsigned int gen;       // number of completed warp syncs (parity picks the buffer)
    uint64_t value[2][32];  // exchanged values, double-buffered by generation parity
};

struct HostBlock {
    const char* kernel;          // name, for error messages
    void (*run)(void*);          // runs the kernel for the thread in host_ts
    void* arg;
    int nthreads;
    bool one_dimensional;        // blockDim.y == blockDim.z == 1
    int current;                 // linear index of the thread now running
    bool fibers;                 // converted to fibers?
    int ndone;                   // threads that returned
    int block_arrived;           // threads waiting at the current __syncthreads
    std::vector<unsigned char> status;
    std::vector<hostbk::fcontext_t> ctx;
    std::vector<HostWarp> warps;
    hostbk::fcontext_t sched_ctx;   // where a fiber jumps to yield
    hostbk::fcontext_t return_ctx;  // the worker's own stack, resumed when all threads are done
    int converted;                  // the thread whose frame lives on the worker's own stack
    const void* worker_stack;       // that stack (for AddressSanitizer's fiber annotations)
    size_t worker_stack_size;
};

static const size_t HOST_FIBER_STACK = 64 * 1024;   // per GPU thread
static const size_t HOST_MAX_SHARED = 227 * 1024;   // dynamic shared memory limit, as sm_90

struct HostWorker {
    HostBlock block;
    unsigned char* stacks = nullptr;   // 1024 fiber stacks + the scheduler's, each with a guard page
    size_t stack_stride = 0;
    std::vector<unsigned char> dynamic_shared;
};
inline thread_local HostWorker* host_worker = nullptr;

[[noreturn]] inline void host_fatal_in_kernel(const char* what) {
    HostBlock& b = host_worker->block;
    fprintf(stderr, "host backend: kernel %s, block (%u,%u,%u), thread %d: %s\n", b.kernel,
            host_ts.block_idx.x, host_ts.block_idx.y, host_ts.block_idx.z, b.current, what);
    fflush(stderr);
    abort();
}

inline HostWorker* host_worker_get() {
    if (!host_worker) {
        HostWorker* w = new HostWorker();
        long page = sysconf(_SC_PAGESIZE);
        w->stack_stride = HOST_FIBER_STACK + page;
        size_t total = w->stack_stride * 1025;
        void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (mem == MAP_FAILED) { fprintf(stderr, "host backend: cannot map fiber stacks\n"); abort(); }
        w->stacks = (unsigned char*)mem;
        for (int i = 0; i < 1025; i++) {  // guard page at the low end of each stack
            mprotect(w->stacks + i * w->stack_stride, page, PROT_NONE);
        }
        host_worker = w;
    }
    return host_worker;
}

inline void* host_stack_top(HostWorker* w, int i) {
    return w->stacks + (size_t)(i + 1) * w->stack_stride;  // stacks grow down
}

inline const void* host_stack_bottom(HostWorker* w, int i) {
    return (const char*)host_stack_top(w, i) - HOST_FIBER_STACK;
}

// Every context switch goes through here, so that AddressSanitizer (when it
// is on) knows which stack runs: `to_stack` is the target's stack, `dying`
// says the current context is never resumed.
inline hostbk::transfer_t host_jump(hostbk::fcontext_t to, void* data, const void* to_stack, size_t to_size, bool dying) {
#ifdef HOST_ASAN
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(dying ? nullptr : &fake_stack, to_stack, to_size);
    hostbk::transfer_t r = hostbk::jump_fcontext(to, data);
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
    return r;
#else
    (void)to_stack; (void)to_size; (void)dying;
    return hostbk::jump_fcontext(to, data);
#endif
}

// the first thing a new context does
inline void host_context_started(const void** from_stack, size_t* from_size) {
#ifdef HOST_ASAN
    __sanitizer_finish_switch_fiber(nullptr, from_stack, from_size);
#else
    (void)from_stack; (void)from_size;
#endif
}

inline void host_set_thread(HostBlock& b, int t) {
    b.current = t;
    if (b.one_dimensional) { host_ts.thread_idx.x = t; return; }  // y = z = 0 already
    unsigned int bx = host_ts.block_dim.x, by = host_ts.block_dim.y;
    host_ts.thread_idx.x = t % bx;
    host_ts.thread_idx.y = (t / bx) % by;
    host_ts.thread_idx.z = t / (bx * by);
}

// A fiber gives control back to the scheduler; returns when resumed.
inline void host_yield(HostBlock& b) {
    hostbk::transfer_t r = host_jump(b.sched_ctx, &b.ctx[b.current], host_stack_bottom(host_worker, 1024), HOST_FIBER_STACK, false);
    b.sched_ctx = r.fctx;
}

// The scheduler: runs every runnable thread in order until all have returned.
inline void host_scheduler_main(hostbk::transfer_t t) {
    HostBlock& b = host_worker->block;
    host_context_started(&b.worker_stack, &b.worker_stack_size);  // entered from the worker's own stack
    *(hostbk::fcontext_t*)t.data = t.fctx;  // the thread that converted the block
    for (;;) {
        bool progressed = false;
        for (int i = 0; i < b.nthreads; i++) {
            unsigned char s = b.status[i];
            if (s != HOST_READY && s != HOST_NEW) continue;
            host_set_thread(b, i);
            if (s == HOST_NEW) {
                b.status[i] = HOST_READY;
                b.ctx[i] = hostbk::make_fcontext(host_stack_top(host_worker, i), HOST_FIBER_STACK,
                    [](hostbk::transfer_t start) {
                        host_context_started(nullptr, nullptr);
                        HostBlock& blk = host_worker->block;
                        blk.sched_ctx = start.fctx;
                        blk.run(blk.arg);
                        // the thread returned
                        if (blk.block_arrived > 0)
                            host_fatal_in_kernel("deadlock: returned while other threads wait at __syncthreads()");
                        blk.status[blk.current] = HOST_DONE;
                        blk.ndone++;
                        host_jump(blk.sched_ctx, nullptr, host_stack_bottom(host_worker, 1024), HOST_FIBER_STACK, true);
                    });
            }
            bool on_worker = i == b.converted;
            hostbk::transfer_t r = host_jump(b.ctx[i], nullptr, on_worker ? b.worker_stack : host_stack_bottom(host_worker, i),
                                             on_worker ? b.worker_stack_size : HOST_FIBER_STACK, false);
            if (r.data) *(hostbk::fcontext_t*)r.data = r.fctx;
            progressed = true;
        }
        if (b.ndone == b.nthreads) break;
        if (!progressed) {
            host_set_thread(b, b.nthreads - 1);
            host_fatal_in_kernel("deadlock: every remaining thread waits at a barrier or warp sync "
                                 "that some thread never reaches");
        }
    }
    host_jump(b.return_ctx, nullptr, b.worker_stack, b.worker_stack_size, true);  // back to the launch loop; never returns
}

// Turns the running block into fibers in place (first sync point of a block).
inline void host_convert_to_fibers(HostBlock& b) {
    b.fibers = true;
    int k = b.current;
    b.converted = k;
    for (int i = 0; i < b.nthreads; i++) b.status[i] = i < k ? HOST_DONE : (i == k ? HOST_READY : HOST_NEW);
    b.ndone = k;
    b.block_arrived = 0;
    int nwarps = (b.nthreads + 31) / 32;
    for (int w = 0; w < nwarps; w++) { b.warps[w].arrived = 0; b.warps[w].gen = 0; b.warps[w].mask = 0; }
    b.sched_ctx = hostbk::make_fcontext(host_stack_top(host_worker, 1024), HOST_FIBER_STACK, host_scheduler_main);
}

inline HostBlock& host_block_for_sync() {
    if (!host_worker) { fprintf(stderr, "host backend: sync primitive called outside a kernel\n"); abort(); }
    HostBlock& b = host_worker->block;
    if (!b.fibers) host_convert_to_fibers(b);
    return b;
}

inline void __syncthreads() {
    HostBlock& b = host_block_for_sync();
    if (b.ndone > 0)
        host_fatal_in_kernel("deadlock: __syncthreads() reached after some threads of the block returned without reaching it");
    int me = b.current;
    if (++b.block_arrived == b.nthreads) {
        b.block_arrived = 0;
        for (int i = 0; i < b.nthreads; i++)
            if (b.status[i] == HOST_WAIT_BLOCK) b.status[i] = HOST_READY;
        return;
    }
    b.status[me] = HOST_WAIT_BLOCK;
    host_yield(b);
}

// Warp-level rendezvous of the lanes in mask: every lane posts a value, and
// returns once all lanes of the mask have posted, with the buffer to read.
inline uint64_t* host_warp_rendezvous(unsigned int mask, uint64_t value) {
    HostBlock& b = host_block_for_sync();
    int me = b.current, w = me / 32, lane = me % 32;
    int lanes_here = std::min(32, b.nthreads - w * 32);
    unsigned int present = lanes_here == 32 ? 0xffffffffu : ((1u << lanes_here) - 1u);
    if (!(mask & (1u << lane))) host_fatal_in_kernel("warp sync: calling lane is not in the mask");
    if (mask & ~present) host_fatal_in_kernel("warp sync: mask names lanes that do not exist in this block");
    for (int l = 0; l < 32; l++)
        if ((mask & (1u << l)) && b.status[w * 32 + l] == HOST_DONE)
            host_fatal_in_kernel("deadlock: warp sync mask names a lane that returned without reaching it");
    HostWarp& W = b.warps[w];
    if (W.arrived != 0 && W.mask != mask) host_fatal_in_kernel("warp sync: lanes disagree on the mask");
    W.mask = mask;
    int parity = W.gen & 1;
    W.value[parity][lane] = value;
    W.arrived |= 1u << lane;
    if (W.arrived == mask) {
        W.arrived = 0;
        W.gen++;
        for (int l = 0; l < 32; l++)
            if ((mask & (1u << l)) && l != lane) b.status[w * 32 + l] = HOST_READY;
    } else {
        b.status[me] = HOST_WAIT_WARP;
        host_yield(b);
    }
    return W.value[parity];
}

template <typename T> inline uint64_t host_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    uint64_t u = 0; memcpy(&u, &v, sizeof(T)); return u;
}
template <typename T> inline T host_from_bits(uint64_t u) { T v; memcpy(&v, &u, sizeof(T)); return v; }

inline int host_lane() { return host_worker->block.current % 32; }

// src lane for a shuffle within segments of `width` lanes; -1 keeps the own value
template <typename T> inline T host_shuffle(unsigned int mask, T v, int src) {
    uint64_t* vals = host_warp_rendezvous(mask, host_bits(v));
    if (src < 0) return v;
    if (!(mask & (1u << src))) host_fatal_in_kernel("shuffle reads a lane outside the mask");
    return host_from_bits<T>(vals[src]);
}
template <typename T> inline T __shfl_sync(unsigned int mask, T v, int src, int width = 32) {
    int lane = host_lane(), base = lane & ~(width - 1);
    return host_shuffle(mask, v, base + (src % width));
}
template <typename T> inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int width = 32) {
    int lane = host_lane(), src = lane ^ lane_mask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = -1;
    return host_shuffle(mask, v, src);
}
template <typename T> inline T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
    int lane = host_lane(), src = lane + (int)delta;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = -1;
    return host_shuffle(mask, v, src);
}
template <typename T> inline T __shfl_up_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
    int lane = host_lane(), src = lane - (int)delta;
    if (src < 0 || (src & ~(width - 1)) != (lane & ~(width - 1))) src = -1;
    return host_shuffle(mask, v, src);
}
inline void __syncwarp(unsigned int mask = 0xffffffffu) { host_warp_rendezvous(mask, 0); }
inline unsigned int __ballot_sync(unsigned int mask, int pred) {
    uint64_t* vals = host_warp_rendezvous(mask, pred != 0);
    unsigned int r = 0;
    for (int l = 0; l < 32; l++) if ((mask & (1u << l)) && vals[l]) r |= 1u << l;
    return r;
}
inline int __any_sync(unsigned int mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned int mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// ----------------------------------------------------------------------------
// atomics (blocks run concurrently on several workers, so these are real atomics)

inline float atomicAdd(float* p, float v) {
    uint32_t expected = __atomic_load_n((uint32_t*)p, __ATOMIC_RELAXED), desired;
    for (;;) {
        float old, nv;
        memcpy(&old, &expected, 4);
        nv = old + v;
        memcpy(&desired, &nv, 4);
        if (__atomic_compare_exchange_n((uint32_t*)p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return old;
    }
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline int atomicMax(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
inline int atomicCAS(int* p, int compare, int v) {
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ----------------------------------------------------------------------------
// device math functions that have no C++ name

inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }
template <typename T> inline T __ldg(const T* p) { return *p; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }

// ----------------------------------------------------------------------------
// CUDA runtime

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
};
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4
};
typedef struct HostStream* cudaStream_t;
struct HostEvent { double t; };
typedef HostEvent* cudaEvent_t;
struct cudaDeviceProp {
    char name[256];
    int major, minor, multiProcessorCount, maxThreadsPerBlock, warpSize;
    size_t sharedMemPerBlock, totalGlobalMem;
};

inline cudaError_t& host_last_error() { static cudaError_t e = cudaSuccess; return e; }

inline const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    }
    return "unknown error";
}
inline cudaError_t cudaGetLastError() { cudaError_t e = host_last_error(); host_last_error() = cudaSuccess; return e; }
inline cudaError_t cudaPeekAtLastError() { return host_last_error(); }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "host CPU (%d OpenMP threads)", omp_get_max_threads());
    p->major = 0; p->minor = 0;
    p->multiProcessorCount = omp_get_max_threads();
    p->maxThreadsPerBlock = 1024; p->warpSize = 32;
    p->sharedMemPerBlock = HOST_MAX_SHARED;
    p->totalGlobalMem = (size_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
    return cudaSuccess;
}
// "Device" memory is host memory, capped at the machine's physical memory as a
// GPU's is at its own: an allocation past it fails with cudaErrorMemoryAllocation
// instead of succeeding lazily and being killed when touched.
inline size_t& host_allocated_bytes() { static size_t n = 0; return n; }
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = nullptr;
    if (bytes == 0) return cudaSuccess;
    size_t rounded = (bytes + 63) / 64 * 64;
    size_t physical = (size_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
    if (rounded > physical - std::min(physical, host_allocated_bytes())) return host_last_error() = cudaErrorMemoryAllocation;
    *p = aligned_alloc(64, rounded + 64);
    if (!*p) return host_last_error() = cudaErrorMemoryAllocation;
    *(size_t*)*p = rounded;  // the size, kept in front of the block for cudaFree
    *p = (char*)*p + 64;
    host_allocated_bytes() += rounded;
    return cudaSuccess;
}
template <typename T> inline cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc((void**)p, bytes); }
inline cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
template <typename T> inline cudaError_t cudaMallocHost(T** p, size_t bytes) { return cudaMalloc((void**)p, bytes); }
inline cudaError_t cudaFree(void* p) {
    if (!p) return cudaSuccess;
    void* block = (char*)p - 64;
    host_allocated_bytes() -= *(size_t*)block;
    free(block);
    return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind k, cudaStream_t = 0) {
    return cudaMemcpy(dst, src, n, k);
}
inline cudaError_t cudaMemset(void* p, int v, size_t n) { if (n) memset(p, v, n); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = 0) { return cudaMemset(p, v, n); }
inline cudaError_t cudaStreamCreate(cudaStream_t* s) { *s = nullptr; return cudaSuccess; }
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline double host_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new HostEvent{0.0}; return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = 0) { e->t = host_seconds(); return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)((b->t - a->t) * 1e3); return cudaSuccess;
}

// ----------------------------------------------------------------------------
// kernel launch

// Runs one block: threads in sequence until one syncs, then fibers.
template <typename F> inline void host_run_block(HostWorker* w, const char* name, F& thread_body) {
    HostBlock& b = w->block;
    b.kernel = name;
    b.run = [](void* p) { (*(F*)p)(); };
    b.arg = (void*)&thread_body;
    b.fibers = false;
    b.ndone = 0;
    b.block_arrived = 0;
    for (int t = 0; t < b.nthreads; t++) {
        host_set_thread(b, t);
        thread_body();
        if (b.fibers) {
            // this thread's frame was the one turned into a fiber; it has now returned
            if (b.block_arrived > 0)
                host_fatal_in_kernel("deadlock: returned while other threads wait at __syncthreads()");
            b.status[t] = HOST_DONE;
            b.ndone++;
            host_jump(b.sched_ctx, &b.return_ctx, host_stack_bottom(w, 1024), HOST_FIBER_STACK, false);  // resumes when all are done
            break;
        }
    }
    b.fibers = false;
}

// Optional profile: with HOST_PROFILE=1 in the environment, the time of every
// kernel and cuBLAS call is summed by name and printed at exit.
struct HostProfile {
    bool enabled;
    std::vector<std::pair<const char*, std::pair<double, long>>> entries;  // name -> (seconds, calls)
    HostProfile() { const char* e = getenv("HOST_PROFILE"); enabled = e && *e && *e != '0'; }
    ~HostProfile() {
        if (!enabled || entries.empty()) return;
        std::sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.second.first > b.second.first; });
        double total = 0.0;
        for (auto& e : entries) total += e.second.first;
        fprintf(stderr, "host profile: %.3f s in kernels and cuBLAS\n", total);
        for (auto& e : entries)
            fprintf(stderr, "  %8.3f s %5.1f%% %8ld calls  %s\n", e.second.first, 100.0 * e.second.first / total, e.second.second, e.first);
    }
    void add(const char* name, double seconds) {
        for (auto& e : entries) if (e.first == name || !strcmp(e.first, name)) { e.second.first += seconds; e.second.second++; return; }
        entries.push_back({name, {seconds, 1}});
    }
};
inline HostProfile host_profile;

inline double host_seconds();

// times a scope into the profile when profiling is on
struct HostProfileScope {
    const char* name; double t0;
    explicit HostProfileScope(const char* n) : name(n), t0(host_profile.enabled ? host_seconds() : 0.0) {}
    ~HostProfileScope() { if (host_profile.enabled) host_profile.add(name, host_seconds() - t0); }
};

template <typename F>
inline void host_launch_grid(const char* name, dim3 grid, dim3 block, size_t shared_bytes, F&& thread_body) {
    HostProfileScope profile_scope(name);
    long nthreads = (long)block.x * block.y * block.z;
    long nblocks = (long)grid.x * grid.y * grid.z;
    if (nthreads < 1 || nthreads > 1024 || block.z > 64 || nblocks < 1 || grid.y > 65535 || grid.z > 65535 ||
        shared_bytes > HOST_MAX_SHARED) {
        host_last_error() = cudaErrorInvalidConfiguration;
        return;
    }
    #pragma omp parallel for schedule(static) if (nblocks > 1)
    for (long bi = 0; bi < nblocks; bi++) {
        HostWorker* w = host_worker_get();
        HostBlock& b = w->block;
        if ((long)b.status.size() < nthreads) {
            b.status.resize(nthreads);
            b.ctx.resize(nthreads);
            b.warps.resize((nthreads + 31) / 32);
        }
        b.nthreads = (int)nthreads;
        b.one_dimensional = block.y == 1 && block.z == 1;
        host_ts.thread_idx.y = host_ts.thread_idx.z = 0;
        if (w->dynamic_shared.size() < shared_bytes) w->dynamic_shared.resize(shared_bytes);
        host_ts.dynamic_shared = w->dynamic_shared.data();
        host_ts.block_dim = block;
        host_ts.grid_dim = grid;
        host_ts.block_idx.x = bi % grid.x;
        host_ts.block_idx.y = (bi / grid.x) % grid.y;
        host_ts.block_idx.z = bi / ((long)grid.x * grid.y);
        host_run_block(w, name, thread_body);
    }
}

// LAUNCH(kernel, grid, block, shared_bytes)(args...): the kernel is a template
// argument so that the per-thread call inlines on the fast path.
template <auto Kernel> struct HostLaunch {
    const char* name; dim3 grid, block; size_t shared_bytes;
    template <typename... A> void operator()(A... args) const {
        host_launch_grid(name, grid, block, shared_bytes, [&]() { Kernel(args...); });
    }
};
#define LAUNCH(kernel, grid, block, shared_bytes) (HostLaunch<kernel>{#kernel, dim3(grid), dim3(block), (size_t)(shared_bytes)})
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(host_ts.dynamic_shared)

// ----------------------------------------------------------------------------
// cuBLAS (column-major, as cuBLAS) on CBLAS

typedef struct HostBlasHandle* cublasHandle_t;
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3, CUBLAS_PEDANTIC_MATH = 2 };

inline cublasStatus_t cublasCreate(cublasHandle_t* h) { *h = nullptr; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
inline const char* cublasGetStatusString(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS ? "success" : "invalid value"; }

inline cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float* alpha, const float* A, int lda, const float* B, int ldb,
                                  const float* beta, float* C, int ldc) {
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    HostProfileScope profile_scope("cublasSgemm");
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, tb == CUBLAS_OP_T ? CblasTrans : CblasNoTrans,
                m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                                int m, int n, int k, const float* alpha,
                                                const float* A, int lda, long long strideA,
                                                const float* B, int ldb, long long strideB, const float* beta,
                                                float* C, int ldc, long long strideC, int batch) {
    (void)h;
    if (m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    HostProfileScope profile_scope("cublasSgemmStridedBatched");
    // the products spread over the workers, one single-threaded BLAS call each (OpenMP OpenBLAS runs a
    // call made inside a parallel region on its caller's thread): one fork-join per batch instead of
    // one per product (attention: B * NH products of T x T x hs)
    #pragma omp parallel for schedule(static) if (batch > 1)
    for (int i = 0; i < batch; i++)
        cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, tb == CUBLAS_OP_T ? CblasTrans : CblasNoTrans,
                    m, n, k, *alpha, A + i * strideA, lda, B + i * strideB, ldb, *beta, C + i * strideC, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasSgemv(cublasHandle_t, cublasOperation_t ta, int m, int n, const float* alpha,
                                  const float* A, int lda, const float* x, int incx, const float* beta,
                                  float* y, int incy) {
    if (m < 0 || n < 0) return CUBLAS_STATUS_INVALID_VALUE;
    HostProfileScope profile_scope("cublasSgemv");
    cblas_sgemv(CblasColMajor, ta == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, m, n, *alpha, A, lda, x, incx,
                *beta, y, incy);
    return CUBLAS_STATUS_SUCCESS;
}

// ----------------------------------------------------------------------------
// NVTX: ranges are no-ops on the host

inline int nvtxRangePushA(const char*) { return 0; }
inline int nvtxRangePop() { return 0; }

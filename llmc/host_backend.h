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

Fidelity switches (environment; defaults in brackets) that make the host
show what a GPU would:
  HOST_SCHEDULE=natural|reverse|random:SEED  [natural]
      Order of the blocks of a launch (which worker gets which block, and in
      what order each worker runs its blocks) and of the threads of a block,
      on the fast path and between two sync points in fiber mode. A race or
      a hidden dependency between threads or blocks changes results; the
      deterministic kernels give bitwise the same results under every
      schedule. random:SEED draws a new permutation for every launch, block
      and sweep of the fiber scheduler, reproducibly for one seed.
      host_set_schedule() sets it from code.
  HOST_POISON=1|0  [1]
      cudaMalloc and cudaMallocHost fill new memory with 0xff bytes: a NaN
      as float, -1 as int. A GPU hands out uninitialised memory, while fresh
      host pages are zero, so a read of memory nobody wrote shows as a NaN.
      The pages are committed at once, so an allocation over 64 MB must also
      fit in the memory available now (MemAvailable) less a quarter of the
      machine's, or it fails with cudaErrorMemoryAllocation, as a full GPU's
      would. Each block's dynamic shared memory is filled so too (a block must not
      read what the worker's previous block left). Static __shared__
      variables are not (they are plain thread_local variables here).
  HOST_TF32=0|1|handle  [0]
      cuBLAS products with TF32 inputs (both operands rounded to a 10-bit
      mantissa, round to nearest even, into scratch copies; fp32
      accumulation), as the GPU's CUBLAS_TF32_TENSOR_OP_MATH computes
      them. 1: every handle; handle: the handles whose math mode is
      CUBLAS_TF32_TENSOR_OP_MATH (the trainers set it); 0: fp32 everywhere,
      whatever the math mode, so host runs compare to fp32 references.
      host_set_tf32() sets it from code. The test programs leave their
      handles in the default mode, so HOST_TF32=1 is what runs them with
      TF32 (tf32_tolerance() in cuda_common.h gives their tolerance then);
      HOST_TF32=handle runs the trainers as on a GPU (make test-fidelity
      runs the script tests so).
  HOST_VARIANTS=host|gpu  [host]
      The kernel variant flags (scan_use_chunked, softmax_use_warp,
      layernorm_use_warp, norm_use_blocks), and the trainers' step_use_graph
      (the training step as a CUDA graph, llmc/trainer.h), start at the GPU
      build's choice instead of the host's: host_variants_gpu().
Launches are checked against sm_90's limits: at most 1024 threads a block,
block dimensions (1024, 1024, 64), grid dimensions (2^31-1, 65535, 65535)
(cudaErrorInvalidConfiguration); dynamic shared memory above 48 KB needs
cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
bytes) first, up to 227 KB (cudaErrorInvalidValue). Static shared memory is
not measured here: ptxas rejects more than 48 KB (make cuda-check).

CUDA graphs: stream capture is emulated ("streams, stream capture and CUDA
graphs" below): while a stream is captured, the launches, cuBLAS calls and
async copies and memsets issued on it are recorded with their arguments by
value, cudaGraphLaunch replays them in order, and what a GPU refuses during a
capture (a synchronous copy, a device synchronization, work on the legacy
stream, cudaMalloc outside relaxed mode) returns CUDA's error and
invalidates the capture, so a capture bug shows on the CPU too.

Runtime, cuBLAS and NVTX calls are synchronous CPU versions; cuBLAS maps onto
the CBLAS interface of the system BLAS (OpenBLAS). OpenBLAS 0.3.21 (Debian 12)
does not recognise some newer CPUs and then runs its SSE3 kernels
("Prescott"), 4-8x slower than its AVX-512 ones; a program that finds
OpenBLAS so on a CPU with AVX-512 or AVX2 re-executes itself once, before
main, with OPENBLAS_CORETYPE set to SkylakeX or Haswell (a value set in the
environment wins; HOST_PROFILE=1 prints the core in use). Memory is ordinary host
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
#include <functional>
#include <tuple>
#include <utility>
#include <vector>

#include <omp.h>
#include <sys/mman.h>
#include <strings.h>
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
// OpenBLAS's kernel choice (see the top of this file)

// The cores OpenBLAS falls back to when it does not know a CPU: none of them
// uses AVX2 or AVX-512.
inline bool host_blas_core_is_fallback(const char* core) {
    static const char* const old_cores[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                            "Sandybridge", "Katmai", "Coppermine", "Northwood", "Banias"};
    for (const char* c : old_cores) if (!strcasecmp(core, c)) return true;
    return false;
}

// Runs before main: when OpenBLAS picked a fallback core on a CPU that has
// better kernels and the user did not choose one, re-execute this program
// (same arguments, read from /proc/self/cmdline) with OPENBLAS_CORETYPE set.
// The new process finds the variable set and goes on. Any failure leaves the
// program running as it was.
__attribute__((constructor)) static void host_blas_core_check() {
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char* core = openblas_get_corename();
    if (!core || !host_blas_core_is_fallback(core)) return;
    const char* better = nullptr;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) better = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) better = "Haswell";
    if (!better) return;
    FILE* f = fopen("/proc/self/cmdline", "rb");
    if (!f) return;
    std::vector<char> cmdline;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) cmdline.insert(cmdline.end(), buf, buf + n);
    fclose(f);
    if (cmdline.empty() || cmdline.back() != '\0') return;
    std::vector<char*> argv;
    for (size_t i = 0; i < cmdline.size(); i += strlen(&cmdline[i]) + 1) argv.push_back(&cmdline[i]);
    argv.push_back(nullptr);
    setenv("OPENBLAS_CORETYPE", better, 0);
    execv("/proc/self/exe", argv.data());
    unsetenv("OPENBLAS_CORETYPE");  // exec failed: run on as we are
}

// ----------------------------------------------------------------------------
// fidelity switches read from the environment (see the top of this file)

[[noreturn]] inline void host_bad_env(const char* name, const char* value, const char* expected) {
    fprintf(stderr, "host backend: %s=%s: expected %s\n", name, value, expected);
    exit(EXIT_FAILURE);
}

// HOST_VARIANTS=gpu: the kernel variant flags start at the GPU build's choice.
// Every `static bool *_use_*` flag's host initializer calls this.
inline bool host_variants_gpu() {
    static const bool gpu = [] {
        const char* e = getenv("HOST_VARIANTS");
        if (!e || !*e || !strcmp(e, "host")) return false;
        if (!strcmp(e, "gpu")) return true;
        host_bad_env("HOST_VARIANTS", e, "host or gpu");
    }();
    return gpu;
}

// HOST_POISON: new cudaMalloc / cudaMallocHost memory filled with 0xff bytes
inline bool host_poison_enabled() {
    static const bool on = [] {
        const char* e = getenv("HOST_POISON");
        if (!e || !*e || !strcmp(e, "1")) return true;
        if (!strcmp(e, "0")) return false;
        host_bad_env("HOST_POISON", e, "0 or 1");
    }();
    return on;
}

// HOST_SCHEDULE: the order blocks and threads run in
enum HostScheduleKind : unsigned char { HOST_SCHEDULE_NATURAL, HOST_SCHEDULE_REVERSE, HOST_SCHEDULE_RANDOM };
struct HostSchedule {
    HostScheduleKind kind;
    uint64_t seed;      // random: the seed
    uint64_t launches;  // launches so far (each draws its own permutations)
};
inline HostSchedule host_schedule_from_env() {
    HostSchedule s = {HOST_SCHEDULE_NATURAL, 0, 0};
    const char* e = getenv("HOST_SCHEDULE");
    if (!e || !*e || !strcmp(e, "natural")) return s;
    if (!strcmp(e, "reverse")) { s.kind = HOST_SCHEDULE_REVERSE; return s; }
    char* end = nullptr;
    if (!strncmp(e, "random:", 7) && e[7]) {
        s.seed = strtoull(e + 7, &end, 10);
        if (*end == 0) { s.kind = HOST_SCHEDULE_RANDOM; return s; }
    }
    host_bad_env("HOST_SCHEDULE", e, "natural, reverse or random:SEED (SEED a decimal integer)");
}
inline HostSchedule& host_schedule() { static HostSchedule s = host_schedule_from_env(); return s; }
inline void host_set_schedule(HostScheduleKind kind, uint64_t seed = 0) {
    HostSchedule& s = host_schedule();
    s.kind = kind; s.seed = seed; s.launches = 0;
}

// splitmix64's finalizer: a well-mixed 64-bit hash
inline uint64_t host_mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// An order of n items: the item at position p is host_order_at(o, p).
// Natural: p; reverse: n-1-p; random: a keyed bijection of the k-bit numbers
// (2^k >= n the next power of two; xor, odd multiplies and xor-shifts, each
// invertible mod 2^k), applied again until it lands below n (cycle walking:
// a bijection of 0..n-1, fewer than 2 steps on average).
struct HostOrder {
    HostScheduleKind kind;
    int shift;        // random: k/2 rounded up, the xor-shift
    uint64_t mask;    // random: 2^k - 1
    uint64_t key, key2;
    long n;
};
inline HostOrder host_order(HostScheduleKind kind, long n, uint64_t key) {
    HostOrder o = {kind, 0, 0, 0, 0, n};
    if (kind == HOST_SCHEDULE_RANDOM) {
        int k = 0;
        while ((1l << k) < n) k++;
        o.mask = (1ull << k) - 1;
        o.shift = (k + 1) / 2 > 0 ? (k + 1) / 2 : 1;
        o.key = host_mix(key);
        o.key2 = host_mix(o.key);
    }
    return o;
}
inline uint64_t host_order_round(const HostOrder& o, uint64_t x) {
    x = (x ^ o.key) & o.mask;
    x = (x * 0x9E3779B97F4A7C15ull) & o.mask;
    x ^= x >> o.shift;
    x = (x + o.key2) & o.mask;
    x = (x * (o.key | 1)) & o.mask;
    x ^= x >> o.shift;
    return x;
}
inline long host_order_at(const HostOrder& o, long p) {
    if (o.kind == HOST_SCHEDULE_NATURAL) return p;
    if (o.kind == HOST_SCHEDULE_REVERSE) return o.n - 1 - p;
    uint64_t x = host_order_round(o, (uint64_t)p);
    while (x >= (uint64_t)o.n) x = host_order_round(o, x);
    return (long)x;
}

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
    HostOrder order;             // the order threads run in (HOST_SCHEDULE)
    int position;                // fast path: position in `order` of the thread now running (not natural order)
    uint64_t sweeps;             // fiber scheduler: passes over the threads so far
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
        // each pass runs the threads in the schedule's order (random: a new one every pass)
        HostOrder pass = b.order;
        if (pass.kind == HOST_SCHEDULE_RANDOM) pass = host_order(pass.kind, pass.n, pass.key + ++b.sweeps);
        for (int p = 0; p < b.nthreads; p++) {
            int i = (int)host_order_at(pass, p);
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
    int k = b.current, pos = b.order.kind == HOST_SCHEDULE_NATURAL ? k : b.position;
    b.converted = k;
    // the threads before this one in the fast path's order have returned
    for (int p = 0; p < b.nthreads; p++)
        b.status[host_order_at(b.order, p)] = p < pos ? HOST_DONE : (p == pos ? HOST_READY : HOST_NEW);
    b.ndone = pos;
    b.sweeps = 0;
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

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorIllegalState = 401,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureImplicit = 906,
};
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4
};
typedef struct HostStream* cudaStream_t;  // null: the legacy default stream
struct HostEvent { double t; };
typedef HostEvent* cudaEvent_t;
struct cudaDeviceProp {
    char name[256];
    int major, minor, multiProcessorCount, maxThreadsPerBlock, warpSize;
    size_t sharedMemPerBlock, sharedMemPerBlockOptin, totalGlobalMem;
};

inline cudaError_t& host_last_error() { static cudaError_t e = cudaSuccess; return e; }

// What the program has asked of the "device" so far, counted always (a few
// increments) and printed per training step under HOST_PROFILE=1
// (host_profile_step_end): kernel launches, cuBLAS calls, copies by
// direction, memsets, and the calls that make the host wait for the device
// on a GPU (cudaDeviceSynchronize, cudaStreamSynchronize,
// cudaEventSynchronize; a device-to-host cudaMemcpy waits too, counted as
// a copy). These are the proxies of a step's launch overhead and round trips.
// Graph launches are counted too (graph_launches), and what their replays run
// counts as launches, cuBLAS calls, copies and memsets as well; graph_kernels
// is the part of `kernels` that graph replays launched.
struct HostDeviceCounts { long kernels, blas, d2h, h2d, d2d, memsets, syncs, graph_launches, graph_kernels; };
inline HostDeviceCounts& host_counts() { static HostDeviceCounts c = {0, 0, 0, 0, 0, 0, 0, 0, 0}; return c; }

// ----------------------------------------------------------------------------
// streams, stream capture and CUDA graphs
//
// Work runs at once, in program order, so a stream is only a name here but
// during a capture. Between cudaStreamBeginCapture(s) and
// cudaStreamEndCapture(s) the work issued on s (LAUNCH's kernels when
// main_stream is s, the cuBLAS calls of a handle set to s, cudaMemcpyAsync,
// cudaMemsetAsync and cudaEventRecord on s) is recorded instead of run, its
// arguments copied by value as CUDA freezes them (pointers, sizes, scalars;
// not the memory they point to); cudaGraphInstantiate copies the record and
// cudaGraphLaunch replays it in order. What a GPU refuses during a capture
// is refused here with CUDA's error, which also invalidates the capture
// (cudaStreamEndCapture then returns cudaErrorStreamCaptureInvalidated and
// no graph):
// - work on the legacy stream (cudaMemcpy, cudaMemset, a launch or cuBLAS
//   call there) while the capturing stream is a blocking one, which the
//   legacy stream would wait on: cudaErrorStreamCaptureImplicit; with a
//   non-blocking capturing stream the legacy stream's work runs, not
//   captured, but a synchronous cudaMemcpy is refused outside relaxed mode;
// - waiting for the capture (cudaStreamSynchronize of the capturing stream,
//   cudaDeviceSynchronize): cudaErrorStreamCaptureUnsupported;
// - unless the mode is cudaStreamCaptureModeRelaxed, the potentially unsafe
//   calls cudaMalloc, cudaMallocHost, cudaFree, cudaFreeHost and
//   cudaEventSynchronize: cudaErrorStreamCaptureUnsupported.
// One capture at a time (the trainers capture one stream).

enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1, cudaStreamCaptureModeRelaxed = 2
};
enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0, cudaStreamCaptureStatusActive = 1, cudaStreamCaptureStatusInvalidated = 2
};
static const unsigned int cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
struct HostStream { unsigned int flags; };

typedef std::function<void()> HostGraphOp;  // one recorded operation, its arguments held by value
struct HostGraph { std::vector<HostGraphOp> ops; };
typedef HostGraph* cudaGraph_t;
struct HostGraphExec { std::vector<HostGraphOp> ops; };
typedef HostGraphExec* cudaGraphExec_t;

struct HostCapture {
    cudaStream_t stream;         // the capturing stream; null: no capture
    cudaStreamCaptureMode mode;
    HostGraph* graph;            // what it recorded so far
    cudaError_t error;           // the first refused call, which invalidated the capture
    int replay_depth;            // > 0 while cudaGraphLaunch replays (its kernels count as graph_kernels)
};
inline HostCapture& host_capture() {
    static HostCapture c = {nullptr, cudaStreamCaptureModeGlobal, nullptr, cudaSuccess, 0};
    return c;
}

// a call refused during a capture: returns e (also the last error) and invalidates the capture
inline cudaError_t host_capture_refuse(cudaError_t e) {
    HostCapture& c = host_capture();
    if (c.error == cudaSuccess) c.error = e;
    return host_last_error() = e;
}

// What work issued on stream s does now: runs (no capture; another stream),
// is recorded (s is capturing), or is refused (see above; *error says why).
// synchronous: a call that waits for the host (cudaMemcpy).
enum HostStreamAction { HOST_RUN, HOST_RECORD, HOST_REFUSE };
inline HostStreamAction host_stream_action(cudaStream_t s, bool synchronous, cudaError_t* error) {
    HostCapture& c = host_capture();
    if (!c.stream || (s && s != c.stream)) return HOST_RUN;
    if (s) {
        if (c.error == cudaSuccess) return HOST_RECORD;
        *error = host_last_error() = cudaErrorStreamCaptureInvalidated;
        return HOST_REFUSE;
    }
    if (!(c.stream->flags & cudaStreamNonBlocking)) { *error = host_capture_refuse(cudaErrorStreamCaptureImplicit); return HOST_REFUSE; }
    if (synchronous && c.mode != cudaStreamCaptureModeRelaxed) { *error = host_capture_refuse(cudaErrorStreamCaptureUnsupported); return HOST_REFUSE; }
    return HOST_RUN;
}

// Runs op, records a copy of it into the capture, or refuses it, as host_stream_action says.
template <typename F> inline cudaError_t host_stream_op(cudaStream_t s, bool synchronous, F&& op) {
    cudaError_t e = cudaSuccess;
    switch (host_stream_action(s, synchronous, &e)) {
        case HOST_RUN: op(); return cudaSuccess;
        case HOST_RECORD: host_capture().graph->ops.emplace_back(std::forward<F>(op)); return cudaSuccess;
        case HOST_REFUSE: break;
    }
    return e;
}

// A potentially unsafe call (cudaMalloc, cudaFree, ...): refused during a capture but in relaxed mode.
inline cudaError_t host_capture_check_unsafe() {
    HostCapture& c = host_capture();
    if (!c.stream || c.mode == cudaStreamCaptureModeRelaxed) return cudaSuccess;
    return host_capture_refuse(cudaErrorStreamCaptureUnsupported);
}

// The stream every LAUNCH goes to (cuda_common.h declares the same for nvcc):
// the legacy stream unless a program sets it, as the trainers do so that a
// training step can be captured.
inline cudaStream_t main_stream = nullptr;

inline const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorIllegalState: return "operation not permitted in the current state (stream capture)";
        case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
        case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
        case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    }
    return "unknown error";
}
inline cudaError_t cudaGetLastError() { cudaError_t e = host_last_error(); host_last_error() = cudaSuccess; return e; }
inline cudaError_t cudaPeekAtLastError() { return host_last_error(); }
inline cudaError_t cudaDeviceSynchronize() {
    if (host_capture().stream) return host_capture_refuse(cudaErrorStreamCaptureUnsupported);
    host_counts().syncs++;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "host CPU (%d OpenMP threads)", omp_get_max_threads());
    p->major = 0; p->minor = 0;
    p->multiProcessorCount = omp_get_max_threads();
    p->maxThreadsPerBlock = 1024; p->warpSize = 32;
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = HOST_MAX_SHARED;
    p->totalGlobalMem = (size_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
    return cudaSuccess;
}
// "Device" memory is host memory, capped at the machine's physical memory as a
// GPU's is at its own: an allocation past it fails with cudaErrorMemoryAllocation
// instead of succeeding lazily and being killed when touched.
inline size_t& host_allocated_bytes() { static size_t n = 0; return n; }

// HOST_POISON: fills new memory with 0xff bytes (NaN as float, -1 as int), in
// parallel 1 MB pieces (first touch of fresh pages costs more than the stores)
inline void host_poison(void* p, size_t bytes) {
    const size_t piece = (size_t)1 << 20;
    long pieces = (long)((bytes + piece - 1) / piece);
    #pragma omp parallel for schedule(static) if (pieces > 4)
    for (long i = 0; i < pieces; i++) {
        size_t off = (size_t)i * piece;
        memset((char*)p + off, 0xff, std::min(piece, bytes - off));
    }
}

// the memory the system can still hand out (MemAvailable), 0 if unknown
inline size_t host_available_memory() {
    FILE* f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = nullptr;
    if (cudaError_t e = host_capture_check_unsafe()) return e;
    if (bytes == 0) return cudaSuccess;
    size_t rounded = (bytes + 63) / 64 * 64;
    size_t physical = (size_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
    if (rounded > physical - std::min(physical, host_allocated_bytes())) return host_last_error() = cudaErrorMemoryAllocation;
    if (host_poison_enabled() && rounded > ((size_t)64 << 20)) {
        // poisoning commits the pages at once, as a GPU's allocation is real: a large one must fit in
        // what the system has available now, less a quarter of the memory (other processes share the
        // machine), or it fails as on a full GPU, instead of the process being killed when memory runs out
        size_t available = host_available_memory(), reserve = physical / 4;
        if (available && rounded + reserve > available) return host_last_error() = cudaErrorMemoryAllocation;
    }
    *p = aligned_alloc(64, rounded + 64);
    if (!*p) return host_last_error() = cudaErrorMemoryAllocation;
    *(size_t*)*p = rounded;  // the size, kept in front of the block for cudaFree
    *p = (char*)*p + 64;
    host_allocated_bytes() += rounded;
    if (host_poison_enabled()) host_poison(*p, rounded);
    return cudaSuccess;
}
template <typename T> inline cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc((void**)p, bytes); }
// pinned host memory is host memory here; poisoned too, as it is not cleared on a GPU machine either
inline cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
template <typename T> inline cudaError_t cudaMallocHost(T** p, size_t bytes) { return cudaMalloc((void**)p, bytes); }
inline cudaError_t cudaFree(void* p) {
    if (cudaError_t e = host_capture_check_unsafe()) return e;
    if (!p) return cudaSuccess;
    void* block = (char*)p - 64;
    host_allocated_bytes() -= *(size_t*)block;
    free(block);
    return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
// a copy or memset as it runs (at once, or when a graph replays it)
inline void host_memcpy_run(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    HostDeviceCounts& c = host_counts();
    if (kind == cudaMemcpyDeviceToHost) c.d2h++;
    else if (kind == cudaMemcpyHostToDevice) c.h2d++;
    else if (kind == cudaMemcpyDeviceToDevice) c.d2d++;
    if (n) memmove(dst, src, n);
}
inline void host_memset_run(void* p, int v, size_t n) { host_counts().memsets++; if (n) memset(p, v, n); }

// cudaMemcpy and cudaMemset go to the legacy stream; the Async calls to theirs (recorded there during its capture)
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    return host_stream_op(nullptr, true, [=]() { host_memcpy_run(dst, src, n, kind); });
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s = 0) {
    return host_stream_op(s, false, [=]() { host_memcpy_run(dst, src, n, kind); });
}
inline cudaError_t cudaMemset(void* p, int v, size_t n) {
    return host_stream_op(nullptr, false, [=]() { host_memset_run(p, v, n); });
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s = 0) {
    return host_stream_op(s, false, [=]() { host_memset_run(p, v, n); });
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
    *s = new HostStream{flags};
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s) return host_last_error() = cudaErrorInvalidValue;
    if (host_capture().stream == s) return host_capture_refuse(cudaErrorStreamCaptureUnsupported);
    delete s;
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    HostCapture& c = host_capture();
    if (c.stream && s == c.stream) return host_capture_refuse(cudaErrorStreamCaptureUnsupported);
    if (c.stream && !s && !(c.stream->flags & cudaStreamNonBlocking)) return host_capture_refuse(cudaErrorStreamCaptureImplicit);
    host_counts().syncs++;
    return cudaSuccess;
}

// Capture (see "streams, stream capture and CUDA graphs" above). The legacy
// stream cannot be captured; one capture at a time.
inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    HostCapture& c = host_capture();
    if (!s) return host_last_error() = cudaErrorStreamCaptureUnsupported;
    if (c.stream) return host_last_error() = cudaErrorIllegalState;
    c.stream = s;
    c.mode = mode;
    c.graph = new HostGraph();
    c.error = cudaSuccess;
    return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
    HostCapture& c = host_capture();
    *graph = nullptr;
    if (!s || c.stream != s) return host_last_error() = cudaErrorIllegalState;
    c.stream = nullptr;
    if (c.error != cudaSuccess) {
        delete c.graph;
        c.graph = nullptr;
        return host_last_error() = cudaErrorStreamCaptureInvalidated;
    }
    *graph = c.graph;
    c.graph = nullptr;
    return cudaSuccess;
}
inline cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
    HostCapture& c = host_capture();
    if (!c.stream || (s && s != c.stream)) *status = cudaStreamCaptureStatusNone;
    else if (!s && !(c.stream->flags & cudaStreamNonBlocking)) return host_capture_refuse(cudaErrorStreamCaptureImplicit);
    else if (!s) *status = cudaStreamCaptureStatusNone;
    else *status = c.error == cudaSuccess ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusInvalidated;
    return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0) {
    *exec = nullptr;
    if (!graph || flags != 0) return host_last_error() = cudaErrorInvalidValue;
    *exec = new HostGraphExec{graph->ops};
    return cudaSuccess;
}
// replays the graph's operations in order (recorded as one operation when s is capturing)
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (!exec) return host_last_error() = cudaErrorInvalidValue;
    return host_stream_op(s, false, [exec]() {
        HostCapture& c = host_capture();
        host_counts().graph_launches++;
        c.replay_depth++;
        for (const HostGraphOp& op : exec->ops) op();
        c.replay_depth--;
    });
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { delete exec; return cudaSuccess; }
inline cudaError_t cudaGraphDestroy(cudaGraph_t graph) { delete graph; return cudaSuccess; }
inline double host_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new HostEvent{0.0}; return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0) {
    return host_stream_op(s, false, [e]() { e->t = host_seconds(); });
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) {
    if (cudaError_t e = host_capture_check_unsafe()) return e;
    host_counts().syncs++;
    return cudaSuccess;
}
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)((b->t - a->t) * 1e3); return cudaSuccess;
}

// ----------------------------------------------------------------------------
// kernel launch

// The thread whose frame was turned into a fiber has returned on the fast
// path: finish it, and run the block's other threads as fibers until all are done.
inline void host_finish_converted(HostWorker* w, HostBlock& b, int t) {
    if (b.block_arrived > 0)
        host_fatal_in_kernel("deadlock: returned while other threads wait at __syncthreads()");
    b.status[t] = HOST_DONE;
    b.ndone++;
    host_jump(b.sched_ctx, &b.return_ctx, host_stack_bottom(w, 1024), HOST_FIBER_STACK, false);  // resumes when all are done
}

// Runs one block: threads in sequence until one syncs, then fibers.
template <typename F> inline void host_run_block(HostWorker* w, const char* name, F& thread_body) {
    HostBlock& b = w->block;
    b.kernel = name;
    b.run = [](void* p) { (*(F*)p)(); };
    b.arg = (void*)&thread_body;
    b.fibers = false;
    b.ndone = 0;
    b.block_arrived = 0;
    if (b.order.kind == HOST_SCHEDULE_NATURAL) {
        for (int t = 0; t < b.nthreads; t++) {
            host_set_thread(b, t);
            thread_body();
            if (b.fibers) { host_finish_converted(w, b, t); break; }
        }
    } else {  // HOST_SCHEDULE: the threads in the block's order
        for (int p = 0; p < b.nthreads; p++) {
            int t = (int)host_order_at(b.order, p);
            b.position = p;
            host_set_thread(b, t);
            thread_body();
            if (b.fibers) { host_finish_converted(w, b, t); break; }
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
        fprintf(stderr, "host profile: %.3f s in kernels and cuBLAS (OpenBLAS core %s)\n", total, openblas_get_corename());
        for (auto& e : entries)
            fprintf(stderr, "  %8.3f s %5.1f%% %8ld calls  %s\n", e.second.first, 100.0 * e.second.first / total, e.second.second, e.first);
    }
    void add(const char* name, double seconds) {
        for (auto& e : entries) if (e.first == name || !strcmp(e.first, name)) { e.second.first += seconds; e.second.second++; return; }
        entries.push_back({name, {seconds, 1}});
    }
};
inline HostProfile host_profile;

// HOST_PROFILE=1: one line per training step with what the step asked of the
// device (HostDeviceCounts), between host_profile_step_begin() and _end()
inline HostDeviceCounts& host_profile_step_start() { static HostDeviceCounts c; return c; }
inline void host_profile_step_begin() { host_profile_step_start() = host_counts(); }
inline void host_profile_step_end(int step) {
    if (!host_profile.enabled) return;
    const HostDeviceCounts &a = host_profile_step_start(), &b = host_counts();
    fprintf(stderr, "host profile step %d: %ld kernel launches (%ld of them by %ld graph launches), %ld cuBLAS calls, "
            "%ld device-to-host copies, %ld host-to-device, %ld device-to-device, %ld memsets, %ld synchronizations\n",
            step, b.kernels - a.kernels, b.graph_kernels - a.graph_kernels, b.graph_launches - a.graph_launches,
            b.blas - a.blas, b.d2h - a.d2h, b.h2d - a.h2d, b.d2d - a.d2d, b.memsets - a.memsets, b.syncs - a.syncs);
}

inline double host_seconds();

// times a scope into the profile when profiling is on
struct HostProfileScope {
    const char* name; double t0;
    explicit HostProfileScope(const char* n) : name(n), t0(host_profile.enabled ? host_seconds() : 0.0) {}
    ~HostProfileScope() { if (host_profile.enabled) host_profile.add(name, host_seconds() - t0); }
};

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes):
// the dynamic shared memory a kernel may ask for beyond the default 48 KB
static const size_t HOST_DEFAULT_SHARED = 48 * 1024;
struct HostFuncShared { const void* kernel; size_t max_dynamic; };
inline std::vector<HostFuncShared>& host_func_shared() { static std::vector<HostFuncShared> v; return v; }
inline size_t host_max_dynamic_shared(const void* kernel) {
    for (const HostFuncShared& f : host_func_shared()) if (f.kernel == kernel) return f.max_dynamic;
    return HOST_DEFAULT_SHARED;
}
template <typename K> inline cudaError_t cudaFuncSetAttribute(K* kernel, cudaFuncAttribute attr, int value) {
    const void* id = reinterpret_cast<const void*>(kernel);
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {
        return value >= -1 && value <= 100 ? cudaSuccess : (host_last_error() = cudaErrorInvalidValue);
    }
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > HOST_MAX_SHARED)
        return host_last_error() = cudaErrorInvalidValue;
    for (HostFuncShared& f : host_func_shared()) if (f.kernel == id) { f.max_dynamic = (size_t)value; return cudaSuccess; }
    host_func_shared().push_back({id, (size_t)value});
    return cudaSuccess;
}

// A launch configuration as sm_90 takes it; otherwise sets the launch error
// (read by cudaGetLastError) and returns false, and the kernel does not run.
inline bool host_launch_valid(const void* kernel, dim3 grid, dim3 block, size_t shared_bytes) {
    long nthreads = (long)block.x * block.y * block.z;
    if (block.x < 1 || block.y < 1 || block.z < 1 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
        nthreads > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.x > 2147483647u || grid.y > 65535 ||
        grid.z > 65535) {
        host_last_error() = cudaErrorInvalidConfiguration;
        return false;
    }
    if (shared_bytes > HOST_DEFAULT_SHARED && shared_bytes > host_max_dynamic_shared(kernel)) {
        host_last_error() = cudaErrorInvalidValue;
        return false;
    }
    return true;
}

template <typename F>
inline void host_launch_grid(const char* name, const void* kernel_id, dim3 grid, dim3 block, size_t shared_bytes,
                             F&& thread_body) {
    HostProfileScope profile_scope(name);
    host_counts().kernels++;
    if (host_capture().replay_depth > 0) host_counts().graph_kernels++;
    long nthreads = (long)block.x * block.y * block.z;
    long nblocks = (long)grid.x * grid.y * grid.z;
    if (!host_launch_valid(kernel_id, grid, block, shared_bytes)) return;
    // HOST_SCHEDULE: blocks in the schedule's order (which worker gets which
    // block, and the order on each worker), threads too (a key per block)
    HostSchedule& schedule = host_schedule();
    HostScheduleKind kind = schedule.kind;
    uint64_t launch_key = kind == HOST_SCHEDULE_RANDOM ? host_mix(schedule.seed ^ host_mix(++schedule.launches)) : 0;
    HostOrder block_order = host_order(kind, nblocks, launch_key);
    bool poison_shared = shared_bytes > 0 && host_poison_enabled();
    #pragma omp parallel for schedule(static) if (nblocks > 1)
    for (long p = 0; p < nblocks; p++) {
        long bi = host_order_at(block_order, p);
        HostWorker* w = host_worker_get();
        HostBlock& b = w->block;
        if ((long)b.status.size() < nthreads) {
            b.status.resize(nthreads);
            b.ctx.resize(nthreads);
            b.warps.resize((nthreads + 31) / 32);
        }
        b.nthreads = (int)nthreads;
        b.order = host_order(kind, nthreads, launch_key + (uint64_t)bi);
        b.one_dimensional = block.y == 1 && block.z == 1;
        host_ts.thread_idx.y = host_ts.thread_idx.z = 0;
        if (w->dynamic_shared.size() < shared_bytes) w->dynamic_shared.resize(shared_bytes);
        host_ts.dynamic_shared = w->dynamic_shared.data();
        if (poison_shared) memset(host_ts.dynamic_shared, 0xff, shared_bytes);  // as uninitialised as on a GPU
        host_ts.block_dim = block;
        host_ts.grid_dim = grid;
        host_ts.block_idx.x = bi % grid.x;
        host_ts.block_idx.y = (bi / grid.x) % grid.y;
        host_ts.block_idx.z = bi / ((long)grid.x * grid.y);
        host_run_block(w, name, thread_body);
    }
}

// LAUNCH(kernel, grid, block, shared_bytes)(args...): the kernel is a template
// argument so that the per-thread call inlines on the fast path. The launch
// goes to main_stream: while that stream is captured, the launch (its
// configuration checked now, as a GPU checks it) is recorded with a copy of
// its arguments and runs when the graph is replayed.
template <auto Kernel> struct HostLaunch {
    const char* name; dim3 grid, block; size_t shared_bytes;
    template <typename... A> void run(A... args) const {
        host_launch_grid(name, reinterpret_cast<const void*>(Kernel), grid, block, shared_bytes,
                         [&]() { Kernel(args...); });
    }
    template <typename... A> void operator()(A... args) const {
        cudaError_t e = cudaSuccess;
        switch (host_stream_action(main_stream, false, &e)) {
            case HOST_RUN: run(args...); return;
            case HOST_RECORD: {
                if (!host_launch_valid(reinterpret_cast<const void*>(Kernel), grid, block, shared_bytes)) {
                    host_capture_refuse(host_last_error());
                    return;
                }
                HostLaunch self = *this;
                host_capture().graph->ops.emplace_back([self, args...]() { self.run(args...); });
                return;
            }
            case HOST_REFUSE: return;  // the error is the last error
        }
    }
};
#define LAUNCH(kernel, grid, block, shared_bytes) (HostLaunch<kernel>{#kernel, dim3(grid), dim3(block), (size_t)(shared_bytes)})
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(host_ts.dynamic_shared)

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

// HOST_TF32: which products take TF32 inputs (see the top of this file)
enum HostTf32Mode : unsigned char { HOST_TF32_OFF, HOST_TF32_ALL, HOST_TF32_HANDLE };
inline HostTf32Mode host_tf32_from_env() {
    const char* e = getenv("HOST_TF32");
    if (!e || !*e || !strcmp(e, "0")) return HOST_TF32_OFF;
    if (!strcmp(e, "1")) return HOST_TF32_ALL;
    if (!strcmp(e, "handle")) return HOST_TF32_HANDLE;
    host_bad_env("HOST_TF32", e, "0, 1 or handle");
}
inline HostTf32Mode& host_tf32_mode() { static HostTf32Mode m = host_tf32_from_env(); return m; }
inline void host_set_tf32(HostTf32Mode mode) { host_tf32_mode() = mode; }
inline bool host_tf32_for(cublasHandle_t h) {
    HostTf32Mode m = host_tf32_mode();
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

// The host's cuBLAS calls: the arguments are checked and the scalars read
// now (host pointer mode, as cuBLAS reads them when called, so a captured
// call keeps the values of capture time), the TF32 choice too; the product
// runs on the handle's stream (host_blas_op).
inline cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float* alpha, const float* A, int lda, const float* B, int ldb,
                                  const float* beta, float* C, int ldc) {
    if (!handle || m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
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
    if (!h || m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
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
    if (!h || m < 0 || n < 0) return CUBLAS_STATUS_INVALID_VALUE;
    float a = *alpha, b = *beta;
    return host_blas_op(h, [=]() {
        host_counts().blas++;
        HostProfileScope profile_scope("cublasSgemv");
        cblas_sgemv(CblasColMajor, ta == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, m, n, a, A, lda, x, incx, b, y, incy);
    });
}

// ----------------------------------------------------------------------------
// NVTX: ranges are no-ops on the host

inline int nvtxRangePushA(const char*) { return 0; }
inline int nvtxRangePop() { return 0; }

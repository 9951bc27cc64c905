/*
The CUDA language on the CPU (host backend, part 1): the qualifiers, dim3
and the thread's indices, the order of blocks and threads (HOST_SCHEDULE),
one block's run (its threads in sequence until one first synchronizes, then
as fibers), barriers, warp shuffles and votes, atomics and the device math
functions that have no C++ name. llmc/host_backend.h says how a launch runs.
*/
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>
#include <boost/context/detail/fcontext.hpp>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define HOST_ASAN 1
#endif
#include "../kernel_choices.h"

// ----------------------------------------------------------------------------
// qualifiers, built-in types and the thread's indices

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

// HOST_SCHEDULE (host_settings, llmc/kernel_choices.h): the order blocks and
// threads run in; host_set_schedule() sets it from code
struct HostSchedule {
    HostScheduleKind kind;
    uint64_t seed;      // random: the seed
    uint64_t launches;  // launches so far (each draws its own permutations)
};
inline HostSchedule& host_schedule() {
    static HostSchedule s = {host_settings.schedule, host_settings.schedule_seed, 0};
    return s;
}
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
// one block of a launch

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

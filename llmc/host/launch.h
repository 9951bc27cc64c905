/*
Kernel launches on the host backend (part 4): the launch checked against
sm_90's limits, its blocks spread over the OpenMP workers in the schedule's
order, each block run by host_run_block (language.h); LAUNCH and
DYNAMIC_SHARED, the two macros that differ between backends.
*/
#pragma once

#include <type_traits>
#include "language.h"
#include "profile.h"
#include "runtime.h"

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
    bool poison_shared = shared_bytes > 0 && host_settings.poison;
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

// A kernel's pointer argument must point into device or pinned memory, or be
// null: a GPU faults on a host pointer or a freed one (cudaErrorIllegalAddress).
template <typename A> inline bool host_argument_valid(const char* kernel, int i, A a) {
    if constexpr (std::is_pointer_v<A>) {
        if (!host_device_accessible((const void*)a)) {
            fprintf(stderr, "host backend: kernel %s, argument %d: %p is not device memory\n", kernel, i, (const void*)a);
            return false;
        }
    }
    return true;
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
        bool pointers_valid = true;
        int i = 0;
        ((pointers_valid = host_argument_valid(name, i++, args) && pointers_valid), ...);
        if (!pointers_valid) {
            host_last_error() = cudaErrorIllegalAddress;
            return;
        }
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

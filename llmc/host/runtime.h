/*
The CUDA runtime on the CPU (host backend, part 2): errors, the device's
properties, "device" memory (host memory, poisoned when new: HOST_POISON),
copies and memsets, streams, stream capture and CUDA graphs (recorded and
replayed, with the GPU's refusals), and events. Every call is synchronous
but during a capture.
*/
#pragma once

#include <chrono>
#include <map>
#include "language.h"

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
    cudaErrorIllegalAddress = 700,
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
        case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
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
// the machine's physical memory: the host's "device memory" (its totalGlobalMem)
inline size_t host_physical_memory() { return (size_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE); }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "host CPU (%d OpenMP threads)", omp_get_max_threads());
    p->major = 0; p->minor = 0;
    p->multiProcessorCount = omp_get_max_threads();
    p->maxThreadsPerBlock = 1024; p->warpSize = 32;
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = HOST_MAX_SHARED;
    p->totalGlobalMem = host_physical_memory();
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

// Every live allocation, by its first byte: device memory (cudaMalloc) or
// pinned host memory (cudaMallocHost). A GPU faults on a host pointer handed
// to a kernel or to cuBLAS, and on a copy whose direction does not match its
// pointers; host memory is all one here, so these checks make such a mistake
// fail on the CPU too.
enum HostMemoryKind : unsigned char { HOST_MEMORY_UNKNOWN, HOST_MEMORY_DEVICE, HOST_MEMORY_PINNED };
struct HostAllocation { size_t bytes; HostMemoryKind kind; };
inline std::map<uintptr_t, HostAllocation>& host_allocations() { static std::map<uintptr_t, HostAllocation> m; return m; }

// the allocation [p, p + bytes) lies in (its end may be p + bytes, an empty
// view at the end), or HOST_MEMORY_UNKNOWN: ordinary host memory or freed
// (access none: only the address is looked at, never the memory)
__attribute__((access(none, 1))) inline HostMemoryKind host_memory_kind(const void* p, size_t bytes = 0) {
    std::map<uintptr_t, HostAllocation>& m = host_allocations();
    uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin()) return HOST_MEMORY_UNKNOWN;
    --it;
    return a + bytes <= it->first + it->second.bytes ? it->second.kind : HOST_MEMORY_UNKNOWN;
}
// what a kernel or cuBLAS may read and write: device or pinned (mapped) memory
__attribute__((access(none, 1))) inline bool host_device_accessible(const void* p, size_t bytes = 0) {
    return !p || host_memory_kind(p, bytes) != HOST_MEMORY_UNKNOWN;
}
// memory the host may read directly: anything but device memory
__attribute__((access(none, 1))) inline bool host_accessible(const void* p, size_t bytes = 0) {
    return host_memory_kind(p, bytes) != HOST_MEMORY_DEVICE;
}

// The "device memory" an allocation of `bytes` may take: the physical memory
// less what the process holds in cudaMalloc memory; and, when poisoning
// commits the pages at once (as a GPU's allocation is real) and the
// allocation is large, what the system has available now less a quarter of
// the memory (other processes share the machine), so that it fails as on a
// full GPU instead of the process being killed when memory runs out.
static const size_t HOST_LARGE_ALLOCATION = (size_t)64 << 20;
inline size_t host_device_free(size_t bytes) {
    size_t physical = host_physical_memory();
    size_t free_bytes = physical - std::min(physical, host_allocated_bytes());
    if (host_settings.poison && bytes > HOST_LARGE_ALLOCATION) {
        size_t available = host_available_memory(), reserve = physical / 4;
        if (available) free_bytes = std::min(free_bytes, available - std::min(available, reserve));
    }
    return free_bytes;
}
// free and total "device memory": what a large allocation may take, but at least what one of
// HOST_LARGE_ALLOCATION bytes may (smaller ones are not held to the available memory); the physical memory
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
    *total_bytes = host_physical_memory();
    *free_bytes = std::max(host_device_free(SIZE_MAX), std::min(host_device_free(0), HOST_LARGE_ALLOCATION));
    return cudaSuccess;
}

inline cudaError_t host_allocate(void** p, size_t bytes, HostMemoryKind kind) {
    *p = nullptr;
    if (cudaError_t e = host_capture_check_unsafe()) return e;
    if (bytes == 0) return cudaSuccess;
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded > host_device_free(rounded)) return host_last_error() = cudaErrorMemoryAllocation;
    *p = aligned_alloc(64, rounded + 64);
    if (!*p) return host_last_error() = cudaErrorMemoryAllocation;
    *(size_t*)*p = rounded;  // the size, kept in front of the block for cudaFree
    *p = (char*)*p + 64;
    host_allocated_bytes() += rounded;
    host_allocations()[(uintptr_t)*p] = {bytes, kind};
    if (host_settings.poison) host_poison(*p, rounded);
    return cudaSuccess;
}
inline cudaError_t host_release(void* p, HostMemoryKind kind) {
    if (cudaError_t e = host_capture_check_unsafe()) return e;
    if (!p) return cudaSuccess;
    auto it = host_allocations().find((uintptr_t)p);
    if (it == host_allocations().end() || it->second.kind != kind) return host_last_error() = cudaErrorInvalidValue;
    host_allocations().erase(it);
    void* block = (char*)p - 64;
    host_allocated_bytes() -= *(size_t*)block;
    free(block);
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) { return host_allocate(p, bytes, HOST_MEMORY_DEVICE); }
template <typename T> inline cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc((void**)p, bytes); }
// pinned host memory: host memory that kernels may use too; poisoned, as it is not cleared on a GPU machine either
inline cudaError_t cudaMallocHost(void** p, size_t bytes) { return host_allocate(p, bytes, HOST_MEMORY_PINNED); }
template <typename T> inline cudaError_t cudaMallocHost(T** p, size_t bytes) { return cudaMallocHost((void**)p, bytes); }
inline cudaError_t cudaFree(void* p) { return host_release(p, HOST_MEMORY_DEVICE); }
inline cudaError_t cudaFreeHost(void* p) { return host_release(p, HOST_MEMORY_PINNED); }

// A copy's pointers against its direction, and the device side inside one
// allocation: otherwise cudaErrorInvalidValue, with a line saying why.
inline bool host_copy_valid(const char* call, void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    if (n == 0 || kind == cudaMemcpyDefault) return true;  // Default: the pointers say the direction
    bool ok = true;
    if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice) ok = ok && host_memory_kind(dst, n) == HOST_MEMORY_DEVICE;
    if (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice) ok = ok && host_memory_kind(src, n) == HOST_MEMORY_DEVICE;
    if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost) ok = ok && host_accessible(src, n);
    if (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost) ok = ok && host_accessible(dst, n);
    if (!ok) {
        fprintf(stderr, "host backend: %s of %zu bytes, kind %d: a pointer is not where the kind says, or the copy "
                "runs past its allocation\n", call, n, (int)kind);
        host_last_error() = cudaErrorInvalidValue;
    }
    return ok;
}
inline bool host_memset_valid(const char* call, void* p, size_t n) {
    if (n == 0 || host_memory_kind(p, n) == HOST_MEMORY_DEVICE) return true;
    fprintf(stderr, "host backend: %s of %zu bytes: not inside one cudaMalloc allocation\n", call, n);
    host_last_error() = cudaErrorInvalidValue;
    return false;
}
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
    if (!host_copy_valid("cudaMemcpy", dst, src, n, kind)) return cudaErrorInvalidValue;
    return host_stream_op(nullptr, true, [=]() { host_memcpy_run(dst, src, n, kind); });
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s = 0) {
    if (!host_copy_valid("cudaMemcpyAsync", dst, src, n, kind)) return cudaErrorInvalidValue;
    return host_stream_op(s, false, [=]() { host_memcpy_run(dst, src, n, kind); });
}
inline cudaError_t cudaMemset(void* p, int v, size_t n) {
    if (!host_memset_valid("cudaMemset", p, n)) return cudaErrorInvalidValue;
    return host_stream_op(nullptr, false, [=]() { host_memset_run(p, v, n); });
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s = 0) {
    if (!host_memset_valid("cudaMemsetAsync", p, n)) return cudaErrorInvalidValue;
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


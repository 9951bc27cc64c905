/*
Kernel choices: which kernel variant each launcher runs, and every
environment variable the programs read, decided in one place.

A layer may have several kernels for one job: a host-friendly one (plain
loops that g++ vectorizes, no barriers) and a GPU-friendly one (warps,
shuffles, shared memory). Every variant is valid CUDA and tested on both
backends. `kernel_choices` says which one runs; every launcher reads it, and
tests set its fields directly to run each variant.

It is filled once, before main: from the backend's defaults
(kernel_choices_for: the GPU's under nvcc, the host's on the host backend,
the GPU's on the host with HOST_VARIANTS=gpu), then from the environment. `host_settings` holds the
host backend's fidelity switches, read here too. doc/testing.md has the one
table of these variables; OPENBLAS_CORETYPE, OpenBLAS's own, is read by
llmc/host/openblas_core.h.

  HOST_VARIANTS=host|gpu         the host's or the GPU's kernel choices (host)
  HOST_SCHEDULE=natural|reverse|random:SEED   block and thread order (host)
  HOST_POISON=1|0                cudaMalloc memory filled with 0xff (host)
  HOST_TF32=0|1|handle           TF32 inputs to the cuBLAS products (host)
  HOST_PROFILE=0|1               time per kernel, counts per step (host)
  ATTENTION_VARIANT=auto|materialized|tiled|tiled-rows|tiled-smem
  STEP_GRAPH=0|1                 the training step as a CUDA graph
*/
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// The GPU's block for the mean of the per-row losses (model.h), a power of two.
#define MEAN_LOSS_THREADS 256
// Elements per thread of the host's elementwise kernels (elementwise.cuh).
#define ELEMENTWISE_HOST_SPAN 2048
// Channels per thread of the host's norm parameter gradient (layernorm.cuh, rmsnorm.cuh).
#define LN_TILE 16

enum { ATTENTION_AUTO = -1, ATTENTION_MATERIALIZED = 0, ATTENTION_TILED = 1 };
// the recurrent Mamba step's SSM kernel (mamba_step.cuh): sequential, vectorized for N = 16, one warp per row
enum MambaStepVariant { MAMBA_STEP_SEQ, MAMBA_STEP_VEC, MAMBA_STEP_WARP };

typedef struct {
    bool scan_chunked;          // selective_scan.cuh: the chunked parallel scan, else sequential in time
    bool scan_vec;              // selective_scan.cuh: the sequential scan with N fixed at 16 (vectorized) when N is 16
    MambaStepVariant mamba_step;  // mamba_step.cuh: the generation step's SSM kernel
    bool softmax_warp;          // attention.cuh: a warp per softmax row, else one thread per row
    int attention_variant;      // attention.cuh: ATTENTION_AUTO (the rule there), _MATERIALIZED or _TILED;
                                // set before sizing activations, and pinned by attention_pin_variant
    bool attention_tiled_smem;  // attention_tiled.cuh: keys and values staged in shared memory, else rows
    bool attention_keep_probs;  // attention.cuh: the tiled variant also keeps its probabilities (model tests)
    bool attention_step_block;  // kv_cache.cuh: a block per (row, head) in the cached step, else a thread
    bool layernorm_warp;        // layernorm.cuh, rmsnorm.cuh: a warp per row, else a thread per row
    int layernorm_param_tile;   // layernorm.cuh, rmsnorm.cuh: channels per thread of the parameter gradient (1 or LN_TILE)
    bool norm_blocks;           // adamw.cuh: the gradient norm over many blocks, else one loop
    int elementwise_span;       // elementwise.cuh: elements per thread of the elementwise kernels
    int elementwise_threads;    // elementwise.cuh: threads per block of the elementwise kernels
    int row_threads_max;        // elementwise.cuh: threads per row of the row kernels (1: a thread walks the row)
    int mean_loss_threads;      // model.h: threads of the mean-loss reduction (1 or MEAN_LOSS_THREADS)
    bool step_graph;            // trainer.h: the training step captured once and replayed as a CUDA graph
} KernelChoices;

// The backend's choices: gpu, the GPU build's (also the host's with
// HOST_VARIANTS=gpu); else the host backend's, the fastest variants on a CPU
// (doc/benchmarks.md): plain loops that g++ vectorizes, no barriers.
inline KernelChoices kernel_choices_for(bool gpu) {
    KernelChoices c;
    c.scan_chunked = gpu;
    c.scan_vec = true;
    c.mamba_step = gpu ? MAMBA_STEP_WARP : MAMBA_STEP_VEC;
    c.softmax_warp = gpu;
    c.attention_variant = ATTENTION_AUTO;
    c.attention_tiled_smem = gpu;
    c.attention_keep_probs = false;
    c.attention_step_block = gpu;
    c.layernorm_warp = gpu;
    c.layernorm_param_tile = gpu ? 1 : LN_TILE;
    c.norm_blocks = gpu;
    c.elementwise_span = gpu ? 1 : ELEMENTWISE_HOST_SPAN;
    c.elementwise_threads = gpu ? 256 : 4;  // host: several blocks even for small n, the workers share them
    c.row_threads_max = gpu ? 256 : 1;      // host: a thread walks the whole row
    c.mean_loss_threads = gpu ? MEAN_LOSS_THREADS : 1;
    c.step_graph = gpu;
    return c;
}

// ----------------------------------------------------------------------------
// the host backend's fidelity switches (llmc/host/)

enum HostScheduleKind : unsigned char { HOST_SCHEDULE_NATURAL, HOST_SCHEDULE_REVERSE, HOST_SCHEDULE_RANDOM };
enum HostTf32Mode : unsigned char { HOST_TF32_OFF, HOST_TF32_ALL, HOST_TF32_HANDLE };

typedef struct {
    bool variants_gpu;               // HOST_VARIANTS=gpu
    HostScheduleKind schedule;       // HOST_SCHEDULE
    uint64_t schedule_seed;          // HOST_SCHEDULE=random:SEED
    bool poison;                     // HOST_POISON
    HostTf32Mode tf32;               // HOST_TF32
    bool profile;                    // HOST_PROFILE
} HostSettings;

// ----------------------------------------------------------------------------
// the environment, read once

[[noreturn]] inline void bad_environment(const char* name, const char* value, const char* expected) {
    fprintf(stderr, "error: environment %s=%s: expected %s\n", name, value, expected);
    exit(EXIT_FAILURE);
}

// the variable's value, or null when it is unset or empty
inline const char* environment_value(const char* name) {
    const char* e = getenv(name);
    return e && *e ? e : nullptr;
}

// 0 or 1, or fallback when unset
inline bool environment_flag(const char* name, bool fallback, const char* expected) {
    const char* e = environment_value(name);
    if (!e) return fallback;
    if (strcmp(e, "0") && strcmp(e, "1")) bad_environment(name, e, expected);
    return e[0] == '1';
}

inline HostSettings host_settings_from_env() {
    HostSettings s = {false, HOST_SCHEDULE_NATURAL, 0, true, HOST_TF32_OFF, false};
    if (const char* e = environment_value("HOST_VARIANTS")) {
        if (strcmp(e, "host") && strcmp(e, "gpu")) bad_environment("HOST_VARIANTS", e, "host or gpu");
        s.variants_gpu = !strcmp(e, "gpu");
    }
    if (const char* e = environment_value("HOST_SCHEDULE")) {
        char* end = nullptr;
        if (!strcmp(e, "reverse")) s.schedule = HOST_SCHEDULE_REVERSE;
        else if (!strncmp(e, "random:", 7) && e[7] && (s.schedule_seed = strtoull(e + 7, &end, 10), *end == 0))
            s.schedule = HOST_SCHEDULE_RANDOM;
        else if (strcmp(e, "natural"))
            bad_environment("HOST_SCHEDULE", e, "natural, reverse or random:SEED (SEED a decimal integer)");
    }
    s.poison = environment_flag("HOST_POISON", true, "0 or 1");
    if (const char* e = environment_value("HOST_TF32")) {
        if (!strcmp(e, "1")) s.tf32 = HOST_TF32_ALL;
        else if (!strcmp(e, "handle")) s.tf32 = HOST_TF32_HANDLE;
        else if (strcmp(e, "0")) bad_environment("HOST_TF32", e, "0, 1 or handle");
    }
    s.profile = environment_flag("HOST_PROFILE", false, "0 or 1");
    return s;
}

#ifdef __CUDACC__
inline HostSettings host_settings = {};  // no host backend: nothing to switch
#else
inline HostSettings host_settings = host_settings_from_env();
#endif

inline KernelChoices kernel_choices_from_env() {
#ifdef __CUDACC__
    KernelChoices c = kernel_choices_for(true);
#else
    KernelChoices c = kernel_choices_for(host_settings.variants_gpu);
#endif
    if (const char* e = environment_value("ATTENTION_VARIANT")) {
        if (!strcmp(e, "materialized")) c.attention_variant = ATTENTION_MATERIALIZED;
        else if (!strcmp(e, "tiled")) c.attention_variant = ATTENTION_TILED;
        else if (!strcmp(e, "tiled-rows") || !strcmp(e, "tiled-smem")) {
            c.attention_variant = ATTENTION_TILED;
            c.attention_tiled_smem = !strcmp(e, "tiled-smem");
        } else if (strcmp(e, "auto"))
            bad_environment("ATTENTION_VARIANT", e, "auto, materialized, tiled, tiled-rows or tiled-smem");
    }
    c.step_graph = environment_flag("STEP_GRAPH", c.step_graph, "0 (eager steps) or 1 (the step as a CUDA graph)");
    return c;
}

inline KernelChoices kernel_choices = kernel_choices_from_env();

/*
What both training loops share (the language models' lm_run in
lm_trainer.h, the image classifiers' vision_run in vision_trainer.h): the
learning-rate schedule, the training step itself (eagerly or as a CUDA
graph, StepRunner), the guards against non-finite values and against
overwriting another run, the step line, checkpoint and model-file
bookkeeping over a model's ModelBuffers (model.h), and the flags both
parse.
*/
#pragma once

#include <chrono>
#include <cerrno>
#include <cstring>
#include <unistd.h>
#include <sys/resource.h>
#include <string>
#include <vector>
#include "cuda_common.h"
#include "adamw.cuh"
#include "checkpoint.h"
#include "logger.h"
#include "model.h"
#include "utils.h"

// linear warmup, then cosine decay from lr to lr * final_frac at max_steps
static float learning_rate(float lr, int step, int warmup, int max_steps, float final_frac) {
    if (step < warmup) return lr * (step + 1) / warmup;
    if (max_steps <= warmup) return lr;
    float ratio = (float)(step - warmup) / (float)(max_steps - warmup);
    float coeff = 0.5f * (1.0f + cosf(3.14159265358979f * ratio));
    float min_lr = lr * final_frac;
    return min_lr + coeff * (lr - min_lr);
}

// "1h02m" / "3m07s" / "12s"
static void format_duration(char* out, size_t n, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, n, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60) snprintf(out, n, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, n, "%lds", s);
}

// wall-clock seconds; host_clock() differences time a step once the device is synchronized
static double host_clock() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// HOST_PROFILE=1 on the host backend: one line per training step with the
// kernel launches, cuBLAS calls, copies and synchronizations it asked for
// (llmc/host_backend.h), the proxies of its launch overhead on a GPU
static void step_profile_begin() {
#ifndef __CUDACC__
    host_profile_step_begin();
#endif
}
static void step_profile_end(int step) {
#ifndef __CUDACC__
    host_profile_step_end(step);
#else
    (void)step;
#endif
}

// ----------------------------------------------------------------------------
// the training step, eagerly or as a CUDA graph
//
// A trainer runs its work on one stream of its own (main_stream, and the
// cuBLAS handle's, with a workspace of its own as cuBLAS needs for capture).
// A training step is: the loop uploads the batch (model_upload_batch) and
// runs step_run, which writes the step's scalars (model.h's StepParams:
// learning rate, bias corrections, step) to the device, runs the model's
// forward and backward and model_update_device, and brings back the loss
// and the norm in one device-to-host copy. With kernel_choices.step_graph, the forward,
// backward, clipping and AdamW of the second step are captured into a CUDA
// graph once (the first step runs eagerly: lazily grown scratch buffers,
// such as LayerNorm's, are allocated then, not during the capture), and
// every later step replays it with one cudaGraphLaunch; nothing that changes
// between steps is a kernel argument, so the replays compute what eager
// steps compute, bit for bit. Validation, sampling and checkpoints run
// outside the graph, on the same stream. On the host backend the capture and
// the replays are emulated (llmc/host_backend.h), with the GPU's refusals
// of what a capture must not contain.
//
// kernel_choices.step_graph (llmc/kernel_choices.h) says whether: on under
// nvcc, on the host with HOST_VARIANTS=gpu; STEP_GRAPH=0|1 overrides it.

#ifdef __CUDACC__
#define STEP_CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20)  // cuBLAS's recommendation for Hopper
#else
#define STEP_CUBLAS_WORKSPACE_BYTES ((size_t)4096)     // the host's BLAS takes none; a token buffer
#endif

typedef struct {
    bool use_graph;
    cudaStream_t stream;       // the trainer's stream (main_stream)
    void* cublas_workspace;
    cudaGraphExec_t graph;     // the captured step; null until captured
    int steps_run;             // steps this run has taken so far (the first is eager)
} StepRunner;

// the trainer's stream for every launch and cuBLAS call of the model, and the handle's workspace
static void step_runner_init(StepRunner* r, ModelBuffers* m) {
    r->use_graph = kernel_choices.step_graph;
    cudaCheck(cudaStreamCreate(&r->stream));
    main_stream = r->stream;
    cublasCheck(cublasSetStream(m->cublas, r->stream));  // resets the workspace: set it after
    cudaCheck(cudaMalloc(&r->cublas_workspace, STEP_CUBLAS_WORKSPACE_BYTES));
    cublasCheck(cublasSetWorkspace(m->cublas, r->cublas_workspace, STEP_CUBLAS_WORKSPACE_BYTES));
    r->graph = nullptr;
    r->steps_run = 0;
}

static void step_runner_free(StepRunner* r, ModelBuffers* m) {
    cudaCheck(cudaStreamSynchronize(r->stream));
    if (r->graph) cudaCheck(cudaGraphExecDestroy(r->graph));
    cublasCheck(cublasSetStream(m->cublas, 0));
    main_stream = 0;
    cudaCheck(cudaFree(r->cublas_workspace));
    cudaCheck(cudaStreamDestroy(r->stream));
}

// Captures forward_backward() and the update into r->graph (device work
// only: anything that copies from or waits for the host fails the capture,
// loudly, on both backends)
template <typename F> static void step_capture(StepRunner* r, ModelBuffers* m, const AdamWConfig* o, F& forward_backward) {
    cudaGraph_t graph;
    cudaCheck(cudaStreamBeginCapture(r->stream, cudaStreamCaptureModeGlobal));
    forward_backward();
    model_update_device(m, o);
    cudaCheck(cudaStreamEndCapture(r->stream, &graph));
    cudaCheck(cudaGraphInstantiate(&r->graph, graph, 0));
    cudaCheck(cudaGraphDestroy(graph));
}

// One training step at learning rate lr and the 1-based step t, the batch
// already on the device and m->in_train_step set: the step's scalars to the
// device, forward_backward() and the update (eagerly, or the captured graph's
// replay), then the one copy back. Returns the gradient norm; m->mean_loss
// holds the loss.
template <typename F> static float step_run(StepRunner* r, ModelBuffers* m, const AdamWConfig* o, float lr, int t,
                                            F forward_backward) {
    StepParams params = model_step_params(o, lr, t);
    model_upload_step_params(m, &params);
    if (r->use_graph && r->steps_run > 0) {
        if (!r->graph) step_capture(r, m, o, forward_backward);
        cudaCheck(cudaGraphLaunch(r->graph, r->stream));
    } else {
        forward_backward();
        model_update_device(m, o);
    }
    r->steps_run++;
    return model_step_result(m);
}

// Peak memory of the run so far, MiB: the process's resident set on the host
// backend (where device memory is host memory); on a GPU, the device memory
// in use now (the buffers are allocated once, so this is the peak).
static double peak_memory_mib() {
#ifdef __CUDACC__
    size_t free_bytes = 0, total_bytes = 0;
    cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
    return (total_bytes - free_bytes) / 1048576.0;
#else
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss / 1024.0;
#endif
}

// "step 12/500: train loss 2.310 | lr 1.00e-03 | norm 0.83 | 45.1 ms | 22700 tok/s | ETA 3m07s"
static void print_step(int step, int start_step, int max_steps, float loss, float lr, float norm, double seconds,
                       long items, const char* rate_unit, double train_seconds) {
    char eta[32];
    format_duration(eta, sizeof(eta), train_seconds / (step - start_step) * (max_steps - step));
    printf("step %4d/%d: train loss %f | lr %.2e | norm %.3f | %.1f ms | %.0f %s | ETA %s\n", step, max_steps, loss, lr,
           norm, seconds * 1e3, items / seconds, rate_unit, eta);
    fflush(stdout);
}

// ----------------------------------------------------------------------------
// guards

// The newest checkpoint in the output directory (may be null), or "none written".
static std::string last_checkpoint(const char* out_dir) {
    if (out_dir) {
        std::vector<int> steps = checkpoint_steps(out_dir);
        if (!steps.empty()) return checkpoint_path(out_dir, steps.back());
    }
    return "none written";
}

// A fresh run (no -y) must not write over another run's checkpoints.
static void check_output_dir_fresh(const char* out_dir) {
    if (!out_dir) return;
    std::vector<int> steps = checkpoint_steps(out_dir);
    if (!steps.empty())
        fail("flag -o: %s already holds the checkpoints of a run (newest at step %d); resume it with -y 1 or choose another directory",
             out_dir, steps.back());
}

// Stops the run on a non-finite loss or gradient norm. The update was not
// applied (model_update skips it), and no checkpoint is written after this,
// so the newest checkpoint in -o is the last good one.
static void check_finite(const char* out_dir, int step, float loss, float norm) {
    if (std::isfinite(loss) && std::isfinite(norm)) return;
    fail("step %d: train loss %g, gradient norm %g: stopping; the last good checkpoint is %s", step, loss, norm,
         last_checkpoint(out_dir).c_str());
}

// Before a checkpoint or model file is written: stops the run if the
// parameters' norm is not finite (an update overflowed), so that every file
// written holds finite parameters.
static void check_params_finite(ModelBuffers* m, const char* out_dir, int step) {
    global_norm(m->norm_buffer, m->params_memory, m->num_parameters, 0.0f);
    float norm;
    cudaCheck(cudaMemcpy(&norm, m->norm_buffer, sizeof(float), cudaMemcpyDeviceToHost));
    if (!std::isfinite(norm))
        fail("step %d: the parameters' norm is %g: stopping without writing; the last good checkpoint is %s", step,
             norm, last_checkpoint(out_dir).c_str());
}

// ----------------------------------------------------------------------------
// files

// Writes out_dir's checkpoint of this step (the last 3 are kept). The two
// generator slots hold what the task needs to resume (see the loops).
static void save_checkpoint(ModelBuffers* m, const char* out_dir, int step, uint64_t train_rng, uint64_t sample_rng,
                            int B, int T) {
    check_params_finite(m, out_dir, step);
    CheckpointState s = {m->kind, {0}, step, train_rng, sample_rng, B, T, {0}};
    memcpy(s.config, m->config_slots, sizeof(s.config));
    memcpy(s.image_shape, m->image_shape, sizeof(s.image_shape));
    checkpoint_save(checkpoint_path(out_dir, step).c_str(), &s, m->params_memory, m->m_memory, m->v_memory);
    checkpoint_prune(out_dir, 3);
}

// Loads the newest checkpoint in out_dir into the model's parameters and
// moments; returns its state and path (the caller checks B and T).
static CheckpointState load_newest_checkpoint(ModelBuffers* m, const char* out_dir, std::string* path) {
    std::vector<int> steps = checkpoint_steps(out_dir);
    if (steps.empty()) fail("flag -y: no checkpoint in %s", out_dir);
    CheckpointState s;
    s.kind = m->kind;
    memcpy(s.config, m->config_slots, sizeof(s.config));
    *path = checkpoint_path(out_dir, steps.back());
    checkpoint_load(path->c_str(), &s, m->slot_names, m->params_memory, m->m_memory, m->v_memory);
    printf("resumed from %s at step %d\n", path->c_str(), s.step);
    return s;
}

// out_dir/model.bin, after checking the parameters are finite
static void save_model_file(ModelBuffers* m, const char* out_dir, int step) {
    std::string path = std::string(out_dir) + "/model.bin";
    check_params_finite(m, out_dir, step);
    model_file_save(path.c_str(), m->kind, m->config_slots, m->image_shape, m->params_memory);
    printf("wrote %s\n", path.c_str());
}

// loads the parameters from a model file; its kind and config must match the model's
static void load_model_file(ModelBuffers* m, const char* path) {
    model_file_load(path, m->kind, m->config_slots, m->slot_names, m->params_memory);
}

// ----------------------------------------------------------------------------
// presets (-S): the defaults a run starts from, before the flags given. The
// seed configuration is the write-up's (the GPU build's default); the CPU
// configuration trains in about five minutes on two cores (the host
// backend's default). Each trainer defines both.

#define PRESET_SEED 0
#define PRESET_CPU 1
#ifdef __CUDACC__
#define DEFAULT_PRESET PRESET_SEED
#else
#define DEFAULT_PRESET PRESET_CPU
#endif

// the preset named by -S among the arguments, else the backend's default
static int find_preset(int argc, char** argv) {
    int preset = DEFAULT_PRESET;
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "-S")) continue;
        if (!strcmp(argv[i + 1], "seed")) preset = PRESET_SEED;
        else if (!strcmp(argv[i + 1], "cpu")) preset = PRESET_CPU;
        else fail("flag -S: '%s' is not a preset (seed or cpu)", argv[i + 1]);
    }
    return preset;
}

// A data file that is missing: one line that names it and, for the default
// data paths, the make target that writes it.
static void check_data_file(const char* path, const char* default_path, const char* how) {
    if (access(path, R_OK) == 0) return;
    if (!strcmp(path, default_path)) fail("%s: cannot open (%s); %s writes it", path, strerror(errno), how);
    fail("%s: cannot open (%s)", path, strerror(errno));
}

// The next "-x value" pair of the arguments from argv[*i] (advancing *i):
// returns the flag's letter and sets *value, or 'h' for -h / --help. Fails on
// anything else than a two-letter flag, a shape letter (of shape_letters)
// this model does not take (not in allowed), or a missing value.
static char next_flag(int argc, char** argv, int* i, const char* shape_letters, const char* allowed, const char** value) {
    const char* f = argv[*i];
    if (!strcmp(f, "-h") || !strcmp(f, "--help")) return 'h';
    if (f[0] != '-' || strlen(f) != 2) fail("unknown argument '%s' (see -h)", f);
    if (strchr(shape_letters, f[1]) && !strchr(allowed, f[1])) fail("unknown flag %s for this model (see -h)", f);
    if (*i + 1 >= argc) fail("flag %s needs a value (see -h)", f);
    *value = argv[++*i];
    return f[1];
}

// The flags both kinds of trainer take in the same sense (lm_trainer.h's
// parse_train_flags, vision_trainer.h's parse_vision_flags), from the letter
// and value of next_flag into the fields of these names of either config
// (TrainConfig, VisionTrainConfig). Returns whether the letter was one of them.
template <typename Config> static bool parse_shared_flag(Config* c, char letter, const char* f, const char* v) {
    switch (letter) {
        case 'i': c->train_path = v; return true;
        case 'e': c->init_path = v; return true;
        case 'o': c->out_dir = v; return true;
        case 'n': c->checkpoint_every = parse_int_flag(f, v, 0, 1 << 30); return true;
        case 'y': c->resume = parse_int_flag(f, v, 0, 1); return true;
        case 'x': c->max_steps = parse_int_flag(f, v, 0, 1 << 30); return true;
        case 'l': c->lr = parse_float_flag(f, v, 0.0f, 10.0f); return true;
        case 'u': c->warmup = parse_int_flag(f, v, 0, 1 << 30); return true;
        case 'q': c->final_frac = parse_float_flag(f, v, 0.0f, 1.0f); return true;
        case 'c': c->weight_decay = parse_float_flag(f, v, 0.0f, 10.0f); return true;
        case 'p': c->grad_clip = parse_float_flag(f, v, 0.0f, 1e6f); return true;
        case 'r': c->seed = parse_int_flag(f, v, 0, 2147483647); return true;
        case 'L': c->L = parse_int_flag(f, v, 1, 1024); return true;
        case 'C': c->C = parse_int_flag(f, v, 1, 1 << 16); return true;
        case 'H': c->H = parse_int_flag(f, v, 1, 1024); return true;
        case 'F': c->F = parse_int_flag(f, v, 1, 1 << 20); return true;
        default: return false;
    }
}

// the first line a trainer prints
static void print_preset(int preset) {
    if (preset == PRESET_CPU)
        printf("preset cpu: defaults sized for a CPU (minutes on 2 cores); -S seed gives the write-up's configuration; "
               "flags given win\n");
    else
        printf("preset seed: the write-up's configuration; -S cpu gives defaults sized for a CPU; flags given win\n");
}

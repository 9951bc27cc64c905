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
#include <fcntl.h>
#include <unistd.h>
#include <sys/file.h>
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
    r->use_graph = kernel_choices.step_graph && !dist.on;  // under mpirun the steps run eagerly
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
// the output directory (-o): one run at a time, and nothing there lost
//
// A run that trains holds its directory from before it writes anything
// there until it exits: DIR/run.lock, locked with flock (which the kernel
// releases however the process ends) and holding the holder's pid, removed
// at exit. A second run refuses the directory while the first lives; the
// lock file of a killed run is taken over with a message. A fresh run (no
// -y) starts only in a directory that holds no run's files; a resume only
// from a checkpoint that verifies; an evaluation (-x 0) writes its log and
// model.bin only into a fresh directory. The log is appended to, one whole
// line at a time (logger.h). Checkpoints the run found are pruned only once
// it has ended well, so a run that fails leaves every file it found.

#define RUN_LOCK_NAME "run.lock"

static int run_lock_fd = -1;
static std::string run_lock_path;

static void release_run_lock() {
    if (run_lock_fd < 0) return;
    unlink(run_lock_path.c_str());  // while still locked: no other run holds this file
    close(run_lock_fd);
    run_lock_fd = -1;
}

// the pid a lock file names (0: none)
static long lock_file_holder(int fd) {
    char text[32] = {0};
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    return n > 0 ? atol(text) : 0;
}

// Holds dir (which exists) for this run, or fails naming the run that does.
static void take_run_lock(const char* dir) {
    if (run_lock_fd >= 0) return;
    std::string path = std::string(dir) + "/" RUN_LOCK_NAME;
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) fail("flag -o: cannot create %s (%s)", path.c_str(), strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int err = errno;
            long holder = lock_file_holder(fd);
            close(fd);
            if (err == EWOULDBLOCK)
                fail("flag -o: %s is in use by another run (pid %ld holds %s); wait for it to end or choose another directory",
                     dir, holder, path.c_str());
            fail("flag -o: cannot lock %s (%s)", path.c_str(), strerror(err));
        }
        // the holder before may have removed the file between our open and flock: hold the one at path
        struct stat held, named;
        if (fstat(fd, &held) != 0 || stat(path.c_str(), &named) != 0 || held.st_ino != named.st_ino ||
            held.st_dev != named.st_dev) {
            close(fd);
            continue;
        }
        long stale = lock_file_holder(fd);
        if (stale > 0)
            printf("%s: taking it over from pid %ld, which ended without releasing it\n", path.c_str(), stale);
        char text[32];
        int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, text, n, 0) != n) fail("%s: write failed (%s)", path.c_str(), strerror(errno));
        run_lock_fd = fd;
        run_lock_path = path;
        static bool registered = false;
        if (!registered) atexit(release_run_lock);
        registered = true;
        return;
    }
    fail("flag -o: cannot lock %s: it keeps being replaced", path.c_str());
}

// whether dir is missing or holds nothing but a lock file
static bool output_dir_empty(const char* dir) {
    DIR* d = opendir(dir);
    if (!d) return errno == ENOENT;
    bool empty = true;
    while (struct dirent* e = readdir(d))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, RUN_LOCK_NAME)) empty = false;
    closedir(d);
    return empty;
}

// The files a run leaves in its output directory, which a fresh run must not find there.
static void check_output_dir_fresh(const char* out_dir) {
    std::vector<int> steps = checkpoint_steps(out_dir);
    if (!steps.empty())
        fail("flag -o: %s already holds the checkpoints of a run (newest at step %d); resume it with -y 1 or choose another directory",
             out_dir, steps.back());
    for (const char* name : {"model.bin", "log.jsonl"}) {
        std::string path = std::string(out_dir) + "/" + name;
        if (access(path.c_str(), F_OK) == 0)
            fail("flag -o: %s already holds a run's %s; choose another directory (a fresh run writes over nothing)",
                 out_dir, name);
    }
}

// The directory this run writes into, held (take_run_lock), or null for
// none. A resume's (-y 1) must exist; a fresh training run's is created if
// needed and must hold no run's files; an evaluation's (-x 0, evaluates
// true) is written into only when it is fresh (missing or empty), else the
// run writes nothing.
static const char* open_output_dir(const char* out_dir, int resume, bool evaluates) {
    if (!out_dir || dist.rank != 0) return nullptr;  // over several ranks rank 0 writes (the others read a resume's -o)
    struct stat st;
    bool exists = stat(out_dir, &st) == 0;
    if (exists && !S_ISDIR(st.st_mode)) fail("flag -o: %s is not a directory", out_dir);
    if (resume) {
        if (!exists) fail("flag -y: no checkpoint in %s (no such directory)", out_dir);
        take_run_lock(out_dir);
        return out_dir;
    }
    if (evaluates && !output_dir_empty(out_dir)) {
        printf("evaluation only (-x 0): %s already holds files; nothing is written there\n", out_dir);
        return nullptr;
    }
    make_dir_or_fail(out_dir);
    take_run_lock(out_dir);
    if (evaluates && !output_dir_empty(out_dir)) {  // another run wrote there before we held it
        printf("evaluation only (-x 0): %s already holds files; nothing is written there\n", out_dir);
        release_run_lock();
        return nullptr;
    }
    check_output_dir_fresh(out_dir);
    return out_dir;
}

// ----------------------------------------------------------------------------
// guards

// The newest checkpoint in the output directory that passes every check a
// resume makes (its checksums, finite values) and is older than step
// `before`, or "none written".
static std::string last_checkpoint(const char* out_dir, int before = 1 << 30) {
    if (out_dir) {
        std::vector<int> steps = checkpoint_steps(out_dir);
        for (int i = (int)steps.size() - 1; i >= 0; i--) {
            std::string path = checkpoint_path(out_dir, steps[i]);
            if (steps[i] < before && checkpoint_problem(path.c_str()).empty()) return path;
        }
    }
    return "none written";
}

// Stops the run on a non-finite loss or gradient norm. The update was not
// applied (model_update skips it), and no checkpoint is written after this,
// so the newest checkpoint in -o that verifies is the last good one.
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

// With ZeRO-1 (model.h) the AdamW moments of every rank's shard gathered
// into full-size device buffers (every rank calls this; the caller frees
// them); else the model's own.
static void gather_moments(ModelBuffers* m, float** mm, float** vv) {
    *mm = m->m_memory;
    *vv = m->v_memory;
    if (!m->zero) return;
    long padded = m->shard_size * dist.world;
    for (float** full : {mm, vv}) cudaCheck(cudaMalloc(full, padded * sizeof(float)));
    cudaCheck(cudaMemcpy(*mm + m->shard_begin, m->m_memory, m->shard_size * sizeof(float), cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemcpy(*vv + m->shard_begin, m->v_memory, m->shard_size * sizeof(float), cudaMemcpyDeviceToDevice));
    dist_all_gather(*mm, m->shard_size);
    dist_all_gather(*vv, m->shard_size);
    cudaCheck(cudaDeviceSynchronize());
}

// Writes out_dir's checkpoint of this step and prunes all but the newest 3,
// but never one in `found` (the checkpoints there when the run started,
// which stay until it ends well). The two generator slots hold what the
// task needs to resume (see the loops); seed and data_size are the run's
// seed and the size of its training data, which a resume must match; B is
// the global batch (-b times the ranks). Over several ranks every rank
// calls it (out_dir null but on rank 0): with ZeRO-1 the moments are
// gathered first, and the file holds them whole, as a plain run's.
static void save_checkpoint(ModelBuffers* m, const char* out_dir, int step, uint64_t train_rng, uint64_t sample_rng,
                            int B, int T, int seed, long data_size, const std::vector<int>& found) {
    float *mm, *vv;
    gather_moments(m, &mm, &vv);
    if (!out_dir) {
        if (m->zero) for (float* full : {mm, vv}) cudaCheck(cudaFree(full));
        return;
    }
    check_params_finite(m, out_dir, step);
    CheckpointState s;
    memset(&s, 0, sizeof(s));
    s.kind = m->kind;
    memcpy(s.config, m->config_slots, sizeof(s.config));
    s.step = step; s.train_rng = train_rng; s.sample_rng = sample_rng; s.B = B; s.T = T;
    s.seed = seed;
    s.data_size = (int)data_size;
    memcpy(s.image_shape, m->image_shape, sizeof(s.image_shape));
    checkpoint_save(checkpoint_path(out_dir, step).c_str(), &s, m->params_memory, mm, vv);
    checkpoint_prune(out_dir, 3, found);
    if (m->zero) for (float* full : {mm, vv}) cudaCheck(cudaFree(full));
}

// Loads the newest checkpoint in out_dir into the model's parameters and
// moments; returns its state and path (the caller checks B and T, the seed
// and the data, the steps).
static CheckpointState load_newest_checkpoint(ModelBuffers* m, const char* out_dir, std::string* path) {
    std::vector<int> steps = checkpoint_steps(out_dir);
    if (steps.empty()) fail("flag -y: no checkpoint in %s", out_dir);
    CheckpointState s;
    s.kind = m->kind;
    memcpy(s.config, m->config_slots, sizeof(s.config));
    *path = checkpoint_path(out_dir, steps.back());
    std::string problem = checkpoint_problem(path->c_str());
    if (!problem.empty()) fail("%s; the last good checkpoint is %s", problem.c_str(), last_checkpoint(out_dir, steps.back()).c_str());
    if (m->zero) {  // the file's moments whole, then this rank's shard of them
        float *mm, *vv;
        long padded = m->shard_size * dist.world;
        for (float** full : {&mm, &vv}) {
            cudaCheck(cudaMalloc(full, padded * sizeof(float)));
            cudaCheck(cudaMemset(*full, 0, padded * sizeof(float)));
        }
        checkpoint_load(path->c_str(), &s, m->slot_names, m->params_memory, mm, vv);
        cudaCheck(cudaMemcpy(m->m_memory, mm + m->shard_begin, m->shard_size * sizeof(float), cudaMemcpyDeviceToDevice));
        cudaCheck(cudaMemcpy(m->v_memory, vv + m->shard_begin, m->shard_size * sizeof(float), cudaMemcpyDeviceToDevice));
        for (float* full : {mm, vv}) cudaCheck(cudaFree(full));
    } else {
        checkpoint_load(path->c_str(), &s, m->slot_names, m->params_memory, m->m_memory, m->v_memory);
    }
    printf("resumed from %s at step %d\n", path->c_str(), s.step);
    return s;
}

// What a resume checks of its checkpoint beyond the model: the run's seed
// (a seed given with -r must be the run's), the training data (its size:
// the data position of a step depends on it) and the steps (-x, or -E with
// the vision trainers, must go past the checkpoint's). seed is the
// checkpoint's seed (-1: not recorded), data_what names the data,
// steps_flag the flag that set max_steps.
static void check_resume(const char* path, const CheckpointState* s, int seed, bool seed_given, int given_seed,
                         long data_size, const char* data_path, const char* data_what, int max_steps,
                         const char* steps_flag) {
    if (seed_given && seed >= 0 && given_seed != seed)
        fail("flag -r: %d, but %s continues a run of seed %d; leave -r out to resume it", given_seed, path, seed);
    if (s->data_size > 0 && s->data_size != data_size)
        fail("%s: written for training data of %d %s, but %s has %ld; a resume must see the same data", path,
             s->data_size, data_what, data_path, data_size);
    if (max_steps <= s->step)
        fail("flag %s: the run ends at step %d, but %s is at step %d; a resume trains past its checkpoint", steps_flag,
             max_steps, path, s->step);
}

// Over several ranks, before the first step: every rank must hold the
// same model (its kind and shape, then its parameters: the same model file
// of -e, seed or checkpoint) and run the same settings (`run`: the batch,
// steps, the step it starts from, the data's size ...); else every rank
// fails with one line, before any collective that a difference would
// derail.
static void check_ranks_alike(ModelBuffers* m, const std::vector<long>& run) {
    if (dist.world == 1) return;
    uint64_t shape = dist_hash(DIST_HASH_START, &m->kind, sizeof(m->kind));
    shape = dist_hash(shape, m->config_slots, sizeof(m->config_slots));
    shape = dist_hash(shape, m->image_shape, sizeof(m->image_shape));
    dist_check_same("the model's kind or shape (the model file of -e, or the shape flags)", shape);
    dist_check_same("the run's settings (the flags, the data's size, or the checkpoint resumed)",
                    dist_hash(DIST_HASH_START, run.data(), run.size() * sizeof(long)));
    std::vector<float> params(m->num_parameters);
    cudaCheck(cudaMemcpy(params.data(), m->params_memory, params.size() * sizeof(float), cudaMemcpyDeviceToHost));
    dist_check_same("the model's parameters (the model file of -e, the seed -r, or the checkpoint resumed)",
                    dist_hash(DIST_HASH_START, params.data(), params.size() * sizeof(float)));
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

// The value of the last `flag` among the arguments (null: not given),
// read as the flag parsers read them: "-x value" pairs, and -h alone, so
// that a value that reads like a flag (a prompt "-S", a path) is not taken
// for one. For what must be known before the flags are parsed (-S).
static const char* find_flag(int argc, char** argv, const char* flag) {
    const char* value = nullptr;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) continue;
        if (i + 1 < argc && !strcmp(argv[i], flag)) value = argv[i + 1];
        i++;  // the value
    }
    return value;
}

// the preset named by -S among the arguments, else the backend's default
static int find_preset(int argc, char** argv) {
    const char* name = find_flag(argc, argv, "-S");
    if (!name) return DEFAULT_PRESET;
    if (!strcmp(name, "seed")) return PRESET_SEED;
    if (!strcmp(name, "cpu")) return PRESET_CPU;
    fail("flag -S: '%s' is not a preset (seed or cpu)", name);
}

// A file a run will write (the flag that names it, its path), checked
// before any work: it names a file, its directory exists and is writable,
// it is not in out_dir (when given: -o, whose files are the run's), and an
// existing file there is `what` (its first int the magic number, so the run
// may replace it) or empty; anything else is not overwritten.
static void check_output_file(const char* flag, const char* path, int magic, const char* what, const char* out_dir) {
    size_t n = strlen(path);
    if (n == 0 || path[n - 1] == '/') fail("flag %s: '%s' names no file", flag, path);
    const char* slash = strrchr(path, '/');
    std::string dir = !slash ? "." : slash == path ? "/" : std::string(path, slash - path);
    struct stat d, o, f;
    if (stat(dir.c_str(), &d) != 0) fail("flag %s: %s: no directory %s (%s)", flag, path, dir.c_str(), strerror(errno));
    if (!S_ISDIR(d.st_mode)) fail("flag %s: %s: %s is not a directory", flag, path, dir.c_str());
    if (access(dir.c_str(), W_OK) != 0) fail("flag %s: %s: cannot write in %s (%s)", flag, path, dir.c_str(), strerror(errno));
    if (out_dir && stat(out_dir, &o) == 0 && o.st_dev == d.st_dev && o.st_ino == d.st_ino)
        fail("flag %s: %s is in the output directory %s (-o), which holds the run's files; name a path outside it", flag,
             path, out_dir);
    if (stat(path, &f) != 0) return;
    if (S_ISDIR(f.st_mode)) fail("flag %s: %s is a directory; name a file", flag, path);
    int first = 0;
    FILE* fp = fopen(path, "rb");
    bool same_kind = S_ISREG(f.st_mode) && fp && fread(&first, 4, 1, fp) == 1 && first == magic;
    if (fp) fclose(fp);
    if (!same_kind && !(S_ISREG(f.st_mode) && f.st_size == 0))
        fail("flag %s: %s exists and is not %s; not overwritten (remove it or name another path)", flag, path, what);
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

// The shape flags given (their letters, in c->shape_given): with -e the model
// file decides the shape, and a shape flag given too must say what the file
// says. note_shape_flag records a letter; check_shape_flag compares a flag
// (letter, its value as given) with the file's slot (slot_name, value).
template <typename Config> static void note_shape_flag(Config* c, char letter) {
    if (!strchr(c->shape_given, letter)) c->shape_given[strlen(c->shape_given)] = letter;
}

template <typename Config>
static void check_shape_flag(const Config* c, char letter, const char* given, const char* slot_name, const char* in_file) {
    if (!c->init_path || !strchr(c->shape_given, letter) || !strcmp(given, in_file)) return;
    fail("flag -%c: %s, but %s has %s %s; with -e the model file decides the shape (leave -%c out)", letter, given,
         c->init_path, slot_name, in_file, letter);
}

template <typename Config> static void check_shape_flag_int(const Config* c, char letter, int given, const char* slot_name,
                                                            int in_file) {
    check_shape_flag(c, letter, std::to_string(given).c_str(), slot_name, std::to_string(in_file).c_str());
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
        case 'r': c->seed = parse_int_flag(f, v, 0, 2147483647); c->seed_given = 1; return true;
        case 'L': c->L = parse_int_flag(f, v, 1, 1024); note_shape_flag(c, 'L'); return true;
        case 'C': c->C = parse_int_flag(f, v, 1, 1 << 16); note_shape_flag(c, 'C'); return true;
        case 'H': c->H = parse_int_flag(f, v, 1, 1024); note_shape_flag(c, 'H'); return true;
        case 'F': c->F = parse_int_flag(f, v, 1, 1 << 20); note_shape_flag(c, 'F'); return true;
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

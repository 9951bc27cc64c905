/*
What every model owns besides its math, in one struct: the flat parameter
buffer with its gradients and AdamW moments, the flat activation buffer, the
device inputs and targets, a vector of ones (bias gradients), the global-norm
scratch, the mean loss of the last forward and the cuBLAS handle. A model
file (train_*.cu) describes its tensors in a table (TensorSpec: name, size,
weight decay, layers) in flat-buffer order, keeps a struct of float pointers
with one field per table row, and calls

  model_build(&m->buf, kind, slot_names, slots, table, n, &m->params, &m->grads, sizeof(m->params))
  model_allocate_activations(&m->buf, act_table, n, &m->acts, sizeof(m->acts), B, T, ...)
  model_update(&m->buf, &opt, lr, step)       global-norm clip + AdamW, decay per the table
  model_free(&m->buf)
  model_stage_batch(&m->buf, inputs, n, targets, n)   a forward's host inputs and targets to the device

as llm.c's malloc_and_point_parameters does for its GPT-2.

A training step asks the host for nothing until its end: the forward's mean
loss is reduced on the device (model_mean_loss), the norm, the clipping
factor and the non-finite check too (a non-finite norm makes the one AdamW
launch skip the update), and model_update brings back the loss and the norm
together in one device-to-host copy, the step's only wait. The training
loops set in_train_step around a step for this; outside a step (tests,
validation) model_mean_loss copies the loss back at once.

What changes from one training step to the next lives in device memory
(StepParams: AdamW's learning rate and bias corrections, the training step
that keys the dropout masks), as do the batch's inputs and targets; no
kernel takes them as arguments. In a training step the loop writes all of
them before the step (model_upload_batch, model_upload_step_params), and the
forward and the update copy nothing from the host (model_stage_batch and
model_stage_train_step do nothing then), so that the step's device work,
model_update_device included, can be captured once into a CUDA graph and
replayed (trainer.h). Outside a step the forward and model_update copy what
they are given.
*/
#pragma once

#include <cmath>
#include <vector>
#include "cuda_common.h"
#include "adamw.cuh"
#include "checkpoint.h"
#include "distributed.h"
#include "matmul.cuh"  // fill
#include "utils.h"

#define MAX_TENSORS 64
static_assert(MAX_TENSORS <= ADAMW_MAX_TENSORS, "a parameter table must fit AdamW's decay table");
// activation tables never reach AdamW, so they may be longer (the hybrid LM's
// with every kind of layer are the longest)
#define MAX_ACT_TENSORS 96

// one tensor of a flat buffer
typedef struct {
    const char* name;
    long size;   // floats
    int decay;   // parameters: AdamW's weight decay applies
    int layers;  // stacked over this many layers (1: not stacked); the tests compare layer by layer
} TensorSpec;

// the tensors of a table, one after another from base, into a struct of n float pointers
static void point_tensors(void* ptrs, float* base, const TensorSpec* table, int n) {
    float** p = (float**)ptrs;
    for (int i = 0; i < n; i++) { p[i] = base; base += table[i].size; }
}

// the rows [from, to) of a tensor table emptied (size 0): a part the model's variant lacks
static void empty_rows(TensorSpec* from, const TensorSpec* to) {
    for (TensorSpec* r = from; r < to; r++) r->size = 0;
}

static long table_total(const TensorSpec* table, int n) {
    long total = 0;
    for (int i = 0; i < n; i++) total += table[i].size;
    return total;
}

typedef struct {
    float lr, beta1, beta2, eps, weight_decay, grad_clip;
} AdamWConfig;

// A training step's scalars, in device memory (ModelBuffers.step_params)
typedef struct {
    AdamWStep adamw;  // the learning rate and bias corrections of step t
    int train_step;   // the 0-based step (t - 1): the dropout masks' key
} StepParams;

typedef struct {
    int kind;                         // MODEL_* (utils.h), as in model files and checkpoints
    const char* const* slot_names;    // the seven config slots' names
    int config_slots[CONFIG_SLOTS];   // the last is the number of parameters
    int image_shape[IMAGE_SHAPE_SLOTS];  // a vision model's images (channels, height, width); 0 0 0 for the LMs
    TensorSpec param_table[MAX_TENSORS];
    int num_param_tensors;
    long num_parameters;
    float* params_memory;
    float* grads_memory;
    float* m_memory;                  // AdamW moments
    float* v_memory;
    TensorSpec act_table[MAX_ACT_TENSORS];
    int num_act_tensors;
    long num_activations;
    float* acts_memory;
    int batch_size, seq_len;          // what the activations were sized for
    int* inputs;                      // device (B, T) token ids (language models)
    int* targets;                     // device: (B, T) tokens or (B) labels
    float* ones;                      // device, B*T ones (bias gradients)
    float* step_scalars;              // device: the mean loss, then the global-norm scratch (norm_buffer)
    float* norm_buffer;               // = step_scalars + 1: norm, scale, partials (adamw.cuh's global_norm)
    float* dloss;                     // device: 1 / the rows with a target of the last model_mean_target_loss
    StepParams* step_params;          // device: this step's learning rate, bias corrections and step
    AdamWDecayTable decay_table;      // the parameter tensors' ends and decay flags, for the one AdamW launch
    // data parallel (distributed.h): the flat buffers hold shard_size * world floats (the tail past
    // num_parameters is zeros), rank r's shard starts at shard_begin = r * shard_size and holds
    // shard_len parameters (up to num_parameters). The gradient norm is the sum over the ranks of
    // their shards' squares; with ZeRO-1 (zero) the AdamW moments hold the shard only and the
    // update runs over it (shard_table), then the parameters are gathered.
    long shard_size, shard_begin, shard_len;
    int zero;
    AdamWDecayTable shard_table;
    double* loss_sums;                // device: a training step's loss sum and target count, summed over the ranks
    int in_train_step;                // set by the training loops: the batch and StepParams are on the device
                                      // before the step, the loss stays there until model_step_result
    float mean_loss;                  // of the last forward with targets (in a training step: once model_update returned)
    cublasHandle_t cublas;
} ModelBuffers;

// Sizes and allocates the parameter-sized buffers from the table (moments
// zeroed), points the model's parameter and gradient structs into them and
// creates the cuBLAS handle. slots: the model's first six config slots (the
// seventh, the parameter count, is filled in). A model whose shape a model
// file's slots decide (model_file_config) must make the file's parameter
// count, checked before anything is allocated. An allocation that fails
// names the shape flags.
static void model_build(ModelBuffers* m, int kind, const char* const* slot_names, const int* slots,
                        const TensorSpec* table, int n, void* params, void* grads, size_t struct_bytes) {
    if (n > MAX_TENSORS || struct_bytes != n * sizeof(float*))
        fail("model_build: a table of %d tensors for a struct of %zu pointers", n, struct_bytes / sizeof(float*));
    m->kind = kind;
    m->slot_names = slot_names;
    memcpy(m->param_table, table, n * sizeof(TensorSpec));
    m->num_param_tensors = n;
    m->num_parameters = table_total(table, n);
    if (!shape_file_path.empty() && m->num_parameters != shape_file_params)
        fail("%s: num_params is %ld, but its config slots make a model of %ld parameters", shape_file_path.c_str(),
             shape_file_params, m->num_parameters);
    if (m->num_parameters > 2147483647L) fail("flags -L/-C: the model would have %ld parameters, more than 2^31 - 1", m->num_parameters);
    for (int i = 0; i < CONFIG_SLOTS - 1; i++) m->config_slots[i] = slots[i];
    m->config_slots[CONFIG_SLOTS - 1] = (int)m->num_parameters;
    for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) m->image_shape[i] = 0;
    long n_params = m->num_parameters;
    m->shard_size = CEIL_DIV(n_params, (long)dist.world);
    m->shard_begin = dist.rank * m->shard_size;
    m->shard_len = std::max(0L, std::min(n_params - m->shard_begin, m->shard_size));
    m->zero = dist.on && dist.zero;
    long padded = m->shard_size * dist.world, moments = m->zero ? m->shard_size : n_params;
    float** buffers[4] = {&m->params_memory, &m->grads_memory, &m->m_memory, &m->v_memory};
    // the four together must fit in the free memory: asked first, so that a model too large fails
    // before any of its buffers is allocated (and, on the host, committed)
    size_t need = (2 * padded + 2 * moments) * sizeof(float), free_bytes = 0, total_bytes = 0;
    bool fits = cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess || need <= free_bytes;
    for (int i = 0; i < 4; i++)
        if (!fits || cudaMalloc(buffers[i], (i < 2 ? padded : moments) * sizeof(float)) != cudaSuccess)
            fail("flags -L/-C: %ld parameters need %.1f GiB with gradients and AdamW moments; allocation failed",
                 n_params, need / (double)(1 << 30));
    cudaCheck(cudaMemset(m->m_memory, 0, moments * sizeof(float)));
    cudaCheck(cudaMemset(m->v_memory, 0, moments * sizeof(float)));
    if (padded > n_params) {  // the tail the collectives carry along: zeros, never written
        cudaCheck(cudaMemset(m->params_memory + n_params, 0, (padded - n_params) * sizeof(float)));
        cudaCheck(cudaMemset(m->grads_memory + n_params, 0, (padded - n_params) * sizeof(float)));
    }
    cudaCheck(cudaMalloc(&m->loss_sums, 2 * sizeof(double)));
    cudaCheck(cudaMalloc(&m->step_scalars, (1 + NORM_BUFFER_FLOATS) * sizeof(float)));
    m->norm_buffer = m->step_scalars + 1;
    cudaCheck(cudaMalloc(&m->dloss, sizeof(float)));
    cudaCheck(cudaMalloc(&m->step_params, sizeof(StepParams)));
    StepParams first = {adamw_step_of(0.0f, 0.0f, 0.0f, 1), 0};
    cudaCheck(cudaMemcpy(m->step_params, &first, sizeof(first), cudaMemcpyHostToDevice));
    memset(&m->decay_table, 0, sizeof(m->decay_table));
    m->decay_table.count = n;
    long end = 0;
    for (int i = 0; i < n; i++) {
        end += table[i].size;
        m->decay_table.end[i] = end;
        m->decay_table.decay[i] = table[i].decay != 0;
    }
    m->shard_table = m->decay_table;  // the shard's tensors: the ends shifted to the shard and clamped to it
    for (int i = 0; i < n; i++)
        m->shard_table.end[i] = std::max(0L, std::min(m->decay_table.end[i] - m->shard_begin, m->shard_len));
    m->in_train_step = 0;
    point_tensors(params, m->params_memory, table, n);
    point_tensors(grads, m->grads_memory, table, n);
    cublasCheck(cublasCreate(&m->cublas));
    m->acts_memory = nullptr;
    m->inputs = m->targets = nullptr;
    m->ones = nullptr;
    m->num_act_tensors = 0;
    m->num_activations = 0;
    m->batch_size = m->seq_len = 0;
    m->mean_loss = NAN;
}

// Sizes and allocates the activations from their table for batches up to
// B x T, and points the model's activation struct into them; inputs get B*T
// ints when with_inputs (token models), targets num_targets ints, ones B*T.
// flags names the flags that set the size, for the message when it fails.
static void model_allocate_activations(ModelBuffers* m, const TensorSpec* table, int n, void* acts, size_t struct_bytes,
                                       int B, int T, int with_inputs, long num_targets, const char* flags) {
    if (n > MAX_ACT_TENSORS || struct_bytes != n * sizeof(float*))
        fail("model_allocate_activations: a table of %d tensors for a struct of %zu pointers", n, struct_bytes / sizeof(float*));
    memcpy(m->act_table, table, n * sizeof(TensorSpec));
    m->num_act_tensors = n;
    m->num_activations = table_total(table, n);
    long BT = (long)B * T;
    cudaError_t e = cudaMalloc(&m->acts_memory, m->num_activations * sizeof(float));
    if (e != cudaSuccess)
        fail("flags %s: batch %d x %d needs %.1f GiB of activations, allocation failed (%s)", flags, B, T,
             m->num_activations * 4.0 / (1 << 30), cudaGetErrorString(e));
    point_tensors(acts, m->acts_memory, table, n);
    if (with_inputs) cudaCheck(cudaMalloc(&m->inputs, BT * sizeof(int)));
    cudaCheck(cudaMalloc(&m->targets, num_targets * sizeof(int)));
    cudaCheck(cudaMalloc(&m->ones, BT * sizeof(float)));
    fill(m->ones, 1.0f, BT);
    m->batch_size = B;
    m->seq_len = T;
}

// out[0] = the mean of losses[0..n), summed in double. One block: thread i
// sums the elements i, i + blockDim, ... in order, then a fixed tree over the
// threads' sums in shared memory (blockDim a power of two, at most
// MEAN_LOSS_THREADS). With one thread (the host backend's launch) it is the
// plain sum in index order; deterministic either way. With targets (n ints),
// the mean is over the rows whose target is not negative (the others' losses
// are 0), 0 when there are none, and dloss[0] = 1 / their number (0 when
// none): the backward's scale of each row's gradient. Without targets
// dloss[0] = 1 / n (when dloss is given). With sums_out (a training step over
// several ranks), the sum and the count (n without targets) go to
// sums_out[0], sums_out[1] instead, for mean_loss_finish_kernel once they are
// summed over the ranks.
__global__ void mean_loss_kernel(float* out, const float* losses, const int* targets, float* dloss, int n,
                                 double* sums_out) {
    __shared__ double sums[MEAN_LOSS_THREADS];
    __shared__ int counts[MEAN_LOSS_THREADS];
    int tid = threadIdx.x;
    double s = 0.0;
    int count = 0;
    for (int i = tid; i < n; i += blockDim.x) {
        s += losses[i];
        if (targets) count += targets[i] >= 0;
    }
    sums[tid] = s;
    counts[tid] = count;
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        __syncthreads();
        if (tid < half) { sums[tid] += sums[tid + half]; counts[tid] += counts[tid + half]; }
    }
    if (tid != 0) return;  // thread 0 wrote sums[0] and counts[0] last itself
    if (sums_out) { sums_out[0] = sums[0]; sums_out[1] = targets ? counts[0] : n; return; }
    if (!targets) {
        out[0] = (float)(sums[0] / n);
        if (dloss) dloss[0] = 1.0f / (float)n;
        return;
    }
    int rows = counts[0];
    out[0] = rows ? (float)(sums[0] / rows) : 0.0f;
    dloss[0] = rows ? 1.0f / (float)rows : 0.0f;
}

// the mean and the backward's scale from the loss sum and count of every rank (mean_loss_kernel's sums)
__global__ void mean_loss_finish_kernel(float* out, const double* sums, float* dloss) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    int rows = (int)sums[1];
    out[0] = rows ? (float)(sums[0] / rows) : 0.0f;
    dloss[0] = rows ? 1.0f / (float)rows : 0.0f;
}

// In a training step over several ranks the mean is the global batch's: the
// sum and the count are summed over the ranks before the mean, and the
// backward's scale is 1 / the global count.
static void model_mean_loss_launch(ModelBuffers* m, const float* losses, const int* targets, int n) {
    bool global = m->in_train_step && dist.on;
    LAUNCH(mean_loss_kernel, 1, kernel_choices.mean_loss_threads, 0)(m->step_scalars, losses, targets, m->dloss, n,
                                                                     global ? m->loss_sums : nullptr);
    cudaCheck(cudaGetLastError());
    if (global) {
        dist_allreduce_doubles(m->loss_sums, 2);
        LAUNCH(mean_loss_finish_kernel, 1, 1, 0)(m->step_scalars, m->loss_sums, m->dloss);
        cudaCheck(cudaGetLastError());
    }
    if (!m->in_train_step) cudaCheck(cudaMemcpy(&m->mean_loss, m->step_scalars, sizeof(float), cudaMemcpyDeviceToHost));
}

// The mean of n per-row losses on the device, into step_scalars[0], and
// m->dloss = 1 / n (crossentropy_backward_device's scale); outside a
// training step also copied into mean_loss now (in a step model_update
// brings it back with the norm).
static void model_mean_loss(ModelBuffers* m, const float* losses, int n) { model_mean_loss_launch(m, losses, nullptr, n); }

// The same over the rows of targets (device, n) that have a target (not
// negative; crossentropy.cuh gave the others a loss of 0), and m->dloss =
// 1 / their number for crossentropy_backward_device. When every row has a
// target, the mean and the scale are model_mean_loss's and 1.0f / n, bit
// for bit.
static void model_mean_target_loss(ModelBuffers* m, const float* losses, const int* targets, int n) {
    model_mean_loss_launch(m, losses, targets, n);
}

// ----------------------------------------------------------------------------
// the step's inputs on the device

// Copies a batch's host inputs and targets (either may be null) into the
// device buffers the forward reads, on main_stream
static void model_upload_batch(ModelBuffers* m, const int* inputs, long n_inputs, const int* targets, long n_targets) {
    if (inputs) cudaCheck(cudaMemcpyAsync(m->inputs, inputs, n_inputs * sizeof(int), cudaMemcpyHostToDevice, main_stream));
    if (targets) cudaCheck(cudaMemcpyAsync(m->targets, targets, n_targets * sizeof(int), cudaMemcpyHostToDevice, main_stream));
}

// What a forward does with its host inputs: uploads them, but in a training
// step, where the loop uploaded the batch before the step
static void model_stage_batch(ModelBuffers* m, const int* inputs, long n_inputs, const int* targets, long n_targets) {
    if (!m->in_train_step) model_upload_batch(m, inputs, n_inputs, targets, n_targets);
}

// a training step's scalars: AdamW's at lr and the 1-based step t, and the step t - 1 for dropout
static StepParams model_step_params(const AdamWConfig* o, float lr, int t) {
    StepParams p = {adamw_step_of(lr, o->beta1, o->beta2, t), t - 1};
    return p;
}

static void model_upload_step_params(ModelBuffers* m, const StepParams* p) {
    cudaCheck(cudaMemcpyAsync(m->step_params, p, sizeof(StepParams), cudaMemcpyHostToDevice, main_stream));
}

// A forward at training step train_step (the vision models' dropout): writes
// it to the device, but in a training step, where the loop wrote it
static void model_stage_train_step(ModelBuffers* m, int train_step) {
    if (!m->in_train_step)
        cudaCheck(cudaMemcpyAsync(&m->step_params->train_step, &train_step, sizeof(int), cudaMemcpyHostToDevice, main_stream));
}

// the training step in device memory, for the dropout sites
static const int* model_train_step(const ModelBuffers* m) { return &m->step_params->train_step; }

// A model's dropout (the vision models' and the language models'): the rate
// at training steps, the run's seed (the masks are dropout.cuh's hash of
// seed, step, site and element), and the rate the last forward used, for the
// backward. The step is StepParams' train_step in device memory
// (model_train_step), which the backward reads as the forward did; a run
// resumed from a checkpoint has the step and the seed back, so it draws the
// masks the uninterrupted run draws.
typedef struct {
    float rate;
    uint64_t seed;
    float fwd_rate;  // 0: the last forward had none (evaluation, generation)
} TrainDropout;

// A forward at train_step (>= 0: training, -1: evaluation) returns its rate;
// at a training step the step goes to the device (model_stage_train_step).
static float train_dropout_begin(TrainDropout* d, ModelBuffers* m, int train_step) {
    d->fwd_rate = train_step >= 0 ? d->rate : 0.0f;
    if (train_step >= 0) model_stage_train_step(m, train_step);
    return d->fwd_rate;
}

// ----------------------------------------------------------------------------
// the update

// Clips the gradients to a global norm and takes one AdamW step over the
// whole flat buffer, with weight decay on the tensors the table says, at
// the learning rate and step of m->step_params: device work only (what a
// captured step ends with).
//
// Over several ranks (distributed.h) the gradients are first summed over
// the ranks: all-reduced, or with ZeRO-1 reduce-scattered (each rank gets
// the sum of its shard). Each rank's share of the squared norm is its
// shard's, summed over the ranks, in both cases, so that the two clip alike.
// Then AdamW over the whole buffer, or with ZeRO-1 over the rank's shard and
// its moments, the updated shards gathered to every rank.
static void model_update_device(ModelBuffers* m, const AdamWConfig* o) {
    NVTX_RANGE("update");
    if (!dist.on) {
        global_norm(m->norm_buffer, m->grads_memory, m->num_parameters, o->grad_clip);
        adamw_update_table(m->params_memory, m->m_memory, m->v_memory, m->grads_memory, m->num_parameters,
                           &m->decay_table, &m->step_params->adamw, o->beta1, o->beta2, o->eps, o->weight_decay,
                           m->norm_buffer + 1);
        return;
    }
    if (m->zero) dist_reduce_scatter(m->grads_memory, m->shard_size);
    else dist_allreduce_floats(m->grads_memory, m->shard_size * dist.world);
    float* shard_grads = m->grads_memory + m->shard_begin;
    global_norm_squared(m->norm_buffer, shard_grads, m->shard_len);
    dist_allreduce_floats(m->norm_buffer, 1);
    global_norm_finish(m->norm_buffer, o->grad_clip);
    if (!m->zero) {
        adamw_update_table(m->params_memory, m->m_memory, m->v_memory, m->grads_memory, m->num_parameters,
                           &m->decay_table, &m->step_params->adamw, o->beta1, o->beta2, o->eps, o->weight_decay,
                           m->norm_buffer + 1);
        return;
    }
    if (m->shard_len > 0)
        adamw_update_table(m->params_memory + m->shard_begin, m->m_memory, m->v_memory, shard_grads, m->shard_len,
                           &m->shard_table, &m->step_params->adamw, o->beta1, o->beta2, o->eps, o->weight_decay,
                           m->norm_buffer + 1);
    dist_all_gather(m->params_memory, m->shard_size);
}

// The one device-to-host copy of a training step, which waits for it: the
// mean loss (into mean_loss when in_train_step) and the gradient norm
// before clipping, returned. When the norm is not finite nothing was updated
// (the kernel checks it on the device; the trainers stop on it).
static float model_step_result(ModelBuffers* m) {
    float loss_and_norm[2];
    cudaCheck(cudaMemcpy(loss_and_norm, m->step_scalars, sizeof(loss_and_norm), cudaMemcpyDeviceToHost));
    if (m->in_train_step) m->mean_loss = loss_and_norm[0];
    return loss_and_norm[1];
}

// The update at learning rate lr and the 1-based step t: writes them to the
// device (but in a training step, where the loop did), model_update_device,
// model_step_result. Returns the gradient norm before clipping.
static float model_update(ModelBuffers* m, const AdamWConfig* o, float lr, int t) {
    if (!m->in_train_step) {
        AdamWStep s = adamw_step_of(lr, o->beta1, o->beta2, t);
        cudaCheck(cudaMemcpyAsync(&m->step_params->adamw, &s, sizeof(s), cudaMemcpyHostToDevice, main_stream));
    }
    model_update_device(m, o);
    return model_step_result(m);
}

// uploads parameters from host memory (the model's flat order)
static void model_upload_params(ModelBuffers* m, const float* host) {
    cudaCheck(cudaMemcpy(m->params_memory, host, m->num_parameters * sizeof(float), cudaMemcpyHostToDevice));
}

static void model_zero_grads(ModelBuffers* m) {
    cudaCheck(cudaMemsetAsync(m->grads_memory, 0, m->num_parameters * sizeof(float), main_stream));
}

static void model_free(ModelBuffers* m) {
    float* buffers[] = {m->params_memory, m->grads_memory, m->m_memory, m->v_memory, m->acts_memory, m->ones,
                        m->step_scalars, m->dloss};
    for (float* b : buffers) cudaCheck(cudaFree(b));
    cudaCheck(cudaFree(m->loss_sums));
    cudaCheck(cudaFree(m->step_params));
    cudaCheck(cudaFree(m->inputs));
    cudaCheck(cudaFree(m->targets));
    cublasCheck(cublasDestroy(m->cublas));
}

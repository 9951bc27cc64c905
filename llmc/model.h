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

as llm.c's malloc_and_point_parameters does for its GPT-2.

A training step asks the host for nothing until its end: the forward's mean
loss is reduced on the device (model_mean_loss), the norm, the clipping
factor and the non-finite check too (a non-finite norm makes the one AdamW
launch skip the update), and model_update brings back the loss and the norm
together in one device-to-host copy, the step's only wait. The training
loops set in_train_step around a step for this; outside a step (tests,
validation) model_mean_loss copies the loss back at once, as before.
*/
#pragma once

#include <cmath>
#include <vector>
#include "cuda_common.h"
#include "adamw.cuh"
#include "checkpoint.h"
#include "matmul.cuh"  // fill
#include "utils.h"

#define MAX_TENSORS 64
static_assert(MAX_TENSORS <= ADAMW_MAX_TENSORS, "a parameter table must fit AdamW's decay table");

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

static long table_total(const TensorSpec* table, int n) {
    long total = 0;
    for (int i = 0; i < n; i++) total += table[i].size;
    return total;
}

typedef struct {
    float lr, beta1, beta2, eps, weight_decay, grad_clip;
} AdamWConfig;

typedef struct {
    int kind;                         // MODEL_* (utils.h), as in model files and checkpoints
    const char* const* slot_names;    // the seven config slots' names
    int config_slots[CONFIG_SLOTS];   // the last is the number of parameters
    TensorSpec param_table[MAX_TENSORS];
    int num_param_tensors;
    long num_parameters;
    float* params_memory;
    float* grads_memory;
    float* m_memory;                  // AdamW moments
    float* v_memory;
    TensorSpec act_table[MAX_TENSORS];
    int num_act_tensors;
    long num_activations;
    float* acts_memory;
    int batch_size, seq_len;          // what the activations were sized for
    int* inputs;                      // device (B, T) token ids (language models)
    int* targets;                     // device: (B, T) tokens or (B) labels
    float* ones;                      // device, B*T ones (bias gradients)
    float* step_scalars;              // device: the mean loss, then the global-norm scratch (norm_buffer)
    float* norm_buffer;               // = step_scalars + 1: norm, scale, partials (adamw.cuh's global_norm)
    AdamWDecayTable decay_table;      // the parameter tensors' ends and decay flags, for the one AdamW launch
    int in_train_step;                // set by the training loops: the loss stays on the device until model_update
    float mean_loss;                  // of the last forward with targets (in a training step: once model_update returned)
    cublasHandle_t cublas;
} ModelBuffers;

// Sizes and allocates the parameter-sized buffers from the table (moments
// zeroed), points the model's parameter and gradient structs into them and
// creates the cuBLAS handle. slots: the model's first six config slots (the
// seventh, the parameter count, is filled in). An allocation that fails names
// the shape flags.
static void model_build(ModelBuffers* m, int kind, const char* const* slot_names, const int* slots,
                        const TensorSpec* table, int n, void* params, void* grads, size_t struct_bytes) {
    if (n > MAX_TENSORS || struct_bytes != n * sizeof(float*))
        fail("model_build: a table of %d tensors for a struct of %zu pointers", n, struct_bytes / sizeof(float*));
    m->kind = kind;
    m->slot_names = slot_names;
    memcpy(m->param_table, table, n * sizeof(TensorSpec));
    m->num_param_tensors = n;
    m->num_parameters = table_total(table, n);
    if (m->num_parameters > 2147483647L) fail("flags -L/-C: the model would have %ld parameters, more than 2^31 - 1", m->num_parameters);
    for (int i = 0; i < CONFIG_SLOTS - 1; i++) m->config_slots[i] = slots[i];
    m->config_slots[CONFIG_SLOTS - 1] = (int)m->num_parameters;
    size_t bytes = m->num_parameters * sizeof(float);
    float** buffers[4] = {&m->params_memory, &m->grads_memory, &m->m_memory, &m->v_memory};
    for (float** b : buffers)
        if (cudaMalloc(b, bytes) != cudaSuccess)
            fail("flags -L/-C: %ld parameters need %.1f GiB with gradients and AdamW moments; allocation failed",
                 m->num_parameters, 4.0 * bytes / (1 << 30));
    cudaCheck(cudaMemset(m->m_memory, 0, bytes));
    cudaCheck(cudaMemset(m->v_memory, 0, bytes));
    cudaCheck(cudaMalloc(&m->step_scalars, (1 + NORM_BUFFER_FLOATS) * sizeof(float)));
    m->norm_buffer = m->step_scalars + 1;
    memset(&m->decay_table, 0, sizeof(m->decay_table));
    m->decay_table.count = n;
    long end = 0;
    for (int i = 0; i < n; i++) {
        end += table[i].size;
        m->decay_table.end[i] = end;
        m->decay_table.decay[i] = table[i].decay != 0;
    }
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
    if (n > MAX_TENSORS || struct_bytes != n * sizeof(float*))
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
// plain sum in index order; deterministic either way.
#define MEAN_LOSS_THREADS 256
__global__ void mean_loss_kernel(float* out, const float* losses, int n) {
    __shared__ double sums[MEAN_LOSS_THREADS];
    int tid = threadIdx.x;
    double s = 0.0;
    for (int i = tid; i < n; i += blockDim.x) s += losses[i];
    sums[tid] = s;
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        __syncthreads();
        if (tid < half) sums[tid] += sums[tid + half];
    }
    if (tid == 0) out[0] = (float)(sums[0] / n);  // thread 0 wrote sums[0] last itself
}

#ifdef __CUDACC__
static int mean_loss_threads = MEAN_LOSS_THREADS;
#else
static int mean_loss_threads = 1;  // barrier-free on the host: a plain loop
#endif

// The mean of n per-row losses on the device, into step_scalars[0]; outside
// a training step also copied into mean_loss now (in a step model_update
// brings it back with the norm).
static void model_mean_loss(ModelBuffers* m, const float* losses, int n) {
    LAUNCH(mean_loss_kernel, 1, mean_loss_threads, 0)(m->step_scalars, losses, n);
    cudaCheck(cudaGetLastError());
    if (!m->in_train_step) cudaCheck(cudaMemcpy(&m->mean_loss, m->step_scalars, sizeof(float), cudaMemcpyDeviceToHost));
}

// Clips the gradients to a global norm and takes one AdamW step over the
// whole flat buffer, with weight decay on the tensors the table says. t is
// the 1-based step. Returns the gradient norm before clipping; when it is
// not finite nothing is updated (the kernel checks it on the device; the
// trainers stop on it). Ends with the one device-to-host copy of a
// training step: the mean loss (into mean_loss when in_train_step) and the
// norm, which waits for the step to finish.
static float model_update(ModelBuffers* m, const AdamWConfig* o, float lr, int t) {
    NVTX_RANGE("update");
    global_norm(m->norm_buffer, m->grads_memory, m->num_parameters, o->grad_clip);
    adamw_update_table(m->params_memory, m->m_memory, m->v_memory, m->grads_memory, m->num_parameters, &m->decay_table,
                       lr, o->beta1, o->beta2, o->eps, o->weight_decay, t, m->norm_buffer + 1);
    float loss_and_norm[2];
    cudaCheck(cudaMemcpy(loss_and_norm, m->step_scalars, sizeof(loss_and_norm), cudaMemcpyDeviceToHost));
    if (m->in_train_step) m->mean_loss = loss_and_norm[0];
    return loss_and_norm[1];
}

// uploads parameters from host memory (the model's flat order)
static void model_upload_params(ModelBuffers* m, const float* host) {
    cudaCheck(cudaMemcpy(m->params_memory, host, m->num_parameters * sizeof(float), cudaMemcpyHostToDevice));
}

static void model_zero_grads(ModelBuffers* m) {
    cudaCheck(cudaMemset(m->grads_memory, 0, m->num_parameters * sizeof(float)));
}

static void model_free(ModelBuffers* m) {
    float* buffers[] = {m->params_memory, m->grads_memory, m->m_memory, m->v_memory, m->acts_memory, m->ones,
                        m->step_scalars};
    for (float* b : buffers) cudaCheck(cudaFree(b));
    cudaCheck(cudaFree(m->inputs));
    cudaCheck(cudaFree(m->targets));
    cublasCheck(cublasDestroy(m->cublas));
}

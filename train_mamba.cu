/*
Char-level Mamba on tinyshakespeare: the whole trainer, top to bottom.

  config -> parameters (one flat buffer) -> activations (one flat buffer)
  -> forward -> backward -> AdamW update -> data -> main loop

The model (as dev/reference/mamba.py defines it, after the seed write-up):
token embedding (V,C); L blocks x = LN(x + Mamba(x)) (post-norm); a final
LayerNorm; a head Linear(C, V) with bias. No positions. Loss: mean
cross-entropy. Mamba(x) is mamba_ssm's Mamba(d_model=C, d_state=16,
d_conv=4, expand=2), E = 2C, R = ceil(C/16):
  xz = in_proj(x) (2E) -> x, z;  u = silu(causal depthwise conv1d(x))
  (dt_raw, B, C) = x_proj(u);  dt = softplus(dt_proj(dt_raw))
  y = selective_scan(u, dt, A = -exp(A_log), B, C, D);  out = out_proj(y * silu(z))
Kernels live in llmc/; this file only arranges them.

Build with `make train_mamba` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/encoder.cuh"
#include "llmc/layernorm.cuh"
#include "llmc/matmul.cuh"
#include "llmc/conv1d.cuh"
#include "llmc/selective_scan.cuh"
#include "llmc/crossentropy.cuh"
#include "llmc/adamw.cuh"
#include "llmc/trainer.h"
#include "llmc/logger.h"

#include <string>
#include <vector>

// ----------------------------------------------------------------------------
// config

typedef struct {
    int vocab_size;  // V
    int num_layers;  // L
    int channels;    // C (d_model)
    int inner;       // E = expand * C
    int d_state;     // N
    int dt_rank;     // R = ceil(C / 16)
} MambaConfig;

static const char* const mamba_slot_names[CONFIG_SLOTS] = {"vocab_size", "num_layers", "channels", "inner",
                                                           "d_state", "dt_rank", "num_params"};

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (per-layer tensors stacked over L)

#define NUM_PARAMETER_TENSORS 16
typedef struct {
    float* wte;         // (V, C)
    float* in_proj_w;   // (L, 2E, C)
    float* conv_w;      // (L, E, 4)
    float* conv_b;      // (L, E)
    float* x_proj_w;    // (L, R+2N, E)
    float* dt_proj_w;   // (L, E, R)
    float* dt_proj_b;   // (L, E)
    float* A_log;       // (L, E, N)
    float* D;           // (L, E)
    float* out_proj_w;  // (L, C, E)
    float* ln_w;        // (L, C)
    float* ln_b;        // (L, C)
    float* lnf_w;       // (C)
    float* lnf_b;       // (C)
    float* head_w;      // (V, C)
    float* head_b;      // (V)
} ParameterTensors;

static const char* const param_names[NUM_PARAMETER_TENSORS] = {
    "wte", "in_proj_w", "conv_w", "conv_b", "x_proj_w", "dt_proj_w", "dt_proj_b", "A_log",
    "D", "out_proj_w", "ln_w", "ln_b", "lnf_w", "lnf_b", "head_w", "head_b"};

// weight decay: the embedding and the weights of in_proj, conv, x_proj,
// dt_proj, out_proj and the head; not A_log, D, biases or LayerNorms
static const int param_decay[NUM_PARAMETER_TENSORS] = {1, 1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};

static void fill_in_parameter_sizes(long* sizes, MambaConfig c) {
    long V = c.vocab_size, L = c.num_layers, C = c.channels, E = c.inner, N = c.d_state, R = c.dt_rank;
    long s[NUM_PARAMETER_TENSORS] = {V * C, L * 2 * E * C, L * E * CONV_K, L * E, L * (R + 2 * N) * E, L * E * R,
                                     L * E, L * E * N, L * E, L * C * E, L * C, L * C, C, C, V * C, V};
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) sizes[i] = s[i];
}

static void point_tensors(float** ptrs, float* base, const long* sizes, int num) {
    for (int i = 0; i < num; i++) { ptrs[i] = base; base += sizes[i]; }
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for what backward needs, and scratch

#define NUM_ACTIVATION_TENSORS 31
typedef struct {
    float* encoded;    // (B, T, C)
    float* xz;         // (L, B, T, 2E)   in_proj output: x | z
    float* conv;       // (L, B, T, E)    conv output before SiLU
    float* u;          // (L, B, T, E)    silu(conv)
    float* x_dbl;      // (L, B, T, R+2N) x_proj output: dt_raw | B | C
    float* dt;         // (L, B, T, E)    after softplus
    float* y;          // (L, B, T, E)    scan output, before gating
    float* gated;      // (L, B, T, E)
    float* states;     // (L, B, E, nchunks, N)  scan states at chunk ends
    float* out;        // (L, B, T, C)    out_proj output
    float* res;        // (L, B, T, C)    x + out
    float* ln;         // (L, B, T, C)    block output
    float* ln_mean;    // (L, B, T)
    float* ln_rstd;    // (L, B, T)
    float* lnf;        // (B, T, C)
    float* lnf_mean;   // (B, T)
    float* lnf_rstd;   // (B, T)
    float* logits;     // (B, T, V)
    float* probs;      // (B, T, V)
    float* losses;     // (B, T)
    // scratch
    float* dresidual;  // (B, T, C)  gradient w.r.t. the current block's output
    float* dres;       // (B, T, C)  ... and w.r.t. its input
    float* dbtc;       // (B, T, C)
    float* dgated;     // (B, T, E)
    float* du;         // (B, T, E)
    float* ddt;        // (B, T, E)
    float* dxz;        // (B, T, 2E)
    float* dx_dbl;     // (B, T, R+2N)
    float* scan_scratch;  // selective_scan_backward's partial sums
    float* conv_partial;  // CONV_CHUNKS * E * (K+1)
    float* dlogits;    // (B, T, V); also the one-hot scratch of the embedding backward
} ActivationTensors;

static void fill_in_activation_sizes(long* sizes, MambaConfig c, int B, int T) {
    long L = c.num_layers, C = c.channels, E = c.inner, N = c.d_state, R = c.dt_rank, V = c.vocab_size;
    long BT = (long)B * T, X = R + 2 * N;
    long s[NUM_ACTIVATION_TENSORS] = {
        BT * C, L * BT * 2 * E, L * BT * E, L * BT * E, L * BT * X, L * BT * E, L * BT * E, L * BT * E,
        L * scan_states_size(B, T, E, N), L * BT * C, L * BT * C, L * BT * C, L * BT, L * BT,
        BT * C, BT, BT, BT * V, BT * V, BT,
        BT * C, BT * C, BT * C, BT * E, BT * E, BT * E, BT * 2 * E, BT * X,
        scan_backward_scratch_size(B, T, E, N), (long)CONV_CHUNKS * E * (CONV_K + 1), BT * V};
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) sizes[i] = s[i];
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    MambaConfig config;
    int config_slots[CONFIG_SLOTS];
    ParameterTensors params;
    long param_sizes[NUM_PARAMETER_TENSORS];
    long num_parameters;
    float* params_memory;
    ParameterTensors grads;
    float* grads_memory;
    float* m_memory;  // AdamW moments
    float* v_memory;
    ActivationTensors acts;
    long act_sizes[NUM_ACTIVATION_TENSORS];
    float* acts_memory;
    int batch_size, seq_len;  // what the activations were sized for
    int* inputs;              // device (B, T)
    int* targets;             // device (B, T)
    float* ones;              // device, B*T ones (bias gradients)
    float* norm_buffer;       // device, global-norm scratch
    std::vector<float> host_losses;
    float mean_loss;          // of the last forward with targets
    cublasHandle_t cublas;
} Mamba;

static MambaConfig mamba_config(int V, int L, int C, int N) {
    MambaConfig c = {V, L, C, 2 * C, N, CEIL_DIV(C, 16)};
    return c;
}

static void mamba_build(Mamba* model, MambaConfig c) {
    scan_check_limits(c.d_state);
    model->config = c;
    fill_in_parameter_sizes(model->param_sizes, c);
    model->num_parameters = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) model->num_parameters += model->param_sizes[i];
    if (model->num_parameters > 2147483647L) fail("flags -L/-C: the model would have %ld parameters, more than 2^31 - 1", model->num_parameters);
    int slots[CONFIG_SLOTS] = {c.vocab_size, c.num_layers, c.channels, c.inner, c.d_state, c.dt_rank,
                               (int)model->num_parameters};
    memcpy(model->config_slots, slots, sizeof(slots));
    size_t bytes = model->num_parameters * sizeof(float);
    float** buffers[4] = {&model->params_memory, &model->grads_memory, &model->m_memory, &model->v_memory};
    for (float** b : buffers)
        if (cudaMalloc(b, bytes) != cudaSuccess)
            fail("flags -L/-C: %ld parameters need %.1f GiB with gradients and AdamW moments; allocation failed",
                 model->num_parameters, 4.0 * bytes / (1 << 30));
    cudaCheck(cudaMemset(model->m_memory, 0, bytes));
    cudaCheck(cudaMemset(model->v_memory, 0, bytes));
    point_tensors((float**)&model->params, model->params_memory, model->param_sizes, NUM_PARAMETER_TENSORS);
    point_tensors((float**)&model->grads, model->grads_memory, model->param_sizes, NUM_PARAMETER_TENSORS);
    cudaCheck(cudaMalloc(&model->norm_buffer, (NORM_BLOCKS + 2) * sizeof(float)));
    cublasCheck(cublasCreate(&model->cublas));
    model->acts_memory = nullptr;
    model->batch_size = model->seq_len = 0;
}

// mamba_ssm's initialization (and PyTorch defaults where it has none):
// Linear and conv weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)), conv and head
// biases likewise; dt_proj weight U(-R^-0.5, R^-0.5); dt_proj bias the
// inverse softplus of dt ~ exp(U(log 1e-3, log 1e-1)) floored at 1e-4;
// A_log = log(1..N); D = 1; embedding N(0, 1); LayerNorm weight 1, bias 0
static void mamba_init_random(Mamba* model, uint64_t seed) {
    MambaConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->num_parameters);
    ParameterTensors p;  // host-side pointers into `host`
    point_tensors((float**)&p, host.data(), model->param_sizes, NUM_PARAMETER_TENSORS);
    auto uniform = [&](float* x, long n, float bound) { for (long i = 0; i < n; i++) x[i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound; };
    long L = c.num_layers, C = c.channels, E = c.inner, N = c.d_state, R = c.dt_rank, V = c.vocab_size;
    for (long i = 0; i < V * C; i++) p.wte[i] = rng_normal(&rng);
    uniform(p.in_proj_w, L * 2 * E * C, 1.0f / sqrtf((float)C));
    uniform(p.conv_w, L * E * CONV_K, 1.0f / sqrtf((float)CONV_K));
    uniform(p.conv_b, L * E, 1.0f / sqrtf((float)CONV_K));
    uniform(p.x_proj_w, L * (R + 2 * N) * E, 1.0f / sqrtf((float)E));
    uniform(p.dt_proj_w, L * E * R, 1.0f / sqrtf((float)R));
    for (long i = 0; i < L * E; i++) {
        float dt = expf(logf(1e-3f) + rng_uniform(&rng) * (logf(1e-1f) - logf(1e-3f)));
        dt = fmaxf(dt, 1e-4f);
        p.dt_proj_b[i] = dt + logf(-expm1f(-dt));  // inverse of softplus
        p.D[i] = 1.0f;
    }
    for (long l = 0; l < L; l++)
        for (long e = 0; e < E; e++)
            for (long n = 0; n < N; n++) p.A_log[(l * E + e) * N + n] = logf((float)(n + 1));
    uniform(p.out_proj_w, L * C * E, 1.0f / sqrtf((float)E));
    for (long i = 0; i < L * C; i++) { p.ln_w[i] = 1.0f; p.ln_b[i] = 0.0f; }
    for (long i = 0; i < C; i++) { p.lnf_w[i] = 1.0f; p.lnf_b[i] = 0.0f; }
    uniform(p.head_w, V * C, 1.0f / sqrtf((float)C));
    uniform(p.head_b, V, 1.0f / sqrtf((float)C));
    cudaCheck(cudaMemcpy(model->params_memory, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
}

static void mamba_allocate_activations(Mamba* model, int B, int T) {
    fill_in_activation_sizes(model->act_sizes, model->config, B, T);
    long total = 0;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) total += model->act_sizes[i];
    cudaError_t e = cudaMalloc(&model->acts_memory, total * sizeof(float));
    if (e != cudaSuccess)
        fail("flags -b/-t: batch %d x %d needs %.1f GiB of activations, allocation failed (%s)", B, T,
             total * 4.0 / (1 << 30), cudaGetErrorString(e));
    point_tensors((float**)&model->acts, model->acts_memory, model->act_sizes, NUM_ACTIVATION_TENSORS);
    cudaCheck(cudaMalloc(&model->inputs, (long)B * T * sizeof(int)));
    cudaCheck(cudaMalloc(&model->targets, (long)B * T * sizeof(int)));
    cudaCheck(cudaMalloc(&model->ones, (long)B * T * sizeof(float)));
    fill(model->ones, 1.0f, (long)B * T);
    model->host_losses.resize((long)B * T);
    model->batch_size = B;
    model->seq_len = T;
}

// pointers to layer l's slice of the per-layer activations, for a B x T batch
typedef struct {
    float *xz, *conv, *u, *x_dbl, *dt, *y, *gated, *states, *out, *res, *ln, *ln_mean, *ln_rstd;
} LayerActs;

static LayerActs layer_acts(const Mamba* model, int l, int B, int T) {
    MambaConfig c = model->config;
    const ActivationTensors& a = model->acts;
    long BT = (long)B * T, E = c.inner, C = c.channels, X = c.dt_rank + 2 * c.d_state;
    LayerActs r = {a.xz + l * BT * 2 * E, a.conv + l * BT * E, a.u + l * BT * E, a.x_dbl + l * BT * X,
                   a.dt + l * BT * E, a.y + l * BT * E, a.gated + l * BT * E,
                   a.states + l * scan_states_size(B, T, E, c.d_state), a.out + l * BT * C, a.res + l * BT * C,
                   a.ln + l * BT * C, a.ln_mean + l * BT, a.ln_rstd + l * BT};
    return r;
}

// ----------------------------------------------------------------------------
// forward: logits for inputs (B, T) (host array); with targets, also the mean loss

static void mamba_forward(Mamba* model, const int* inputs, const int* targets, int B, int T) {
    NVTX_RANGE("forward");
    MambaConfig c = model->config;
    if (B > model->batch_size || T > model->seq_len) fail("mamba_forward: batch %d x %d exceeds the allocation", B, T);
    int L = c.num_layers, C = c.channels, E = c.inner, N = c.d_state, R = c.dt_rank, V = c.vocab_size;
    int X = R + 2 * N, BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    cudaCheck(cudaMemcpy(model->inputs, inputs, BT * sizeof(int), cudaMemcpyHostToDevice));
    if (targets) cudaCheck(cudaMemcpy(model->targets, targets, BT * sizeof(int), cudaMemcpyHostToDevice));

    { NVTX_RANGE("encoder_forward"); encoder_forward(a.encoded, model->inputs, p.wte, nullptr, B, T, C); }
    float* x = a.encoded;
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        LayerActs la = layer_acts(model, l, B, T);
        {
            NVTX_RANGE("in_proj_forward");
            matmul_forward(h, la.xz, x, p.in_proj_w + (long)l * 2 * E * C, nullptr, BT, C, 2 * E);
        }
        {
            NVTX_RANGE("conv1d_forward");
            conv1d_silu_forward(la.conv, la.u, la.xz, 2 * E, p.conv_w + (long)l * E * CONV_K, p.conv_b + l * E, B, T, E);
        }
        {
            NVTX_RANGE("x_proj_dt_forward");
            matmul_forward(h, la.x_dbl, la.u, p.x_proj_w + (long)l * X * E, nullptr, BT, E, X);
            matmul_forward_ld(h, la.dt, la.x_dbl, X, p.dt_proj_w + (long)l * E * R, nullptr, BT, R, E);
            dt_softplus(la.dt, p.dt_proj_b + l * E, BT, E);
        }
        {
            NVTX_RANGE("selective_scan_forward");
            selective_scan_forward(la.y, la.gated, la.states, la.u, la.dt, la.x_dbl, R, p.A_log + (long)l * E * N,
                                   p.D + l * E, la.xz, B, T, E, N);
        }
        {
            NVTX_RANGE("out_proj_forward");
            matmul_forward(h, la.out, la.gated, p.out_proj_w + (long)l * C * E, nullptr, BT, E, C);
            residual_forward(la.res, x, la.out, (long)BT * C);
        }
        {
            NVTX_RANGE("ln_forward");
            layernorm_forward(la.ln, la.ln_mean, la.ln_rstd, la.res, p.ln_w + l * C, p.ln_b + l * C, BT, C);
        }
        x = la.ln;
    }
    { NVTX_RANGE("lnf_forward"); layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, x, p.lnf_w, p.lnf_b, BT, C); }
    { NVTX_RANGE("head_forward"); matmul_forward(h, a.logits, a.lnf, p.head_w, p.head_b, BT, C, V); }
    if (targets) {
        NVTX_RANGE("crossentropy_forward");
        crossentropy_forward(a.losses, a.probs, a.logits, model->targets, BT, V);
        cudaCheck(cudaMemcpy(model->host_losses.data(), a.losses, BT * sizeof(float), cudaMemcpyDeviceToHost));
        double sum = 0.0;
        for (int i = 0; i < BT; i++) sum += model->host_losses[i];
        model->mean_loss = (float)(sum / BT);
    }
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last forward (with targets)

static void mamba_backward(Mamba* model, int B, int T) {
    NVTX_RANGE("backward");
    MambaConfig c = model->config;
    int L = c.num_layers, C = c.channels, E = c.inner, N = c.d_state, R = c.dt_rank, V = c.vocab_size;
    int X = R + 2 * N, BT = B * T;
    long btc = (long)BT * C;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = model->cublas;
    cudaCheck(cudaMemset(model->grads_memory, 0, model->num_parameters * sizeof(float)));

    {
        NVTX_RANGE("head_backward");
        crossentropy_backward(a.dlogits, a.probs, model->targets, 1.0f / BT, BT, V);
        matmul_backward(h, a.dbtc, g.head_w, g.head_b, a.dlogits, a.lnf, p.head_w, model->ones, BT, C, V);
    }
    float* dout = a.dresidual;  // gradient w.r.t. the current block's output
    float* din = a.dres;        // ... and w.r.t. its input
    {
        NVTX_RANGE("lnf_backward");
        float* last = L > 0 ? layer_acts(model, L - 1, B, T).ln : a.encoded;
        cudaCheck(cudaMemset(dout, 0, btc * sizeof(float)));
        layernorm_backward(dout, g.lnf_w, g.lnf_b, a.dbtc, last, p.lnf_w, a.lnf_mean, a.lnf_rstd, BT, C);
    }
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        LayerActs la = layer_acts(model, l, B, T);
        float* x = l == 0 ? a.encoded : layer_acts(model, l - 1, B, T).ln;
        {
            NVTX_RANGE("ln_backward");  // din = d res: the residual passes it to x unchanged
            cudaCheck(cudaMemset(din, 0, btc * sizeof(float)));
            layernorm_backward(din, g.ln_w + l * C, g.ln_b + l * C, dout, la.res, p.ln_w + l * C, la.ln_mean,
                               la.ln_rstd, BT, C);
        }
        {
            NVTX_RANGE("out_proj_backward");
            matmul_backward(h, a.dgated, g.out_proj_w + (long)l * C * E, nullptr, din, la.gated,
                            p.out_proj_w + (long)l * C * E, model->ones, BT, E, C);
        }
        {
            NVTX_RANGE("selective_scan_backward");
            selective_scan_backward(a.du, a.ddt, a.dxz, a.dx_dbl, g.A_log + (long)l * E * N, g.D + l * E,
                                    a.scan_scratch, a.dgated, la.y, la.u, la.dt, la.x_dbl, R,
                                    p.A_log + (long)l * E * N, p.D + l * E, la.xz, la.states, B, T, E, N);
        }
        {
            NVTX_RANGE("x_proj_dt_backward");
            // dt_proj: ddt is the gradient before softplus; writes dx_dbl's dt_raw columns
            matmul_backward_ld(h, a.dx_dbl, X, 0, g.dt_proj_w + (long)l * E * R, g.dt_proj_b + l * E, a.ddt,
                               la.x_dbl, X, p.dt_proj_w + (long)l * E * R, model->ones, BT, R, E);
            // x_proj: du += dx_dbl @ x_proj_w
            matmul_backward_ld(h, a.du, E, 1, g.x_proj_w + (long)l * X * E, nullptr, a.dx_dbl, la.u, E,
                               p.x_proj_w + (long)l * X * E, model->ones, BT, E, X);
        }
        {
            NVTX_RANGE("conv1d_backward");  // writes dxz's x half
            conv1d_silu_backward(a.dxz, 2 * E, g.conv_w + (long)l * E * CONV_K, g.conv_b + l * E, a.conv_partial,
                                 a.du, la.conv, la.xz, 2 * E, p.conv_w + (long)l * E * CONV_K, B, T, E);
        }
        {
            NVTX_RANGE("in_proj_backward");  // din += dxz @ in_proj_w
            matmul_backward_ld(h, din, C, 1, g.in_proj_w + (long)l * 2 * E * C, nullptr, a.dxz, x, C,
                               p.in_proj_w + (long)l * 2 * E * C, model->ones, BT, C, 2 * E);
        }
        float* t = dout; dout = din; din = t;
    }
    {
        NVTX_RANGE("encoder_backward");
        encoder_backward(h, g.wte, nullptr, a.dlogits, dout, model->inputs, B, T, C, V);
    }
}

// returns the gradient norm before clipping; t is the 1-based step
static float mamba_update(Mamba* model, const AdamWConfig* o, float lr, int t) {
    NVTX_RANGE("update");
    return clip_and_adamw(model->params_memory, model->m_memory, model->v_memory, model->grads_memory,
                          model->param_sizes, param_decay, NUM_PARAMETER_TENSORS, model->norm_buffer, o, lr, t);
}

static void mamba_free(Mamba* model) {
    cudaCheck(cudaFree(model->params_memory));
    cudaCheck(cudaFree(model->grads_memory));
    cudaCheck(cudaFree(model->m_memory));
    cudaCheck(cudaFree(model->v_memory));
    cudaCheck(cudaFree(model->acts_memory));
    cudaCheck(cudaFree(model->inputs));
    cudaCheck(cudaFree(model->targets));
    cudaCheck(cudaFree(model->ones));
    cudaCheck(cudaFree(model->norm_buffer));
    cublasCheck(cublasDestroy(model->cublas));
}

// ----------------------------------------------------------------------------
// sampling and validation

// prints the prompt, then `length` sampled tokens
static void mamba_sample(Mamba* model, const Vocab* vocab, const std::vector<int>& prompt, int length, float temperature,
                       int top_k, Rng* rng) {
    NVTX_RANGE("sample");
    int V = model->config.vocab_size, maxT = model->seq_len;
    std::vector<int> tokens = prompt;
    std::vector<float> logits(V);
    printf("---\n");
    for (int t : tokens) printf("%s", vocab->text[t].c_str());
    for (int i = 0; i < length; i++) {
        int n = (int)tokens.size();
        int T = n < maxT ? n : maxT;  // the model sees the last T tokens
        mamba_forward(model, tokens.data() + (n - T), nullptr, 1, T);
        cudaCheck(cudaMemcpy(logits.data(), model->acts.logits + (long)(T - 1) * V, V * sizeof(float), cudaMemcpyDeviceToHost));
        int next = sample_token(logits.data(), V, temperature, top_k, rng);
        tokens.push_back(next);
        printf("%s", vocab->text[next].c_str());
        fflush(stdout);
    }
    printf("\n---\n");
}

static float mamba_validate(Mamba* model, const TokenData* val, int B, int T, int max_batches) {
    NVTX_RANGE("validate");
    int n = token_data_num_val_batches(val, B, T);
    if (max_batches > 0 && max_batches < n) n = max_batches;
    std::vector<int> inputs((long)B * T), targets((long)B * T);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        token_data_val_batch(val, i, B, T, inputs.data(), targets.data());
        mamba_forward(model, inputs.data(), targets.data(), B, T);
        sum += model->mean_loss;
    }
    return (float)(sum / n);
}

// ----------------------------------------------------------------------------
// main

#ifndef TESTING
int main(int argc, char** argv) {
    TrainConfig tc = default_lm_config();
    tc.L = 5; tc.C = 256;
    parse_train_flags(argc, argv, &tc,
                      "  -L <int>    layers (default 5)\n"
                      "  -C <int>    channels, d_model (default 256; inner width 2C, d_state 16, dt rank ceil(C/16))\n",
                      "LC");
    int B = tc.B, T = tc.T;
    AdamWConfig opt = {tc.lr, 0.9f, 0.99f, 1e-8f, tc.weight_decay, tc.grad_clip};

    TokenData train, val;
    Vocab vocab;
    load_lm_data(&tc, &train, &val, &vocab);
    std::vector<int> prompt = tokenize_prompt(&vocab, tc.prompt);

    MambaConfig config = mamba_config(vocab.size, tc.L, tc.C, 16);
    if (tc.init_path) {  // the model file decides the shape
        int kind, s[CONFIG_SLOTS];
        model_file_peek(tc.init_path, &kind, s);
        if (kind != MODEL_MAMBA) fail("%s: holds a model of kind %d, not a Mamba LM (kind %d)", tc.init_path, kind, MODEL_MAMBA);
        config = {s[0], s[1], s[2], s[3], s[4], s[5]};
        if (config.vocab_size != vocab.size) fail("%s: vocabulary of %d tokens, but %s has %d", tc.init_path, config.vocab_size, tc.vocab_path, vocab.size);
    }
    Mamba model;
    mamba_build(&model, config);
    if (tc.init_path) model_file_load(tc.init_path, MODEL_MAMBA, model.config_slots, mamba_slot_names, model.params_memory);
    else mamba_init_random(&model, tc.seed);
    mamba_allocate_activations(&model, B, T);
    cublasCheck(cublasSetMathMode(model.cublas, CUBLAS_TF32_TENSOR_OP_MATH));

    Rng train_rng, sample_rng;
    rng_seed(&train_rng, tc.seed);
    rng_seed(&sample_rng, tc.seed + 1);
    int start_step = 0;
    if (tc.out_dir && !tc.generate_only) make_dir_or_fail(tc.out_dir);
    if (tc.resume)
        start_step = resume_from_checkpoint(&tc, MODEL_MAMBA, model.config_slots, mamba_slot_names, model.params_memory,
                                            model.m_memory, model.v_memory, &train_rng, &sample_rng);
    if (tc.generate_only) {
        mamba_sample(&model, &vocab, prompt, tc.gen_tokens, tc.temperature, tc.top_k, &sample_rng);
        mamba_free(&model);
        return 0;
    }

    printf("backend %s | Mamba L %d C %d E %d N %d R %d | vocab %d | %ld parameters | scan %s\n", BACKEND_NAME,
           config.num_layers, config.channels, config.inner, config.d_state, config.dt_rank, config.vocab_size,
           model.num_parameters, scan_use_chunked ? "chunked parallel" : "sequential");
    printf("batch %d x %d | steps %d | lr %g warmup %d final x%g | wd %g | clip %g | train %ld tokens, val %ld\n",
           B, T, tc.max_steps, opt.lr, tc.warmup, tc.final_frac, opt.weight_decay, opt.grad_clip, train.num_tokens, val.num_tokens);

    Logger logger;
    logger_open(&logger, tc.out_dir, start_step);
    std::vector<int> inputs((long)B * T), targets((long)B * T);
    double run_start = host_clock(), train_seconds = 0.0;
    float last_val = NAN;
    for (int step = start_step; step <= tc.max_steps; step++) {
        bool last = step == tc.max_steps;
        if ((tc.val_every > 0 && step % tc.val_every == 0) || last) {
            last_val = mamba_validate(&model, &val, B, T, tc.val_batches);
            printf("val loss %f\n", last_val);
            log_eval(&logger, step, "val_loss", last_val, host_clock() - run_start);
        }
        if ((tc.sample_every > 0 && step > 0 && step % tc.sample_every == 0) || last) {
            if (tc.gen_tokens > 0) mamba_sample(&model, &vocab, prompt, tc.gen_tokens, tc.temperature, tc.top_k, &sample_rng);
        }
        if (tc.out_dir && step > start_step && ((tc.checkpoint_every > 0 && step % tc.checkpoint_every == 0) || last))
            save_checkpoint(&tc, MODEL_MAMBA, model.config_slots, step, &train_rng, &sample_rng, model.params_memory,
                            model.m_memory, model.v_memory);
        if (last) break;

        NVTX_RANGE("step");
        double t0 = host_clock();
        token_data_train_batch(&train, &train_rng, B, T, inputs.data(), targets.data());
        mamba_forward(&model, inputs.data(), targets.data(), B, T);
        mamba_backward(&model, B, T);
        float lr = learning_rate(opt.lr, step, tc.warmup, tc.max_steps, tc.final_frac);
        float norm = mamba_update(&model, &opt, lr, step + 1);
        cudaCheck(cudaDeviceSynchronize());
        check_finite(&tc, step + 1, model.mean_loss, norm);
        double seconds = host_clock() - t0;
        train_seconds += seconds;
        print_step(step + 1, start_step, tc.max_steps, model.mean_loss, lr, norm, seconds, B * T, "tok/s", train_seconds);
        log_train(&logger, step + 1, model.mean_loss, lr, norm, "tokens_per_s", B * T / seconds, host_clock() - run_start);
    }
    logger_close(&logger);
    if (tc.out_dir) {
        std::string path = std::string(tc.out_dir) + "/model.bin";
        model_file_save(path.c_str(), MODEL_MAMBA, model.config_slots, model.params_memory);
        printf("wrote %s\n", path.c_str());
    }
    printf("final val loss %f\n", last_val);
    mamba_free(&model);
    return 0;
}
#endif

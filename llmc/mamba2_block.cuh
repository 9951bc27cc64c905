/*
The Mamba-2 residual block, x_out = LN(x + Mamba2(x)) (the seed's post-norm
block with the Mamba-2 mixer), forward and backward, for a stack of L
blocks whose parameters and activations are each stacked over layers
(leading dimension L) in the model's flat buffers; and the state a layer
carries from one piece of a sequence into the next (generation, chunked
evaluation). The char LM's -M 2 (train_mamba.cu) uses it. The pre-norm
layer x + Dropout(Mamba2(LN(x))) of mamba_ssm's MixerModel is built from the
same mixer (mamba2_prenorm_forward/backward, the hybrid LM's S layers).

Mamba2(x) is mamba_ssm's Mamba2(d_model=C, d_state=N, d_conv=4, expand=2,
headdim=P, ngroups=1, rmsnorm=True, norm_before_gate=False, bias=False,
conv_bias=True), E = 2C, H = E/P heads, W = 2E + 2N + H:
  zxbcdt = in_proj(x) (W) -> z (E) | xBC (E+2N) | dt_raw (H)
  xbc = silu(causal depthwise conv1d(xBC)) -> x (E) | B (N) | C (N)
  dt = softplus(dt_raw + dt_bias) (H);  A = -exp(A_log) (H)
  y = ssd(x, dt, A, B, C) + D x          (llmc/ssd.cuh; heads of P channels)
  out = out_proj(RMSNorm(y * silu(z)) * norm_w)     (RMSNorm over E, eps 1e-5)
(doc/models.md writes it out.)
*/
#pragma once
#include "cuda_common.h"
#include "encoder.cuh"  // residual_forward
#include "layernorm.cuh"
#include "rmsnorm.cuh"
#include "matmul.cuh"
#include "conv1d.cuh"
#include "ssd.cuh"
#include "mamba_block.cuh"  // MambaCarry
#include "dropout.cuh"
#include "model.h"
#include "utils.h"

typedef struct {
    int C;  // d_model
    int E;  // inner width, 2C
    int N;  // d_state
    int P;  // headdim
    int H;  // heads, E / P
} Mamba2Dims;

static long mamba2_xbc_width(Mamba2Dims d) { return d.E + 2L * d.N; }          // X: the conv's channels
static long mamba2_in_width(Mamba2Dims d) { return 2L * d.E + 2L * d.N + d.H; }  // W: in_proj's outputs

// mamba_ssm's Mamba2(d_model=C, d_state=N, headdim=P, expand=2)
static Mamba2Dims mamba2_dims(int C, int N, int P) {
    Mamba2Dims d = {C, 2 * C, N, P, P > 0 ? 2 * C / P : 0};
    return d;
}

// parameters of all L blocks, each stacked over layers; or, from
// mamba2_layer_params, of one block
#define MAMBA2_STACK_PARAMS 10
typedef struct {
    float* in_proj_w;   // (L, W, C)
    float* conv_w;      // (L, X, 4)
    float* conv_b;      // (L, X)
    float* dt_bias;     // (L, H)
    float* A_log;       // (L, H)
    float* D;           // (L, H)
    float* norm_w;      // (L, E)
    float* out_proj_w;  // (L, C, E)
    float* ln_w;        // (L, C)
    float* ln_b;        // (L, C)
} Mamba2StackParams;

// the L blocks' rows of a model's tensor table, from t (empty rows unless
// on); returns the next row. Weight decay on in_proj, conv and out_proj
// weights; not on dt_bias, A_log, D or the norms.
static TensorSpec* mamba2_stack_param_table(TensorSpec* t, int L, Mamba2Dims d, int on = 1) {
    long C = d.C, E = d.E, H = d.H, X = mamba2_xbc_width(d), W = mamba2_in_width(d), n = on ? L : 0;
    TensorSpec rows[MAMBA2_STACK_PARAMS] = {
        {"in_proj_w", n * W * C, 1, L}, {"conv_w", n * X * CONV_K, 1, L}, {"conv_b", n * X, 0, L},
        {"dt_bias", n * H, 0, L},       {"A_log", n * H, 0, L},           {"D", n * H, 0, L},
        {"norm_w", n * E, 0, L},        {"out_proj_w", n * C * E, 1, L},  {"ln_w", n * C, 0, L},
        {"ln_b", n * C, 0, L}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

static Mamba2StackParams mamba2_layer_params(const Mamba2StackParams& s, long l, Mamba2Dims d) {
    long C = d.C, E = d.E, H = d.H, X = mamba2_xbc_width(d), W = mamba2_in_width(d);
    Mamba2StackParams p = {s.in_proj_w + l * W * C, s.conv_w + l * X * CONV_K, s.conv_b + l * X, s.dt_bias + l * H,
                           s.A_log + l * H,         s.D + l * H,                s.norm_w + l * E, s.out_proj_w + l * C * E,
                           s.ln_w + l * C,          s.ln_b + l * C};
    return p;
}

// mamba_ssm's initialization of one stack (host memory): in_proj, out_proj
// U(+-1/sqrt(fan_in)); conv weight and bias U(+-1/2) (fan_in 4); dt_bias the
// inverse softplus of dt ~ exp(U(log dt_min, log 1e-1)) (mamba_dt_bias_init);
// A_log = log U(1, 16); D = 1; norm_w = 1; LayerNorm 1 and 0. Each tensor
// drawn over all layers in flat order.
static void mamba2_stack_init(const Mamba2StackParams& p, int L, Mamba2Dims d, Rng* rng, float dt_min = MAMBA_DT_MIN) {
    long C = d.C, E = d.E, H = d.H, X = mamba2_xbc_width(d), W = mamba2_in_width(d);
    auto uniform = [&](float* x, long n, float lo, float hi) {
        for (long i = 0; i < n; i++) x[i] = lo + rng_uniform(rng) * (hi - lo);
    };
    float bc = 1.0f / sqrtf((float)C), bk = 1.0f / sqrtf((float)CONV_K), be = 1.0f / sqrtf((float)E);
    uniform(p.in_proj_w, L * W * C, -bc, bc);
    uniform(p.conv_w, L * X * CONV_K, -bk, bk);
    uniform(p.conv_b, L * X, -bk, bk);
    for (long i = 0; i < L * H; i++) p.dt_bias[i] = mamba_dt_bias_init(rng, dt_min);
    uniform(p.A_log, L * H, 1.0f, 16.0f);
    for (long i = 0; i < L * H; i++) { p.A_log[i] = logf(p.A_log[i]); p.D[i] = 1.0f; }
    for (long i = 0; i < L * E; i++) p.norm_w[i] = 1.0f;
    uniform(p.out_proj_w, L * C * E, -be, be);
    for (long i = 0; i < L * C; i++) { p.ln_w[i] = 1.0f; p.ln_b[i] = 0.0f; }
}

// activations of all L blocks kept for backward, stacked; or, from
// mamba2_layer_acts, of one block
#define MAMBA2_STACK_ACTS 15
typedef struct {
    float* zxbcdt;   // (L, B, T, W)  in_proj output: z | xBC | dt_raw
    float* conv;     // (L, B, T, X)  conv output before SiLU
    float* xbc;      // (L, B, T, X)  silu(conv): x | B | C
    float* dt;       // (L, B, T, H)  after softplus
    float* cum;      // (L, B, T, H)  dt A summed within each SSD chunk
    float* states;   // (L, B, H, nchunks+1, P, N)  the SSD state before each chunk, and the final one
    float* y;        // (L, B, T, E)  scan output, with D x
    float* gated;    // (L, B, T, E)  y * silu(z)
    float* rstd;     // (L, B, T)     the RMSNorm's
    float* normed;   // (L, B, T, E)
    float* out;      // (L, B, T, C)  out_proj output
    float* res;      // (L, B, T, C)  x + out
    float* ln;       // (L, B, T, C)  block output
    float* ln_mean;  // (L, B, T)
    float* ln_rstd;  // (L, B, T)
} Mamba2StackActs;

static TensorSpec* mamba2_stack_act_table(TensorSpec* t, int L, int B, int T, Mamba2Dims d, int on = 1) {
    long BT = (long)B * T, C = d.C, E = d.E, H = d.H, X = mamba2_xbc_width(d), W = mamba2_in_width(d), n = on ? L : 0;
    TensorSpec rows[MAMBA2_STACK_ACTS] = {
        {"zxbcdt", n * BT * W, 0, L}, {"conv", n * BT * X, 0, L},  {"xbc", n * BT * X, 0, L},
        {"dt", n * BT * H, 0, L},     {"cum", n * BT * H, 0, L},   {"states", n * ssd_states_size(B, T, d.E, d.N), 0, L},
        {"y", n * BT * E, 0, L},      {"gated", n * BT * E, 0, L}, {"rstd", n * BT, 0, L},
        {"normed", n * BT * E, 0, L}, {"out", n * BT * C, 0, L},   {"res", n * BT * C, 0, L},
        {"ln", n * BT * C, 0, L},     {"ln_mean", n * BT, 0, L},   {"ln_rstd", n * BT, 0, L}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

static Mamba2StackActs mamba2_layer_acts(const Mamba2StackActs& a, long l, int B, int T, Mamba2Dims d) {
    long BT = (long)B * T, C = d.C, E = d.E, H = d.H, X = mamba2_xbc_width(d), W = mamba2_in_width(d);
    Mamba2StackActs r = {a.zxbcdt + l * BT * W, a.conv + l * BT * X, a.xbc + l * BT * X, a.dt + l * BT * H,
                         a.cum + l * BT * H, a.states + l * ssd_states_size(B, T, d.E, d.N), a.y + l * BT * E,
                         a.gated + l * BT * E, a.rstd + l * BT, a.normed + l * BT * E, a.out + l * BT * C,
                         a.res + l * BT * C, a.ln + l * BT * C, a.ln_mean + l * BT, a.ln_rstd + l * BT};
    return r;
}

// the backward pass's scratch, shared by all layers
#define MAMBA2_SCRATCH 6
typedef struct {
    float* dnormed;       // (B, T, E)  and then dy, the gradient w.r.t. the scan's output
    float* dgated;        // (B, T, E)
    float* dzxbcdt;       // (B, T, W)
    float* dxbc;          // (B, T, X)
    float* ssd_scratch;   // ssd_backward's
    float* conv_partial;  // CONV_CHUNKS * X * (K+1)
} Mamba2Scratch;

static TensorSpec* mamba2_scratch_table(TensorSpec* t, int B, int T, Mamba2Dims d, int on = 1) {
    long BT = (long)B * T, E = d.E, X = mamba2_xbc_width(d), W = mamba2_in_width(d), n = on ? 1 : 0;
    TensorSpec rows[MAMBA2_SCRATCH] = {
        {"dnormed", n * BT * E, 0, 1}, {"dgated", n * BT * E, 0, 1}, {"dzxbcdt", n * BT * W, 0, 1},
        {"dxbc", n * BT * X, 0, 1},
        {"ssd_scratch", n * ssd_backward_scratch_size(B, T, d.E, d.H, d.N), 0, 1},
        {"conv_partial", n * CONV_CHUNKS * X * (CONV_K + 1), 0, 1}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

// The state every layer carries between pieces of a sequence (generation's
// steps, chunked evaluation), one device buffer: per layer the conv's last
// 3 inputs (B, X, 3) and the SSD state (B, H, P, N). A layer's slices are its
// MambaCarry (mamba_block.cuh's layout, with X conv channels).
typedef struct {
    float* memory;
    int L, B;
    Mamba2Dims d;
} Mamba2State;

static long mamba2_state_layer_floats(int B, Mamba2Dims d) {
    return (long)B * (mamba2_xbc_width(d) * (CONV_K - 1) + (long)d.E * d.N);
}

static void mamba2_state_reset(Mamba2State* s) {
    cudaCheck(cudaMemset(s->memory, 0, s->L * mamba2_state_layer_floats(s->B, s->d) * sizeof(float)));
}

// the states of L layers for B rows, cleared (every row starts empty)
static void mamba2_state_alloc(Mamba2State* s, int L, int B, Mamba2Dims d) {
    if (L < 1 || B < 1) fail("mamba2_state_alloc: %d layers x %d rows", L, B);
    s->L = L; s->B = B; s->d = d;
    cudaCheck(cudaMalloc(&s->memory, L * mamba2_state_layer_floats(B, d) * sizeof(float)));
    mamba2_state_reset(s);
}

static void mamba2_state_free(Mamba2State* s) {
    if (s->memory) cudaCheck(cudaFree(s->memory));
    s->memory = nullptr;
}

static MambaCarry mamba2_carry(const Mamba2State* s, int l) {
    float* layer = s->memory + l * mamba2_state_layer_floats(s->B, s->d);
    MambaCarry c = {layer, layer + (long)s->B * mamba2_xbc_width(s->d) * (CONV_K - 1)};
    return c;
}

// The mixer alone: a.out (B,T,C) = Mamba2(x), keeping its activations in a
// (zxbcdt .. normed). carry: null, the sequence starts at x; else the
// positions before x are in it (conv_state (B, X, 3), ssm_state (B, H, P,
// N)), and on return it holds the state after x (a forward only).
static void mamba2_mixer_forward(cublasHandle_t h, const Mamba2StackParams& p, const Mamba2StackActs& a,
                                 const float* x, int B, int T, Mamba2Dims d, const MambaCarry* carry = nullptr) {
    int BT = B * T, C = d.C, E = d.E, N = d.N, H = d.H, X = (int)mamba2_xbc_width(d), W = (int)mamba2_in_width(d);
    {
        NVTX_RANGE("in_proj_forward");
        matmul_forward(h, a.zxbcdt, x, p.in_proj_w, nullptr, BT, C, W);
    }
    {
        NVTX_RANGE("conv1d_forward");
        conv1d_silu_forward(a.conv, a.xbc, a.zxbcdt + E, W, p.conv_w, p.conv_b, B, T, X,
                            carry ? carry->conv_state : nullptr);
        if (carry) conv1d_context_update(carry->conv_state, a.zxbcdt + E, W, B, T, X);
    }
    {
        NVTX_RANGE("ssd_forward");
        ssd_dt_forward(a.dt, a.zxbcdt + 2 * E + 2 * N, W, p.dt_bias, BT, H);
        float* h0 = carry ? carry->ssm_state : nullptr;
        ssd_forward(a.y, a.states, a.cum, a.xbc, a.dt, p.A_log, p.D, h0, h0, B, T, H, d.P, N);
    }
    {
        NVTX_RANGE("gated_rmsnorm_forward");
        ssd_gate_forward(a.gated, a.y, a.zxbcdt, W, BT, E);
        rmsnorm_forward(a.normed, a.rstd, a.gated, p.norm_w, BT, E);
    }
    {
        NVTX_RANGE("out_proj_forward");
        matmul_forward(h, a.out, a.normed, p.out_proj_w, nullptr, BT, E, C);
    }
}

// The mixer backward: dx (B,T,C) (+)= the gradient w.r.t. the mixer's input
// x from dout = the gradient w.r.t. a.out (read before dx is written).
// g: the layer's gradients (accumulated). ones: >= B*T ones.
static void mamba2_mixer_backward(cublasHandle_t h, float* dx, int accumulate_dx, const float* dout, const float* x,
                                  const Mamba2StackParams& p, const Mamba2StackParams& g, const Mamba2StackActs& a,
                                  const Mamba2Scratch& s, const float* ones, int B, int T, Mamba2Dims d) {
    int BT = B * T, C = d.C, E = d.E, N = d.N, H = d.H, X = (int)mamba2_xbc_width(d), W = (int)mamba2_in_width(d);
    {
        NVTX_RANGE("out_proj_backward");
        matmul_backward(h, s.dnormed, g.out_proj_w, nullptr, dout, a.normed, p.out_proj_w, ones, BT, E, C);
    }
    {
        NVTX_RANGE("gated_rmsnorm_backward");  // dgated, then dy (into dnormed) and dz (into dzxbcdt's z columns)
        cudaCheck(cudaMemsetAsync(s.dgated, 0, (long)BT * E * sizeof(float), main_stream));
        rmsnorm_backward(s.dgated, g.norm_w, s.dnormed, a.gated, p.norm_w, a.rstd, BT, E);
        ssd_gate_backward(s.dnormed, s.dzxbcdt, s.dgated, a.y, a.zxbcdt, W, BT, E);
    }
    {
        NVTX_RANGE("ssd_backward");  // dxbc; dt's gradient into dzxbcdt's dt columns
        ssd_backward(s.dxbc, s.dzxbcdt + 2 * E + 2 * N, W, g.A_log, g.D, g.dt_bias, s.ssd_scratch, s.dnormed, a.xbc,
                     a.dt, a.cum, a.states, p.A_log, p.D, B, T, H, d.P, N);
    }
    {
        NVTX_RANGE("conv1d_backward");  // writes dzxbcdt's xBC columns
        conv1d_silu_backward(s.dzxbcdt + E, W, g.conv_w, g.conv_b, s.conv_partial, s.dxbc, a.conv, a.zxbcdt + E, W,
                             p.conv_w, B, T, X);
    }
    {
        NVTX_RANGE("in_proj_backward");
        matmul_backward_ld(h, dx, C, accumulate_dx, g.in_proj_w, nullptr, s.dzxbcdt, x, C, p.in_proj_w, ones, BT, C, W);
    }
}

// one block: a.ln (B,T,C) = LN(x + Mamba2(x)); carry as mamba2_mixer_forward's
static void mamba2_block_forward(cublasHandle_t h, const Mamba2StackParams& p, const Mamba2StackActs& a,
                                 const float* x, int B, int T, Mamba2Dims d, const MambaCarry* carry = nullptr) {
    int BT = B * T, C = d.C;
    mamba2_mixer_forward(h, p, a, x, B, T, d, carry);
    {
        NVTX_RANGE("residual_forward");
        residual_forward(a.res, x, a.out, (long)BT * C);
    }
    {
        NVTX_RANGE("ln_forward");
        layernorm_forward(a.ln, a.ln_mean, a.ln_rstd, a.res, p.ln_w, p.ln_b, BT, C);
    }
}

// one block backward: dx (B,T,C) = the gradient w.r.t. the block's input x
// from dout = the gradient w.r.t. its output a.ln (overwrites dx; dout only read)
static void mamba2_block_backward(cublasHandle_t h, float* dx, const float* dout, const float* x,
                                  const Mamba2StackParams& p, const Mamba2StackParams& g, const Mamba2StackActs& a,
                                  const Mamba2Scratch& s, const float* ones, int B, int T, Mamba2Dims d) {
    int BT = B * T, C = d.C;
    {
        NVTX_RANGE("ln_backward");
        cudaCheck(cudaMemsetAsync(dx, 0, (long)BT * C * sizeof(float), main_stream));
        layernorm_backward(dx, g.ln_w, g.ln_b, dout, a.res, p.ln_w, a.ln_mean, a.ln_rstd, BT, C);
    }
    mamba2_mixer_backward(h, dx, 1, dx, x, p, g, a, s, ones, B, T, d);
}

// ----------------------------------------------------------------------------
// The pre-norm Mamba-2 layer, x_out = x + Dropout(Mamba2(LN(x))) (mamba_ssm's
// Block in its MixerModel; the hybrid LM's S layers), with the block's
// parameters and activations: here ln_w, ln_b are the norm before the mixer,
// a.ln is the mixer's input LN(x) and a.res the layer's output (as
// mamba_block.cuh's mamba_prenorm_forward/backward for Mamba).

// one layer: a.res (B,T,C) = x + Dropout(Mamba2(LN(x))); p and a are the
// layer's; carry as mamba2_mixer_forward's (a forward only, without dropout)
static void mamba2_prenorm_forward(cublasHandle_t h, const Mamba2StackParams& p, const Mamba2StackActs& a,
                                   const float* x, int B, int T, Mamba2Dims d, float drop_rate, DropoutSite drop_site,
                                   const MambaCarry* carry = nullptr) {
    int BT = B * T, C = d.C;
    {
        NVTX_RANGE("ln_forward");
        layernorm_forward(a.ln, a.ln_mean, a.ln_rstd, x, p.ln_w, p.ln_b, BT, C);
    }
    mamba2_mixer_forward(h, p, a, a.ln, B, T, d, carry);
    {
        NVTX_RANGE("residual_forward");
        if (drop_rate > 0.0f) dropout_apply(a.out, a.out, (long)BT * C, drop_rate, drop_site);  // (the backward never reads out)
        residual_forward(a.res, x, a.out, (long)BT * C);
    }
}

// One layer backward. dresidual (B,T,C): on entry the gradient w.r.t. the
// layer's output, on return w.r.t. its input x (the residual passes it
// through, the branch adds to it). dln (B,T,C): scratch, the gradient
// w.r.t. the mixer's input. g: the layer's gradients (accumulated).
// drop_rate, drop_site: the forward's; the branch's gradient through the
// mask goes to dln first (the mixer's backward reads its output gradient
// before it writes dln).
static void mamba2_prenorm_backward(cublasHandle_t h, float* dresidual, float* dln, const float* x,
                                    const Mamba2StackParams& p, const Mamba2StackParams& g, const Mamba2StackActs& a,
                                    const Mamba2Scratch& s, const float* ones, int B, int T, Mamba2Dims d,
                                    float drop_rate, DropoutSite drop_site) {
    int BT = B * T, C = d.C;
    const float* dbranch = dresidual;
    if (drop_rate > 0.0f) { dropout_apply(dln, dresidual, (long)BT * C, drop_rate, drop_site); dbranch = dln; }
    mamba2_mixer_backward(h, dln, 0, dbranch, a.ln, p, g, a, s, ones, B, T, d);
    {
        NVTX_RANGE("ln_backward");
        layernorm_backward(dresidual, g.ln_w, g.ln_b, dln, x, p.ln_w, a.ln_mean, a.ln_rstd, BT, C);
    }
}

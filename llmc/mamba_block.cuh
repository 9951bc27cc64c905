/*
The seed's Mamba residual block, x_out = LN(x + Mamba(x)), forward and
backward, for a stack of L blocks whose parameters and activations are each
stacked over layers (leading dimension L) in the model's flat buffers. The
char LM (train_mamba.cu) and the Mamba-ViT (train_mamba_vit.cu) use it.

Mamba(x) is mamba_ssm's Mamba(d_model=C, d_state=N, d_conv=4, expand=2):
  xz = in_proj(x) (2E) -> x | z;  u = silu(causal depthwise conv1d(x))
  x_dbl = x_proj(u) -> dt_raw (R) | B (N) | C (N);  dt = softplus(dt_proj(dt_raw))
  y = selective_scan(u, dt, A = -exp(A_log), B, C, D);  out = out_proj(y * silu(z))
with E = 2C and R = ceil(C/16). The mixer Mamba(x) is also a pair of
functions on its own (mamba_mixer_forward/backward), and the pre-norm layer
x + Mamba(LN(x)) of mamba_ssm's MixerModel is built from it
(mamba_prenorm_forward/backward, the hybrid LM's), and so is the
bidirectional block of the Mamba-ViT's -M bi (mamba_bi_block_forward/
backward): two mixers per layer, the second run on the tokens reversed,
x_out = LN(x + Mamba_f(x) + flip(Mamba_b(flip(x)))).

A stack of L layers with two mixers each holds the mixer tensors (in_proj_w
.. out_proj_w, and the mixer activations xz .. out) with a leading dimension
2L, index l the forward mixer of layer l and L + l its reverse mixer; the
LayerNorm and residual tensors stay (L, ...). The tables and the
initialization take the number of mixers per layer (1 or 2).

The selection ablation (the char LM's -M lti, MambaDims.lti = 1) is the same
block with dt, B and C per-channel parameters instead of functions of the
input: dt = softplus(dt_bias) (E), B_lti and C_lti (E, N) (MambaLtiParams,
a table of their own), scanned by selective_scan_lti_forward/backward. Its
x_proj and dt_proj rows, and the activations and scratch only they need
(x_dbl, dt, ddt, dx_dbl), are empty.
*/
#pragma once
#include "cuda_common.h"
#include "encoder.cuh"  // residual_forward
#include "layernorm.cuh"
#include "matmul.cuh"
#include "conv1d.cuh"
#include "selective_scan.cuh"
#include "flip.cuh"
#include "dropout.cuh"
#include "model.h"
#include "utils.h"

typedef struct {
    int C;  // d_model
    int E;  // inner width, 2C
    int N;  // d_state
    int R;  // dt rank, ceil(C/16)
    int lti;  // 1: the selection ablation (-M lti): dt, B, C per-channel parameters (MambaLtiParams), no x_proj, dt_proj
} MambaDims;

// x_proj's output width R + 2N (dt_raw | B | C); 0 in the LTI ablation, which has none
static long mamba_x_dbl_width(MambaDims d) { return d.lti ? 0 : d.R + 2 * d.N; }

// dt_proj's rank R for d_model C: ceil(C/16), mamba_ssm's dt_rank="auto"
static int mamba_dt_rank(int C) { return CEIL_DIV(C, 16); }

// mamba_ssm's Mamba(d_model=C, d_state=N, expand=2)
static MambaDims mamba_dims(int C, int N) {
    MambaDims d = {C, 2 * C, N, mamba_dt_rank(C)};
    return d;
}

// parameters of all L blocks, each stacked over layers; or, from
// mamba_layer_params, of one block
#define MAMBA_STACK_PARAMS 11
typedef struct {
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
} MambaStackParams;

// the L blocks' rows of a model's tensor table (model.h), from t; returns the
// next row. Weight decay on the weights of in_proj, conv, x_proj, dt_proj
// and out_proj; not on A_log, D, biases or LayerNorms. mixers: per layer
// (1, or 2 for the bidirectional block: the mixer tensors then stack 2L).
static TensorSpec* mamba_stack_param_table(TensorSpec* t, int L, MambaDims d, int mixers = 1) {
    long C = d.C, E = d.E, N = d.N, R = d.lti ? 0 : d.R, X = mamba_x_dbl_width(d);
    int M = mixers * L;
    long sel = d.lti ? 0 : 1;  // the LTI ablation has no dt_proj bias: its rows are empty
    TensorSpec rows[MAMBA_STACK_PARAMS] = {
        {"in_proj_w", M * 2 * E * C, 1, M},     {"conv_w", M * E * CONV_K, 1, M},
        {"conv_b", M * E, 0, M},                {"x_proj_w", M * X * E, 1, M},
        {"dt_proj_w", M * E * R, 1, M},         {"dt_proj_b", sel * M * E, 0, M},
        {"A_log", M * E * N, 0, M},             {"D", M * E, 0, M},
        {"out_proj_w", M * C * E, 1, M},        {"ln_w", L * C, 0, L},
        {"ln_b", L * C, 0, L}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

// the slices of mixer i (its in_proj_w .. out_proj_w) and of layer l (ln_w, ln_b)
static MambaStackParams mamba_slice_params(const MambaStackParams& s, long i, long l, MambaDims d) {
    long C = d.C, E = d.E, N = d.N, R = d.lti ? 0 : d.R, X = mamba_x_dbl_width(d), sel = d.lti ? 0 : 1;
    MambaStackParams p = {s.in_proj_w + i * 2 * E * C, s.conv_w + i * E * CONV_K, s.conv_b + i * E,
                          s.x_proj_w + i * X * E, s.dt_proj_w + i * E * R, s.dt_proj_b + sel * i * E,
                          s.A_log + i * E * N, s.D + i * E, s.out_proj_w + i * C * E, s.ln_w + l * C, s.ln_b + l * C};
    return p;
}

// layer l's parameters (one mixer per layer)
static MambaStackParams mamba_layer_params(const MambaStackParams& s, int l, MambaDims d) {
    return mamba_slice_params(s, l, l, d);
}

// mixer m (0 forward, 1 reverse) of layer l of a stack of L bidirectional layers, with the layer's LayerNorm
static MambaStackParams mamba_bi_layer_params(const MambaStackParams& s, int l, int m, int L, MambaDims d) {
    return mamba_slice_params(s, (long)m * L + l, l, d);
}

// The selection ablation's per-channel SSM parameters (-M lti, d.lti = 1),
// stacked over layers like MambaStackParams; or, from mamba_lti_layer_params,
// of one layer. They replace x_proj and dt_proj (whose rows are then empty):
// dt = softplus(dt_bias) per channel, B and C per channel and state.
#define MAMBA_LTI_PARAMS 3
typedef struct {
    float* dt_bias;  // (L, E)
    float* B_lti;    // (L, E, N)
    float* C_lti;    // (L, E, N)
} MambaLtiParams;

// their rows of a model's tensor table, from t (empty rows unless d.lti);
// returns the next row. No weight decay (SSM parameters, like A_log and D).
static TensorSpec* mamba_lti_param_table(TensorSpec* t, int L, MambaDims d) {
    long E = d.E, N = d.N, on = d.lti ? 1 : 0;
    TensorSpec rows[MAMBA_LTI_PARAMS] = {
        {"dt_bias", on * L * E, 0, L}, {"B_lti", on * L * E * N, 0, L}, {"C_lti", on * L * E * N, 0, L}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

// layer l's slices
static MambaLtiParams mamba_lti_layer_params(const MambaLtiParams& s, int l, MambaDims d) {
    long E = d.E, N = d.N;
    MambaLtiParams p = {s.dt_bias + l * E, s.B_lti + l * E * N, s.C_lti + l * E * N};
    return p;
}

// the inverse softplus of dt ~ exp(U(log dt_min, log 1e-1)) floored at min(1e-4, dt_min)
// (mamba_ssm's dt bias; its dt_min is 1e-3 unless asked otherwise)
static const float MAMBA_DT_MIN = 1e-3f;
static float mamba_dt_bias_init(Rng* rng, float dt_min = MAMBA_DT_MIN) {
    float dt = expf(logf(dt_min) + rng_uniform(rng) * (logf(1e-1f) - logf(dt_min)));
    dt = fmaxf(dt, fminf(1e-4f, dt_min));
    return dt + logf(-expm1f(-dt));
}

// mamba_ssm's initialization of one stack (host memory, pointers into a host
// copy of the parameters): Linear and conv weights U(+-1/sqrt(fan_in)), conv
// bias likewise; dt_proj weight U(+-R^-0.5); dt_proj bias the inverse
// softplus of dt ~ exp(U(log dt_min, log 1e-1)) (mamba_dt_bias_init); A_log =
// log(1..N); D = 1; LayerNorm weight 1, bias 0. Each tensor drawn over all
// its mixers (mixers per layer, as mamba_stack_param_table), in flat order.
// The LTI ablation (d.lti, lti non-null) draws no x_proj or dt_proj; its
// dt_bias is drawn where dt_proj's bias would be, then B_lti = 1 (S4D's B)
// and C_lti ~ N(0, 1/N) after the rest of the stack.
static void mamba_stack_init(const MambaStackParams& p, int L, MambaDims d, Rng* rng, int mixers = 1,
                             const MambaLtiParams* lti = nullptr, float dt_min = MAMBA_DT_MIN) {
    if (d.lti && (!lti || mixers != 1)) fail("mamba_stack_init: the LTI ablation needs its parameters and one mixer per layer");
    long C = d.C, E = d.E, N = d.N, R = d.lti ? 0 : d.R, X = mamba_x_dbl_width(d), M = (long)mixers * L;
    auto uniform = [&](float* x, long n, float bound) {
        for (long i = 0; i < n; i++) x[i] = (2.0f * rng_uniform(rng) - 1.0f) * bound;
    };
    uniform(p.in_proj_w, M * 2 * E * C, 1.0f / sqrtf((float)C));
    uniform(p.conv_w, M * E * CONV_K, 1.0f / sqrtf((float)CONV_K));
    uniform(p.conv_b, M * E, 1.0f / sqrtf((float)CONV_K));
    uniform(p.x_proj_w, M * X * E, 1.0f / sqrtf((float)E));
    uniform(p.dt_proj_w, M * E * R, 1.0f / sqrtf((float)(R ? R : 1)));
    float* dt_bias = d.lti ? lti->dt_bias : p.dt_proj_b;
    for (long i = 0; i < M * E; i++) {
        dt_bias[i] = mamba_dt_bias_init(rng, dt_min);
        p.D[i] = 1.0f;
    }
    for (long i = 0; i < M * E * N; i++) p.A_log[i] = logf((float)(i % N + 1));
    uniform(p.out_proj_w, M * C * E, 1.0f / sqrtf((float)E));
    for (long i = 0; i < L * C; i++) { p.ln_w[i] = 1.0f; p.ln_b[i] = 0.0f; }
    if (d.lti)
        for (long i = 0; i < M * E * N; i++) {
            lti->B_lti[i] = 1.0f;
            lti->C_lti[i] = rng_normal(rng) / sqrtf((float)N);
        }
}

// activations of all L blocks kept for backward, stacked; or, from
// mamba_layer_acts, of one block
#define MAMBA_STACK_ACTS 13
typedef struct {
    float* xz;       // (L, B, T, 2E)    in_proj output: x | z
    float* conv;     // (L, B, T, E)     conv output before SiLU
    float* u;        // (L, B, T, E)     silu(conv)
    float* x_dbl;    // (L, B, T, R+2N)  x_proj output: dt_raw | B | C (empty in the LTI ablation)
    float* dt;       // (L, B, T, E)     after softplus (empty in the LTI ablation)
    float* y;        // (L, B, T, E)     scan output, before gating
    float* gated;    // (L, B, T, E)
    float* states;   // (L, B, E, nchunks, N)  scan states at chunk ends
    float* out;      // (L, B, T, C)     out_proj output
    float* res;      // (L, B, T, C)     x + out
    float* ln;       // (L, B, T, C)     block output
    float* ln_mean;  // (L, B, T)
    float* ln_rstd;  // (L, B, T)
} MambaStackActs;

// the L blocks' rows of a model's activation table, from t; returns the
// next row. mixers: per layer (the mixer activations xz .. out stack
// mixers * L, the block's res .. ln_rstd L)
static TensorSpec* mamba_stack_act_table(TensorSpec* t, int L, int B, int T, MambaDims d, int mixers = 1) {
    long BT = (long)B * T, C = d.C, E = d.E, X = mamba_x_dbl_width(d), sel = d.lti ? 0 : 1;
    int M = mixers * L;
    TensorSpec rows[MAMBA_STACK_ACTS] = {
        {"xz", M * BT * 2 * E, 0, M}, {"conv", M * BT * E, 0, M},   {"u", M * BT * E, 0, M},
        {"x_dbl", M * BT * X, 0, M},  {"dt", sel * M * BT * E, 0, M}, {"y", M * BT * E, 0, M},
        {"gated", M * BT * E, 0, M},  {"states", M * scan_states_size(B, T, d.E, d.N), 0, M},
        {"out", M * BT * C, 0, M},    {"res", L * BT * C, 0, L},    {"ln", L * BT * C, 0, L},
        {"ln_mean", L * BT, 0, L},    {"ln_rstd", L * BT, 0, L}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

// the slices of mixer i (xz .. out) and of layer l (res .. ln_rstd), for a B x T batch
static MambaStackActs mamba_slice_acts(const MambaStackActs& a, long i, long l, int B, int T, MambaDims d) {
    long BT = (long)B * T, C = d.C, E = d.E, X = mamba_x_dbl_width(d), sel = d.lti ? 0 : 1;
    MambaStackActs r = {a.xz + i * BT * 2 * E, a.conv + i * BT * E, a.u + i * BT * E, a.x_dbl + i * BT * X,
                        a.dt + sel * i * BT * E, a.y + i * BT * E, a.gated + i * BT * E,
                        a.states + i * scan_states_size(B, T, d.E, d.N), a.out + i * BT * C, a.res + l * BT * C,
                        a.ln + l * BT * C, a.ln_mean + l * BT, a.ln_rstd + l * BT};
    return r;
}

// layer l's slices (one mixer per layer)
static MambaStackActs mamba_layer_acts(const MambaStackActs& a, int l, int B, int T, MambaDims d) {
    return mamba_slice_acts(a, l, l, B, T, d);
}

// mixer m (0 forward, 1 reverse) of layer l of a stack of L bidirectional layers, with the layer's res .. ln_rstd
static MambaStackActs mamba_bi_layer_acts(const MambaStackActs& a, int l, int m, int L, int B, int T, MambaDims d) {
    return mamba_slice_acts(a, (long)m * L + l, l, B, T, d);
}

// the backward pass's scratch, shared by all layers
#define MAMBA_SCRATCH 7
typedef struct {
    float* dgated;        // (B, T, E)
    float* du;            // (B, T, E)
    float* ddt;           // (B, T, E)  (empty in the LTI ablation)
    float* dxz;           // (B, T, 2E)
    float* dx_dbl;        // (B, T, R+2N)  (empty in the LTI ablation)
    float* scan_scratch;  // selective_scan_backward's partial sums (selective_scan_lti_backward's)
    float* conv_partial;  // CONV_CHUNKS * E * (K+1)
} MambaScratch;

// the scratch's rows of a model's activation table, from t; returns the next row
static TensorSpec* mamba_scratch_table(TensorSpec* t, int B, int T, MambaDims d) {
    long BT = (long)B * T, E = d.E, X = mamba_x_dbl_width(d), sel = d.lti ? 0 : 1;
    long scan_scratch = d.lti ? scan_lti_scratch_size(B, d.E, d.N) : scan_backward_scratch_size(B, T, d.E, d.N);
    TensorSpec rows[MAMBA_SCRATCH] = {
        {"dgated", BT * E, 0, 1}, {"du", BT * E, 0, 1}, {"ddt", sel * BT * E, 0, 1}, {"dxz", BT * 2 * E, 0, 1},
        {"dx_dbl", BT * X, 0, 1}, {"scan_scratch", scan_scratch, 0, 1},
        {"conv_partial", (long)CONV_CHUNKS * E * (CONV_K + 1), 0, 1}};
    for (const TensorSpec& r : rows) *t++ = r;
    return t;
}

// the LTI ablation's parameters must come with d.lti, and only then
static void mamba_check_lti(MambaDims d, const MambaLtiParams* lti, const char* what) {
    if (!d.lti != !lti) fail("%s: the LTI ablation's parameters %s", what, d.lti ? "are missing" : "given to a selective model");
}

// A layer's state carried from one chunk of a sequence into the next, in
// the recurrent step's layout (mamba_step.cuh's MambaStepState holds one per
// layer): the conv's last K-1 inputs and the SSM state after the chunk.
typedef struct {
    float* conv_state;  // (B, E, K-1)  the x half of in_proj's output at the last K-1 positions, oldest first
    float* ssm_state;   // (B, E, N)
} MambaCarry;

// The mixer alone: a.out (B,T,C) = Mamba(x), keeping its activations in a
// (xz .. states); p and a are the layer's, and so is lti (the LTI
// ablation's per-channel dt, B, C; null for the selective model, d.lti = 0).
// carry: null, the sequence starts at x (zero conv padding, zero state);
// else the positions before x are in it, and on return it holds the state
// after x. A carry whose conv_state is null starts the conv with zero
// padding and keeps no conv context: the SSM state alone is passed (training
// from passed states, whose backward takes the initial SSM state as h0).
// stretch: the dt stretch of a training step (selective_scan.cuh; the
// selective model's; the backward needs nothing of it).
static void mamba_mixer_forward(cublasHandle_t h, const MambaStackParams& p, const MambaStackActs& a, const float* x,
                                int B, int T, MambaDims d, const MambaLtiParams* lti = nullptr,
                                const MambaCarry* carry = nullptr, DtStretch stretch = NO_DT_STRETCH) {
    mamba_check_lti(d, lti, "mamba_mixer_forward");
    const float* conv_prev = carry ? carry->conv_state : nullptr;
    const float* h0 = carry ? carry->ssm_state : nullptr;
    int BT = B * T, C = d.C, E = d.E, N = d.N, R = d.R, X = R + 2 * N;
    {
        NVTX_RANGE("in_proj_forward");
        matmul_forward(h, a.xz, x, p.in_proj_w, nullptr, BT, C, 2 * E);
    }
    {
        NVTX_RANGE("conv1d_forward");
        conv1d_silu_forward(a.conv, a.u, a.xz, 2 * E, p.conv_w, p.conv_b, B, T, E, conv_prev);
    }
    if (lti) {
        NVTX_RANGE("selective_scan_lti_forward");
        selective_scan_lti_forward(a.y, a.gated, a.states, a.u, lti->dt_bias, lti->B_lti, lti->C_lti, p.A_log, p.D,
                                   a.xz, B, T, E, N, h0);
    } else {
        {
            NVTX_RANGE("x_proj_dt_forward");
            matmul_forward(h, a.x_dbl, a.u, p.x_proj_w, nullptr, BT, E, X);
            matmul_forward_ld(h, a.dt, a.x_dbl, X, p.dt_proj_w, nullptr, BT, R, E);
            dt_stretch(a.dt, B, T, E, stretch);
            dt_softplus(a.dt, p.dt_proj_b, BT, E);
        }
        NVTX_RANGE("selective_scan_forward");
        selective_scan_forward(a.y, a.gated, a.states, a.u, a.dt, a.x_dbl, R, p.A_log, p.D, a.xz, B, T, E, N, h0);
    }
    if (carry) {
        NVTX_RANGE("carry_update");
        if (carry->conv_state) conv1d_context_update(carry->conv_state, a.xz, 2 * E, B, T, E);
        scan_final_state(carry->ssm_state, a.states, B, T, E, N);
    }
    {
        NVTX_RANGE("out_proj_forward");
        matmul_forward(h, a.out, a.gated, p.out_proj_w, nullptr, BT, E, C);
    }
}

// The mixer backward: the gradient w.r.t. its input x (B,T,C) from dout =
// the gradient w.r.t. a.out. Written into dx, or added to it when
// accumulate_dx; dout is read before dx is written, so they may be the same
// buffer. g: the layer's gradients (accumulated). ones: >= B*T ones. h0
// (B,E,N): the SSM state the forward started from (null: zeros; a carry
// with a conv context has no backward).
static void mamba_mixer_backward(cublasHandle_t h, float* dx, int accumulate_dx, const float* dout, const float* x,
                                 const MambaStackParams& p, const MambaStackParams& g, const MambaStackActs& a,
                                 const MambaScratch& s, const float* ones, int B, int T, MambaDims d,
                                 const MambaLtiParams* lti = nullptr, const MambaLtiParams* glti = nullptr,
                                 const float* h0 = nullptr) {
    mamba_check_lti(d, lti, "mamba_mixer_backward");
    mamba_check_lti(d, glti, "mamba_mixer_backward");
    int BT = B * T, C = d.C, E = d.E, N = d.N, R = d.R, X = R + 2 * N;
    {
        NVTX_RANGE("out_proj_backward");
        matmul_backward(h, s.dgated, g.out_proj_w, nullptr, dout, a.gated, p.out_proj_w, ones, BT, E, C);
    }
    if (lti) {
        NVTX_RANGE("selective_scan_lti_backward");
        selective_scan_lti_backward(s.du, s.dxz, g.A_log, glti->B_lti, glti->C_lti, glti->dt_bias, g.D, s.scan_scratch,
                                    s.dgated, a.y, a.u, lti->dt_bias, lti->B_lti, lti->C_lti, p.A_log, p.D, a.xz,
                                    a.states, B, T, E, N, h0);
    } else {
        {
            NVTX_RANGE("selective_scan_backward");
            selective_scan_backward(s.du, s.ddt, s.dxz, s.dx_dbl, g.A_log, g.D, s.scan_scratch, s.dgated, a.y, a.u,
                                    a.dt, a.x_dbl, R, p.A_log, p.D, a.xz, a.states, B, T, E, N, h0);
        }
        NVTX_RANGE("x_proj_dt_backward");
        // dt_proj: ddt is the gradient before softplus; writes dx_dbl's dt_raw columns
        matmul_backward_ld(h, s.dx_dbl, X, 0, g.dt_proj_w, g.dt_proj_b, s.ddt, a.x_dbl, X, p.dt_proj_w, ones, BT, R, E);
        // x_proj: du += dx_dbl @ x_proj_w
        matmul_backward_ld(h, s.du, E, 1, g.x_proj_w, nullptr, s.dx_dbl, a.u, E, p.x_proj_w, ones, BT, E, X);
    }
    {
        NVTX_RANGE("conv1d_backward");  // writes dxz's x half
        conv1d_silu_backward(s.dxz, 2 * E, g.conv_w, g.conv_b, s.conv_partial, s.du, a.conv, a.xz, 2 * E, p.conv_w, B, T, E);
    }
    {
        NVTX_RANGE("in_proj_backward");  // dx (+)= dxz @ in_proj_w
        matmul_backward_ld(h, dx, C, accumulate_dx, g.in_proj_w, nullptr, s.dxz, x, C, p.in_proj_w, ones, BT, C, 2 * E);
    }
}

// one block: a.ln (B,T,C) = LN(x + Mamba(x)); p, a and lti (null unless
// d.lti) are the layer's; carry and stretch as mamba_mixer_forward's
static void mamba_block_forward(cublasHandle_t h, const MambaStackParams& p, const MambaStackActs& a, const float* x,
                                int B, int T, MambaDims d, const MambaLtiParams* lti = nullptr,
                                const MambaCarry* carry = nullptr, DtStretch stretch = NO_DT_STRETCH) {
    int BT = B * T, C = d.C;
    mamba_mixer_forward(h, p, a, x, B, T, d, lti, carry, stretch);
    {
        NVTX_RANGE("residual_forward");
        residual_forward(a.res, x, a.out, (long)BT * C);
    }
    {
        NVTX_RANGE("ln_forward");
        layernorm_forward(a.ln, a.ln_mean, a.ln_rstd, a.res, p.ln_w, p.ln_b, BT, C);
    }
}

// one block backward: dx (B,T,C) = gradient w.r.t. the block's input x, from
// dout = gradient w.r.t. its output a.ln (overwrites dx; dout is only read).
// g: the layer's gradients (accumulated), glti the LTI ablation's (null
// unless d.lti). ones: >= B*T ones on the device. h0: as mamba_mixer_backward's.
static void mamba_block_backward(cublasHandle_t h, float* dx, const float* dout, const float* x,
                                 const MambaStackParams& p, const MambaStackParams& g, const MambaStackActs& a,
                                 const MambaScratch& s, const float* ones, int B, int T, MambaDims d,
                                 const MambaLtiParams* lti = nullptr, const MambaLtiParams* glti = nullptr,
                                 const float* h0 = nullptr) {
    int BT = B * T, C = d.C;
    {
        NVTX_RANGE("ln_backward");  // dx = d res; the residual passes it to x unchanged
        cudaCheck(cudaMemsetAsync(dx, 0, (long)BT * C * sizeof(float), main_stream));
        layernorm_backward(dx, g.ln_w, g.ln_b, dout, a.res, p.ln_w, a.ln_mean, a.ln_rstd, BT, C);
    }
    mamba_mixer_backward(h, dx, 1, dx, x, p, g, a, s, ones, B, T, d, lti, glti, h0);  // dx += the mixer's
}

// ----------------------------------------------------------------------------
// The pre-norm Mamba layer, x_out = x + Mamba(LN(x)) (mamba_ssm's Block in
// its MixerModel; the hybrid LM's M layers), with the same parameters and
// activations: here ln_w, ln_b are the norm before the mixer, a.ln is the
// mixer's input LN(x) and a.res the layer's output.

// one layer: a.res (B,T,C) = x + Mamba(LN(x)); p and a are the layer's
static void mamba_prenorm_forward(cublasHandle_t h, const MambaStackParams& p, const MambaStackActs& a, const float* x,
                                  int B, int T, MambaDims d, float drop_rate, DropoutSite drop_site) {
    int BT = B * T, C = d.C;
    {
        NVTX_RANGE("ln_forward");
        layernorm_forward(a.ln, a.ln_mean, a.ln_rstd, x, p.ln_w, p.ln_b, BT, C);
    }
    mamba_mixer_forward(h, p, a, a.ln, B, T, d);
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
// drop_rate, drop_site: the forward's; the branch's gradient through the mask
// goes to dln first (the mixer's backward reads its output gradient before
// it writes dln).
static void mamba_prenorm_backward(cublasHandle_t h, float* dresidual, float* dln, const float* x,
                                   const MambaStackParams& p, const MambaStackParams& g, const MambaStackActs& a,
                                   const MambaScratch& s, const float* ones, int B, int T, MambaDims d,
                                   float drop_rate, DropoutSite drop_site) {
    int BT = B * T, C = d.C;
    const float* dbranch = dresidual;
    if (drop_rate > 0.0f) { dropout_apply(dln, dresidual, (long)BT * C, drop_rate, drop_site); dbranch = dln; }
    mamba_mixer_backward(h, dln, 0, dbranch, a.ln, p, g, a, s, ones, B, T, d);
    {
        NVTX_RANGE("ln_backward");
        layernorm_backward(dresidual, g.ln_w, g.ln_b, dln, x, p.ln_w, a.ln_mean, a.ln_rstd, BT, C);
    }
}

// ----------------------------------------------------------------------------
// The bidirectional block (the Mamba-ViT's -M bi), with two mixers of its
// own: the forward one on the tokens, the reverse one on the tokens reversed
// in time (flip over T, flip.cuh), its output flipped back; then the seed's
// post-norm, as the one-way block:
//   y_f = Mamba_f(x);  y_b = flip(Mamba_b(flip(x)));  x_out = LN(x + y_f + y_b)
// pf, af: the forward mixer's parameters and activations with the layer's
// LayerNorm, res and ln (mamba_bi_layer_params/acts, m = 0); pb, ab the
// reverse mixer's (m = 1; its activations are in reversed time order).

// one block: af.ln (B,T,C) = the block's output; x_rev (B,T,C) gets flip(x), kept for the backward
static void mamba_bi_block_forward(cublasHandle_t h, const MambaStackParams& pf, const MambaStackActs& af,
                                   const MambaStackParams& pb, const MambaStackActs& ab, float* x_rev, const float* x,
                                   int B, int T, MambaDims d) {
    int BT = B * T, C = d.C;
    mamba_mixer_forward(h, pf, af, x, B, T, d);  // af.out = y_f
    {
        NVTX_RANGE("flip_forward");
        flip_tokens(x_rev, x, B, T, C, 0);
    }
    mamba_mixer_forward(h, pb, ab, x_rev, B, T, d);  // ab.out = Mamba_b(flip(x))
    {
        NVTX_RANGE("residual_forward");
        residual_forward(af.res, x, af.out, (long)BT * C);  // x + y_f
        flip_tokens(af.res, ab.out, B, T, C, 1);             // + flip(Mamba_b(flip(x)))
    }
    {
        NVTX_RANGE("ln_forward");
        layernorm_forward(af.ln, af.ln_mean, af.ln_rstd, af.res, pf.ln_w, pf.ln_b, BT, C);
    }
}

// one block backward: dx (B,T,C) = gradient w.r.t. the block's input x, from
// dout = gradient w.r.t. its output af.ln (overwrites dx; dout is only
// read). dx_rev (B,T,C): scratch. gf, gb: the mixers' gradients
// (accumulated; gf holds the LayerNorm's). ones: >= B*T ones on the device.
static void mamba_bi_block_backward(cublasHandle_t h, float* dx, float* dx_rev, const float* dout, const float* x,
                                    const float* x_rev, const MambaStackParams& pf, const MambaStackParams& gf,
                                    const MambaStackActs& af, const MambaStackParams& pb, const MambaStackParams& gb,
                                    const MambaStackActs& ab, const MambaScratch& s, const float* ones, int B, int T,
                                    MambaDims d) {
    int BT = B * T, C = d.C;
    {
        NVTX_RANGE("ln_backward");  // dx = d res, which reaches x, y_f and y_b unchanged
        cudaCheck(cudaMemsetAsync(dx, 0, (long)BT * C * sizeof(float), main_stream));
        layernorm_backward(dx, gf.ln_w, gf.ln_b, dout, af.res, pf.ln_w, af.ln_mean, af.ln_rstd, BT, C);
    }
    {
        NVTX_RANGE("flip_backward");  // the gradient w.r.t. the reverse mixer's output
        flip_tokens(dx_rev, dx, B, T, C, 0);
    }
    mamba_mixer_backward(h, dx, 1, dx, x, pf, gf, af, s, ones, B, T, d);              // dx += the forward mixer's
    mamba_mixer_backward(h, dx_rev, 0, dx_rev, x_rev, pb, gb, ab, s, ones, B, T, d);  // dx_rev = d flip(x)
    {
        NVTX_RANGE("flip_backward");
        flip_tokens(dx, dx_rev, B, T, C, 1);  // dx += flip(d flip(x))
    }
}

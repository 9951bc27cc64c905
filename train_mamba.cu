/*
Char-level Mamba on tinyshakespeare: the model, top to bottom.

  config -> tensor table (the parameters' flat buffer) -> activations
  -> init -> forward -> backward -> main

The model (doc/models.md; the write-up this project reproduces uses it):
token embedding (V,C); L blocks x = Dropout(LN(x + Mamba(x))) (post-norm,
dropout after the LayerNorm as the seed's MambaBlock; -D, training steps
only, the masks dropout.cuh's hash of the run's seed, the step and the site l);
a final LayerNorm; a head Linear(C, V) with bias. No positions. Loss: mean
cross-entropy. Mamba(x) is mamba_ssm's Mamba(d_model=C, d_state=16,
d_conv=4, expand=2), E = 2C, R = ceil(C/16):
  xz = in_proj(x) (2E) -> x, z;  u = silu(causal depthwise conv1d(x))
  (dt_raw, B, C) = x_proj(u);  dt = softplus(dt_proj(dt_raw))
  y = selective_scan(u, dt, A = -exp(A_log), B, C, D);  out = out_proj(y * silu(z))
With -M lti (model kind MODEL_MAMBA_LTI), the selection ablation: dt, B and
C are learned per channel instead of computed from u (no x_proj, dt_proj):
  dt = softplus(dt_bias) (E);  B_lti, C_lti (E, N);  the rest as above.
With -M 2 (model kind MODEL_MAMBA2) each block's mixer is mamba_ssm's
Mamba2(d_model=C, d_state=N (-N, default 64), headdim=P=64, ngroups=1),
H = E/P heads (llmc/mamba2_block.cuh, llmc/ssd.cuh):
  (z, xBC, dt_raw) = in_proj(x);  (x, B, C) = silu(causal depthwise conv1d(xBC))
  dt = softplus(dt_raw + dt_bias) (H);  per head: S_t = exp(dt A) S_{t-1} + dt x_t B_t^T,
  y_t = S_t C_t + D x_t;  out = out_proj(RMSNorm(y * silu(z)) * norm_w)
Kernels live in llmc/; the buffers every model owns and their update in
llmc/model.h; the training loop, validation and sampling in
llmc/lm_trainer.h (lm_run), which calls this file's lm_forward and
lm_backward, and lm_eval_chunked (mamba_eval_chunked) for task files
longer than the evaluation chunk (-d).

Build with `make train_mamba` (GPU if one is visible, else the host backend).
*/
#include "llmc/cuda_common.h"
#include "llmc/utils.h"
#include "llmc/encoder.cuh"
#include "llmc/mamba_block.cuh"
#include "llmc/mamba2_block.cuh"
#include "llmc/mamba_step.cuh"
#include "llmc/dropout.cuh"
#include "llmc/lm_head.cuh"
#include "llmc/model.h"
#include "llmc/lm_trainer.h"

#include <functional>
#include <vector>

// ----------------------------------------------------------------------------
// config

typedef struct {
    int vocab_size;  // V
    int num_layers;  // L
    int channels;    // C (d_model)
    int inner;       // E = expand * C
    int d_state;     // N
    int lti;         // 1: the selection ablation (-M lti, model kind MODEL_MAMBA_LTI)
    int mamba2;      // 1: the Mamba-2 mixer (-M 2, model kind MODEL_MAMBA2)
    int headdim;     // P, Mamba-2's channels per head (H = E / P heads); 0 for Mamba-1
} MambaConfig;

// the seven config slots of model files and checkpoints; dt_rank is R =
// mamba_dt_rank(C), derived from C and stored so that a file says its shape
// (0 in the LTI ablation, which has no dt_proj)
static const char* const mamba_slot_names[CONFIG_SLOTS] = {"vocab_size", "num_layers", "channels", "inner",
                                                           "d_state", "dt_rank", "num_params"};

// Mamba-2's slots: the sixth is the headdim P
static const char* const mamba2_slot_names[CONFIG_SLOTS] = {"vocab_size", "num_layers", "channels", "inner",
                                                            "d_state", "headdim", "num_params"};

static MambaDims dims_of(MambaConfig c) {
    MambaDims d = {c.channels, c.inner, c.d_state, c.lti ? 0 : mamba_dt_rank(c.channels), c.lti};
    return d;
}

static Mamba2Dims dims2_of(MambaConfig c) {
    Mamba2Dims d = {c.channels, c.inner, c.d_state, c.headdim, c.headdim ? c.inner / c.headdim : 0};
    return d;
}

static int kind_of(MambaConfig c) { return c.mamba2 ? MODEL_MAMBA2 : c.lti ? MODEL_MAMBA_LTI : MODEL_MAMBA; }

// ----------------------------------------------------------------------------
// parameters: one flat buffer, tensors in this order (the blocks' stacked
// over L). The selective model's lti and tower2 rows are empty; the LTI
// ablation's x_proj_w, dt_proj_w, dt_proj_b and tower2 rows are; Mamba-2's
// tower and lti rows are.

#define NUM_PARAMETER_TENSORS (1 + MAMBA_STACK_PARAMS + MAMBA_LTI_PARAMS + MAMBA2_STACK_PARAMS + 4)
typedef struct {
    float* wte;               // (V, C)
    MambaStackParams tower;   // the L blocks: in_proj_w .. ln_b, see llmc/mamba_block.cuh
    MambaLtiParams lti;       // the L blocks' dt_bias, B_lti, C_lti (-M lti)
    Mamba2StackParams tower2; // the L Mamba-2 blocks (-M 2): in_proj_w .. ln_b, see llmc/mamba2_block.cuh
    float* lnf_w;             // (C)
    float* lnf_b;             // (C)
    float* head_w;            // (V, C)
    float* head_b;            // (V)
} ParameterTensors;
static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

// name, size, weight decay (the embedding, the blocks' weights and the head's), layers
static void mamba_param_table(TensorSpec* t, MambaConfig c) {
    long V = c.vocab_size, C = c.channels;
    *t++ = {"wte", V * C, 1, 1};
    TensorSpec* tower = t;
    t = mamba_stack_param_table(t, c.num_layers, dims_of(c));
    if (c.mamba2) empty_rows(tower, t);
    t = mamba_lti_param_table(t, c.num_layers, dims_of(c));
    t = mamba2_stack_param_table(t, c.num_layers, dims2_of(c), c.mamba2);
    *t++ = {"lnf_w", C, 0, 1};
    *t++ = {"lnf_b", C, 0, 1};
    *t++ = {"head_w", V * C, 1, 1};
    *t++ = {"head_b", V, 0, 1};
}

// ----------------------------------------------------------------------------
// activations: one flat buffer for what backward needs, and scratch

#define NUM_ACTIVATION_TENSORS (1 + MAMBA_STACK_ACTS + MAMBA2_STACK_ACTS + 1 + 6 + 1 + MAMBA_SCRATCH + MAMBA2_SCRATCH + 3)
typedef struct {
    float* encoded;         // (B, T, C)
    MambaStackActs tower;   // the L blocks' activations, see llmc/mamba_block.cuh (empty with -M 2)
    Mamba2StackActs tower2; // the L Mamba-2 blocks' (-M 2; empty otherwise), see llmc/mamba2_block.cuh
    float* drop;            // (L, B, T, C)  the blocks' outputs after dropout (with -D; empty without)
    float* lnf;             // (B, T, C)
    float* lnf_mean;        // (B, T)
    float* lnf_rstd;        // (B, T)
    float* logits;          // (B, T, V)
    float* probs;           // (B, T, V)
    float* losses;          // (B, T)
    // scratch
    float* dresidual;       // (B, T, C)  gradient w.r.t. the current block's output
    MambaScratch block;     // the blocks' backward scratch (empty with -M 2)
    Mamba2Scratch block2;   // ... the Mamba-2 blocks' (-M 2)
    float* dresidual_in;    // (B, T, C)  ... and w.r.t. its input (the two swap roles block by block)
    float* dnorm;           // (B, T, C)  gradient w.r.t. the final LayerNorm's output
    float* dlogits;         // (B, T, V); also the one-hot scratch of the embedding backward
} ActivationTensors;
static_assert(sizeof(ActivationTensors) == NUM_ACTIVATION_TENSORS * sizeof(float*), "one pointer per tensor");

static void mamba_act_table(TensorSpec* t, MambaConfig c, int B, int T, bool dropout) {
    long C = c.channels, V = c.vocab_size, BT = (long)B * T, L = c.num_layers;
    *t++ = {"encoded", BT * C, 0, 1};
    TensorSpec* tower = t;
    t = mamba_stack_act_table(t, c.num_layers, B, T, dims_of(c));
    if (c.mamba2) empty_rows(tower, t);
    t = mamba2_stack_act_table(t, c.num_layers, B, T, dims2_of(c), c.mamba2);
    *t++ = {"drop", dropout ? L * BT * C : 0, 0, c.num_layers};
    *t++ = {"lnf", BT * C, 0, 1};
    *t++ = {"lnf_mean", BT, 0, 1};
    *t++ = {"lnf_rstd", BT, 0, 1};
    *t++ = {"logits", BT * V, 0, 1};
    *t++ = {"probs", BT * V, 0, 1};
    *t++ = {"losses", BT, 0, 1};
    *t++ = {"dresidual", BT * C, 0, 1};
    TensorSpec* scratch = t;
    t = mamba_scratch_table(t, B, T, dims_of(c));
    if (c.mamba2) empty_rows(scratch, t);
    t = mamba2_scratch_table(t, B, T, dims2_of(c), c.mamba2);
    *t++ = {"dresidual_in", BT * C, 0, 1};
    *t++ = {"dnorm", BT * C, 0, 1};
    *t++ = {"dlogits", BT * V, 0, 1};
}

// ----------------------------------------------------------------------------
// the model

typedef struct {
    MambaConfig config;
    ParameterTensors params;  // pointers into buf.params_memory
    ParameterTensors grads;   // ... and into buf.grads_memory
    ActivationTensors acts;   // ... and into buf.acts_memory
    TrainDropout dropout;     // the rate at training steps and the masks' seed (llmc/model.h)
    ModelBuffers buf;         // the buffers, the cuBLAS handle, the last loss (llmc/model.h)
    MambaStepState step;      // generation: every layer's conv and SSM state (llmc/mamba_step.cuh)
    Mamba2State step2;        // ... with -M 2 (llmc/mamba2_block.cuh)
    StepBuffers gen;          // ... and one step's tokens, stream and logits (llmc/lm_trainer.h)
    float* passed;            // -R: (2, L, B, E, N) the SSM states training batches start from, then the
                              // states they end in (null without -R); see "training from passed states"
    int passed_B;             // ... their rows, the training batch
    int passed_forward;       // 1: the last forward started from passed[0] (its backward needs them)
    float stretch_max;        // -Y: the dt stretch's largest factor G at training steps (0: none)
} Mamba;

static MambaConfig mamba_config(int V, int L, int C, int N, int lti = 0) {
    MambaDims d = mamba_dims(C, N);
    MambaConfig c = {V, L, C, d.E, N, lti, 0, 0};
    return c;
}

// the Mamba-2 LM (-M 2): d_state N, headdim P
static MambaConfig mamba2_config(int V, int L, int C, int N, int P) {
    Mamba2Dims d = mamba2_dims(C, N, P);
    MambaConfig c = {V, L, C, d.E, N, 0, 1, P};
    return c;
}

static void mamba_build(Mamba* model, MambaConfig c) {
    if (c.mamba2) ssd_check_limits(c.inner, c.headdim, c.d_state);
    else if (!c.lti) scan_check_limits(c.d_state);
    model->config = c;
    TensorSpec table[NUM_PARAMETER_TENSORS];
    mamba_param_table(table, c);
    int slots[CONFIG_SLOTS - 1] = {c.vocab_size, c.num_layers, c.channels, c.inner, c.d_state,
                                   c.mamba2 ? c.headdim : dims_of(c).R};
    model_build(&model->buf, kind_of(c), c.mamba2 ? mamba2_slot_names : mamba_slot_names, slots, table,
                NUM_PARAMETER_TENSORS, &model->params, &model->grads, sizeof(model->params));
    model->dropout = {0.0f, 0, 0.0f};
    model->gen.B = 0;
    model->step2.memory = nullptr;
    model->passed = nullptr;
    model->passed_B = model->passed_forward = 0;
    model->stretch_max = 0.0f;
}

// sizes the activations for batches up to B x T, with room for the blocks'
// dropped outputs when the run trains with dropout
static void mamba_allocate_activations(Mamba* model, int B, int T, bool dropout) {
    TensorSpec table[NUM_ACTIVATION_TENSORS];
    mamba_act_table(table, model->config, B, T, dropout);
    model_allocate_activations(&model->buf, table, NUM_ACTIVATION_TENSORS, &model->acts, sizeof(model->acts), B, T, 1,
                               (long)B * T, "-b/-t");
    if (!dropout) model->acts.drop = nullptr;  // (an empty row): no room, a forward with dropout refuses
}

// mamba_ssm's initialization for the blocks (mamba_stack_init), PyTorch's
// defaults elsewhere: embedding N(0, 1), head U(+-1/sqrt(C)), LayerNorm 1 and 0
static void mamba_init_random(Mamba* model, uint64_t seed, float dt_min = MAMBA_DT_MIN) {
    MambaConfig c = model->config;
    Rng rng;
    rng_seed(&rng, seed);
    std::vector<float> host(model->buf.num_parameters);
    ParameterTensors p;  // pointers into the host copy
    point_tensors(&p, host.data(), model->buf.param_table, NUM_PARAMETER_TENSORS);
    long V = c.vocab_size, C = c.channels;
    for (long i = 0; i < V * C; i++) p.wte[i] = rng_normal(&rng);
    if (c.mamba2) mamba2_stack_init(p.tower2, c.num_layers, dims2_of(c), &rng, dt_min);
    else mamba_stack_init(p.tower, c.num_layers, dims_of(c), &rng, 1, &p.lti, dt_min);
    for (long i = 0; i < C; i++) { p.lnf_w[i] = 1.0f; p.lnf_b[i] = 0.0f; }
    for (long i = 0; i < V * C; i++) p.head_w[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    for (long i = 0; i < V; i++) p.head_b[i] = (2.0f * rng_uniform(&rng) - 1.0f) / sqrtf((float)C);
    model_upload_params(&model->buf, host.data());
}

// the output of block l (l = -1: the embedding, the first block's input):
// after dropout when the last forward used dropout
static const float* block_output(const Mamba* model, int l, int B, int T) {
    const ActivationTensors& a = model->acts;
    if (l < 0) return a.encoded;
    if (model->dropout.fwd_rate > 0.0f) return a.drop + l * ((long)B * T * model->config.channels);
    if (model->config.mamba2) return mamba2_layer_acts(a.tower2, l, B, T, dims2_of(model->config)).ln;
    return mamba_layer_acts(a.tower, l, B, T, dims_of(model->config)).ln;
}

// ----------------------------------------------------------------------------
// training from passed states (-R; the state passing of Buitrago Ruiz & Gu,
// 2025): each training batch's rows start from the SSM states (not the conv
// context) that the previous batch's rows ended in, the first from zeros;
// no gradient flows into them. Training at length T then visits the states
// of much longer sequences, which the model must learn to read past.

// layer l's states (B, E, N) in passed: which = 0 the batch's initial
// states, 1 the states after it
static float* passed_states(const Mamba* model, int which, int l) {
    MambaDims d = dims_of(model->config);
    return model->passed + ((long)which * model->config.num_layers + l) * model->passed_B * d.E * d.N;
}

// room for B rows of passed states, cleared (Mamba-1 mixers: the selective and the LTI scan)
static void mamba_allocate_passed_states(Mamba* model, int B) {
    MambaDims d = dims_of(model->config);
    size_t bytes = 2 * (size_t)model->config.num_layers * B * d.E * d.N * sizeof(float);
    cudaCheck(cudaMalloc(&model->passed, bytes));
    cudaCheck(cudaMemset(model->passed, 0, bytes));
    model->passed_B = B;
}

// ----------------------------------------------------------------------------
// forward: logits for inputs (B, T) (host array); with targets, also the mean
// loss. train_step >= 0: a training step (dropout on, its masks keyed by the
// step); -1: evaluation and generation (no dropout). carry: null, every row
// starts empty; else one MambaCarry per layer holding its conv and SSM state
// before the rows (of at least B rows: layer_carries), and on return the
// states after them; no backward after such a forward, but for one whose
// carries hold SSM states alone (training from passed states, lm_forward).

static void mamba_forward(Mamba* model, const int* inputs, const int* targets, int B, int T, int train_step,
                          const MambaCarry* carry = nullptr) {
    NVTX_RANGE("forward");
    MambaConfig c = model->config;
    MambaDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    if (B > m->batch_size || T > m->seq_len) fail("mamba_forward: batch %d x %d exceeds the allocation", B, T);
    int L = c.num_layers, C = c.channels, BT = B * T;
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    float drop = train_dropout_begin(&model->dropout, m, train_step);
    if (drop > 0.0f && !a.drop) fail("mamba_forward: dropout needs the activations sized for it");
    model_stage_batch(m, inputs, BT, targets, BT);
    DtStretch stretch = NO_DT_STRETCH;  // training steps only, keyed by the run's seed and the step as dropout's masks
    if (train_step >= 0 && model->stretch_max > 1.0f)
        stretch = {dropout_site(model->dropout.seed, model_train_step(m), DT_STRETCH_SITE), logf(model->stretch_max)};

    { NVTX_RANGE("encoder_forward"); encoder_forward(a.encoded, m->inputs, p.wte, nullptr, B, T, C); }
    for (int l = 0; l < L; l++) {
        NVTX_RANGE("block_forward");
        const float* block_in = block_output(model, l - 1, B, T);
        const MambaCarry* layer_carry = carry ? carry + l : nullptr;
        const float* out;
        if (c.mamba2) {
            Mamba2StackActs la = mamba2_layer_acts(a.tower2, l, B, T, dims2_of(c));
            mamba2_block_forward(h, mamba2_layer_params(p.tower2, l, dims2_of(c)), la, block_in, B, T, dims2_of(c),
                                 layer_carry);
            out = la.ln;
        } else {
            MambaStackActs la = mamba_layer_acts(a.tower, l, B, T, d);
            MambaLtiParams lti = mamba_lti_layer_params(p.lti, l, d);
            mamba_block_forward(h, mamba_layer_params(p.tower, l, d), la, block_in, B, T, d, c.lti ? &lti : nullptr,
                                layer_carry, stretch);
            out = la.ln;
        }
        if (drop > 0.0f) {
            NVTX_RANGE("dropout_forward");
            dropout_apply(a.drop + l * ((long)BT * C), out, (long)BT * C, drop,
                          dropout_site(model->dropout.seed, model_train_step(m), l));
        }
    }
    lm_head_forward(h, m, lm_head_params(p), lm_head_acts(a), block_output(model, L - 1, B, T), BT, C, c.vocab_size,
                    targets != nullptr);
}

// ----------------------------------------------------------------------------
// backward: gradients of the mean loss of the last forward (with targets);
// after a forward from passed states (-R), each layer's scan starts from them

static void mamba_backward(Mamba* model, int B, int T) {
    NVTX_RANGE("backward");
    MambaConfig c = model->config;
    MambaDims d = dims_of(c);
    ModelBuffers* m = &model->buf;
    int L = c.num_layers, C = c.channels, V = c.vocab_size, BT = B * T;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    cublasHandle_t h = m->cublas;
    float drop = model->dropout.fwd_rate;
    model_zero_grads(m);
    float* dresidual = a.dresidual;        // gradient w.r.t. the current block's output
    float* dresidual_in = a.dresidual_in;  // ... and w.r.t. its input
    lm_head_backward(h, m, lm_head_params(p), lm_head_params(g), lm_head_acts(a), block_output(model, L - 1, B, T),
                     dresidual, a.dlogits, a.dnorm, BT, C, V);
    for (int l = L - 1; l >= 0; l--) {
        NVTX_RANGE("block_backward");
        if (drop > 0.0f)  // through the mask: the gradient w.r.t. the block's LayerNorm output
            dropout_apply(dresidual, dresidual, (long)BT * C, drop, dropout_site(model->dropout.seed, model_train_step(m), l));
        if (c.mamba2) {
            Mamba2Dims d2 = dims2_of(c);
            mamba2_block_backward(h, dresidual_in, dresidual, block_output(model, l - 1, B, T),
                                  mamba2_layer_params(p.tower2, l, d2), mamba2_layer_params(g.tower2, l, d2),
                                  mamba2_layer_acts(a.tower2, l, B, T, d2), a.block2, m->ones, B, T, d2);
        } else {
            MambaLtiParams lti = mamba_lti_layer_params(p.lti, l, d), glti = mamba_lti_layer_params(g.lti, l, d);
            const float* h0 = model->passed_forward ? passed_states(model, 0, l) : nullptr;
            mamba_block_backward(h, dresidual_in, dresidual, block_output(model, l - 1, B, T),
                                 mamba_layer_params(p.tower, l, d), mamba_layer_params(g.tower, l, d),
                                 mamba_layer_acts(a.tower, l, B, T, d), a.block, m->ones, B, T, d,
                                 c.lti ? &lti : nullptr, c.lti ? &glti : nullptr, h0);
        }
        std::swap(dresidual, dresidual_in);
    }
    {
        NVTX_RANGE("encoder_backward");
        encoder_backward(h, g.wte, nullptr, a.dlogits, dresidual, m->inputs, B, T, C, V);
    }
}

// ----------------------------------------------------------------------------
// generation: the recurrent step of every block (llmc/mamba_step.cuh), its
// states prefilled by the parallel forward. Constant time and memory per
// token, no context limit. Mamba-2 (-M 2) steps by the parallel forward of
// one position with every layer's state carried (llmc/mamba2_block.cuh's
// Mamba2State): the same constant time and memory per token.

// every layer's MambaCarry in a carried state: Mamba-1's step state, or Mamba-2's
static std::vector<MambaCarry> layer_carries(const Mamba* model, const MambaStepState* s1, const Mamba2State* s2) {
    std::vector<MambaCarry> carries(model->config.num_layers);
    for (int l = 0; l < model->config.num_layers; l++)
        carries[l] = model->config.mamba2 ? mamba2_carry(s2, l) : MambaCarry{mamba_conv_state(s1, l), mamba_ssm_state(s1, l)};
    return carries;
}

// the states of B rows (up to the activations' batch), cleared
static void mamba_generate_begin(Mamba* model, int B) {
    MambaConfig c = model->config;
    if (c.mamba2) mamba2_state_alloc(&model->step2, c.num_layers, B, dims2_of(c));
    else mamba_step_state_alloc(&model->step, c.num_layers, B, dims_of(c));
    step_buffers_alloc(&model->gen, B, c.channels, c.vocab_size);
}

static void mamba_generate_end(Mamba* model) {
    if (model->config.mamba2) mamba2_state_free(&model->step2);
    else mamba_step_state_free(&model->step);
    step_buffers_free(&model->gen);
}

// one token per row (host, B) through every block's step; gen.logits (B, V) the next token's
static void mamba_step(Mamba* model, const int* tokens, int B) {
    NVTX_RANGE("step");
    MambaConfig c = model->config;
    if (c.mamba2) {
        if (B > model->step2.B) fail("mamba_step: %d rows for a state of %d", B, model->step2.B);
        mamba_forward(model, tokens, nullptr, B, 1, -1, layer_carries(model, nullptr, &model->step2).data());
        step_logits_from_forward(&model->gen, model->acts.logits, B, 1, c.vocab_size);
        return;
    }
    ParameterTensors p = model->params;
    StepBuffers* g = &model->gen;
    cublasHandle_t h = model->buf.cublas;
    cudaCheck(cudaMemcpy(g->tokens, tokens, B * sizeof(int), cudaMemcpyHostToDevice));
    encoder_forward(g->x, g->tokens, p.wte, nullptr, B, 1, c.channels);
    mamba_stack_step(h, p.tower, &model->step, g->x, B, c.lti ? &p.lti : nullptr);
    lm_head_step(h, lm_head_params(p), g->logits, g->lnf, g->x, B, c.channels, c.vocab_size);
}

// A prompt (B, T) (host): its first tokens (as many as the activations
// hold) through the parallel forward, whose scans end in the states after
// them; the rest, if any, by steps. gen.logits: the next token's.
static void mamba_prefill(Mamba* model, const int* tokens, int B, int T) {
    NVTX_RANGE("prefill");
    auto prefill = [&](const int* rows, int first) {
        if (model->config.mamba2) {  // the forward from empty states leaves the states after the rows
            mamba2_state_reset(&model->step2);
            mamba_forward(model, rows, nullptr, B, first, -1, layer_carries(model, nullptr, &model->step2).data());
        } else {
            mamba_forward(model, rows, nullptr, B, first, -1);
            mamba_step_prefill_stack(&model->step, model->acts.tower, B, first);
        }
        step_logits_from_forward(&model->gen, model->acts.logits, B, first, model->config.vocab_size);
    };
    lm_prefill_recurrent(tokens, B, T, model->buf.seq_len, prefill, [&](const int* column) { mamba_step(model, column, B); });
}

// ----------------------------------------------------------------------------
// chunked evaluation: rows of any length in constant device memory

// Evaluates rows (B, T) (any T) Tc positions at a time (Tc at most the
// activations' T, B at most their batch), each layer's conv and SSM state
// carried from one chunk into the next in a MambaStepState of its own (the
// recurrent step's layout), so each position sees every position before it,
// as one forward over all T would. For the chunks in order (n = Tc but for
// the last): read(t0, n, inputs, targets) fills the chunk's inputs and
// targets (B, n) (host), the forward runs them, then done(t0, n, targets)
// (acts.logits (B, n, V) and acts.losses (B, n) the chunk's). Device memory:
// the activations' and B rows of states, whatever T is; host memory: one
// chunk. Task-file evaluation (lm_trainer.h's lm_eval_chunked hook) runs here.
static void mamba_eval_chunked(Mamba* model, int B, int T, int Tc, const ChunkRead& read, const ChunkDone& done) {
    NVTX_RANGE("eval_chunked");
    ModelBuffers* m = &model->buf;
    if (B < 1 || T < 1 || Tc < 1) fail("mamba_eval_chunked: %d rows of %d tokens in chunks of %d", B, T, Tc);
    if (B > m->batch_size || Tc > m->seq_len)
        fail("mamba_eval_chunked: chunks of %d x %d exceed the activations' %d x %d", B, Tc, m->batch_size, m->seq_len);
    MambaConfig c = model->config;
    MambaStepState state1;
    Mamba2State state2;
    if (c.mamba2) mamba2_state_alloc(&state2, c.num_layers, B, dims2_of(c));  // cleared: rows start empty
    else mamba_step_state_alloc(&state1, c.num_layers, B, dims_of(c));
    std::vector<MambaCarry> carries = layer_carries(model, &state1, &state2);
    std::vector<int> inputs((size_t)B * Tc), targets((size_t)B * Tc);  // (B, n) of the chunk
    for (int t0 = 0; t0 < T; t0 += Tc) {
        int n = T - t0 < Tc ? T - t0 : Tc;
        read(t0, n, inputs.data(), targets.data());
        mamba_forward(model, inputs.data(), targets.data(), B, n, -1, carries.data());
        done(t0, n, targets.data());
    }
    if (c.mamba2) mamba2_state_free(&state2);
    else mamba_step_state_free(&state1);
}

// the hooks of the training loop, validation and sampling (llmc/lm_trainer.h)
static void lm_forward(Mamba* m, const int* inputs, const int* targets, int B, int T, int train_step) {
    m->passed_forward = m->passed && train_step >= 0;
    if (!m->passed_forward) { mamba_forward(m, inputs, targets, B, T, train_step); return; }
    // the previous batch's final states become this one's initial states, kept for the backward;
    // the forward reads its copy in passed[1] and leaves the final states there
    if (B != m->passed_B) fail("lm_forward: a training batch of %d rows, passed states of %d", B, m->passed_B);
    int L = m->config.num_layers;
    cudaCheck(cudaMemcpyAsync(passed_states(m, 0, 0), passed_states(m, 1, 0),
                              (passed_states(m, 1, 0) - passed_states(m, 0, 0)) * sizeof(float),
                              cudaMemcpyDeviceToDevice, main_stream));
    std::vector<MambaCarry> carries(L);
    for (int l = 0; l < L; l++) carries[l] = {nullptr, passed_states(m, 1, l)};
    mamba_forward(m, inputs, targets, B, T, train_step, carries.data());
}
static void lm_backward(Mamba* m, int B, int T) { mamba_backward(m, B, T); }
static void lm_generate_begin(Mamba* m, int B) { mamba_generate_begin(m, B); }
static void lm_generate_end(Mamba* m) { mamba_generate_end(m); }
static void lm_prefill(Mamba* m, const int* tokens, int B, int T) { mamba_prefill(m, tokens, B, T); }
static void lm_step(Mamba* m, const int* tokens, int B) { mamba_step(m, tokens, B); }
template <> constexpr bool lm_evaluates_in_chunks<Mamba> = true;
static void lm_eval_chunked(Mamba* m, int B, int T, int Tc, const ChunkRead& read, const ChunkDone& done) {
    mamba_eval_chunked(m, B, T, Tc, read, done);
}

// ----------------------------------------------------------------------------
// main

#ifndef TESTING
int main(int argc, char** argv) {
    // the write-up's configuration, and one that trains in minutes on 2 CPU cores
    //                        L  C    B   T    steps warmup val  lr
    LMPreset presets[2] = {{5, 256, 64, 256, 5000, 0, 250, 1e-3f},
                           {3, 128, 16, 128, 2000, 50, 250, 2e-3f}};
    TrainConfig tc = default_lm_config();
    parse_train_flags(argc, argv, &tc, presets,
                      "  -L <int>    layers (seed preset 5, cpu 3)\n"
                      "  -C <int>    channels, d_model (seed preset 256, cpu 128; inner width 2C, d_state 16, dt rank ceil(C/16))\n"
                      "  -M <name>   mixer: selective, Mamba's (default); lti, the selection ablation: dt, B and C\n"
                      "              learned per channel, not functions of the input; 2, Mamba-2's SSD mixer (d_state\n"
                      "              64 (-N), headdim 64, H = 2C/64 heads) (with -e: the file's unless given)\n"
                      "  -N <int>    d_state of the Mamba-2 mixer (-M 2; default 64; Mamba's is 16)\n"
                      "  -d <int>    task files evaluated only (-x 0): sequences longer than d positions run d at a\n"
                      "              time, each layer's state carried (default the preset's B x T: seed 16384, cpu 2048)\n"
                      "  -U <float>  the smallest dt of the initialization: dt log-uniform on [U, 0.1] (mamba_ssm's\n"
                      "              dt_min; default 0.001)\n"
                      "  -R <int>    1: state passing: each training batch starts from the SSM states the last one\n"
                      "              ended in (the first from zeros; no gradient into them; not with -M 2 or -y)\n"
                      "  -Y <float>  dt stretch G: at each training step one random position per row has its dt\n"
                      "              pre-activation raised by ln g, g log-uniform on [1, G] (a small dt times g: a gap\n"
                      "              of up to G tokens); the selective mixer only; default 0, none\n",
                      "LCMdNURY");
    print_preset(tc.preset);
    TokenData train, val;
    Vocab vocab;
    load_lm_data(&tc, &train, &val, &vocab);

    int lti = tc.mixer && !strcmp(tc.mixer, "lti"), mamba2 = tc.mixer && !strcmp(tc.mixer, "2");
    if (tc.init_path && !tc.mixer) {  // the file's variant
        int kind = model_file_kind(tc.init_path);
        lti = kind == MODEL_MAMBA_LTI;
        mamba2 = kind == MODEL_MAMBA2;
    }
    if (tc.d_state && !mamba2) fail("flag -N: d_state is 16 in Mamba's mixer; -N sets the Mamba-2 mixer's (-M 2)");
    if (tc.dt_min && tc.init_path) fail("flag -U: sets the random initialization, and -e starts from %s", tc.init_path);
    if (tc.dt_stretch && (lti || mamba2))
        fail("flag -Y: the dt stretch acts on the selective mixer's dt; -M %s has none per position", lti ? "lti" : "2");
    if (tc.state_passing && mamba2) fail("flag -R: state passing is implemented for Mamba's mixer, not Mamba-2's (-M 2)");
    if (tc.state_passing && tc.resume) fail("flag -R: the passed states are not in checkpoints, so a run with -R cannot resume (-y)");
    MambaConfig config = mamba2 ? mamba2_config(vocab.size, tc.L, tc.C, tc.d_state ? tc.d_state : 64, 64)
                                : mamba_config(vocab.size, tc.L, tc.C, 16, lti);
    if (tc.init_path) {  // the model file decides the shape (every slot checked, the scan's d_state limits too); its kind must be -M's
        int s[CONFIG_SLOTS];
        model_file_config(tc.init_path, kind_of(config), s);
        // s[5]: Mamba-2's headdim; else the dt rank, mamba_dt_rank(C), or 0 with lti (checked)
        config = {s[0], s[1], s[2], s[3], s[4], lti, mamba2, mamba2 ? s[5] : 0};
        check_shape_flag_int(&tc, 'L', tc.L, "num_layers", config.num_layers);
        check_shape_flag_int(&tc, 'C', tc.C, "channels", config.channels);
        check_shape_flag_int(&tc, 'N', tc.d_state, "d_state", config.d_state);
        check_model_vocab(&tc, config.vocab_size, &vocab);
    }
    Mamba model;
    mamba_build(&model, config);
    if (tc.init_path) load_model_file(&model.buf, tc.init_path);
    else mamba_init_random(&model, tc.seed, tc.dt_min ? tc.dt_min : MAMBA_DT_MIN);
    mamba_allocate_activations(&model, tc.B, tc.T, tc.dropout > 0.0f);
    if (tc.state_passing) mamba_allocate_passed_states(&model, tc.B);
    model.stretch_max = tc.dt_stretch;
    cublasCheck(cublasSetMathMode(model.buf.cublas, CUBLAS_TF32_TENSOR_OP_MATH));

    if (config.mamba2)
        printf("backend %s | Mamba-2 L %d C %d E %d N %d heads %d x %d | vocab %d | %ld parameters | scan SSD chunks of "
               "%d\n", BACKEND_NAME, config.num_layers, config.channels, config.inner, config.d_state,
               dims2_of(config).H, config.headdim, config.vocab_size, model.buf.num_parameters, SSD_CHUNK);
    else if (config.lti)
        printf("backend %s | Mamba LTI (dt, B, C per channel) L %d C %d E %d N %d | vocab %d | %ld parameters | scan "
               "time-invariant sequential\n", BACKEND_NAME, config.num_layers, config.channels, config.inner,
               config.d_state, config.vocab_size, model.buf.num_parameters);
    else
        printf("backend %s | Mamba L %d C %d E %d N %d R %d | vocab %d | %ld parameters | scan %s\n", BACKEND_NAME,
               config.num_layers, config.channels, config.inner, config.d_state, dims_of(config).R, config.vocab_size,
               model.buf.num_parameters, kernel_choices.scan_chunked ? "chunked parallel" : "sequential");
    if (tc.dt_stretch > 1.0f)
        printf("dt stretch: at training steps one position per row has its dt pre-activation raised by ln g, g "
               "log-uniform on [1, %g]\n", tc.dt_stretch);
    if (tc.state_passing) printf("state passing: each training batch starts from the SSM states the last one ended in\n");
    int status = lm_run(&model, &tc, &train, &val, &vocab);
    if (model.passed) cudaCheck(cudaFree(model.passed));
    model_free(&model.buf);
    return status;
}
#endif

/*
Checks recurrent generation at the block-stack level: the Mamba step
(llmc/mamba_step.cuh) and the GPT KV cache (llmc/kv_cache.cuh) against the
parallel forward of the same stacks (llmc/mamba_block.cuh,
llmc/transformer_block.cuh), on random stacks (mamba_stack_init /
transformer_stack_init, then LayerNorms, biases and D perturbed so that
every parameter matters) and random inputs x (B, T, C), B = 3 rows that
differ, T = 37 and T = 70 (across scan chunk boundaries at 32 and 64):

  (a) stepping token by token from an empty state gives the parallel
      forward's block-stack output at every position, and the stepped
      states after T tokens equal the prefilled ones;
  (b) prefill of a prompt of length P (P = 1, 2 below the conv width; P
      inside and at the end of a scan chunk) then steps gives the full
      forward's output at positions P..T-1;
  (c) (Mamba) the chunked and the sequential scan give the same final
      state, measured after prefill;
  (d) repeating a run of steps from a reset state is bit-identical;
  (e) (GPT) a full cache, reset and re-prefilled with the last maxT/2
      tokens, then stepped, equals the parallel forward over that window,
      and is bit-identical to a fresh cache doing the same; reset clears.
  Every step-kernel variant of each is run (Mamba: thread per (b,e),
  sequential and vectorized (N = 16 only), and thread per (b,e,n);
  attention: thread per (b,h) and block per (b,h)).

Relative error of a tensor is max|got - ref| / max|ref| (llmc/testing.h).
Tolerances:
  - step against forward: 1e-5. Same formulas, same order of operations in
    the scan, conv, softmax and LayerNorm; what differs is summation order:
    the matmuls on B rows against B*T rows (a BLAS may block the reduction
    differently) and, for the warp and vec scan variants, y's tree sum over the
    states, and the chunked scan's associative combination. Each is a few
    ulps (~1e-7) per sum, and LayerNorm rescales errors by its rstd; the
    measured errors are 1e-7..3e-7 on the host backend, and 1e-5 leaves
    room for the GPU's different summation orders. Mistakes show far
    above it: deliberately broken versions (no conv-state shift, the first
    chunk's state as prefill, a wrong padding value, attention over 0..pos-1,
    k/v written at the wrong position, a butterfly missing a round) fail
    with errors of 1e-3..1 or NaN.
  - states (step against prefill, scan variant against variant): 1e-5 of
    the state's scale, for the same reason.
*/
#include "llmc/mamba_step.cuh"
#include "llmc/kv_cache.cuh"
#include "llmc/testing.h"
#include <cstring>
#include <vector>

static const double STEP_TOL = 1e-5;
static const double STATE_TOL = 1e-5;
static const int B = 3;

static std::vector<float> download(const float* d, long n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}
static float* device_alloc(long n) {
    float* d;
    cudaCheck(cudaMalloc(&d, n * sizeof(float)));
    return d;
}
static void perturb(float* x, long n, float center, float spread, Rng* rng) {
    for (long i = 0; i < n; i++) x[i] = center + spread * (2.0f * rng_uniform(rng) - 1.0f);
}
static bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// rows [t0, t1) of x (B, T, C), as (B, t1-t0, C)
static std::vector<float> time_slice(const std::vector<float>& x, int T, int C, int t0, int t1) {
    std::vector<float> r((long)B * (t1 - t0) * C);
    for (int b = 0; b < B; b++)
        memcpy(&r[(long)b * (t1 - t0) * C], &x[((long)b * T + t0) * C], (long)(t1 - t0) * C * sizeof(float));
    return r;
}

// Steps positions t0..t1-1 of x (B, T, C) through `step` (x_dev (B, C) in,
// out; t the position) and returns the outputs (B, t1-t0, C).
template <typename Step>
static std::vector<float> run_steps(const std::vector<float>& x, int T, int C, int t0, int t1, float* x_dev, Step step) {
    std::vector<float> out((long)B * (t1 - t0) * C), row((long)B * C);
    for (int t = t0; t < t1; t++) {
        for (int b = 0; b < B; b++) memcpy(&row[(long)b * C], &x[((long)b * T + t) * C], C * sizeof(float));
        upload(x_dev, row);
        step(t);
        row = download(x_dev, (long)B * C);
        for (int b = 0; b < B; b++) memcpy(&out[((long)b * (t1 - t0) + t - t0) * C], &row[(long)b * C], C * sizeof(float));
    }
    return out;
}

// ----------------------------------------------------------------------------
// Mamba

struct MambaSetup {
    int L, Tmax;
    MambaDims d;
    MambaStackParams p;  // device
    MambaStackActs a;    // device, for (B, Tmax)
    float *x_in, *x_step;
};

static void mamba_teardown(MambaSetup& s) {
    for (float* q : {s.p.in_proj_w, s.a.xz, s.x_in, s.x_step}) cudaCheck(cudaFree(q));  // the tensors' bases
}

static MambaSetup mamba_setup(int L, int C, int N, int Tmax, uint64_t seed) {
    MambaSetup s;
    s.L = L; s.Tmax = Tmax; s.d = mamba_dims(C, N);
    TensorSpec ptable[MAMBA_STACK_PARAMS], atable[MAMBA_STACK_ACTS];
    mamba_stack_param_table(ptable, L, s.d);
    mamba_stack_act_table(atable, L, B, Tmax, s.d);
    std::vector<float> host(table_total(ptable, MAMBA_STACK_PARAMS));
    MambaStackParams hp;
    point_tensors(&hp, host.data(), ptable, MAMBA_STACK_PARAMS);
    Rng rng;
    rng_seed(&rng, seed);
    mamba_stack_init(hp, L, s.d, &rng);
    perturb(hp.D, (long)L * s.d.E, 1.0f, 0.5f, &rng);
    perturb(hp.ln_w, (long)L * C, 1.0f, 0.3f, &rng);
    perturb(hp.ln_b, (long)L * C, 0.0f, 0.3f, &rng);
    float* pmem = device_alloc(host.size());
    upload(pmem, host);
    point_tensors(&s.p, pmem, ptable, MAMBA_STACK_PARAMS);
    point_tensors(&s.a, device_alloc(table_total(atable, MAMBA_STACK_ACTS)), atable, MAMBA_STACK_ACTS);
    s.x_in = device_alloc((long)B * Tmax * C);
    s.x_step = device_alloc((long)B * C);
    return s;
}

// the parallel forward over x (B, T, C); returns the stack's output (B, T, C)
static std::vector<float> mamba_forward(cublasHandle_t h, MambaSetup& s, const std::vector<float>& x, int T) {
    upload(s.x_in, x);
    const float* in = s.x_in;
    for (int l = 0; l < s.L; l++) {
        MambaStackActs la = mamba_layer_acts(s.a, l, B, T, s.d);
        mamba_block_forward(h, mamba_layer_params(s.p, l, s.d), la, in, B, T, s.d);
        in = la.ln;
    }
    return download(in, (long)B * T * s.d.C);
}

static std::vector<float> mamba_states(const MambaStepState& st) {
    return download(st.memory, mamba_step_state_only_floats(&st));
}

// compares every layer's conv and SSM states of two state buffers
static void compare_mamba_states(Tests& t, const char* label, const MambaStepState& st, const std::vector<float>& got,
                                 const std::vector<float>& ref, double tol) {
    long conv_n = (long)B * st.d.E * MAMBA_CONV_STATE, ssm_n = (long)B * st.d.E * st.d.N;
    long ssm0 = mamba_ssm_state(&st, 0) - st.memory;
    for (int l = 0; l < st.L; l++) {
        char name[96];
        snprintf(name, sizeof(name), "%s conv[%d]", label, l);
        check_tensor(t, name, &got[l * conv_n], &ref[l * conv_n], conv_n, tol);
        snprintf(name, sizeof(name), "%s ssm[%d]", label, l);
        check_tensor(t, name, &got[ssm0 + l * ssm_n], &ref[ssm0 + l * ssm_n], ssm_n, tol);
    }
}

static void test_mamba(Tests& t, cublasHandle_t h, int L, int C, int N, int T, const std::vector<int>& prompts,
                       uint64_t seed) {
    printf("--- Mamba stack: L %d C %d N %d, B %d T %d\n", L, C, N, B, T);
    // the chunked scan only at d_state 16, what it is compiled for; other N run the sequential one throughout
    bool chunked_ok = N == SCAN_DSTATE;
    bool saved_chunked = kernel_choices.scan_chunked, default_chunked = chunked_ok && kernel_choices.scan_chunked;
    kernel_choices.scan_chunked = default_chunked;
    MambaSetup s = mamba_setup(L, C, N, T, seed);
    MambaStepState st;
    mamba_step_state_alloc(&st, L, B, s.d);
    uint64_t rng = seed * 7 + 1;
    std::vector<float> x((long)B * T * C);
    for (auto& v : x) v = 2.0f * random_uniform(&rng) - 1.0f;
    char name[96];

    // (c) both scan variants (where the chunked one applies): the final states after prefill
    std::vector<float> ref_out[2], prefilled[2];
    for (int chunked = 0; chunked < (chunked_ok ? 2 : 1); chunked++) {
        kernel_choices.scan_chunked = chunked;
        ref_out[chunked] = mamba_forward(h, s, x, T);
        mamba_step_state_reset(&st);
        mamba_step_prefill_stack(&st, s.a, B, T);
        prefilled[chunked] = mamba_states(st);
    }
    kernel_choices.scan_chunked = default_chunked;
    if (chunked_ok) {
        check_tensor(t, "(c) forward chunked vs seq", ref_out[1].data(), ref_out[0].data(), (long)ref_out[0].size(), STEP_TOL);
        compare_mamba_states(t, "(c) prefill chunked vs seq", st, prefilled[1], prefilled[0], STATE_TOL);
    }
    const std::vector<float>& ref = ref_out[default_chunked];
    const std::vector<float>& ref_states = prefilled[default_chunked];

    auto step = [&](int) { mamba_stack_step(h, s.p, &st, s.x_step, B); };
    MambaStepVariant default_variant = kernel_choices.mamba_step;
    for (int v = MAMBA_STEP_SEQ; v <= MAMBA_STEP_WARP; v++) {
        if (v == MAMBA_STEP_VEC && N != SCAN_VEC_N) continue;  // it falls back to seq there
        kernel_choices.mamba_step = (MambaStepVariant)v;
        const char* variant = MAMBA_STEP_VARIANT_NAMES[v];
        // (a) from an empty state, every position
        mamba_step_state_reset(&st);
        std::vector<float> out = run_steps(x, T, C, 0, T, s.x_step, step);
        std::vector<float> states = mamba_states(st);
        snprintf(name, sizeof(name), "(a) %s step vs forward", variant);
        check_tensor(t, name, out.data(), ref.data(), (long)ref.size(), STEP_TOL);
        snprintf(name, sizeof(name), "(a) %s stepped vs prefill", variant);
        compare_mamba_states(t, name, st, states, ref_states, STATE_TOL);
        // (d) the same again: bit-identical outputs and states
        mamba_step_state_reset(&st);
        std::vector<float> out2 = run_steps(x, T, C, 0, T, s.x_step, step);
        std::vector<float> states2 = mamba_states(st);
        t.check(bit_identical(out, out2) && bit_identical(states, states2),
                "(d) %s step: repeated run bit-identical (outputs %ld, states %ld floats)", variant, (long)out.size(),
                (long)states.size());
        // (b) prefill of P tokens, then steps
        for (int P : prompts) {
            std::vector<float> prompt = time_slice(x, T, C, 0, P);
            mamba_forward(h, s, prompt, P);
            mamba_step_state_reset(&st);
            mamba_step_prefill_stack(&st, s.a, B, P);
            std::vector<float> later = run_steps(x, T, C, P, T, s.x_step, step);
            std::vector<float> ref_later = time_slice(ref, T, C, P, T);
            snprintf(name, sizeof(name), "(b) %s prefill %d + %d steps", variant, P, T - P);
            check_tensor(t, name, later.data(), ref_later.data(), (long)later.size(), STEP_TOL);
        }
    }
    kernel_choices.mamba_step = default_variant;
    kernel_choices.scan_chunked = saved_chunked;
    mamba_step_state_free(&st);
    mamba_teardown(s);
}

// ----------------------------------------------------------------------------
// GPT

struct GPTSetup {
    int L, Tmax;
    TransformerDims d;
    TransformerStackParams p;  // device
    TransformerStackActs a;    // device, for (B, Tmax)
    TransformerScratch s;
    float *x_in, *x_step;
};

static void gpt_teardown(GPTSetup& s) {
    for (float* q : {s.p.ln1_w, s.a.ln1, s.s.preatt, s.x_in, s.x_step}) cudaCheck(cudaFree(q));  // the tensors' bases
}

static GPTSetup gpt_setup(int L, int C, int NH, int F, int Tmax, uint64_t seed) {
    GPTSetup s;
    s.L = L; s.Tmax = Tmax; s.d = {C, NH, F};
    TensorSpec ptable[TRANSFORMER_STACK_PARAMS], atable[TRANSFORMER_STACK_ACTS], stable[TRANSFORMER_SCRATCH];
    transformer_stack_param_table(ptable, L, s.d);
    transformer_stack_act_table(atable, L, B, Tmax, s.d);
    transformer_scratch_table(stable, B, Tmax, s.d);
    std::vector<float> host(table_total(ptable, TRANSFORMER_STACK_PARAMS));
    TransformerStackParams hp;
    point_tensors(&hp, host.data(), ptable, TRANSFORMER_STACK_PARAMS);
    Rng rng;
    rng_seed(&rng, seed);
    transformer_stack_init(hp, L, s.d, &rng);
    // GPT-2's init: biases 0, LayerNorms 1 and 0; perturbed so they matter.
    // qkv weights scaled up so that attention is far from uniform.
    perturb(hp.ln1_w, (long)L * C, 1.0f, 0.3f, &rng);
    perturb(hp.ln1_b, (long)L * C, 0.0f, 0.3f, &rng);
    perturb(hp.ln2_w, (long)L * C, 1.0f, 0.3f, &rng);
    perturb(hp.ln2_b, (long)L * C, 0.0f, 0.3f, &rng);
    perturb(hp.qkv_b, (long)L * 3 * C, 0.0f, 0.1f, &rng);
    perturb(hp.attn_proj_b, (long)L * C, 0.0f, 0.1f, &rng);
    perturb(hp.fc_b, (long)L * F, 0.0f, 0.1f, &rng);
    perturb(hp.fc_proj_b, (long)L * C, 0.0f, 0.1f, &rng);
    for (long i = 0; i < (long)L * 3 * C * C; i++) hp.qkv_w[i] *= 10.0f;
    float* pmem = device_alloc(host.size());
    upload(pmem, host);
    point_tensors(&s.p, pmem, ptable, TRANSFORMER_STACK_PARAMS);
    point_tensors(&s.a, device_alloc(table_total(atable, TRANSFORMER_STACK_ACTS)), atable, TRANSFORMER_STACK_ACTS);
    point_tensors(&s.s, device_alloc(table_total(stable, TRANSFORMER_SCRATCH)), stable, TRANSFORMER_SCRATCH);
    s.x_in = device_alloc((long)B * Tmax * C);
    s.x_step = device_alloc((long)B * C);
    return s;
}

static std::vector<float> gpt_forward(cublasHandle_t h, GPTSetup& s, const std::vector<float>& x, int T) {
    upload(s.x_in, x);
    const float* in = s.x_in;
    for (int l = 0; l < s.L; l++) {
        TransformerStackActs la = transformer_layer_acts(s.a, l, B, T, s.d);
        transformer_block_forward(h, transformer_layer_params(s.p, l, s.d), la, s.s, in, B, T, s.d, 1, NO_DROPOUT);
        in = la.residual3;
    }
    return download(in, (long)B * T * s.d.C);
}

static void test_gpt(Tests& t, cublasHandle_t h, int L, int C, int NH, int F, int T, const std::vector<int>& prompts,
                     uint64_t seed) {
    printf("--- GPT stack: L %d C %d NH %d F %d, B %d T %d\n", L, C, NH, F, B, T);
    GPTSetup s = gpt_setup(L, C, NH, F, T, seed);
    KVCache cache;
    kv_cache_alloc(&cache, L, B, T, s.d);
    uint64_t rng = seed * 7 + 1;
    std::vector<float> x((long)B * T * C);
    for (auto& v : x) v = 2.0f * random_uniform(&rng) - 1.0f;
    std::vector<float> ref = gpt_forward(h, s, x, T);
    char name[96];
    auto step = [&](int pos) { transformer_stack_step(h, s.p, &cache, s.x_step, pos, B); };
    bool default_block = kernel_choices.attention_step_block;
    for (int block = 0; block < 2; block++) {
        kernel_choices.attention_step_block = block;
        const char* variant = block ? "block" : "rows";
        // (a) from an empty cache, every position
        kv_cache_reset(&cache);
        std::vector<float> out = run_steps(x, T, C, 0, T, s.x_step, step);
        snprintf(name, sizeof(name), "(a) %s step vs forward", variant);
        check_tensor(t, name, out.data(), ref.data(), (long)ref.size(), STEP_TOL);
        // the stepped cache against the forward's keys and values
        std::vector<float> kv_stepped = download(cache.k, 2L * L * B * T * C);
        gpt_forward(h, s, x, T);
        kv_cache_reset(&cache);
        kv_cache_prefill_stack(&cache, s.a, B, T);
        std::vector<float> kv_prefilled = download(cache.k, 2L * L * B * T * C);
        snprintf(name, sizeof(name), "(a) %s stepped vs prefill k,v", variant);
        check_tensor(t, name, kv_stepped.data(), kv_prefilled.data(), (long)kv_stepped.size(), STATE_TOL);
        // (d) the same again, bit-identical
        kv_cache_reset(&cache);
        std::vector<float> out2 = run_steps(x, T, C, 0, T, s.x_step, step);
        std::vector<float> kv2 = download(cache.k, 2L * L * B * T * C);
        t.check(bit_identical(out, out2) && bit_identical(kv_stepped, kv2),
                "(d) %s step: repeated run bit-identical (outputs %ld, cache %ld floats)", variant, (long)out.size(),
                (long)kv2.size());
        // (b) prefill of P tokens, then steps
        for (int P : prompts) {
            gpt_forward(h, s, time_slice(x, T, C, 0, P), P);
            kv_cache_reset(&cache);
            kv_cache_prefill_stack(&cache, s.a, B, P);
            std::vector<float> later = run_steps(x, T, C, P, T, s.x_step, step);
            std::vector<float> ref_later = time_slice(ref, T, C, P, T);
            snprintf(name, sizeof(name), "(b) %s prefill %d + %d steps", variant, P, T - P);
            check_tensor(t, name, later.data(), ref_later.data(), (long)later.size(), STEP_TOL);
        }
        // (e) a full cache of M positions: reset, re-prefill the last M/2
        // tokens as a new window, step M/2 more tokens
        int M = 20, W = M / 2;
        KVCache small;
        kv_cache_alloc(&small, L, B, M, s.d);
        auto step_small = [&](int pos) { transformer_stack_step(h, s.p, &small, s.x_step, pos, B); };
        run_steps(x, T, C, 0, M, s.x_step, step_small);  // positions 0..M-1: full
        kv_cache_reset(&small);
        std::vector<float> cleared = download(small.memory, 2L * L * B * M * C);
        bool all_zero = true;
        for (float v : cleared) all_zero = all_zero && v == 0.0f;
        t.check(all_zero, "(e) %s reset clears the %ld cached floats", variant, (long)cleared.size());
        // the window: tokens M-W..M-1 at positions 0..W-1, then tokens M..M+W-1
        std::vector<float> window = time_slice(x, T, C, M - W, M + W);  // (B, 2W, C)
        gpt_forward(h, s, time_slice(x, T, C, M - W, M), W);
        kv_cache_prefill_stack(&small, s.a, B, W);
        std::vector<float> refilled = run_steps(window, 2 * W, C, W, 2 * W, s.x_step, step_small);
        std::vector<float> ref_window = time_slice(gpt_forward(h, s, window, 2 * W), 2 * W, C, W, 2 * W);
        snprintf(name, sizeof(name), "(e) %s re-prefill %d + %d steps", variant, W, W);
        check_tensor(t, name, refilled.data(), ref_window.data(), (long)refilled.size(), STEP_TOL);
        KVCache fresh;
        kv_cache_alloc(&fresh, L, B, M, s.d);
        gpt_forward(h, s, time_slice(x, T, C, M - W, M), W);
        kv_cache_prefill_stack(&fresh, s.a, B, W);
        auto step_fresh = [&](int pos) { transformer_stack_step(h, s.p, &fresh, s.x_step, pos, B); };
        std::vector<float> fresh_out = run_steps(window, 2 * W, C, W, 2 * W, s.x_step, step_fresh);
        t.check(bit_identical(refilled, fresh_out) &&
                    bit_identical(download(small.memory, 2L * L * B * M * C), download(fresh.memory, 2L * L * B * M * C)),
                "(e) %s re-prefilled cache bit-identical to a fresh one (outputs and cache)", variant);
        kv_cache_free(&small);
        kv_cache_free(&fresh);
    }
    kernel_choices.attention_step_block = default_block;
    kv_cache_free(&cache);
    gpt_teardown(s);
}

int main() {
    cublasHandle_t h;
    cublasCheck(cublasCreate(&h));
    Tests t;
    printf("backend %s\n", BACKEND_NAME);
    // T 37: one full chunk and a partial one; T 70: two full chunks and a partial one
    test_mamba(t, h, 3, 40, 16, 37, {1, 2, 20, 32}, 101);
    test_mamba(t, h, 3, 40, 16, 70, {33, 64}, 102);
    test_mamba(t, h, 2, 24, 5, 37, {2, 17}, 103);  // d_state below the warp variant's 16 lanes
    test_gpt(t, h, 2, 48, 3, 96, 37, {1, 20}, 201);
    test_gpt(t, h, 2, 48, 4, 96, 70, {33}, 202);
    cublasCheck(cublasDestroy(h));
    return t.summary();
}

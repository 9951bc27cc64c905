/*
Checks train_mamba.cu's Mamba-2 (-M 2) and its kernels (llmc/ssd.cuh,
llmc/mamba2_block.cuh):
  1. the chunked SSD forward against the plain recurrence (ssd_sequential),
     outputs and final state, T = 1, 31, 32, 33 and 75 (partial chunks, one
     and several chunks), from a zero and from a random initial state; a zero
     initial state bit-identical to none;
  2. finite differences of the SSD backward (with dt's softplus) along
     random directions of each input: x, B, C, dt_raw, dt_bias, A_log, D,
     T = 45 (a full chunk and a partial one) and T = 7;
  3. against the PyTorch reference state of dev/reference/mamba.py --mamba2
     (make test writes data/ref_mamba2.bin, a plain recurrent scan written
     from the math, independent of the chunked algorithm): every layer's
     activations, logits, loss, every parameter gradient, 10 AdamW steps,
     dropout; bit-identical gradients on a re-run and a bit-identical resume;
  4. generation (each position a forward of one token with every layer's
     conv and SSD state carried) against the parallel forward at every
     position, and chunked evaluation against one forward over the rows.

Relative error of a tensor is max|got - ref| / max|ref| (llmc/testing.h).
Tolerances (as test_mamba.cu's, for the same reasons):
  - reference comparisons: 1e-4 (fp32 against a float64 reference); in the
    host's TF32 mode 2e-2.
  - finite differences: 2e-3 relative to the directional derivative (fp32
    loss, eps 1e-2: ~1e-5 rounding and ~1e-4 truncation).
  - chunked against sequential: 1e-5 (the same sums in another order and
    grouping; exp(s_t - s_tau) against products of per-step decays, a few
    ulps each).
  - generation and chunked evaluation against one forward: 1e-5.
*/
#define TESTING
#include "train_mamba.cu"
#include "llmc/testing.h"

static const double TOL = tf32_tolerance(1e-4, 2e-2);
static const double FD_TOL = 2e-3;
static const double VARIANT_TOL = 1e-5;
static const double CHUNK_TOL = tf32_tolerance(1e-5, 2e-2);
static const double GEN_TOL = tf32_tolerance(1e-5, 2e-2);

// ----------------------------------------------------------------------------
// 1-2. the SSD scan on its own

struct SsdProblem {
    int B, T, H, P, N;
    std::vector<float> xbc, dt_raw, dt_bias, A_log, D, h0, w;  // w: the weights of the loss sum(y * w)
};

static SsdProblem make_ssd_problem(int B, int T, int H, int P, int N, uint64_t seed) {
    uint64_t rng = seed;
    SsdProblem p = {B, T, H, P, N};
    long BT = (long)B * T, E = (long)H * P;
    p.xbc = random_vector(BT * (E + 2 * N), -1.0f, 1.0f, &rng);
    p.dt_raw = random_vector(BT * H, -3.0f, 0.5f, &rng);
    p.dt_bias = random_vector(H, -0.5f, 0.5f, &rng);
    p.A_log = random_vector(H, -1.0f, 1.5f, &rng);
    p.D = random_vector(H, 0.5f, 1.5f, &rng);
    p.h0 = random_vector((long)B * E * N, -1.0f, 1.0f, &rng);
    p.w = random_vector(BT * E, -1.0f, 1.0f, &rng);
    return p;
}

struct SsdResult {
    double loss;
    std::vector<float> y, h_final;
    std::vector<float> dxbc, ddt_raw, ddt_bias, dA_log, dD;
};

// chunked (or, sequential = true, the plain recurrence: forward only); from h0 when with_h0
static SsdResult run_ssd(const SsdProblem& p, bool backward, bool sequential = false, bool with_h0 = false) {
    int B = p.B, T = p.T, H = p.H, P = p.P, N = p.N, E = H * P, X = E + 2 * N;
    long BT = (long)B * T;
    float *xbc = vector_to_device(p.xbc), *raw = vector_to_device(p.dt_raw), *bias = vector_to_device(p.dt_bias);
    float *A_log = vector_to_device(p.A_log), *D = vector_to_device(p.D), *h0 = vector_to_device(p.h0);
    float *dt, *y, *states, *cum, *h_final;
    cudaCheck(cudaMalloc(&dt, BT * H * sizeof(float)));
    cudaCheck(cudaMalloc(&y, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&states, ssd_states_size(B, T, E, N) * sizeof(float)));
    cudaCheck(cudaMalloc(&cum, BT * H * sizeof(float)));
    cudaCheck(cudaMalloc(&h_final, (long)B * E * N * sizeof(float)));
    ssd_dt_forward(dt, raw, H, bias, BT, H);
    if (sequential) ssd_sequential(y, h_final, xbc, dt, A_log, D, with_h0 ? h0 : nullptr, B, T, H, P, N);
    else ssd_forward(y, states, cum, xbc, dt, A_log, D, with_h0 ? h0 : nullptr, h_final, B, T, H, P, N);
    SsdResult r;
    r.y = device_to_vector(y, BT * E);
    r.h_final = device_to_vector(h_final, (long)B * E * N);
    r.loss = 0.0;
    for (long i = 0; i < BT * E; i++) r.loss += (double)r.y[i] * p.w[i];
    if (backward) {
        float *dxbc, *ddt_raw, *dbias, *dA, *dD, *scratch, *dy = vector_to_device(p.w);
        cudaCheck(cudaMalloc(&dxbc, BT * X * sizeof(float)));
        cudaCheck(cudaMalloc(&ddt_raw, BT * H * sizeof(float)));
        cudaCheck(cudaMalloc(&scratch, ssd_backward_scratch_size(B, T, E, H, N) * sizeof(float)));
        dbias = vector_to_device(std::vector<float>(H, 0.0f));
        dA = vector_to_device(std::vector<float>(H, 0.0f));
        dD = vector_to_device(std::vector<float>(H, 0.0f));
        ssd_backward(dxbc, ddt_raw, H, dA, dD, dbias, scratch, dy, xbc, dt, cum, states, A_log, D, B, T, H, P, N);
        r.dxbc = device_to_vector(dxbc, BT * X);
        r.ddt_raw = device_to_vector(ddt_raw, BT * H);
        r.ddt_bias = device_to_vector(dbias, H);
        r.dA_log = device_to_vector(dA, H);
        r.dD = device_to_vector(dD, H);
        for (float* q : {dxbc, ddt_raw, dbias, dA, dD, scratch, dy}) cudaFree(q);
    }
    for (float* q : {xbc, raw, bias, A_log, D, h0, dt, y, states, cum, h_final}) cudaFree(q);
    return r;
}

// central difference of the loss along a random direction of one input
// (the entries where mask is true, all when null) against <grad, v>
static void ssd_fd_check(Tests& t, const char* what, SsdProblem p, std::vector<float> SsdProblem::*field,
                         const std::vector<float>& grad, const std::function<bool(long)>& mask, uint64_t seed) {
    uint64_t rng = seed;
    std::vector<float>& x = p.*field;
    std::vector<float> v(x.size()), x0 = x;
    double analytic = 0.0;
    for (size_t i = 0; i < x.size(); i++) {
        v[i] = (mask && !mask((long)i)) ? 0.0f : 2.0f * random_uniform(&rng) - 1.0f;
        analytic += (double)grad[i] * v[i];
    }
    const float eps = 1e-2f;
    for (size_t i = 0; i < x.size(); i++) x[i] = x0[i] + eps * v[i];
    double lp = run_ssd(p, false).loss;
    for (size_t i = 0; i < x.size(); i++) x[i] = x0[i] - eps * v[i];
    double lm = run_ssd(p, false).loss;
    double numeric = (lp - lm) / (2.0 * eps);
    double rel = fabs(numeric - analytic) / fmax(fabs(analytic), 1e-6);
    t.check(rel <= FD_TOL, "finite difference d/d%-8s numeric %+.6e analytic %+.6e  rel err %.2e (tol %.0e)", what,
            numeric, analytic, rel, FD_TOL);
}

static void check_ssd_gradients(Tests& t, const SsdProblem& p) {
    printf("--- SSD scan gradients, B %d T %d H %d P %d N %d\n", p.B, p.T, p.H, p.P, p.N);
    SsdResult r = run_ssd(p, true);
    long E = (long)p.H * p.P, X = E + 2 * p.N;
    ssd_fd_check(t, "x", p, &SsdProblem::xbc, r.dxbc, [&](long i) { return i % X < E; }, 11);
    ssd_fd_check(t, "B", p, &SsdProblem::xbc, r.dxbc, [&](long i) { return i % X >= E && i % X < E + p.N; }, 12);
    ssd_fd_check(t, "C", p, &SsdProblem::xbc, r.dxbc, [&](long i) { return i % X >= E + p.N; }, 13);
    ssd_fd_check(t, "dt_raw", p, &SsdProblem::dt_raw, r.ddt_raw, nullptr, 14);
    ssd_fd_check(t, "dt_bias", p, &SsdProblem::dt_bias, r.ddt_bias, nullptr, 15);
    ssd_fd_check(t, "A_log", p, &SsdProblem::A_log, r.dA_log, nullptr, 16);
    ssd_fd_check(t, "D", p, &SsdProblem::D, r.dD, nullptr, 17);
}

static void check_ssd_against_sequential(Tests& t) {
    for (int T : {1, 31, 32, 33, 75}) {
        SsdProblem p = make_ssd_problem(2, T, 3, 8, 16, 100 + T);
        printf("--- chunked SSD vs the plain recurrence, B %d T %d H %d P %d N %d\n", p.B, p.T, p.H, p.P, p.N);
        for (int with_h0 = 0; with_h0 < 2; with_h0++) {
            SsdResult a = run_ssd(p, false, false, with_h0), s = run_ssd(p, false, true, with_h0);
            char name[96];
            snprintf(name, sizeof(name), "y%s", with_h0 ? " from a random state" : "");
            check_tensor(t, name, a.y.data(), s.y.data(), (long)s.y.size(), VARIANT_TOL);
            snprintf(name, sizeof(name), "final state%s", with_h0 ? " from a random state" : "");
            check_tensor(t, name, a.h_final.data(), s.h_final.data(), (long)s.h_final.size(), VARIANT_TOL);
        }
    }
    // a zero initial state: the same bits as none
    SsdProblem p = make_ssd_problem(2, 45, 2, 8, 16, 5);
    std::fill(p.h0.begin(), p.h0.end(), 0.0f);
    SsdResult a = run_ssd(p, false, false, false), b = run_ssd(p, false, false, true);
    t.check(a.y == b.y && a.h_final == b.h_final, "SSD with h0 = zeros vs none: bit-identical outputs and final state");
}

// ----------------------------------------------------------------------------
// 3. the whole model against the PyTorch reference

static void check_forward_backward(Tests& t, Mamba* model, const RefState& ref, const char* path) {
    int B = ref.B, T = ref.T, L = model->config.num_layers;
    load_params(&model->buf, ref.get("params", path).f);
    mamba_forward(model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), B, T, -1);
    compare_ref(t, ref, path, "encoded", model->acts.encoded, "", TOL);
    for (int l = 0; l < L; l++) {
        Mamba2StackActs la = mamba2_layer_acts(model->acts.tower2, l, B, T, dims2_of(model->config));
        struct { const char* name; const float* ptr; } acts[] = {
            {"zxbcdt", la.zxbcdt}, {"conv", la.conv},     {"xbc", la.xbc},      {"dt", la.dt},   {"scan", la.y},
            {"gated", la.gated},   {"normed", la.normed}, {"out", la.out},      {"res", la.res}, {"ln", la.ln}};
        for (auto& x : acts) {
            char name[64];
            snprintf(name, sizeof(name), "m%d.%s", l, x.name);
            compare_ref(t, ref, path, name, x.ptr, "", TOL);
        }
    }
    compare_ref(t, ref, path, "lnf", model->acts.lnf, "", TOL);
    compare_ref(t, ref, path, "logits", model->acts.logits, "", TOL);
    check_loss(t, model->buf.mean_loss, ref.get("loss", path).f[0], "", "loss", TOL);
    mamba_backward(model, B, T);
    check_grads(t, &model->buf, ref, path, "grads", "grad ", TOL);
}

// ----------------------------------------------------------------------------
// 4. chunked evaluation (chunked_logits, llmc/testing.h) against one forward

static void check_chunked_eval(Tests& t, MambaConfig config, const std::vector<float>& params) {
    const int B = 2, T = 80, V = config.vocab_size;
    printf("--- chunked evaluation, B %d T %d\n", B, T);
    Mamba model;
    mamba_build(&model, config);
    mamba_allocate_activations(&model, B, T, false);
    load_params(&model.buf, params);
    uint64_t rng = 4242;
    std::vector<int> tokens((size_t)B * T);
    for (int& x : tokens) x = (int)(random_uniform(&rng) * V) % V;
    mamba_forward(&model, tokens.data(), nullptr, B, T, -1);
    std::vector<float> whole = device_to_vector(model.acts.logits, (long)B * T * V);
    for (int Tc : {16, 24, 33, 2}) {
        std::vector<float> chunked = chunked_logits(&model, tokens.data(), B, T, Tc);
        char name[96];
        snprintf(name, sizeof(name), "logits, chunks of %d", Tc);
        check_tensor(t, name, chunked.data(), whole.data(), (long)whole.size(), CHUNK_TOL);
    }
    model_free(&model.buf);
}

static void check_against_reference(Tests& t, const char* path) {
    RefState ref;
    ref_state_load(&ref, path);
    if (ref.kind != MODEL_MAMBA2) fail("%s: reference state of model kind %d, expected Mamba-2 (%d)", path, ref.kind, MODEL_MAMBA2);
    MambaConfig config = mamba2_config(ref.config[0], ref.config[1], ref.config[2], ref.config[4], ref.config[5]);
    printf("--- reference %s: Mamba-2 L %d C %d E %d N %d headdim %d (%d heads) V %d | B %d T %d\n", path,
           config.num_layers, config.channels, config.inner, config.d_state, config.headdim, dims2_of(config).H,
           config.vocab_size, ref.B, ref.T);
    t.check(ref.config[3] == config.inner, "inner width %d = 2C = %d", ref.config[3], config.inner);
    Mamba model;
    mamba_build(&model, config);
    mamba_allocate_activations(&model, ref.B, ref.T, true);  // with room for dropout (check_lm_dropout)
    t.check(model.buf.num_parameters == ref.config[6] && model.buf.num_parameters == ref.get("params", path).numel(),
            "parameter count %ld (reference %d)", model.buf.num_parameters, ref.config[6]);
    check_forward_backward(t, &model, ref, path);

    TrainStep step = [&](int) {
        mamba_forward(&model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), ref.B, ref.T, -1);
        mamba_backward(&model, ref.B, ref.T);
    };
    check_rerun_identical(t, &model.buf, step, 0, "");
    check_trajectory(t, &model.buf, ref, path, step, TOL);
    check_resume(t, &model.buf, ref, path, step, 7, 8, "");
    check_lm_dropout(t, &model, ref, path, TOL);

    printf("--- generation\n");
    load_params(&model.buf, ref.get("params", path).f);
    const std::vector<int>& tokens = ref.get("inputs", path).i;
    for (int prompt : {1, ref.T / 2 + 3, ref.T - 4})  // the last past one 32-step chunk
        check_steps_against_forward(t, &model, tokens, ref.B, ref.T, prompt, GEN_TOL, "steps vs forward");
    check_greedy_repeatable(t, &model, std::vector<int>(tokens.begin(), tokens.begin() + 5), 3 * ref.T);
    model_free(&model.buf);
    check_chunked_eval(t, config, ref.get("params", path).f);
}

int main(int argc, char** argv) {
    const char* path = argc > 1 ? argv[1] : "data/ref_mamba2.bin";
    Tests t;
    printf("backend %s\n", BACKEND_NAME);
    check_ssd_against_sequential(t);
    check_ssd_gradients(t, make_ssd_problem(2, 45, 3, 8, 16, 2024));
    check_ssd_gradients(t, make_ssd_problem(1, 7, 2, 4, 5, 2025));
    check_against_reference(t, path);
    return t.summary();
}

/*
Checks train_mamba.cu and its kernels:
  1. finite-difference gradient checks of the selective scan (with its
     softplus and gating), of the time-invariant scan of -M lti, and of
     the conv1d + SiLU kernel on tiny shapes:
     central differences along random directions against the analytic
     gradient, for both scan variants (and the sequential one at d_state 4,
     which the chunked one, compiled for 16, refuses);
  2. the two scan variants against each other (forward outputs, stored
     states and every gradient), T not a multiple of the chunk nor of the
     chunked forward's 128-step blocks;
  3. against the PyTorch reference state of dev/reference/mamba.py (make
     test writes data/ref_mamba.bin): every layer's activations, logits,
     loss, every parameter gradient (A_log, D, dt_proj bias and conv
     weights included), with both scan variants; 10 AdamW steps; and
  4. bit-identical gradients on a re-run, bit-identical resume from a
     checkpoint;
  5. 3 and 4 for the selection ablation (-M lti, data/ref_mamba_lti.bin from
     dev/reference/mamba.py --lti): its activations (no x_dbl, dt), every
     gradient (dt_bias, B_lti, C_lti included), 10 AdamW steps, resume, and
     generation by its recurrent step, at the same tolerances;
  6. chunked evaluation (mamba_eval_chunked: each layer's conv and SSM
     state carried from chunk to chunk) against one forward over the whole
     rows, T = 64 in chunks of 16, 24 (not a divisor) and 2 (shorter than
     the conv's context), every scan variant, both models; and the scan and
     conv with a zero initial state / context bit-identical to none;
  7. the dt bias initialization at mamba_ssm's dt_min and at -U 1e-9: its
     range and its log-uniform spread (tolerances at check_dt_init);
  8. both scans from an initial state h0 (training from passed states, -R):
     finite differences with h0 held fixed, every variant, and h0's part of
     the gradients; the backward with h0 = zeros bit-identical to none; the
     whole model's training step from passed states (check_passed_states);
  9. the dt stretch (-Y): its draws, and the model's training step with it
     against finite differences (check_dt_stretch).

Relative error of a tensor is max|got - ref| / max|ref| (llmc/testing.h).
Tolerances:
  - reference comparisons: 1e-4 (fp32 against a float64 reference; see
    test_gpt.cu for the reasoning).
  - finite differences: 2e-3 relative to the directional derivative. The
    loss is evaluated in fp32 (rounding ~1e-7 of |loss|), so with step
    eps = 1e-2 the central difference carries ~1e-5 |loss| / |slope| of
    noise plus an O(eps^2) ~ 1e-4 truncation error; 2e-3 sits above both
    and far below the O(1) error of a wrong formula.
  - variant against variant: 1e-5 (same math, different summation order).
*/
#define TESTING
#include "train_mamba.cu"
#include "llmc/testing.h"
#include <functional>

// 1e-4 in fp32. In the host's TF32 mode (HOST_TF32=1, the GPU trainers'
// arithmetic) 2e-2: TF32 rounds the matmul inputs to 2^-11 relative, which
// reaches ~1e-3 in gradients, and AdamW turns that into full-size updates in
// the parameters after 10 steps (worst measured 8.5e-3); a wrong index or
// formula is O(1).
static const double TOL = tf32_tolerance(1e-4, 2e-2);
static const double FD_TOL = 2e-3;
static const double VARIANT_TOL = 1e-5;
// chunked evaluation against one forward: the same fp32 operations per
// position but for the matmuls' row counts (BLAS may block B*Tc rows
// otherwise than B*T) and the carried state's round trip through memory
// (exact), ~1e-7 relative; 1e-5 bounds it
static const double CHUNK_TOL = tf32_tolerance(1e-5, 2e-2);
// generation (the recurrent step) against the parallel forward: the same
// fp32 math in another summation order, ~1e-7 relative; 1e-5 bounds it (as
// test_gpt.cu)
static const double GEN_TOL = tf32_tolerance(1e-5, 2e-2);  // TF32 as TOL
// the whole model's finite differences (check_training_gradients): FD_TOL in
// fp32; in the host's TF32 mode 1e-1: the loss itself then moves by ~1e-4 of
// itself between two nearby parameter sets (every matmul input rounded to
// 2^-11), up to ~1e-1 of the 2 eps slope difference here (worst measured
// 2.4e-2); the part of the gradients a feature makes is still held to 50 FD_TOL
static const double MODEL_FD_TOL = tf32_tolerance(FD_TOL, 1e-1);

// the number of positions where a and b (of a's size) differ, bit for bit
static long count_differing(const std::vector<float>& a, const std::vector<float>& b) {
    long diff = 0;
    for (size_t i = 0; i < a.size(); i++) diff += a[i] != b[i];
    return diff;
}

// n token ids drawn uniformly from 0 .. V-1
static std::vector<int> random_tokens(long n, int V, uint64_t* rng) {
    std::vector<int> tokens(n);
    for (int& x : tokens) x = (int)(random_uniform(rng) * V) % V;
    return tokens;
}

// ----------------------------------------------------------------------------
// 1-2. the selective scan on its own: inputs, one forward + backward

struct ScanProblem {
    int B, T, E, N, R;
    std::vector<float> u, dt_pre, x_dbl, A_log, D, xz, dt_bias, w;  // w: weights of the scalar loss
    std::vector<float> h0;  // (B,E,N) the initial state of both passes; empty: none (zeros)
};

struct ScanResult {
    double loss;  // sum of gated * w, in double
    std::vector<float> y, gated, states;
    std::vector<float> du, ddt, dxz, dx_dbl, dA_log, dD;
};

static ScanProblem make_scan_problem(int B, int T, int E, int N, int R, uint64_t seed) {
    uint64_t rng = seed;
    ScanProblem p = {B, T, E, N, R};
    long BT = (long)B * T;
    p.u = random_vector(BT * E, -1.0f, 1.0f, &rng);
    p.dt_pre = random_vector(BT * E, -3.0f, 0.5f, &rng);
    p.x_dbl = random_vector(BT * (R + 2 * N), -1.0f, 1.0f, &rng);
    p.A_log = random_vector((long)E * N, -0.5f, 1.5f, &rng);
    p.D = random_vector(E, 0.5f, 1.5f, &rng);
    p.xz = random_vector(BT * 2 * E, -2.0f, 2.0f, &rng);
    p.dt_bias = random_vector(E, -0.5f, 0.5f, &rng);
    p.w = random_vector(BT * E, -1.0f, 1.0f, &rng);
    return p;
}

// forward (softplus, scan, gating) and, with backward, every input gradient of
// loss = sum(gated * w); backward_h0 false: the backward is not told the
// initial state (to measure its share of the gradients)
static ScanResult run_scan(const ScanProblem& p, bool backward, bool backward_h0 = true) {
    int B = p.B, T = p.T, E = p.E, N = p.N, R = p.R;
    long BT = (long)B * T;
    float *u = vector_to_device(p.u), *dt = vector_to_device(p.dt_pre), *x_dbl = vector_to_device(p.x_dbl);
    float *A_log = vector_to_device(p.A_log), *D = vector_to_device(p.D), *xz = vector_to_device(p.xz);
    float* bias = vector_to_device(p.dt_bias);
    float* h0 = p.h0.empty() ? nullptr : vector_to_device(p.h0);
    float *y, *gated, *states;
    cudaCheck(cudaMalloc(&y, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&gated, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&states, scan_states_size(B, T, E, N) * sizeof(float)));
    dt_softplus(dt, bias, (int)BT, E);
    selective_scan_forward(y, gated, states, u, dt, x_dbl, R, A_log, D, xz, B, T, E, N, h0);
    ScanResult r;
    r.y = device_to_vector(y, BT * E);
    r.gated = device_to_vector(gated, BT * E);
    r.states = device_to_vector(states, scan_states_size(B, T, E, N));
    r.loss = 0.0;
    for (long i = 0; i < BT * E; i++) r.loss += (double)r.gated[i] * p.w[i];
    if (backward) {
        float *du, *ddt, *dxz, *dx_dbl, *dA_log, *dD, *scratch;
        float* dgated = vector_to_device(p.w);
        cudaCheck(cudaMalloc(&du, BT * E * sizeof(float)));
        cudaCheck(cudaMalloc(&ddt, BT * E * sizeof(float)));
        cudaCheck(cudaMalloc(&dxz, BT * 2 * E * sizeof(float)));
        cudaCheck(cudaMalloc(&dx_dbl, BT * (R + 2 * N) * sizeof(float)));
        cudaCheck(cudaMalloc(&dA_log, (long)E * N * sizeof(float)));
        cudaCheck(cudaMalloc(&dD, E * sizeof(float)));
        cudaCheck(cudaMalloc(&scratch, scan_backward_scratch_size(B, T, E, N) * sizeof(float)));
        cudaCheck(cudaMemset(dxz, 0, BT * 2 * E * sizeof(float)));
        cudaCheck(cudaMemset(dx_dbl, 0, BT * (R + 2 * N) * sizeof(float)));
        cudaCheck(cudaMemset(dA_log, 0, (long)E * N * sizeof(float)));
        cudaCheck(cudaMemset(dD, 0, E * sizeof(float)));
        selective_scan_backward(du, ddt, dxz, dx_dbl, dA_log, dD, scratch, dgated, y, u, dt, x_dbl, R, A_log, D,
                                xz, states, B, T, E, N, backward_h0 ? h0 : nullptr);
        r.du = device_to_vector(du, BT * E);
        r.ddt = device_to_vector(ddt, BT * E);
        r.dxz = device_to_vector(dxz, BT * 2 * E);
        r.dx_dbl = device_to_vector(dx_dbl, BT * (R + 2 * N));
        r.dA_log = device_to_vector(dA_log, (long)E * N);
        r.dD = device_to_vector(dD, E);
        for (float* q : {du, ddt, dxz, dx_dbl, dA_log, dD, scratch, dgated}) cudaFree(q);
    }
    for (float* q : {u, dt, x_dbl, A_log, D, xz, bias, h0, y, gated, states}) cudaFree(q);
    return r;
}

// central difference of the loss along a random direction of one input,
// against the analytic directional derivative <grad, v>
static void fd_check(Tests& t, const char* what, ScanProblem p, std::vector<float> ScanProblem::*field,
                     const std::vector<float>& grad, const std::vector<bool>* mask, uint64_t seed) {
    uint64_t rng = seed;
    std::vector<float>& x = p.*field;
    std::vector<float> v(x.size());
    double analytic = 0.0;
    for (size_t i = 0; i < x.size(); i++) {
        v[i] = (mask && !(*mask)[i]) ? 0.0f : 2.0f * random_uniform(&rng) - 1.0f;
        analytic += (double)grad[i] * v[i];
    }
    const float eps = 1e-2f;
    std::vector<float> x0 = x;
    for (size_t i = 0; i < x.size(); i++) x[i] = x0[i] + eps * v[i];
    double lp = run_scan(p, false).loss;
    for (size_t i = 0; i < x.size(); i++) x[i] = x0[i] - eps * v[i];
    double lm = run_scan(p, false).loss;
    double numeric = (lp - lm) / (2.0 * eps);
    double rel = fabs(numeric - analytic) / fmax(fabs(analytic), 1e-6);
    t.check(rel <= FD_TOL, "finite difference d/d%-7s numeric %+.6e analytic %+.6e  rel err %.2e (tol %.0e)", what,
            numeric, analytic, rel, FD_TOL);
}

static void check_scan_gradients(Tests& t, const ScanProblem& p, const char* variant) {
    printf("--- selective scan, %s, B %d T %d E %d N %d R %d%s\n", variant, p.B, p.T, p.E, p.N, p.R,
           p.h0.empty() ? "" : ", from an initial state h0");
    ScanResult r = run_scan(p, true);
    long BT = (long)p.B * p.T;
    int X = p.R + 2 * p.N;
    // the B, C columns of x_dbl (its dt_raw columns are not the scan's input), the z half of xz
    std::vector<bool> bc_cols(BT * X), z_half(BT * 2 * p.E);
    for (long i = 0; i < BT * X; i++) bc_cols[i] = i % X >= p.R;
    for (long i = 0; i < BT * 2 * p.E; i++) z_half[i] = i % (2 * p.E) >= p.E;
    fd_check(t, "u", p, &ScanProblem::u, r.du, nullptr, 11);
    fd_check(t, "dt_pre", p, &ScanProblem::dt_pre, r.ddt, nullptr, 12);
    fd_check(t, "B,C", p, &ScanProblem::x_dbl, r.dx_dbl, &bc_cols, 13);
    fd_check(t, "A_log", p, &ScanProblem::A_log, r.dA_log, nullptr, 14);
    fd_check(t, "D", p, &ScanProblem::D, r.dD, nullptr, 15);
    fd_check(t, "z", p, &ScanProblem::xz, r.dxz, &z_half, 16);
}

static void compare_vectors(Tests& t, const char* name, const std::vector<float>& a, const std::vector<float>& b, double tol) {
    check_tensor(t, name, a.data(), b.data(), (long)a.size(), tol);
}

// ----------------------------------------------------------------------------
// the conv1d + SiLU kernel on its own: loss = sum(u * w)

static double conv_loss(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& bias,
                        const std::vector<float>& weights, int B, int T, int E, std::vector<float>* grads) {
    long BT = (long)B * T;
    float *dx = vector_to_device(x), *dw = vector_to_device(w), *db = vector_to_device(bias);
    float *conv, *u;
    cudaCheck(cudaMalloc(&conv, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&u, BT * E * sizeof(float)));
    conv1d_silu_forward(conv, u, dx, 2 * E, dw, db, B, T, E);
    std::vector<float> hu = device_to_vector(u, BT * E);
    double loss = 0.0;
    for (long i = 0; i < BT * E; i++) loss += (double)hu[i] * weights[i];
    if (grads) {  // grads: [dx (B,T,2E) | dw (E,K) | dbias (E)]
        float *gx, *gw, *gb, *partial;
        float* du = vector_to_device(weights);
        cudaCheck(cudaMalloc(&gx, BT * 2 * E * sizeof(float)));
        cudaCheck(cudaMemset(gx, 0, BT * 2 * E * sizeof(float)));
        cudaCheck(cudaMalloc(&gw, E * CONV_K * sizeof(float)));
        cudaCheck(cudaMemset(gw, 0, E * CONV_K * sizeof(float)));
        cudaCheck(cudaMalloc(&gb, E * sizeof(float)));
        cudaCheck(cudaMemset(gb, 0, E * sizeof(float)));
        cudaCheck(cudaMalloc(&partial, CONV_CHUNKS * E * (CONV_K + 1) * sizeof(float)));
        conv1d_silu_backward(gx, 2 * E, gw, gb, partial, du, conv, dx, 2 * E, dw, B, T, E);
        std::vector<float> a = device_to_vector(gx, BT * 2 * E), b = device_to_vector(gw, E * CONV_K), c = device_to_vector(gb, E);
        grads->clear();
        grads->insert(grads->end(), a.begin(), a.end());
        grads->insert(grads->end(), b.begin(), b.end());
        grads->insert(grads->end(), c.begin(), c.end());
        for (float* q : {gx, gw, gb, partial, du}) cudaFree(q);
    }
    for (float* q : {dx, dw, db, conv, u}) cudaFree(q);
    return loss;
}

static void check_conv_gradients(Tests& t) {
    int B = 2, T = 7, E = 5;
    long BT = (long)B * T;
    uint64_t rng = 99;
    std::vector<float> x = random_vector(BT * 2 * E, -1.0f, 1.0f, &rng);
    std::vector<float> w = random_vector(E * CONV_K, -0.8f, 0.8f, &rng);
    std::vector<float> bias = random_vector(E, -0.3f, 0.3f, &rng);
    std::vector<float> weights = random_vector(BT * E, -1.0f, 1.0f, &rng);
    std::vector<float> grads;
    conv_loss(x, w, bias, weights, B, T, E, &grads);
    printf("--- conv1d + SiLU, B %d T %d E %d\n", B, T, E);
    const char* names[3] = {"x", "conv_w", "conv_b"};
    std::vector<float>* fields[3] = {&x, &w, &bias};
    long offsets[3] = {0, BT * 2 * E, BT * 2 * E + E * CONV_K};
    for (int f = 0; f < 3; f++) {
        std::vector<float>& p = *fields[f];
        std::vector<float> v(p.size()), p0 = p;
        double analytic = 0.0;
        for (size_t i = 0; i < p.size(); i++) {
            bool used = f != 0 || (long)(i % (2 * E)) < E;  // only the x half feeds the conv
            v[i] = used ? 2.0f * random_uniform(&rng) - 1.0f : 0.0f;
            analytic += (double)grads[offsets[f] + i] * v[i];
        }
        const float eps = 1e-2f;
        for (size_t i = 0; i < p.size(); i++) p[i] = p0[i] + eps * v[i];
        double lp = conv_loss(x, w, bias, weights, B, T, E, nullptr);
        for (size_t i = 0; i < p.size(); i++) p[i] = p0[i] - eps * v[i];
        double lm = conv_loss(x, w, bias, weights, B, T, E, nullptr);
        p = p0;
        double numeric = (lp - lm) / (2.0 * eps);
        double rel = fabs(numeric - analytic) / fmax(fabs(analytic), 1e-6);
        t.check(rel <= FD_TOL, "finite difference d/d%-7s numeric %+.6e analytic %+.6e  rel err %.2e (tol %.0e)",
                names[f], numeric, analytic, rel, FD_TOL);
    }
}

// ----------------------------------------------------------------------------
// the time-invariant scan (-M lti) on its own: loss = sum(gated * w)

struct LtiProblem {
    int B, T, E, N;
    std::vector<float> u, xz, dt_bias, B_lti, C_lti, A_log, D, w;
    std::vector<float> h0;  // (B,E,N) the initial state of both passes; empty: none (zeros)
};

// the loss and, with grads, [du | dz (the z half of dxz) | dA_log | dB_lti | dC_lti | ddt_bias | dD]
static double lti_scan_loss(const LtiProblem& p, std::vector<float>* grads) {
    int B = p.B, T = p.T, E = p.E, N = p.N;
    long BT = (long)B * T;
    float *u = vector_to_device(p.u), *xz = vector_to_device(p.xz), *dt_bias = vector_to_device(p.dt_bias);
    float *B_lti = vector_to_device(p.B_lti), *C_lti = vector_to_device(p.C_lti);
    float *A_log = vector_to_device(p.A_log), *D = vector_to_device(p.D);
    float* h0 = p.h0.empty() ? nullptr : vector_to_device(p.h0);
    float *y, *gated, *states;
    cudaCheck(cudaMalloc(&y, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&gated, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&states, scan_states_size(B, T, E, N) * sizeof(float)));
    selective_scan_lti_forward(y, gated, states, u, dt_bias, B_lti, C_lti, A_log, D, xz, B, T, E, N, h0);
    std::vector<float> hg = device_to_vector(gated, BT * E);
    double loss = 0.0;
    for (long i = 0; i < BT * E; i++) loss += (double)hg[i] * p.w[i];
    if (grads) {
        std::vector<float> zeros_en((long)E * N, 0.0f), zeros_e(E, 0.0f), zeros_xz(BT * 2 * E, 0.0f);
        float *dgated = vector_to_device(p.w), *du, *scratch, *dxz = vector_to_device(zeros_xz);
        float *dA = vector_to_device(zeros_en), *dB = vector_to_device(zeros_en), *dC = vector_to_device(zeros_en);
        float *ddt = vector_to_device(zeros_e), *dD = vector_to_device(zeros_e);
        cudaCheck(cudaMalloc(&du, BT * E * sizeof(float)));
        cudaCheck(cudaMalloc(&scratch, scan_lti_scratch_size(B, E, N) * sizeof(float)));
        selective_scan_lti_backward(du, dxz, dA, dB, dC, ddt, dD, scratch, dgated, y, u, dt_bias, B_lti, C_lti, A_log,
                                    D, xz, states, B, T, E, N, h0);
        grads->clear();
        auto append = [&](const float* d, long n) {
            std::vector<float> h = device_to_vector(d, n);
            grads->insert(grads->end(), h.begin(), h.end());
        };
        append(du, BT * E);
        std::vector<float> hxz = device_to_vector(dxz, BT * 2 * E);
        for (long r = 0; r < BT; r++) grads->insert(grads->end(), hxz.begin() + r * 2 * E + E, hxz.begin() + (r + 1) * 2 * E);
        append(dA, (long)E * N);
        append(dB, (long)E * N);
        append(dC, (long)E * N);
        append(ddt, E);
        append(dD, E);
        for (float* q : {dgated, du, scratch, dxz, dA, dB, dC, ddt, dD}) cudaFree(q);
    }
    for (float* q : {u, xz, dt_bias, B_lti, C_lti, A_log, D, h0, y, gated, states}) cudaFree(q);
    return loss;
}

// central differences along random directions of each input, as fd_check;
// with_h0: both passes start from a random initial state
static void check_lti_scan_gradients(Tests& t, bool with_h0) {
    uint64_t rng = with_h0 ? 32 : 31;
    LtiProblem p = {2, 45, 11, 16};
    long BT = (long)p.B * p.T, E = p.E, N = p.N;
    p.u = random_vector(BT * E, -1.0f, 1.0f, &rng);
    p.xz = random_vector(BT * 2 * E, -2.0f, 2.0f, &rng);
    p.dt_bias = random_vector(E, -4.0f, -1.0f, &rng);
    p.B_lti = random_vector(E * N, -1.0f, 1.0f, &rng);
    p.C_lti = random_vector(E * N, -1.0f, 1.0f, &rng);
    p.A_log = random_vector(E * N, -0.5f, 1.5f, &rng);
    p.D = random_vector(E, 0.5f, 1.5f, &rng);
    p.w = random_vector(BT * E, -1.0f, 1.0f, &rng);
    if (with_h0) p.h0 = random_vector(p.B * E * N, -1.5f, 1.5f, &rng);
    printf("--- time-invariant scan (-M lti), B %d T %d E %d N %d%s\n", p.B, p.T, p.E, p.N,
           with_h0 ? ", from an initial state h0" : "");
    std::vector<float> grads;
    lti_scan_loss(p, &grads);
    struct { const char* name; std::vector<float>* x; bool z_half; } inputs[] = {
        {"u", &p.u, false}, {"z", &p.xz, true}, {"A_log", &p.A_log, false}, {"B_lti", &p.B_lti, false},
        {"C_lti", &p.C_lti, false}, {"dt_bias", &p.dt_bias, false}, {"D", &p.D, false}};
    long off = 0;
    for (auto& in : inputs) {
        std::vector<float>& x = *in.x;
        std::vector<float> x0 = x, v(x.size(), 0.0f);
        double analytic = 0.0;
        long k = 0;
        for (size_t i = 0; i < x.size(); i++) {
            if (in.z_half && (long)(i % (2 * E)) < E) continue;  // only z feeds the gate
            v[i] = 2.0f * random_uniform(&rng) - 1.0f;
            analytic += (double)grads[off + k++] * v[i];
        }
        const float eps = 1e-2f;
        for (size_t i = 0; i < x.size(); i++) x[i] = x0[i] + eps * v[i];
        double lp = lti_scan_loss(p, nullptr);
        for (size_t i = 0; i < x.size(); i++) x[i] = x0[i] - eps * v[i];
        double lm = lti_scan_loss(p, nullptr);
        x = x0;
        off += k;
        double numeric = (lp - lm) / (2.0 * eps);
        double rel = fabs(numeric - analytic) / fmax(fabs(analytic), 1e-6);
        t.check(rel <= FD_TOL, "finite difference d/d%-7s numeric %+.6e analytic %+.6e  rel err %.2e (tol %.0e)",
                in.name, numeric, analytic, rel, FD_TOL);
    }
}

// ----------------------------------------------------------------------------
// 3-4. the whole model against the PyTorch reference

static void check_forward_backward(Tests& t, Mamba* model, const RefState& ref, const char* path, const char* label) {
    int B = ref.B, T = ref.T, L = model->config.num_layers;
    load_params(&model->buf, ref.get("params", path).f);
    mamba_forward(model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), B, T, -1);
    compare_ref(t, ref, path, "encoded", model->acts.encoded, label, TOL);
    for (int l = 0; l < L; l++) {
        MambaStackActs la = mamba_layer_acts(model->acts.tower, l, B, T, dims_of(model->config));
        struct { const char* name; const float* ptr; } acts[] = {
            {"xz", la.xz}, {"conv", la.conv}, {"u", la.u}, {"x_dbl", la.x_dbl}, {"dt", la.dt}, {"scan", la.y},
            {"gated", la.gated}, {"out", la.out}, {"res", la.res}, {"ln", la.ln}};
        for (auto& x : acts) {
            bool per_position_selection = !strcmp(x.name, "x_dbl") || !strcmp(x.name, "dt");
            if (model->config.lti && per_position_selection) continue;  // the LTI ablation has neither
            char name[64];
            snprintf(name, sizeof(name), "m%d.%s", l, x.name);
            compare_ref(t, ref, path, name, x.ptr, label, TOL);
        }
    }
    compare_ref(t, ref, path, "lnf", model->acts.lnf, label, TOL);
    compare_ref(t, ref, path, "logits", model->acts.logits, label, TOL);
    check_loss(t, model->buf.mean_loss, ref.get("loss", path).f[0], label, "loss", TOL);
    mamba_backward(model, B, T);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%sgrad ", label);
    check_grads(t, &model->buf, ref, path, "grads", prefix, TOL);
}

// ----------------------------------------------------------------------------
// 6. chunked evaluation

// one forward over rows of T tokens against mamba_eval_chunked in chunks of
// 16, 24 and 2, for each scan variant (the LTI model has one)
static void check_chunked_eval(Tests& t, MambaConfig config, const std::vector<float>& params) {
    const int B = 2, T = 64, V = config.vocab_size;
    printf("--- chunked evaluation%s, B %d T %d\n", config.lti ? " (LTI)" : "", B, T);
    Mamba model;
    mamba_build(&model, config);
    mamba_allocate_activations(&model, B, T, false);
    load_params(&model.buf, params);
    uint64_t rng = 4242;
    std::vector<int> tokens = random_tokens((long)B * T, V, &rng);
    bool default_chunked = kernel_choices.scan_chunked, default_vec = kernel_choices.scan_vec;
    const char* variants[3] = {"seq", "vec", "chunked"};
    for (int v = 0; v < (config.lti ? 1 : 3); v++) {
        kernel_choices.scan_chunked = v == 2;
        kernel_choices.scan_vec = v == 1;
        mamba_forward(&model, tokens.data(), nullptr, B, T, -1);
        std::vector<float> whole = device_to_vector(model.acts.logits, (long)B * T * V);
        for (int Tc : {16, 24, 2}) {
            std::vector<float> chunked = chunked_logits(&model, tokens.data(), B, T, Tc);
            char name[96];
            snprintf(name, sizeof(name), "[%s] logits, chunks of %d", config.lti ? "lti" : variants[v], Tc);
            check_tensor(t, name, chunked.data(), whole.data(), (long)whole.size(), CHUNK_TOL);
        }
    }
    kernel_choices.scan_chunked = default_chunked;
    kernel_choices.scan_vec = default_vec;
    model_free(&model.buf);
}

// The gradients g of a training forward (forward(): its setup and
// lm_forward) w.r.t. every layer's A_log and dt bias (dt_proj_b, or the LTI
// model's dt_bias) against central differences of the loss (MODEL_FD_TOL, eps
// 3e-2, along the gradient's signs with random magnitudes: see
// check_passed_states); and the part of them that `what` (the initial
// states, the stretch) makes, against g_without (the gradients without it):
// far above FD_TOL, so that those checks would see a backward missing it.
static void check_training_gradients(Tests& t, Mamba* model, const std::function<void()>& forward,
                                     const std::vector<float>& g, const std::vector<float>& g_without,
                                     const char* what, uint64_t* rng) {
    MambaConfig c = model->config;
    MambaDims d = dims_of(c);
    std::vector<float> params = device_to_vector(model->buf.params_memory, model->buf.num_parameters);
    const float* dt_param = c.lti ? model->params.lti.dt_bias : model->params.tower.dt_proj_b;
    struct { const char* name; const float* tensor; long n; } checked[2] = {
        {"A_log", model->params.tower.A_log, (long)c.num_layers * d.E * d.N},
        {c.lti ? "dt_bias" : "dt_proj_b", dt_param, (long)c.num_layers * d.E}};
    for (auto& k : checked) {
        long off = k.tensor - model->buf.params_memory;
        std::vector<float> v(k.n);
        double analytic = 0.0;
        for (long i = 0; i < k.n; i++) {
            v[i] = (g[off + i] < 0.0f ? -1.0f : 1.0f) * (0.5f + 0.5f * random_uniform(rng));
            analytic += (double)g[off + i] * v[i];
        }
        auto loss_at = [&](float sign) {
            std::vector<float> q = params;
            for (long i = 0; i < k.n; i++) q[off + i] += sign * 3e-2f * v[i];
            load_params(&model->buf, q);
            forward();
            return (double)model->buf.mean_loss;
        };
        double numeric = (loss_at(1.0f) - loss_at(-1.0f)) / 6e-2;
        double rel = fabs(numeric - analytic) / fmax(fabs(analytic), 1e-6);
        t.check(rel <= MODEL_FD_TOL, "finite difference d/d%-9s numeric %+.6e analytic %+.6e  rel err %.2e (tol %.0e)",
                k.name, numeric, analytic, rel, MODEL_FD_TOL);
        double part = tensor_error(g_without.data() + off, g.data() + off, k.n).rel;
        t.check(part > 50 * FD_TOL, "%s's part of d/d%s (relative): %.3f (above 50x the tolerance, %.1f)", what, k.name,
                part, 50 * FD_TOL);
        load_params(&model->buf, params);
    }
}

// The dt stretch (-Y): the kernel on its own, then the model's training step.
//   - dt_stretch raises exactly one position of each row, every channel by
//     the same ln g in [0, ln G], and nothing else; the same (seed, step)
//     draws the same, another step other positions. Over 300 steps x 3 rows
//     (900 draws) the shares ln g / ln G and p / T have mean 1/2 within 0.05
//     (5 standard deviations of a uniform mean over 900 draws: 5 x 0.0096).
//   - the model: a training forward with -Y stretches the same position in
//     both layers (their dt pre-activations differ from a forward without
//     by ln g there, by 0 elsewhere); its gradients against central
//     differences of the stretched loss (check_training_gradients), the
//     step from passed random states (-R too: without them this small
//     model's slopes are ~1e-4, where the loss's fp32 rounding is ~1e-2 of
//     the difference quotient); an evaluation forward is not stretched.
static void check_dt_stretch(Tests& t) {
    printf("--- dt stretch (-Y)\n");
    const int B = 3, T = 50, E = 7;
    const float G = 1e6f;
    uint64_t rng = 303;
    std::vector<float> raw = random_vector((long)B * T * E, -8.0f, 1.0f, &rng);
    int* step;
    cudaCheck(cudaMalloc(&step, sizeof(int)));
    float* dt = vector_to_device(raw);
    auto draw = [&](int s, uint64_t seed) {
        cudaCheck(cudaMemcpy(step, &s, sizeof(int), cudaMemcpyHostToDevice));
        upload(dt, raw);
        dt_stretch(dt, B, T, E, {dropout_site(seed, step, DT_STRETCH_SITE), logf(G)});
        return device_to_vector(dt, (long)B * T * E);
    };
    int bad_rows = 0, moved = 0, draws = 0;
    double share_g = 0.0, share_p = 0.0;
    for (int s = 0; s < 300; s++) {
        std::vector<float> out = draw(s, 7), again = draw(s, 7), other = draw(s + 1, 7);
        for (int b = 0; b < B; b++) {
            int changed = 0, pos = -1;
            double shift = 0.0;
            bool same_shift = true;
            for (int p = 0; p < T; p++)
                for (int e = 0; e < E; e++) {
                    long i = ((long)b * T + p) * E + e;
                    if (out[i] == raw[i]) continue;
                    if (pos >= 0 && p != pos) changed += 1000;  // a second position
                    if (pos < 0) { pos = p; shift = (double)out[i] - raw[i]; }
                    same_shift &= fabs((double)out[i] - raw[i] - shift) <= 1e-5 * (1.0 + fabs(raw[i]));
                    changed++;
                }
            bool ok = changed == E && same_shift && shift >= -1e-5 && shift <= log(G) + 1e-4;
            for (long i = (long)b * T * E; i < (long)(b + 1) * T * E; i++) ok &= again[i] == out[i];
            bad_rows += !ok;
            for (long i = (long)b * T * E; i < (long)(b + 1) * T * E; i++)
                if (other[i] != out[i]) { moved++; break; }
            share_g += shift / log(G);
            share_p += (pos + 0.5) / T;
            draws++;
        }
    }
    t.check(bad_rows == 0, "one position per row raised, every channel by one ln g in [0, ln G], repeatable: %d of %d "
            "rows otherwise", bad_rows, draws);
    t.check(moved >= draws * 9 / 10, "another step draws another row: %d of %d rows differ", moved, draws);
    t.check(fabs(share_g / draws - 0.5) <= 0.05 && fabs(share_p / draws - 0.5) <= 0.05,
            "over %d draws: mean ln g / ln G %.4f, mean position / T %.4f (uniform: 0.5 within 0.05)", draws,
            share_g / draws, share_p / draws);
    cudaCheck(cudaFree(step));
    cudaCheck(cudaFree(dt));

    // the model's training step
    const int V = 16, Bm = 2, Tm = 40;
    MambaConfig c = mamba_config(V, 2, 32, 16);
    MambaDims d = dims_of(c);
    Mamba model;
    mamba_build(&model, c);
    mamba_init_random(&model, 98);
    mamba_allocate_activations(&model, Bm, Tm, false);
    model.dropout.seed = 5;
    std::vector<int> inputs = random_tokens((long)Bm * Tm, V, &rng), targets = random_tokens((long)Bm * Tm, V, &rng);
    long n_params = model.buf.num_parameters, n_dt = (long)Bm * Tm * d.E;
    mamba_allocate_passed_states(&model, Bm);
    std::vector<float> H = random_vector((long)c.num_layers * Bm * d.E * d.N, -1.0f, 1.0f, &rng);
    auto forward = [&]() {
        upload(passed_states(&model, 1, 0), H);
        lm_forward(&model, inputs.data(), targets.data(), Bm, Tm, 11);
    };
    auto training_step = [&]() {
        forward();
        lm_backward(&model, Bm, Tm);
        return device_to_vector(model.buf.grads_memory, n_params);
    };
    auto layer_dt = [&](int l) { return device_to_vector(mamba_layer_acts(model.acts.tower, l, Bm, Tm, d).dt, n_dt); };
    std::vector<float> g_plain = training_step(), dt_plain[2] = {layer_dt(0), layer_dt(1)};
    model.stretch_max = G;
    std::vector<float> g = training_step(), dt_stretched[2] = {layer_dt(0), layer_dt(1)};
    // layer 0: the pre-activations (inverse softplus of dt) differ from the unstretched step's at one
    // position p per row, by ln g; layer 1 (whose input changes from p on): its pre-activation at p is
    // dt_proj(x_dbl) + bias + the same ln g (recomputed in double from its stored x_dbl)
    auto pre = [](float v) { return v > 20.0f ? (double)v : log(expm1((double)v)); };
    MambaStackParams p1 = mamba_layer_params(model.params.tower, 1, d);
    std::vector<float> w1 = device_to_vector(p1.dt_proj_w, (long)d.E * d.R), b1 = device_to_vector(p1.dt_proj_b, d.E);
    int X = d.R + 2 * d.N;
    std::vector<float> xd1 = device_to_vector(mamba_layer_acts(model.acts.tower, 1, Bm, Tm, d).x_dbl, (long)Bm * Tm * X);
    int rows_ok = 0;
    double worst = 0.0;
    for (int b = 0; b < Bm; b++) {
        int where = -1, count = 0;
        double shift = 0.0;
        for (int p = 0; p < Tm; p++) {
            long i = ((long)b * Tm + p) * d.E;  // channel 0
            double diff = pre(dt_stretched[0][i]) - pre(dt_plain[0][i]);
            if (fabs(diff) > 1e-3) { where = p; shift = diff; count++; }
        }
        if (count != 1) continue;
        long row = (long)b * Tm + where;
        for (int e = 0; e < d.E; e++) {
            double z = b1[e];
            for (int r = 0; r < d.R; r++) z += (double)w1[(long)e * d.R + r] * xd1[row * X + r];
            double got = pre(dt_stretched[1][row * d.E + e]) - z;
            if (dt_stretched[1][row * d.E + e] < 20.0f) worst = fmax(worst, fabs(got - shift));
        }
        rows_ok++;
    }
    t.check(rows_ok == Bm && worst <= 1e-3, "a training step with -Y: layer 0 stretched at one position in %d of %d rows; "
            "layer 1 at the same, by the same ln g to %.1e (tol 1e-3: fp32 softplus inverted)", rows_ok, Bm, worst);
    check_training_gradients(t, &model, forward, g, g_plain, "the stretch", &rng);
    mamba_forward(&model, inputs.data(), targets.data(), Bm, Tm, -1);
    std::vector<float> dt_eval = layer_dt(0);
    long diff = count_differing(dt_eval, dt_plain[0]);
    t.check(diff == 0, "an evaluation forward is not stretched: %ld of %ld dt differ from an unstretched step's", diff, n_dt);
    cudaCheck(cudaFree(model.passed));
    model_free(&model.buf);
}

// Training from passed states (-R), the whole model (lm_forward and
// lm_backward, the training loop's hooks), B 2 T 40, L 2 C 32, both mixers:
//   - from zero states, the loss and gradients are bit-identical to a
//     training step without -R;
//   - from random states H: lm_forward keeps H as the batch's initial states
//     (passed[0], bit-identical) and leaves in passed[1] the states after the
//     rows, which equal the final states of a chunked evaluation's carry
//     started from H (CHUNK_TOL); lm_backward's gradients of every layer's
//     A_log and dt bias (selective: dt_proj_b; LTI: dt_bias), the parameters
//     the initial state enters, against central differences of the loss with
//     H held fixed (FD_TOL). The mean loss's fp32 rounding (~2e-7) would be
//     ~1e-2 of a slope along random signs (~1e-3 here), so the direction
//     follows the gradient's signs with random magnitudes (slopes ~30x
//     larger), and eps is 3e-2 (its O(eps^2) error measured below 1e-4);
//   - H's part of those gradients (a backward not told H against one that
//     is) is far above FD_TOL, so that those checks see a backward that
//     ignored H (check_training_gradients).
static void check_passed_states(Tests& t, int lti) {
    const int B = 2, T = 40, V = 16;
    MambaConfig c = mamba_config(V, 2, 32, 16, lti);
    MambaDims d = dims_of(c);
    printf("--- training from passed states (-R)%s, B %d T %d L %d C %d\n", lti ? ", LTI" : "", B, T, c.num_layers,
           c.channels);
    Mamba model;
    mamba_build(&model, c);
    mamba_init_random(&model, 99);
    mamba_allocate_activations(&model, B, T, false);
    uint64_t rng = 777;
    std::vector<int> inputs = random_tokens((long)B * T, V, &rng), targets = random_tokens((long)B * T, V, &rng);
    long n_params = model.buf.num_parameters, n_states = (long)c.num_layers * B * d.E * d.N;
    auto grads = [&]() { return device_to_vector(model.buf.grads_memory, n_params); };
    auto step = [&]() {  // a training step's forward and backward (no update), as lm_run's
        lm_forward(&model, inputs.data(), targets.data(), B, T, 0);
        lm_backward(&model, B, T);
        return model.buf.mean_loss;
    };
    float loss_plain = step();
    std::vector<float> g_plain = grads();

    mamba_allocate_passed_states(&model, B);
    float* from = passed_states(&model, 1, 0);  // where the next training forward starts from
    float loss_zero = step();
    std::vector<float> g_zero = grads();
    long diff = count_differing(g_zero, g_plain);
    t.check(loss_zero == loss_plain && diff == 0, "from zero states: loss %.7f vs %.7f, %ld of %ld gradients differ "
            "(bit-identical wanted)", loss_zero, loss_plain, diff, n_params);

    std::vector<float> H = random_vector(n_states, -1.0f, 1.0f, &rng);
    upload(from, H);
    step();
    std::vector<float> g = grads();
    std::vector<float> kept = device_to_vector(passed_states(&model, 0, 0), n_states), after = device_to_vector(from, n_states);
    diff = count_differing(kept, H);
    t.check(diff == 0, "the batch's initial states kept for the backward: %ld of %ld differ from H", diff, n_states);
    {  // a chunked evaluation's carry from H: the conv context cleared, the SSM states H
        MambaStepState carried;
        mamba_step_state_alloc(&carried, c.num_layers, B, d);
        for (int l = 0; l < c.num_layers; l++)
            upload(mamba_ssm_state(&carried, l), std::vector<float>(H.begin() + (long)l * B * d.E * d.N,
                                                                    H.begin() + (long)(l + 1) * B * d.E * d.N));
        std::vector<MambaCarry> carries = layer_carries(&model, &carried, nullptr);
        mamba_forward(&model, inputs.data(), targets.data(), B, T, -1, carries.data());
        std::vector<float> want;
        for (int l = 0; l < c.num_layers; l++) {
            std::vector<float> s = device_to_vector(mamba_ssm_state(&carried, l), (long)B * d.E * d.N);
            want.insert(want.end(), s.begin(), s.end());
        }
        check_tensor(t, "states after the rows vs a carried forward's", after.data(), want.data(), n_states, CHUNK_TOL);
        mamba_step_state_free(&carried);
    }
    upload(from, H);  // H's part: the same forward, a backward not told H
    lm_forward(&model, inputs.data(), targets.data(), B, T, 0);
    model.passed_forward = 0;
    mamba_backward(&model, B, T);
    std::vector<float> g_untold = grads();

    check_training_gradients(t, &model, [&]() {
        upload(from, H);
        lm_forward(&model, inputs.data(), targets.data(), B, T, 0);
    }, g, g_untold, "H", &rng);
    cudaCheck(cudaFree(model.passed));
    model_free(&model.buf);
}

// Both scan passes from an initial state h0 (training from passed states,
// -R): finite differences of every input with h0 held fixed, every variant;
// then h0's part of the gradients, a backward told h0 against one that is
// not (the same forward), which must be far above the finite-difference
// tolerance for those checks to see a backward that ignored h0.
static void check_scan_initial_state(Tests& t) {
    ScanProblem p = make_scan_problem(2, 45, 11, 16, 3, 2026);
    uint64_t rng = 5;
    p.h0 = random_vector((long)p.B * p.E * p.N, -1.5f, 1.5f, &rng);
    bool default_chunked = kernel_choices.scan_chunked, default_vec = kernel_choices.scan_vec;
    const char* variants[3] = {"sequential", "sequential vectorized", "chunked parallel"};
    for (int v = 0; v < 3; v++) {
        kernel_choices.scan_chunked = v == 2;
        kernel_choices.scan_vec = v == 1;
        check_scan_gradients(t, p, variants[v]);
        ScanResult told = run_scan(p, true), untold = run_scan(p, true, false);
        double part_A = tensor_error(untold.dA_log.data(), told.dA_log.data(), (long)told.dA_log.size()).rel;
        double part_dt = tensor_error(untold.ddt.data(), told.ddt.data(), (long)told.ddt.size()).rel;
        t.check(part_A > 50 * FD_TOL && part_dt > 50 * FD_TOL,
                "[%s] h0's part of the gradients (relative): dA_log %.3f, ddt %.3f (above 50x the tolerance, %.1f)",
                variants[v], part_A, part_dt, 50 * FD_TOL);
    }
    kernel_choices.scan_chunked = default_chunked;
    kernel_choices.scan_vec = default_vec;
}

// the scan with h0 = zeros and the conv with a zero context give the same
// bits as without them (null), every scan variant, forward and backward
static void check_zero_state_identical(Tests& t) {
    ScanProblem p = make_scan_problem(2, 45, 11, 16, 3, 77);
    int B = p.B, T = p.T, E = p.E, N = p.N, R = p.R;
    long BT = (long)B * T;
    float *u = vector_to_device(p.u), *dt = vector_to_device(p.dt_pre), *x_dbl = vector_to_device(p.x_dbl);
    float *A_log = vector_to_device(p.A_log), *D = vector_to_device(p.D), *xz = vector_to_device(p.xz);
    float* bias = vector_to_device(p.dt_bias);
    dt_softplus(dt, bias, (int)BT, E);  // dt > 0, as the model's
    std::vector<float> zeros_state((long)B * E * N, 0.0f), zeros_ctx((long)B * E * (CONV_K - 1), 0.0f);
    float *h0 = vector_to_device(zeros_state), *ctx = vector_to_device(zeros_ctx);
    float *y, *gated, *states;
    cudaCheck(cudaMalloc(&y, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&gated, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&states, scan_states_size(B, T, E, N) * sizeof(float)));
    bool default_chunked = kernel_choices.scan_chunked, default_vec = kernel_choices.scan_vec;
    const char* variants[3] = {"seq", "vec", "chunked"};
    for (int v = 0; v < 3; v++) {
        kernel_choices.scan_chunked = v == 2;
        kernel_choices.scan_vec = v == 1;
        std::vector<float> out[2];
        for (int with = 0; with < 2; with++) {
            selective_scan_forward(y, gated, states, u, dt, x_dbl, R, A_log, D, xz, B, T, E, N, with ? h0 : nullptr);
            out[with] = device_to_vector(gated, BT * E);
            std::vector<float> s = device_to_vector(states, scan_states_size(B, T, E, N));
            out[with].insert(out[with].end(), s.begin(), s.end());
        }
        long diff = count_differing(out[0], out[1]);
        t.check(diff == 0, "[%s] scan with h0 = zeros vs none: %ld of %zu values differ (bit-identical wanted)",
                variants[v], diff, out[0].size());
        ScanProblem pz = p;
        pz.h0 = zeros_state;
        ScanResult none = run_scan(p, true), zero = run_scan(pz, true);
        long gdiff = 0, gn = 0;
        for (auto field : {&ScanResult::du, &ScanResult::ddt, &ScanResult::dxz, &ScanResult::dx_dbl,
                           &ScanResult::dA_log, &ScanResult::dD}) {
            gdiff += count_differing(none.*field, zero.*field);
            gn += (long)(none.*field).size();
        }
        t.check(gdiff == 0, "[%s] scan backward with h0 = zeros vs none: %ld of %ld gradients differ (bit-identical wanted)",
                variants[v], gdiff, gn);
    }
    kernel_choices.scan_chunked = default_chunked;
    kernel_choices.scan_vec = default_vec;
    {
        std::vector<float> w(E * CONV_K, 0.3f), bias(E, 0.1f);
        float *dw = vector_to_device(w), *db = vector_to_device(bias), *conv, *cu;
        cudaCheck(cudaMalloc(&conv, BT * E * sizeof(float)));
        cudaCheck(cudaMalloc(&cu, BT * E * sizeof(float)));
        std::vector<float> out[2];
        for (int with = 0; with < 2; with++) {
            conv1d_silu_forward(conv, cu, xz, 2 * E, dw, db, B, T, E, with ? ctx : nullptr);
            out[with] = device_to_vector(cu, BT * E);
        }
        long diff = count_differing(out[0], out[1]);
        t.check(diff == 0, "conv1d with a zero context vs none: %ld of %zu values differ (bit-identical wanted)", diff,
                out[0].size());
        for (float* q : {dw, db, conv, cu}) cudaFree(q);
    }
    for (float* q : {u, dt, x_dbl, A_log, D, xz, bias, h0, ctx, y, gated, states}) cudaFree(q);
}

static void check_against_reference(Tests& t, const char* path) {
    RefState ref;
    ref_state_load(&ref, path);
    if (ref.kind != MODEL_MAMBA && ref.kind != MODEL_MAMBA_LTI)
        fail("%s: reference state of model kind %d, expected a Mamba LM (%d or %d)", path, ref.kind, MODEL_MAMBA,
             MODEL_MAMBA_LTI);
    int lti = ref.kind == MODEL_MAMBA_LTI;
    MambaConfig config = {ref.config[0], ref.config[1], ref.config[2], ref.config[3], ref.config[4], lti};
    printf("--- reference %s: Mamba%s L %d C %d E %d N %d R %d V %d | B %d T %d\n", path, lti ? " LTI" : "",
           config.num_layers, config.channels, config.inner, config.d_state, ref.config[5], config.vocab_size, ref.B,
           ref.T);
    t.check(ref.config[5] == dims_of(config).R, "dt rank %d = %s = %d", ref.config[5], lti ? "0 (no dt_proj)" : "ceil(C/16)",
            dims_of(config).R);
    Mamba model;
    mamba_build(&model, config);
    mamba_allocate_activations(&model, ref.B, ref.T, true);  // with room for dropout (check_lm_dropout)
    t.check(model.buf.num_parameters == ref.config[6] && model.buf.num_parameters == ref.get("params", path).numel(),
            "parameter count %ld (reference %d)", model.buf.num_parameters, ref.config[6]);

    bool default_variant = kernel_choices.scan_chunked, default_ln = kernel_choices.layernorm_warp;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.scan_chunked = kernel_choices.layernorm_warp = variant == 1;
        check_forward_backward(t, &model, ref, path, variant ? "[chunked] " : "[seq] ");
    }
    kernel_choices.scan_chunked = default_variant;
    kernel_choices.layernorm_warp = default_ln;

    // the reference batch at every step
    TrainStep step = [&](int) {
        mamba_forward(&model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), ref.B, ref.T, -1);
        mamba_backward(&model, ref.B, ref.T);
    };
    check_rerun_identical(t, &model.buf, step, 0, "");
    check_trajectory(t, &model.buf, ref, path, step, TOL);
    check_resume(t, &model.buf, ref, path, step, 7, 8, "");
    check_lm_dropout(t, &model, ref, path, TOL);

    // generation with the recurrent step, rows of different tokens, both scan variants' final states
    printf("--- generation\n");
    load_params(&model.buf, ref.get("params", path).f);
    const std::vector<int>& tokens = ref.get("inputs", path).i;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.scan_chunked = variant == 1;
        const char* what = variant ? "[chunked] steps vs forward" : "[seq] steps vs forward";
        check_steps_against_forward(t, &model, tokens, ref.B, ref.T, 1, GEN_TOL, what);
        check_steps_against_forward(t, &model, tokens, ref.B, ref.T, ref.T / 2 + 3, GEN_TOL, what);
        check_steps_against_forward(t, &model, tokens, ref.B, ref.T, ref.T - 4, GEN_TOL, what);  // past one 32-step chunk
    }
    kernel_choices.scan_chunked = default_variant;
    // a prompt longer than the activations: the rest is stepped
    check_greedy_repeatable(t, &model, std::vector<int>(tokens.begin(), tokens.begin() + 5), 3 * ref.T);
    model_free(&model.buf);
    check_chunked_eval(t, config, ref.get("params", path).f);
}

// The dt bias initialization (mamba_dt_bias_init) at mamba_ssm's dt_min (1e-3) and at
// train_mamba -U 1e-9: 4096 draws; softplus of each bias lies in [dt_min, 0.1] to 1e-4
// relative (the float inverse softplus rounds log(dt) to ~1e-6 of |log dt|, which is
// ~2e-5 relative in dt at 1e-9), and dt is log-uniform: the share below the
// geometric middle of the range is 1/2 within 0.04 (5 standard deviations of 4096 draws).
static void check_dt_init(Tests& t) {
    printf("--- dt bias initialization\n");
    const float mins[2] = {MAMBA_DT_MIN, 1e-9f};
    for (float dt_min : mins) {
        Rng rng;
        rng_seed(&rng, 42);
        const int n = 4096;
        double lo = 1.0, hi = 0.0, middle = sqrt((double)dt_min * 0.1);
        int below = 0;
        for (int i = 0; i < n; i++) {
            double z = mamba_dt_bias_init(&rng, dt_min);
            double dt = z > 20.0 ? z : log1p(exp(z));
            lo = std::min(lo, dt); hi = std::max(hi, dt);
            below += dt < middle;
        }
        t.check(lo >= dt_min * (1 - 1e-4) && hi <= 0.1 * (1 + 1e-4), "dt_min %g: dt in [%.3e, %.3e]", dt_min, lo, hi);
        t.check(fabs(below / (double)n - 0.5) <= 0.04, "dt_min %g: %.4f of the draws below %.1e (log-uniform: 0.5)",
                dt_min, below / (double)n, middle);
    }
}

int main(int argc, char** argv) {
    const char* path = argc > 1 ? argv[1] : "data/ref_mamba.bin";
    const char* lti_path = argc > 2 ? argv[2] : "data/ref_mamba_lti.bin";
    Tests t;
    printf("backend %s\n", BACKEND_NAME);

    // finite differences of both scan variants, T = 45: one full chunk and a partial one
    ScanProblem p = make_scan_problem(2, 45, 11, 16, 3, 2024);
    bool default_variant = kernel_choices.scan_chunked;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.scan_chunked = variant == 1;
        check_scan_gradients(t, p, variant ? "chunked parallel" : "sequential");
    }
    // d_state other than 16: the sequential variant only (the chunked one is compiled for 16)
    {
        ScanProblem p4 = make_scan_problem(2, 45, 11, 4, 3, 2025);
        kernel_choices.scan_chunked = false;
        check_scan_gradients(t, p4, "sequential, N = 4");
    }
    check_scan_initial_state(t);
    check_conv_gradients(t);
    check_lti_scan_gradients(t, false);
    check_lti_scan_gradients(t, true);
    check_dt_init(t);

    // the two variants against each other on a longer sequence, E not a multiple of the group: T = 301 is 9
    // chunks and a bit, and two of the chunked forward's 128-step blocks (the state carried between them) and a bit
    {
        ScanProblem q = make_scan_problem(3, 301, 19, 16, 2, 7);
        kernel_choices.scan_chunked = false;
        ScanResult a = run_scan(q, true);
        kernel_choices.scan_chunked = true;
        ScanResult b = run_scan(q, true);
        printf("--- sequential vs chunked scan, B %d T %d E %d N %d\n", q.B, q.T, q.E, q.N);
        compare_vectors(t, "y", b.y, a.y, VARIANT_TOL);
        compare_vectors(t, "gated", b.gated, a.gated, VARIANT_TOL);
        compare_vectors(t, "chunk states", b.states, a.states, VARIANT_TOL);
        compare_vectors(t, "du", b.du, a.du, VARIANT_TOL);
        compare_vectors(t, "ddt", b.ddt, a.ddt, VARIANT_TOL);
        compare_vectors(t, "dz (dxz)", b.dxz, a.dxz, VARIANT_TOL);
        compare_vectors(t, "dB, dC (dx_dbl)", b.dx_dbl, a.dx_dbl, VARIANT_TOL);
        compare_vectors(t, "dA_log", b.dA_log, a.dA_log, VARIANT_TOL);
        compare_vectors(t, "dD", b.dD, a.dD, VARIANT_TOL);
    }
    kernel_choices.scan_chunked = default_variant;
    check_zero_state_identical(t);
    check_passed_states(t, 0);
    check_passed_states(t, 1);
    check_dt_stretch(t);

    check_against_reference(t, path);
    check_against_reference(t, lti_path);
    return t.summary();
}

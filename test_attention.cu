/*
Checks llmc/attention.cuh's two attention variants, materialized and tiled
(memory-linear, online softmax), each with both of its kernel sets, against
the PyTorch reference state written by dev/reference/attention.py (make test
writes data/ref_attention.bin) and against each other:
  - per case (causal and not, T below, at and past the tiles and not a
    multiple of them, hs 8..128): the output and the q, k, v gradients of
    every variant against the reference, and the tiled variant's against the
    materialized one's
  - the probabilities the tiled variant used (rebuilt from its lse) against
    the materialized att
  - bit-identical outputs and gradients when the tiled variant runs twice
    (no atomics)
  - central finite differences of sum(out * w) against the tiled backward on
    a tiny shape, causal and not
  - the kept state and scratch of the tiled variant are O(B T C): no T x T
    buffer at T 16384

Errors are printed per tensor as max abs and relative error, relative being
max|got - ref| / max|ref| over the tensor (llmc/testing.h). Tolerance: 1e-4
relative, as the model tests: the reference is float64 from the same float32
inputs, and an fp32 attention row sums at most a few hundred terms (error
~1e-6 relative), while any masking, indexing or rescaling mistake is O(1).
The finite-difference tolerance is 1e-3, see check_finite_differences.
*/
#include "llmc/cuda_common.h"
#include "llmc/attention.cuh"
#include "llmc/testing.h"

#include <vector>

static const double TOL = 1e-4;

typedef struct {
    const char* name;
    int variant;        // ATTENTION_MATERIALIZED or ATTENTION_TILED
    bool smem;          // tiled: the shared-memory kernels
    bool warp_softmax;  // materialized: the warp-per-row softmax
} Variant;

static const Variant VARIANTS[] = {
    {"materialized/rows", ATTENTION_MATERIALIZED, false, false},
    {"materialized/warp", ATTENTION_MATERIALIZED, false, true},
    {"tiled/rows", ATTENTION_TILED, false, false},
    {"tiled/smem", ATTENTION_TILED, true, false},
};
static const int NUM_VARIANTS = sizeof(VARIANTS) / sizeof(VARIANTS[0]);

static float* upload(const std::vector<float>& h) {
    float* d;
    cudaCheck(cudaMalloc(&d, (h.size() ? h.size() : 1) * sizeof(float)));
    if (h.size()) cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static float* device_zeros(long n) { return upload(std::vector<float>(n, 0.0f)); }
static std::vector<float> download(const float* d, long n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

typedef struct {
    std::vector<float> out;    // (B,T,C)
    std::vector<float> dqkv;   // (B,T,3C)
    std::vector<float> state;  // what attention_forward kept in `att`
} AttentionRun;

// Selects the variant, sizes the buffers for it, runs attention_forward and
// (unless dout is empty) attention_backward once; restores the defaults.
static AttentionRun run_attention(cublasHandle_t h, const Variant& var, bool keep_probs, const std::vector<float>& qkv,
                                  const std::vector<float>& dout, int B, int T, int C, int NH, int causal) {
    int saved_variant = kernel_choices.attention_variant;
    bool saved_smem = kernel_choices.attention_tiled_smem, saved_warp = kernel_choices.softmax_warp, saved_keep = kernel_choices.attention_keep_probs;
    kernel_choices.attention_variant = var.variant;
    kernel_choices.attention_tiled_smem = var.smem;
    kernel_choices.softmax_warp = var.warp_softmax;
    kernel_choices.attention_keep_probs = keep_probs;
    AttentionSizes s = attention_act_sizes(B, T, C, NH);
    long btc = (long)B * T * C;
    float* d_qkv = upload(qkv);
    float* out = device_zeros(btc);
    float* qkvr = device_zeros(3 * btc);
    float* att = device_zeros(s.state);
    float* preatt = device_zeros(s.preatt);
    float* y = device_zeros(btc);
    attention_forward(h, out, qkvr, att, preatt, y, d_qkv, B, T, C, NH, causal);
    AttentionRun r;
    r.out = download(out, btc);
    r.state = download(att, s.state);
    if (!dout.empty()) {
        float* d_dout = upload(dout);
        float* dqkv = device_zeros(3 * btc);
        float* dqkvr = device_zeros(3 * btc);
        float* dy = device_zeros(btc);
        float* datt = device_zeros(s.datt);
        attention_backward(h, dqkv, dqkvr, dy, datt, d_dout, qkvr, att, B, T, C, NH, causal);
        r.dqkv = download(dqkv, 3 * btc);
        std::vector<float> dout_after = download(d_dout, btc);
        if (memcmp(dout_after.data(), dout.data(), btc * sizeof(float)))
            fail("%s: attention_backward wrote to dout", var.name);
        for (float* p : {d_dout, dqkv, dqkvr, dy, datt}) cudaCheck(cudaFree(p));
    }
    for (float* p : {d_qkv, out, qkvr, att, preatt, y}) cudaCheck(cudaFree(p));
    kernel_choices.attention_variant = saved_variant;
    kernel_choices.attention_tiled_smem = saved_smem;
    kernel_choices.softmax_warp = saved_warp;
    kernel_choices.attention_keep_probs = saved_keep;
    return r;
}

// part 0, 1, 2 (q, k, v) of a (B,T,3C) tensor, as (B,T,C)
static std::vector<float> qkv_part(const std::vector<float>& x, long BT, int C, int part) {
    std::vector<float> r(BT * C);
    for (long i = 0; i < BT; i++)
        for (int c = 0; c < C; c++) r[i * C + c] = x[i * 3 * C + part * C + c];
    return r;
}

// out, dq, dk, dv of got against want, one line each
static void compare_run(Tests& t, const char* label, const AttentionRun& got, const std::vector<float>& want_out,
                        const std::vector<float>& want_dqkv, long BT, int C) {
    char name[128];
    snprintf(name, sizeof(name), "%s out", label);
    check_tensor(t, name, got.out.data(), want_out.data(), BT * C, TOL);
    const char* parts[3] = {"dq", "dk", "dv"};
    for (int p = 0; p < 3; p++) {
        std::vector<float> g = qkv_part(got.dqkv, BT, C, p), w = qkv_part(want_dqkv, BT, C, p);
        snprintf(name, sizeof(name), "%s %s", label, parts[p]);
        check_tensor(t, name, g.data(), w.data(), BT * C, TOL);
    }
}

static std::vector<float> random_vector(long n, uint64_t* rng, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) x = scale * (2.0f * random_uniform(rng) - 1.0f);
    return v;
}

// Central differences of L = sum(out * w) in each of the qkv inputs against
// dqkv from the backward with dout = w, tiled variant (both kernel sets).
// Tolerance 1e-3 relative: with eps 1e-2 and inputs of size ~1, truncation
// error is ~eps^2 / 6 times a third derivative of O(1), ~2e-5, and fp32
// rounding of L (~1e-6 absolute over its 160 terms) over 2 eps adds ~5e-5;
// 1e-3 covers both with margin, while a wrong formula or mask is O(1).
static void check_finite_differences(Tests& t, cublasHandle_t h, int causal) {
    int B = 1, NH = 2, T = 5, hs = 16, C = NH * hs;
    long btc = (long)B * T * C;
    uint64_t rng = 42 + causal;
    std::vector<float> qkv = random_vector(3 * btc, &rng, 1.5f);
    std::vector<float> w = random_vector(btc, &rng, 1.0f);
    const double eps = 1e-2;
    for (int vi = 2; vi < NUM_VARIANTS; vi++) {
        const Variant& var = VARIANTS[vi];
        std::vector<float> analytic = run_attention(h, var, false, qkv, w, B, T, C, NH, causal).dqkv;
        std::vector<float> numeric(3 * btc);
        auto loss = [&](const std::vector<float>& x) {
            std::vector<float> out = run_attention(h, var, false, x, {}, B, T, C, NH, causal).out;
            double L = 0.0;
            for (long i = 0; i < btc; i++) L += (double)out[i] * w[i];
            return L;
        };
        for (long i = 0; i < 3 * btc; i++) {
            std::vector<float> x = qkv;
            x[i] = qkv[i] + (float)eps;
            double up = loss(x);
            x[i] = qkv[i] - (float)eps;
            double down = loss(x);
            numeric[i] = (float)((up - down) / (2.0 * eps));
        }
        char name[96];
        snprintf(name, sizeof(name), "fd %s %s dqkv", causal ? "causal" : "full", var.name);
        check_tensor(t, name, analytic.data(), numeric.data(), 3 * btc, 1e-3);
    }
}

int main(int argc, char** argv) {
    const char* path = argc > 1 ? argv[1] : "data/ref_attention.bin";
    Tests t;
    RefState ref;
    ref_state_load(&ref, path);
    cublasHandle_t h;
    cublasCheck(cublasCreate(&h));
    int ncases = ref.get("cases", path).i[0];
    printf("backend %s | reference %s: %d cases | defaults: %s softmax, %s tiled kernels\n", BACKEND_NAME, path,
           ncases, kernel_choices.softmax_warp ? "warp" : "rows", kernel_choices.attention_tiled_smem ? "smem" : "rows");

    for (int ci = 0; ci < ncases; ci++) {
        char key[64];
        auto get = [&](const char* what) -> const RefTensor& {
            snprintf(key, sizeof(key), "case%d.%s", ci, what);
            return ref.get(key, path);
        };
        const std::vector<int>& dims = get("dims").i;
        int B = dims[0], NH = dims[1], T = dims[2], hs = dims[3], causal = dims[4], C = NH * hs;
        long BT = (long)B * T;
        const std::vector<float>& qkv = get("qkv").f;
        const std::vector<float>& dout = get("dout").f;
        const std::vector<float>& ref_out = get("out").f;
        const std::vector<float>& ref_dqkv = get("dqkv").f;
        printf("--- case %d: B %d NH %d T %d hs %d %s\n", ci, B, NH, T, hs, causal ? "causal" : "non-causal");
        std::vector<AttentionRun> runs;
        for (int vi = 0; vi < NUM_VARIANTS; vi++) {
            runs.push_back(run_attention(h, VARIANTS[vi], false, qkv, dout, B, T, C, NH, causal));
            compare_run(t, VARIANTS[vi].name, runs.back(), ref_out, ref_dqkv, BT, C);
        }
        // tiled against materialized (both fp32)
        for (int vi = 2; vi < NUM_VARIANTS; vi++) {
            char label[96];
            snprintf(label, sizeof(label), "%s vs materialized", VARIANTS[vi].name);
            compare_run(t, label, runs[vi], runs[0].out, runs[0].dqkv, BT, C);
        }
        // the tiled variant's probabilities (from its lse) against the materialized att
        {
            AttentionRun kept = run_attention(h, VARIANTS[2], true, qkv, {}, B, T, C, NH, causal);
            long n = (long)B * NH * T * T;  // att comes first in both states
            check_tensor(t, "tiled probs vs materialized att", kept.state.data(), runs[0].state.data(), n, TOL);
        }
        // determinism: a second run is bit-identical
        for (int vi = 2; vi < NUM_VARIANTS; vi++) {
            AttentionRun again = run_attention(h, VARIANTS[vi], false, qkv, dout, B, T, C, NH, causal);
            bool same = !memcmp(again.out.data(), runs[vi].out.data(), again.out.size() * sizeof(float)) &&
                        !memcmp(again.dqkv.data(), runs[vi].dqkv.data(), again.dqkv.size() * sizeof(float));
            t.check(same, "%s: out and dqkv bit-identical on a re-run", VARIANTS[vi].name);
        }
    }

    printf("--- finite differences\n");
    check_finite_differences(t, h, 1);
    check_finite_differences(t, h, 0);

    // more heads than CUDA's grid.y takes (65535): the tiled launchers split them over several launches
    {
        printf("--- 70000 heads (B 17500, NH 4, T 3, hs 8)\n");
        int B = 17500, NH = 4, T = 3, C = 32;
        long BT = (long)B * T;
        uint64_t rng = 7;
        std::vector<float> qkv = random_vector(BT * 3 * C, &rng, 1.0f), dout = random_vector(BT * C, &rng, 1.0f);
        AttentionRun want = run_attention(h, VARIANTS[0], false, qkv, dout, B, T, C, NH, 1);
        for (int vi = 2; vi < NUM_VARIANTS; vi++) {
            AttentionRun got = run_attention(h, VARIANTS[vi], false, qkv, dout, B, T, C, NH, 1);
            char label[96];
            snprintf(label, sizeof(label), "%s vs materialized, 70000 heads", VARIANTS[vi].name);
            compare_run(t, label, got, want.out, want.dqkv, BT, C);
        }
        AttentionRun kept = run_attention(h, VARIANTS[2], true, qkv, {}, B, T, C, NH, 1);
        check_tensor(t, "tiled probs vs materialized att, 70000 heads", kept.state.data(), want.state.data(),
                     (long)B * NH * T * T, TOL);
    }

    // memory: the tiled variant keeps o and lse, scratch D; no T x T buffer
    {
        printf("--- sizes\n");
        int saved = kernel_choices.attention_variant;
        int B = 1, T = 16384, C = 256, NH = 4;
        long rows = (long)B * NH * T, hs = C / NH;
        kernel_choices.attention_variant = ATTENTION_AUTO;
        t.check(attention_uses_tiled(B, T, C, NH) && !attention_uses_tiled(4, 32, 64, 4),
                "auto selection: tiled at B %d T %d C %d NH %d (the T x T buffers would not fit), materialized at "
                "B 4 T 32 C 64 NH 4 (test_gpt's shape)", B, T, C, NH);
        kernel_choices.attention_variant = ATTENTION_TILED;
        AttentionSizes s = attention_act_sizes(B, T, C, NH);
        t.check(s.state == rows * (hs + 1) && s.preatt == 0 && s.datt == rows,
                "tiled sizes at B %d T %d C %d NH %d: state %ld (o, lse), preatt %ld, datt %ld floats", B, T, C, NH,
                s.state, s.preatt, s.datt);
        kernel_choices.attention_variant = ATTENTION_MATERIALIZED;
        AttentionSizes m = attention_act_sizes(B, T, C, NH);
        t.check(m.state == rows * T && m.preatt == rows * T && m.datt == rows * T,
                "materialized sizes: state, preatt, datt %ld floats each (B NH T T)", m.state);
        kernel_choices.attention_variant = saved;
    }
    cublasCheck(cublasDestroy(h));
    return t.summary();
}

/*
Checks train_gpt_plus.cu, the Transformer++, against the PyTorch reference
state written by dev/reference/gpt_plus.py (make test writes
data/ref_gpt_plus.bin), and its three new kernels against plain loops:
  - kernels: RMSNorm forward (rstd too), backward to the input and the
    weight (both row variants); RoPE against the rotation written out in
    float64, its backward as the transpose (adjoint identity) and the
    inverse (round trip), a step's offset position against the forward's
    row; SwiGLU forward and backward; and the GPU's launch shapes on the
    host giving bit-identical results
  - the model: logits, every layer's activations and the loss of one
    forward pass and every parameter gradient of one backward pass, with
    each attention variant (materialized; tiled, rows and shared-memory
    kernels) and both RMSNorm row variants
  - the losses of 10 AdamW steps and the parameters after them
  - bit-identical gradients on a re-run, and bit-identical losses and
    parameters after a checkpoint is reloaded (check_resume)
  - generation with the KV cache (keys rotated at their absolute
    positions): the steps' logits against the parallel forward's after
    prefills of 1 and T/2 tokens, past the context (cache full, window
    re-prefilled), greedy generation repeatable bit for bit

Relative error of a tensor is max|got - ref| / max|ref| (llmc/testing.h).
Tolerances:
  - model against the reference: 1e-4 (as test_gpt.cu: the reference is
    float64 from the same float32 parameters; fp32 sums of a few hundred
    terms are good to ~1e-6, and 10 AdamW steps compound it; mistakes are
    O(1)). In the host's TF32 mode 2e-2, as test_gpt.cu.
  - generation against the forward: 1e-5 (as test_gpt.cu: the same fp32
    math in another summation order; the rotation of a step is the
    forward's bit for bit, the same kernel at the same position).
  - RMSNorm, SwiGLU kernels against float64 loops: 1e-5 (fp32 rounding of
    sums over C <= 100 terms and of fast_expf, under 1 ulp, is ~1e-6).
  - RoPE against float64: 1e-4. The angle pos * theta is formed in fp32, an
    error of about pos * 2 ulp, 3e-5 rad at the positions up to 130 used
    here (measured errors are printed); a wrong pairing, sign or position is
    O(1). Its round trip and adjoint: 1e-5 (rounding only).
*/
#define TESTING
#include "train_gpt_plus.cu"
#include "llmc/testing.h"

static const double TOL = tf32_tolerance(1e-4, 2e-2);
static const double GEN_TOL = tf32_tolerance(1e-5, 2e-2);
static const double KERNEL_TOL = 1e-5;
static const double ROPE_TOL = 1e-4;

// ----------------------------------------------------------------------------
// the kernels against plain float64 loops

static std::vector<float> download(const float* d, long n) { return device_to_vector(d, n); }

static void check_rmsnorm(Tests& t, int N, int C, uint64_t* rng) {
    std::vector<float> x = random_vector((long)N * C, -2.0f, 2.0f, rng), w = random_vector(C, 0.5f, 1.5f, rng),
                       g = random_vector((long)N * C, -1.0f, 1.0f, rng), base = random_vector((long)N * C, -1.0f, 1.0f, rng);
    std::vector<float> want_out((long)N * C), want_rstd(N), want_dx((long)N * C), want_dw(C, 0.0f);
    std::vector<double> dw(C, 0.0);
    for (int n = 0; n < N; n++) {
        const float* xr = &x[(long)n * C];
        const float* gr = &g[(long)n * C];
        double ms = 0.0, dot = 0.0;
        for (int c = 0; c < C; c++) ms += (double)xr[c] * xr[c];
        double s = 1.0 / sqrt(ms / C + 1e-5);
        want_rstd[n] = (float)s;
        for (int c = 0; c < C; c++) {
            want_out[(long)n * C + c] = (float)(xr[c] * s * w[c]);
            dot += (double)gr[c] * w[c] * xr[c] * s;
            dw[c] += (double)gr[c] * xr[c] * s;
        }
        for (int c = 0; c < C; c++)
            want_dx[(long)n * C + c] = (float)(base[(long)n * C + c] + s * (gr[c] * (double)w[c] - xr[c] * s * dot / C));
    }
    for (int c = 0; c < C; c++) want_dw[c] = (float)(dw[c] + 0.25);  // the weight gradient accumulates onto 0.25
    float *dx_ = vector_to_device(x), *dw_ = vector_to_device(w), *dg = vector_to_device(g);
    float *dout = vector_to_device(std::vector<float>((long)N * C)), *drstd = vector_to_device(std::vector<float>(N));
    bool saved = kernel_choices.layernorm_warp;
    int saved_tile = kernel_choices.layernorm_param_tile;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.layernorm_warp = variant == 1;
        kernel_choices.layernorm_param_tile = variant == 1 ? 1 : LN_TILE;
        const char* v = variant ? "warp" : "rows";
        rmsnorm_forward(dout, drstd, dx_, dw_, N, C);
        char name[96];
        snprintf(name, sizeof(name), "rmsnorm[%s] %dx%d out", v, N, C);
        check_tensor(t, name, download(dout, (long)N * C).data(), want_out.data(), (long)N * C, KERNEL_TOL);
        snprintf(name, sizeof(name), "rmsnorm[%s] %dx%d rstd", v, N, C);
        check_tensor(t, name, download(drstd, N).data(), want_rstd.data(), N, KERNEL_TOL);
        float* ddx = vector_to_device(base);
        float* ddw = vector_to_device(std::vector<float>(C, 0.25f));
        rmsnorm_backward(ddx, ddw, dg, dx_, dw_, drstd, N, C);
        snprintf(name, sizeof(name), "rmsnorm[%s] %dx%d dx (+=)", v, N, C);
        check_tensor(t, name, download(ddx, (long)N * C).data(), want_dx.data(), (long)N * C, KERNEL_TOL);
        snprintf(name, sizeof(name), "rmsnorm[%s] %dx%d dweight (+=)", v, N, C);
        check_tensor(t, name, download(ddw, C).data(), want_dw.data(), C, KERNEL_TOL);
        cudaCheck(cudaFree(ddx));
        cudaCheck(cudaFree(ddw));
    }
    kernel_choices.layernorm_warp = saved;
    kernel_choices.layernorm_param_tile = saved_tile;
    for (float* p : {dx_, dw_, dg, dout, drstd}) cudaCheck(cudaFree(p));
}

// the rotation written out in float64: rows (B, T, 3C), positions pos0 + t
static std::vector<float> rope_reference(const std::vector<float>& qkv, int B, int T, int C, int NH, int pos0, int sign) {
    std::vector<float> out = qkv;
    int hs = C / NH, half = hs / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int part = 0; part < 2; part++)
                for (int h = 0; h < NH; h++)
                    for (int i = 0; i < half; i++) {
                        long base = ((long)b * T + t) * 3 * C + part * C + h * hs;
                        double angle = (pos0 + t) * pow(10000.0, -2.0 * i / hs), c = cos(angle), s = sign * sin(angle);
                        double x1 = qkv[base + i], x2 = qkv[base + i + half];
                        out[base + i] = (float)(x1 * c - x2 * s);
                        out[base + i + half] = (float)(x2 * c + x1 * s);
                    }
    return out;
}

static void check_rope(Tests& t, int B, int T, int C, int NH, int pos0, uint64_t* rng) {
    long n = (long)B * T * 3 * C;
    std::vector<float> x = random_vector(n, -1.0f, 1.0f, rng), g = random_vector(n, -1.0f, 1.0f, rng);
    float *dx = vector_to_device(x), *dout = vector_to_device(std::vector<float>(n, 0.0f));
    char name[96];
    rope_forward(dout, dx, B, T, C, NH, pos0);  // out of place (v copied)
    std::vector<float> got = download(dout, n), want = rope_reference(x, B, T, C, NH, pos0, 1);
    snprintf(name, sizeof(name), "rope %dx%d C %d NH %d pos %d..", B, T, C, NH, pos0);
    check_tensor(t, name, got.data(), want.data(), n, ROPE_TOL);
    rope_forward(dx, dx, B, T, C, NH, pos0);  // in place: the same bits
    t.check(download(dx, n) == got, "rope in place bit-identical to out of place");
    float* dg = vector_to_device(g);
    rope_backward(dg, B, T, C, NH, pos0);
    std::vector<float> back = download(dg, n), want_back = rope_reference(g, B, T, C, NH, pos0, -1);
    snprintf(name, sizeof(name), "rope backward pos %d..", pos0);
    check_tensor(t, name, back.data(), want_back.data(), n, ROPE_TOL);
    // adjoint: <R x, g> = <x, R^T g>
    double lhs = 0.0, rhs = 0.0, scale = 0.0;
    for (long i = 0; i < n; i++) { lhs += (double)got[i] * g[i]; rhs += (double)x[i] * back[i]; scale += fabs((double)x[i] * g[i]); }
    t.check(fabs(lhs - rhs) <= KERNEL_TOL * scale, "rope backward is the transpose: <Rx, g> %.9f vs <x, R^T g> %.9f (rel %.2e)",
            lhs, rhs, fabs(lhs - rhs) / scale);
    // round trip: the inverse rotation of the rotation is the identity
    rope_backward(dx, B, T, C, NH, pos0);
    snprintf(name, sizeof(name), "rope round trip pos %d..", pos0);
    check_tensor(t, name, download(dx, n).data(), x.data(), n, KERNEL_TOL);
    // a step (T = 1 at position pos0 + t) rotates as the forward's row t, bit for bit
    int tt = T - 1;
    std::vector<float> row((long)B * 3 * C);
    for (int b = 0; b < B; b++) std::copy(&x[((long)b * T + tt) * 3 * C], &x[((long)b * T + tt + 1) * 3 * C], &row[(long)b * 3 * C]);
    float* drow = vector_to_device(row);
    rope_forward(drow, drow, B, 1, C, NH, pos0 + tt);
    std::vector<float> step = download(drow, (long)B * 3 * C);
    bool same = true;
    for (int b = 0; b < B; b++)
        same = same && !memcmp(&step[(long)b * 3 * C], &got[((long)b * T + tt) * 3 * C], 3 * C * sizeof(float));
    t.check(same, "rope of one position %d (a step) bit-identical to the forward's row", pos0 + tt);
    for (float* p : {dx, dout, dg, drow}) cudaCheck(cudaFree(p));
}

static void check_swiglu(Tests& t, int N, int H, uint64_t* rng) {
    int ld = 2 * H;
    std::vector<float> ab = random_vector((long)N * ld, -6.0f, 6.0f, rng), g = random_vector((long)N * H, -1.0f, 1.0f, rng);
    std::vector<float> want((long)N * H), want_d((long)N * ld);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < H; j++) {
            double a = ab[(long)n * ld + j], b = ab[(long)n * ld + H + j], s = 1.0 / (1.0 + exp(-a)), gj = g[(long)n * H + j];
            want[(long)n * H + j] = (float)(a * s * b);
            want_d[(long)n * ld + j] = (float)(gj * b * s * (1.0 + a * (1.0 - s)));
            want_d[(long)n * ld + H + j] = (float)(gj * a * s);
        }
    float *dab = vector_to_device(ab), *dg = vector_to_device(g);
    float *dout = vector_to_device(std::vector<float>((long)N * H)), *dd = vector_to_device(std::vector<float>((long)N * ld));
    swiglu_forward(dout, dab, dab + H, ld, N, H);
    swiglu_backward(dd, dd + H, dg, dab, dab + H, ld, N, H);
    char name[96];
    snprintf(name, sizeof(name), "swiglu %dx%d out", N, H);
    check_tensor(t, name, download(dout, (long)N * H).data(), want.data(), (long)N * H, KERNEL_TOL);
    snprintf(name, sizeof(name), "swiglu %dx%d [da | db]", N, H);
    check_tensor(t, name, download(dd, (long)N * ld).data(), want_d.data(), (long)N * ld, KERNEL_TOL);
    for (float* p : {dab, dg, dout, dd}) cudaCheck(cudaFree(p));
}

// rope and swiglu with the GPU's row shapes (256 threads, span 1) against the host's: the same bits
static void check_gpu_shapes(Tests& t, uint64_t* rng) {
    int B = 2, T = 5, C = 48, NH = 3, N = 7, H = 40;
    long n = (long)B * T * 3 * C;
    std::vector<float> x = random_vector(n, -1.0f, 1.0f, rng), ab = random_vector((long)N * 2 * H, -4.0f, 4.0f, rng);
    std::vector<float> outs[2];
    int saved = kernel_choices.row_threads_max;
    for (int shape = 0; shape < 2; shape++) {
        kernel_choices.row_threads_max = shape ? 256 : saved;
        float *dx = vector_to_device(x), *dab = vector_to_device(ab);
        float* dout = vector_to_device(std::vector<float>((long)N * H, 0.0f));
        float* dd = vector_to_device(std::vector<float>((long)N * 2 * H, 0.0f));
        rope_forward(dx, dx, B, T, C, NH, 3);
        swiglu_forward(dout, dab, dab + H, 2 * H, N, H);
        swiglu_backward(dd, dd + H, dout, dab, dab + H, 2 * H, N, H);
        outs[shape] = download(dx, n);
        for (float v : download(dout, (long)N * H)) outs[shape].push_back(v);
        for (float v : download(dd, (long)N * 2 * H)) outs[shape].push_back(v);
        for (float* p : {dx, dab, dout, dd}) cudaCheck(cudaFree(p));
    }
    kernel_choices.row_threads_max = saved;
    t.check(outs[0] == outs[1], "rope and swiglu: the GPU's launch shapes give the host's results bit for bit (%zu floats)",
            outs[0].size());
}

// ----------------------------------------------------------------------------
// the model against the reference

static void check_forward_backward(Tests& t, GPTPlus* model, const RefState& ref, const char* path, const char* label) {
    GPTConfig c = model->config;
    int B = ref.B, T = ref.T, L = c.num_layers;
    load_params(&model->buf, ref.get("params", path).f);
    plus_forward(model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), B, T, -1);
    ActivationTensors a = model->acts;
    compare_ref(t, ref, path, "encoded", a.encoded, label, TOL);
    for (int l = 0; l < L; l++) {
        PlusStackActs la = plus_layer_acts(a.tower, l, B, T, dims_of(c));
        struct { const char* name; const float* ptr; } acts[] = {
            {"ln1", la.ln1}, {"qkv_rot", la.qkv}, {"att", la.att}, {"atty", la.atty}, {"attproj", la.attproj},
            {"res2", la.residual2}, {"ln2", la.ln2}, {"fch", la.fch}, {"fch_swiglu", la.fch_swiglu},
            {"fcproj", la.fcproj}, {"res3", la.residual3}};
        for (auto& x : acts) {
            char name[64];
            snprintf(name, sizeof(name), "h%d.%s", l, x.name);
            compare_ref(t, ref, path, name, x.ptr, label, TOL);
        }
    }
    compare_ref(t, ref, path, "lnf", a.lnf, label, TOL);
    compare_ref(t, ref, path, "logits", a.logits, label, TOL);
    check_loss(t, model->buf.mean_loss, ref.get("loss", path).f[0], label, "loss", TOL);
    plus_backward(model, B, T);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%sgrad ", label);
    check_grads(t, &model->buf, ref, path, "grads", prefix, TOL);
}

int main(int argc, char** argv) {
    const char* path = argc > 1 ? argv[1] : "data/ref_gpt_plus.bin";
    Tests t;

    printf("--- kernels\n");
    uint64_t rng = 42;
    check_rmsnorm(t, 37, 64, &rng);
    check_rmsnorm(t, 5, 100, &rng);  // C not a multiple of the lanes or tiles
    check_rope(t, 3, 11, 64, 4, 0, &rng);
    check_rope(t, 2, 9, 96, 3, 120, &rng);  // hs 32, a step's offset
    check_swiglu(t, 13, 88, &rng);
    check_swiglu(t, 4, 37, &rng);
    check_gpu_shapes(t, &rng);

    RefState ref;
    ref_state_load(&ref, path);
    if (ref.kind != MODEL_GPT_PLUS)
        fail("%s: reference state of model kind %d, expected a Transformer++ (%d)", path, ref.kind, MODEL_GPT_PLUS);
    GPTConfig config = {ref.config[0], ref.config[1], ref.config[2], ref.config[3], ref.config[4], ref.config[5]};
    printf("backend %s | reference %s: Transformer++ L %d C %d H %d SwiGLU %d V %d maxT %d | B %d T %d\n", BACKEND_NAME,
           path, config.num_layers, config.channels, config.num_heads, config.ffn, config.vocab_size,
           config.max_seq_len, ref.B, ref.T);
    t.check(plus_hidden_width(2 * config.channels) == config.ffn, "SwiGLU width %d = plus_hidden_width(2C = %d)",
            config.ffn, 2 * config.channels);

    // every attention variant (the layout depends on it: one model each), both RMSNorm row variants
    int default_variant = kernel_choices.attention_variant;
    bool default_smem = kernel_choices.attention_tiled_smem, default_keep = kernel_choices.attention_keep_probs, default_ln = kernel_choices.layernorm_warp;
    struct { const char* label; int variant; bool smem; } variants[] = {
        {"[materialized] ", ATTENTION_MATERIALIZED, false}, {"[tiled rows] ", ATTENTION_TILED, false},
        {"[tiled smem] ", ATTENTION_TILED, true}};
    for (auto& v : variants) {
        kernel_choices.attention_variant = v.variant;
        kernel_choices.attention_tiled_smem = v.smem;
        kernel_choices.attention_keep_probs = true;  // the tiled variant keeps the probabilities it used, to compare att
        GPTPlus model;
        plus_build(&model, config);
        plus_allocate_activations(&model, ref.B, ref.T);
        for (int ln = 0; ln < (v.variant == ATTENTION_MATERIALIZED ? 2 : 1); ln++) {
            kernel_choices.layernorm_warp = ln == 1;
            char label[64];
            snprintf(label, sizeof(label), "%s%s", v.label, ln ? "[warp] " : "[rows] ");
            printf("--- attention %s, RMSNorm %s\n", v.label, ln ? "warp per row" : "thread per row");
            check_forward_backward(t, &model, ref, path, label);
        }
        kernel_choices.layernorm_warp = default_ln;
        model_free(&model.buf);
    }
    kernel_choices.attention_variant = default_variant;
    kernel_choices.attention_tiled_smem = default_smem;
    kernel_choices.attention_keep_probs = default_keep;

    // the backend's own choices from here on
    GPTPlus model;
    plus_build(&model, config);
    plus_allocate_activations(&model, ref.B, ref.T);
    t.check(model.buf.num_parameters == ref.config[6] && model.buf.num_parameters == ref.get("params", path).numel(),
            "parameter count %ld (reference %d)", model.buf.num_parameters, ref.config[6]);
    TrainStep step = [&](int) {
        plus_forward(&model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), ref.B, ref.T, -1);
        plus_backward(&model, ref.B, ref.T);
    };
    check_forward_backward(t, &model, ref, path, "[default] ");
    check_rerun_identical(t, &model.buf, step, 0, "");
    check_trajectory(t, &model.buf, ref, path, step, TOL);
    check_resume(t, &model.buf, ref, path, step, 123, 456, "");
    check_lm_dropout(t, &model, ref, path, TOL);

    printf("--- generation\n");
    load_params(&model.buf, ref.get("params", path).f);
    const std::vector<int>& tokens = ref.get("inputs", path).i;
    check_steps_against_forward(t, &model, tokens, ref.B, ref.T, 1, GEN_TOL, "steps vs forward");
    check_steps_against_forward(t, &model, tokens, ref.B, ref.T, ref.T / 2, GEN_TOL, "steps vs forward");
    check_cache_full(t, &model, tokens, ref.B, gpt_context(model.config, &model.buf), GEN_TOL);
    check_greedy_repeatable(t, &model, std::vector<int>(tokens.begin(), tokens.begin() + 5), 2 * ref.T);
    model_free(&model.buf);
    return t.summary();
}

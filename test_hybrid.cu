/*
Checks train_hybrid.cu against the PyTorch reference states written by
dev/reference/hybrid.py (make test writes them): data/ref_hybrid.bin, whose
pattern MAFM has the M, A and F kinds and two Mamba layers, so that the
stacks' slices are exercised; and data/ref_hybrid_s.bin, SMAS at C 64, two
Mamba-2 layers (S; d_state 64, headdim 64: 2 heads each) beside an M and
an A layer. For each state:
  - the embedding, every layer's activations (its LayerNorm, the mixer's
    intermediates, its output), the final LayerNorm, logits and loss of one
    forward pass, and every parameter gradient of one backward pass, with
    both scan variants and both LayerNorm and softmax variants
  - the losses of 10 AdamW steps with gradient clipping, and the parameters
    after them
  - bit-identical gradients on a re-run, and bit-identical losses and
    parameters after saving a checkpoint, reloading it and re-running steps
  - generation: each layer's recurrent step (the Mamba layers' conv and SSM
    states, the Mamba-2 layers' one-position forward with its conv and SSD
    state carried, the attention layers' KV cache) from a prefill of P tokens,
    against the parallel forward's logits at every later position; the
    window after a full cache against a forward over it; greedy generation
    repeatable bit for bit
  - the pattern flag's encoding: every pattern round-trips through its
    config slot (once, before the states)

Errors are printed per tensor as max abs and relative error, where relative
is max|got - ref| / max|ref| over the tensor (llmc/testing.h).
Tolerances as test_gpt.cu and test_mamba.cu: 1e-4 against the reference
(fp32 against a float64 reference: a few hundred terms per sum are good to
~1e-6, 1e-4 leaves room for what 10 optimizer steps compound and is far
below the O(1) error of a wrong index or formula); 1e-5 for stepping
against the forward (the same fp32 math in another summation order).
*/
#define TESTING
#include "train_hybrid.cu"
#include "llmc/testing.h"

// 1e-4 in fp32; 2e-2 in the host's TF32 mode (HOST_TF32=1), as test_gpt.cu
static const double TOL = tf32_tolerance(1e-4, 2e-2);
static const double GEN_TOL = tf32_tolerance(1e-5, 2e-2);

static HybridConfig config_of(const RefState& ref, const char* path) {
    return hybrid_config(ref.config[0], ref.config[1], ref.config[2], ref.config[3], ref.config[4], ref.config[5], path);
}

// forward + backward at the reference parameters; compares activations,
// loss and gradients. label prefixes the lines (the kernel variant).
static void check_forward_backward(Tests& t, Hybrid* model, const RefState& ref, const char* path, const char* label) {
    const HybridConfig& c = model->config;
    MambaDims md = mamba_dims_of(c);
    Mamba2Dims sd = mamba2_dims_of(c);
    TransformerDims td = transformer_dims_of(c);
    int B = ref.B, T = ref.T;
    load_params(&model->buf, ref.get("params", path).f);
    hybrid_forward(model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), B, T, -1);
    const ActivationTensors& a = model->acts;
    compare_ref(t, ref, path, "encoded", a.encoded, label, TOL);
    for (int l = 0; l < c.num_layers; l++) {
        struct { const char* name; const float* ptr; } acts[12];
        int n = 0, k = c.index[l];
        if (c.kind[l] == LAYER_MAMBA) {
            MambaStackActs la = mamba_layer_acts(a.mamba, k, B, T, md);
            acts[n++] = {"ln", la.ln};   acts[n++] = {"xz", la.xz};       acts[n++] = {"conv", la.conv};
            acts[n++] = {"u", la.u};     acts[n++] = {"x_dbl", la.x_dbl}; acts[n++] = {"dt", la.dt};
            acts[n++] = {"scan", la.y};  acts[n++] = {"gated", la.gated}; acts[n++] = {"out", la.out};
            acts[n++] = {"res", la.res};
        } else if (c.kind[l] == LAYER_SSD) {
            Mamba2StackActs la = mamba2_layer_acts(a.ssd, k, B, T, sd);
            acts[n++] = {"ln", la.ln};       acts[n++] = {"zxbcdt", la.zxbcdt}; acts[n++] = {"conv", la.conv};
            acts[n++] = {"xbc", la.xbc};     acts[n++] = {"dt", la.dt};         acts[n++] = {"scan", la.y};
            acts[n++] = {"gated", la.gated}; acts[n++] = {"normed", la.normed}; acts[n++] = {"out", la.out};
            acts[n++] = {"res", la.res};
        } else if (c.kind[l] == LAYER_ATTENTION) {
            AttentionActs la = attention_layer_acts(a.attn, k, B, T, td);
            acts[n++] = {"ln", la.ln};     acts[n++] = {"qkv", la.qkv};      acts[n++] = {"att", la.att};
            acts[n++] = {"atty", la.atty}; acts[n++] = {"attproj", la.proj}; acts[n++] = {"res", la.out};
        } else {
            MlpActs la = mlp_layer_acts(a.mlp, k, B, T, td);
            acts[n++] = {"ln", la.ln};             acts[n++] = {"fch", la.fch};
            acts[n++] = {"fch_gelu", la.fch_gelu}; acts[n++] = {"fcproj", la.proj};
            acts[n++] = {"res", la.out};
        }
        for (int i = 0; i < n; i++) {
            char name[64];
            snprintf(name, sizeof(name), "l%d.%s", l, acts[i].name);
            compare_ref(t, ref, path, name, acts[i].ptr, label, TOL);
        }
    }
    compare_ref(t, ref, path, "lnf", a.lnf, label, TOL);
    compare_ref(t, ref, path, "logits", a.logits, label, TOL);
    check_loss(t, model->buf.mean_loss, ref.get("loss", path).f[0], label, "loss", TOL);
    hybrid_backward(model, B, T);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%sgrad ", label);
    check_grads(t, &model->buf, ref, path, "grads", prefix, TOL);
}

// every pattern of up to 3 layers of M, S, A, F, and the longest, through
// the config slot and back; the codes of patterns without S stay base 4
// (model files written before S read as they did)
static void check_pattern_codes(Tests& t) {
    int checked = 0, wrong = 0;
    std::vector<std::string> patterns = {"MAFMAFMAFMAFMAF", "SSSSSSSSSSSS", "FAMSFAMSFAMS"};
    for (int n = 1; n <= 3; n++)
        for (int i = 0, total = n == 1 ? 4 : n == 2 ? 16 : 64; i < total; i++) {
            std::string s;
            for (int j = 0, v = i; j < n; j++, v /= 4) s += "MAFS"[v % 4];
            patterns.push_back(s);
        }
    for (const std::string& s : patterns) {
        HybridConfig c = hybrid_config(32, 65, 32, 4, 64, hybrid_pattern_code(s.c_str()), "test");
        checked++;
        if (s != c.letters) wrong++;
    }
    t.check(wrong == 0, "%d patterns round-trip through their config slot (%d wrong)", checked, wrong);
    t.check(hybrid_pattern_code("MAFM") == 1 + 2 * 4 + 3 * 16 + 1 * 64 && hybrid_pattern_code("S") == (HYBRID_SSD_FLAG | 4),
            "pattern codes: MAFM %d (base 4), S %d (bit 30, base 5)", hybrid_pattern_code("MAFM"), hybrid_pattern_code("S"));
}

// every check of one reference state
static void check_state(Tests& t, const char* path) {
    RefState ref;
    ref_state_load(&ref, path);
    if (ref.kind != MODEL_HYBRID) fail("%s: reference state of model kind %d, expected a hybrid LM (%d)", path, ref.kind, MODEL_HYBRID);
    HybridConfig config = config_of(ref, path);
    printf("backend %s | reference %s: hybrid %s C %d H %d F %d V %d maxT %d | B %d T %d\n", BACKEND_NAME, path,
           config.letters, config.channels, config.num_heads, config.ffn, config.vocab_size, config.max_seq_len,
           ref.B, ref.T);
    Hybrid model;
    hybrid_build(&model, config);
    hybrid_allocate_activations(&model, ref.B, ref.T);
    t.check(model.buf.num_parameters == ref.config[6] && model.buf.num_parameters == ref.get("params", path).numel(),
            "parameter count %ld (reference %d)", model.buf.num_parameters, ref.config[6]);

    // the kernel variants: sequential scan + thread-per-row LayerNorm and
    // softmax, then the chunked scan + warp-per-row LayerNorm and softmax
    bool default_scan = kernel_choices.scan_chunked, default_ln = kernel_choices.layernorm_warp, default_sm = kernel_choices.softmax_warp;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.scan_chunked = kernel_choices.layernorm_warp = kernel_choices.softmax_warp = variant == 1;
        printf("--- kernels: %s\n", variant ? "chunked scan, warp per row" : "sequential scan, thread per row");
        check_forward_backward(t, &model, ref, path, variant ? "[chunked] " : "[seq] ");
    }
    kernel_choices.scan_chunked = default_scan;
    kernel_choices.layernorm_warp = default_ln;
    kernel_choices.softmax_warp = default_sm;

    // the reference batch at every step
    TrainStep step = [&](int) {
        hybrid_forward(&model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), ref.B, ref.T, -1);
        hybrid_backward(&model, ref.B, ref.T);
    };
    check_rerun_identical(t, &model.buf, step, 0, "");
    // 10 AdamW steps; the parameters after them leave out the attention
    // layers' key bias, whose gradient is zero in exact arithmetic (softmax
    // is invariant to it; see test_gpt.cu). Its gradient is checked above.
    long C = config.channels;
    ParamFilter not_key_bias = [C](const TensorSpec& ts, long j) { return strcmp(ts.name, "attn.qkv_b") || (j % (3 * C)) / C != 1; };
    check_trajectory(t, &model.buf, ref, path, step, TOL, not_key_bias, " (q, v)");
    check_resume(t, &model.buf, ref, path, step, 123, 456, "");
    check_lm_dropout(t, &model, ref, path, TOL);

    // generation: rows of different tokens, prefills of several lengths, both scan variants' final states
    printf("--- generation\n");
    load_params(&model.buf, ref.get("params", path).f);
    const std::vector<int>& tokens = ref.get("inputs", path).i;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.scan_chunked = variant == 1;
        const char* what = variant ? "[chunked] steps vs forward" : "[seq] steps vs forward";
        check_steps_against_forward(t, &model, tokens, ref.B, ref.T, 1, GEN_TOL, what);
        check_steps_against_forward(t, &model, tokens, ref.B, ref.T, ref.T / 2, GEN_TOL, what);
        check_steps_against_forward(t, &model, tokens, ref.B, ref.T, ref.T - 3, GEN_TOL, what);  // past one 32-step chunk
    }
    kernel_choices.scan_chunked = default_scan;
    check_greedy_repeatable(t, &model, std::vector<int>(tokens.begin(), tokens.begin() + 5), 2 * ref.T);
    model_free(&model.buf);

    // the context's end: the activations as long as the position table, so
    // that the cache fills; each row's W tokens are its reference tokens,
    // cycled (the reference batch is shorter). The Mamba layers' states are
    // re-prefilled with the window too.
    Hybrid full;
    hybrid_build(&full, config);
    hybrid_allocate_activations(&full, ref.B, config.max_seq_len);
    load_params(&full.buf, ref.get("params", path).f);
    int W = hybrid_context(&full);
    std::vector<int> cycled((long)ref.B * W);
    for (int b = 0; b < ref.B; b++)
        for (int i = 0; i < W; i++) cycled[(long)b * W + i] = tokens[(long)b * ref.T + i % ref.T];
    check_cache_full(t, &full, cycled, ref.B, W, GEN_TOL);
    model_free(&full.buf);
}

int main(int argc, char** argv) {
    Tests t;
    check_pattern_codes(t);
    if (argc > 1) {
        check_state(t, argv[1]);
    } else {
        check_state(t, "data/ref_hybrid.bin");
        check_state(t, "data/ref_hybrid_s.bin");
    }
    return t.summary();
}

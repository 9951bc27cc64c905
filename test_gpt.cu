/*
Checks train_gpt.cu against the PyTorch reference state written by
dev/reference/gpt.py (make test writes data/ref_gpt.bin):
  - logits, every layer's activations and the loss of one forward pass
  - every parameter gradient of one backward pass
  - both kernel variants (thread-per-row and warp-per-row LayerNorm and
    softmax) on this backend, each against the reference
  - the loss over a subset of the positions (task files: the others have
    no target) and its gradients, against cross_entropy(..., ignore_index)
  - the losses of 10 AdamW steps with gradient clipping, and the parameters
    after them
  - bit-identical gradients on a re-run, and bit-identical losses and
    parameters after saving a checkpoint, reloading it and re-running steps

Errors are printed per tensor as max abs and relative error, where relative
is max|got - ref| / max|ref| over the tensor (llmc/testing.h).
Tolerance: 1e-4 relative. The reference is computed in float64 from the same
float32 parameters, so this bounds our fp32 error: sums of a few hundred
terms in fp32 are good to ~1e-6 relative; 1e-4 leaves room for the error
that 10 optimizer steps compound, and is still far below what any indexing
or formula mistake produces (those show as O(1) errors).
*/
#define TESTING
#include "train_gpt.cu"
#include "llmc/testing.h"

// 1e-4 in fp32. In the host's TF32 mode (HOST_TF32=1, the GPU trainers'
// arithmetic) 2e-2: TF32 rounds the matmul inputs to 2^-11 relative, which
// reaches ~1e-3 in gradients, and AdamW turns that into full-size updates in
// the parameters after 10 steps (worst measured 8.5e-3); a wrong index or
// formula is O(1).
static const double TOL = tf32_tolerance(1e-4, 2e-2);
// Generation (the KV cache's steps) against the parallel forward: the same
// fp32 math in another summation order (matmuls over B rows instead of B*T,
// the attention of one query over the cache), so agreement is at rounding
// level, ~1e-7 relative; 1e-5 bounds it and is far below what a wrong
// position, mask or cache slot gives (1e-2 and up).
static const double GEN_TOL = tf32_tolerance(1e-5, 2e-2);  // TF32 as TOL

// forward + backward at the reference parameters; compares activations,
// loss and gradients. label prefixes the lines (the kernel variant).
static void check_forward_backward(Tests& t, GPT* model, const RefState& ref, const char* path, const char* label) {
    GPTConfig c = model->config;
    int B = ref.B, T = ref.T, L = c.num_layers;
    load_params(&model->buf, ref.get("params", path).f);
    gpt_forward(model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), B, T, -1);
    ActivationTensors a = model->acts;
    compare_ref(t, ref, path, "encoded", a.encoded, label, TOL);
    for (int l = 0; l < L; l++) {
        TransformerStackActs la = transformer_layer_acts(a.tower, l, B, T, dims_of(c));
        struct { const char* name; const float* ptr; } acts[] = {
            {"ln1", la.ln1}, {"qkv", la.qkv}, {"att", la.att}, {"atty", la.atty}, {"attproj", la.attproj},
            {"res2", la.residual2}, {"ln2", la.ln2}, {"fch", la.fch}, {"fch_gelu", la.fch_gelu},
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
    gpt_backward(model, B, T);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%sgrad ", label);
    check_grads(t, &model->buf, ref, path, "grads", prefix, TOL);
}

// The loss of task files, where most positions have no target: the
// reference's masked_targets (about two thirds of the positions, and the
// whole first sequence, ignored: -100 there, negative, which the
// cross-entropy skips as it skips TARGET_IGNORED) give the mean over the
// rest, PyTorch's cross_entropy(..., ignore_index=-100), and every
// parameter's gradient of it (a gradient from an ignored position would
// show in the head's, at O(1/count)). Tolerance: TOL, for the reasons above (the
// same fp32 arithmetic against float64; a position wrongly counted or
// normalized shifts the loss and the gradients by O(1/count), 1e-2 here).
static void check_masked_loss(Tests& t, GPT* model, const RefState& ref, const char* path) {
    printf("--- the loss over the positions with a target\n");
    const std::vector<int>& masked = ref.get("masked_targets", path).i;
    long ignored = 0;
    for (int y : masked) ignored += y < 0;
    load_params(&model->buf, ref.get("params", path).f);
    gpt_forward(model, ref.get("inputs", path).i.data(), masked.data(), ref.B, ref.T, -1);
    check_loss(t, model->buf.mean_loss, ref.get("masked_loss", path).f[0], "",
               ("masked loss (" + std::to_string(ignored) + " of " + std::to_string(masked.size()) + " positions without a target)").c_str(), TOL);
    gpt_backward(model, ref.B, ref.T);
    check_grads(t, &model->buf, ref, path, "masked_grads", "masked grad ", TOL);
}

int main(int argc, char** argv) {
    const char* path = argc > 1 ? argv[1] : "data/ref_gpt.bin";
    Tests t;
    RefState ref;
    ref_state_load(&ref, path);
    if (ref.kind != MODEL_GPT) fail("%s: reference state of model kind %d, expected a GPT (%d)", path, ref.kind, MODEL_GPT);
    GPTConfig config = {ref.config[0], ref.config[1], ref.config[2], ref.config[3], ref.config[4], ref.config[5]};
    printf("backend %s | reference %s: GPT L %d C %d H %d F %d V %d maxT %d | B %d T %d\n", BACKEND_NAME, path,
           config.num_layers, config.channels, config.num_heads, config.ffn, config.vocab_size, config.max_seq_len,
           ref.B, ref.T);
    GPT model;
    gpt_build(&model, config);
    gpt_allocate_activations(&model, ref.B, ref.T);
    t.check(model.buf.num_parameters == ref.config[6] && model.buf.num_parameters == ref.get("params", path).numel(),
            "parameter count %ld (reference %d)", model.buf.num_parameters, ref.config[6]);

    // both kernel variants of LayerNorm and softmax, each against the reference
    bool default_ln = kernel_choices.layernorm_warp, default_sm = kernel_choices.softmax_warp;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.layernorm_warp = kernel_choices.softmax_warp = variant == 1;
        printf("--- kernels: %s\n", variant ? "warp per row" : "thread per row");
        check_forward_backward(t, &model, ref, path, variant ? "[warp] " : "[rows] ");
    }
    kernel_choices.layernorm_warp = default_ln;
    kernel_choices.softmax_warp = default_sm;

    // the reference batch at every step
    TrainStep step = [&](int) {
        gpt_forward(&model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), ref.B, ref.T, -1);
        gpt_backward(&model, ref.B, ref.T);
    };
    check_forward_backward(t, &model, ref, path, "[rerun] ");
    check_rerun_identical(t, &model.buf, step, 0, "");
    check_masked_loss(t, &model, ref, path);

    // 10 AdamW steps against the reference trajectory. The parameters after
    // them leave one slice out: the key bias. Softmax is invariant to it, so
    // its gradient is exactly zero in exact arithmetic and only rounding noise
    // (1e-9 in fp32, 1e-17 in the float64 reference) reaches AdamW, which
    // normalizes any nonzero gradient to a step of size ~lr. Its gradient
    // itself is checked above.
    long C = config.channels;
    ParamFilter not_key_bias = [C](const TensorSpec& ts, long j) { return strcmp(ts.name, "qkv_b") || (j % (3 * C)) / C != 1; };
    check_trajectory(t, &model.buf, ref, path, step, TOL, not_key_bias, " (q, v)");
    check_resume(t, &model.buf, ref, path, step, 123, 456, "");
    check_lm_dropout(t, &model, ref, path, TOL);

    // generation with the KV cache, rows of different tokens
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

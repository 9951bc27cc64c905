/*
Checks train_mamba_vit.cu against the PyTorch reference state written by
dev/reference/vit.py (make test writes data/ref_mamba_vit.bin):
  - every layer's activations (patches, patch LayerNorm, embedding and its
    LayerNorm, each Mamba block's xz, conv, u, x_dbl, dt, scan, gated, out,
    res, ln; pooled), logits and loss of one forward pass, and every
    parameter gradient (A_log, D, dt_proj bias and conv weights included),
    with both selective-scan variants (sequential and chunked parallel) and
    both LayerNorm variants
  - one training forward and backward with dropout 0.1 after every block:
    the reference computes the same counter-based masks, so logits, loss and
    every gradient must agree too
  - dropout only at training steps: evaluation gives the logits of dropout 0
  - the losses of 10 AdamW steps with gradient clipping, and the parameters
    after them
  - bit-identical gradients on a re-run, and bit-identical losses and
    parameters after saving a checkpoint, reloading it and re-running steps
    (with dropout on, so the masks resume too)

The dropout kernel itself is tested in test_vit.cu. Errors are printed per
tensor as max abs and relative error (llmc/testing.h). Tolerance: 1e-4
relative, as test_mamba.cu (fp32 against a float64 reference).
*/
#define TESTING
#include "train_mamba_vit.cu"
#include "llmc/testing.h"

// 1e-4 in fp32. In the host's TF32 mode (HOST_TF32=1, the GPU trainers'
// arithmetic) 2e-2: TF32 rounds the matmul inputs to 2^-11 relative, which
// reaches ~1e-3 in gradients, and AdamW turns that into full-size updates in
// the parameters after 10 steps (worst measured 8.5e-3); a wrong index or
// formula is O(1).
static const double TOL = tf32_tolerance(1e-4, 2e-2);
// the reference images, on the device
static const float* reference_images(const RefState& ref, const char* path) {
    static float* images = vector_to_device(ref.get("images", path).f);
    return images;
}

// forward + backward at the reference parameters without dropout; compares
// activations, loss and gradients. label prefixes the lines (the kernel variant).
static void check_forward_backward(Tests& t, MambaViT* model, const RefState& ref, const char* path, const char* label) {
    MambaViTConfig c = model->config;
    int B = ref.B, T = tokens_of(c), L = c.num_layers;
    load_params(&model->buf, ref.get("params", path).f);
    mamba_vit_forward(model, reference_images(ref, path), ref.get("labels", path).i.data(), B, -1);
    ActivationTensors a = model->acts;
    struct { const char* name; const float* ptr; } head[] = {
        {"patches", a.embed.patches}, {"patch_ln", a.embed.patch_ln}, {"embed", a.embed.embed}, {"embed_ln", a.embed.embed_ln}};
    for (auto& x : head) compare_ref(t, ref, path, x.name, x.ptr, label, TOL);
    for (int l = 0; l < L; l++) {
        MambaStackActs la = mamba_layer_acts(a.tower, l, B, T, dims_of(c));
        struct { const char* name; const float* ptr; } acts[] = {
            {"xz", la.xz}, {"conv", la.conv}, {"u", la.u}, {"x_dbl", la.x_dbl}, {"dt", la.dt}, {"scan", la.y},
            {"gated", la.gated}, {"out", la.out}, {"res", la.res}, {"ln", la.ln}};
        for (auto& x : acts) {
            char name[64];
            snprintf(name, sizeof(name), "m%d.%s", l, x.name);
            compare_ref(t, ref, path, name, x.ptr, label, TOL);
        }
    }
    compare_ref(t, ref, path, "pooled", a.pooled, label, TOL);
    compare_ref(t, ref, path, "logits", a.logits, label, TOL);
    check_loss(t, model->buf.mean_loss, ref.get("loss", path).f[0], label, "loss", TOL);

    mamba_vit_backward(model, B);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%sgrad ", label);
    check_grads(t, &model->buf, ref, path, "grads", prefix, TOL);
}


int main(int argc, char** argv) {
    const char* path = argc > 1 ? argv[1] : "data/ref_mamba_vit.bin";
    Tests t;
    RefState ref;
    ref_state_load(&ref, path);
    if (ref.kind != MODEL_MAMBA_VIT) fail("%s: reference state of model kind %d, expected a Mamba-ViT (%d)", path, ref.kind, MODEL_MAMBA_VIT);
    MambaViTConfig config = {ref.config[0], ref.config[1], ref.config[2], ref.config[3], ref.config[4], ref.config[5]};
    MambaDims d = dims_of(config);
    printf("backend %s | reference %s: Mamba-ViT L %d C %d E %d N %d R %d patch %d K %d | B %d T %d\n", BACKEND_NAME,
           path, config.num_layers, config.channels, d.E, d.N, d.R, config.patch, config.num_classes, ref.B, ref.T);
    MambaViT model;
    mamba_vit_build(&model, config);
    mamba_vit_allocate_activations(&model, ref.B);
    t.check(model.buf.num_parameters == ref.config[6] && model.buf.num_parameters == ref.get("params", path).numel() &&
            tokens_of(config) == ref.T, "parameter count %ld (reference %d), %d patches (reference %d)",
            model.buf.num_parameters, ref.config[6], tokens_of(config), ref.T);

    // both scan variants (with both LayerNorm variants), each against the reference
    bool default_scan = kernel_choices.scan_chunked, default_ln = kernel_choices.layernorm_warp;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.scan_chunked = kernel_choices.layernorm_warp = variant == 1;
        printf("--- kernels: %s\n", variant ? "chunked parallel scan, warp-per-row LayerNorm" : "sequential scan, thread-per-row LayerNorm");
        check_forward_backward(t, &model, ref, path, variant ? "[chunked] " : "[seq] ");
    }
    kernel_choices.scan_chunked = default_scan;
    kernel_choices.layernorm_warp = default_ln;

    const float* images = reference_images(ref, path);
    check_dropout_step(t, &model, ref, path, images, TOL);
    check_dropout_determinism(t, &model, ref, path, images);
    check_vision_steps(t, &model, ref, path, images, TOL);
    model_free(&model.buf);
    return t.summary();
}

/*
Checks train_mamba_vit.cu against the PyTorch reference states written by
dev/reference/vit.py (make test writes them): data/ref_mamba_vit.bin (3 x 32
x 32 images, patch 4), data/ref_mamba_vit_1x28x28_p4.bin and
data/ref_mamba_vit_1x28x28_p7.bin (one channel, 28 x 28: 49 and 16
patches), data/ref_mamba_vit_bi.bin (the bidirectional blocks of -M bi, on
1 x 28 x 28 at patch 4: 49 patches, past one 32-step scan chunk),
data/ref_mamba_vit2.bin (the Mamba-2 mixers of -M 2, on 1 x 28 x 28 at patch
4: 49 patches, past one 32-position SSD chunk; C 32, d_state 16, 4 heads of
16), or the states given as arguments. For each:
  - every layer's activations (patches, patch LayerNorm, embedding and its
    LayerNorm, each Mamba block's xz, conv, u, x_dbl, dt, scan, gated, out,
    res, ln, and a bidirectional block's reverse mixer's xz .. out in its
    reversed token order; a Mamba-2 block's zxbcdt, conv, xbc, dt, scan,
    gated, normed, out, res, ln; pooled), logits and loss of one forward pass, and every
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

Then the flip kernel of the bidirectional block (llmc/flip.cuh) against
plain C, exactly: forward, accumulate, and its backward as the transpose
(<flip x, y> = <x, flip y>). The dropout kernel itself is tested in
test_vit.cu. Errors are printed per
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
// forward + backward at the reference parameters without dropout; compares
// activations, loss and gradients. label prefixes the lines (the kernel variant).
static void check_forward_backward(Tests& t, MambaViT* model, const RefState& ref, const char* path,
                                   const float* images, const char* label) {
    MambaViTConfig c = model->config;
    int B = ref.B, T = tokens_of(c), L = c.num_layers;
    load_params(&model->buf, ref.get("params", path).f);
    mamba_vit_forward(model, images, ref.get("labels", path).i.data(), B, -1);
    ActivationTensors a = model->acts;
    struct { const char* name; const float* ptr; } head[] = {
        {"patches", a.embed.patches}, {"patch_ln", a.embed.patch_ln}, {"embed", a.embed.embed}, {"embed_ln", a.embed.embed_ln}};
    for (auto& x : head) compare_ref(t, ref, path, x.name, x.ptr, label, TOL);
    for (int l = 0; l < L && c.mamba2; l++) {
        Mamba2StackActs la = mamba2_layer_acts(a.tower2, l, B, T, dims2_of(c));
        struct { const char* name; const float* ptr; } acts[] = {
            {"zxbcdt", la.zxbcdt}, {"conv", la.conv}, {"xbc", la.xbc}, {"dt", la.dt}, {"scan", la.y},
            {"gated", la.gated}, {"normed", la.normed}, {"out", la.out}, {"res", la.res}, {"ln", la.ln}};
        for (auto& x : acts) {
            char name[64];
            snprintf(name, sizeof(name), "m%d.%s", l, x.name);
            compare_ref(t, ref, path, name, x.ptr, label, TOL);
        }
    }
    for (int l = 0; l < L && !c.mamba2; l++) {
        for (int m = 0; m < mixers_of(c); m++) {  // the forward mixer (with the block's res, ln), then the reverse one
            MambaStackActs la = mamba_bi_layer_acts(a.tower, l, m, L, B, T, dims_of(c));
            struct { const char* name; const float* ptr; } acts[] = {
                {"xz", la.xz}, {"conv", la.conv}, {"u", la.u}, {"x_dbl", la.x_dbl}, {"dt", la.dt}, {"scan", la.y},
                {"gated", la.gated}, {"out", la.out}, {"res", la.res}, {"ln", la.ln}};
            for (int i = 0; i < (m == 0 ? 10 : 8); i++) {  // the reverse mixer's are xz .. out
                char name[64];
                snprintf(name, sizeof(name), "m%d.%s%s", l, m ? "rev." : "", acts[i].name);
                compare_ref(t, ref, path, name, acts[i].ptr, label, TOL);
            }
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


// the flip kernel against plain C, exactly
static void check_flip(Tests& t) {
    printf("--- flip kernel\n");
    const int B = 3, T = 37, C = 20;
    const long n = (long)B * T * C;
    std::vector<float> x(n), y(n);
    uint64_t rng = 9;
    for (auto& v : x) v = 2.0f * random_uniform(&rng) - 1.0f;
    for (auto& v : y) v = 2.0f * random_uniform(&rng) - 1.0f;
    float* dx = vector_to_device(x);
    float* dy = vector_to_device(y);
    float* out;
    cudaCheck(cudaMalloc(&out, n * sizeof(float)));
    std::vector<float> want(n), want_acc(n);
    for (int b = 0; b < B; b++)
        for (int s = 0; s < T; s++)
            for (int c = 0; c < C; c++) {
                long i = ((long)b * T + s) * C + c, j = ((long)b * T + (T - 1 - s)) * C + c;
                want[i] = x[j];
                want_acc[i] = y[i] + x[j];
            }
    flip_tokens(out, dx, B, T, C, 0);
    t.check(device_to_vector(out, n) == want, "flip (B %d, T %d, C %d): out[b, t] = x[b, T-1-t], exactly", B, T, C);
    cudaCheck(cudaMemcpy(out, dy, n * sizeof(float), cudaMemcpyDeviceToDevice));
    flip_tokens(out, dx, B, T, C, 1);
    t.check(device_to_vector(out, n) == want_acc, "flip with accumulate: out = y + flip(x), exactly");
    // the backward is the same call: flip is its own transpose, <flip x, y> = <x, flip y> (summed in double)
    flip_tokens(out, dy, B, T, C, 0);
    std::vector<float> flip_y = device_to_vector(out, n);
    double lhs = 0.0, rhs = 0.0;
    for (long i = 0; i < n; i++) { lhs += (double)want[i] * y[i]; rhs += (double)x[i] * flip_y[i]; }
    t.check(fabs(lhs - rhs) <= 1e-12 * fabs(lhs), "backward as the transpose: <flip x, y> = <x, flip y> (%.15g, %.15g)", lhs, rhs);
    flip_tokens(dy, out, B, T, C, 0);
    t.check(device_to_vector(dy, n) == y, "flip twice is the identity, exactly");
    for (float* p : {dx, dy, out}) cudaCheck(cudaFree(p));
}

// every check of one reference state
static void check_state(Tests& t, const char* path) {
    RefState ref;
    ref_state_load(&ref, path);
    if (ref.kind != MODEL_MAMBA_VIT && ref.kind != MODEL_MAMBA_VIT_BI && ref.kind != MODEL_MAMBA_VIT2)
        fail("%s: reference state of model kind %d, expected a Mamba-ViT (%d, %d or %d)", path, ref.kind,
             MODEL_MAMBA_VIT, MODEL_MAMBA_VIT_BI, MODEL_MAMBA_VIT2);
    const int* s = ref.config;
    ImageShape image = image_shape_from_slots(path, ref.image_shape);
    MambaViTConfig config = ref.kind == MODEL_MAMBA_VIT2
                                ? mamba_vit2_config(s[0], s[1], s[2], s[3], s[4], s[5], image)  // N, headdim
                                : MambaViTConfig{s[0], s[1], s[2], s[3], s[4], s[5], image,
                                                 ref.kind == MODEL_MAMBA_VIT_BI, 0, 0};
    MambaDims d = dims_of(config);
    if (config.mamba2)
        printf("=== reference %s: Mamba-2 ViT L %d C %d E %d N %d heads %d x %d | images %d x %d x %d, patch %d | K %d | "
               "B %d T %d\n", path, config.num_layers, config.channels, config.inner, config.d_state,
               dims2_of(config).H, config.headdim, config.image.channels, config.image.height, config.image.width,
               config.patch, config.num_classes, ref.B, ref.T);
    else
        printf("=== reference %s: %sMamba-ViT L %d C %d E %d N %d R %d | images %d x %d x %d, patch %d | K %d | B %d T %d\n",
               path, config.bidirectional ? "bidirectional " : "", config.num_layers, config.channels, d.E, d.N, d.R,
               config.image.channels, config.image.height, config.image.width, config.patch, config.num_classes, ref.B, ref.T);
    MambaViT model;
    mamba_vit_build(&model, config);
    mamba_vit_allocate_activations(&model, ref.B);
    t.check(model.buf.num_parameters == ref.config[6] && model.buf.num_parameters == ref.get("params", path).numel() &&
            tokens_of(config) == ref.T, "parameter count %ld (reference %d), %d patches (reference %d)",
            model.buf.num_parameters, ref.config[6], tokens_of(config), ref.T);
    float* images = vector_to_device(ref.get("images", path).f);  // (B, Cc, H, W)

    // both scan variants (with both LayerNorm variants), each against the reference (-M 2's
    // SSD scan has one variant: the pass with the chunked scan checks the LayerNorm variant)
    bool default_scan = kernel_choices.scan_chunked, default_ln = kernel_choices.layernorm_warp;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.scan_chunked = kernel_choices.layernorm_warp = variant == 1;
        printf("--- kernels: %s\n", variant ? "chunked parallel scan, warp-per-row LayerNorm" : "sequential scan, thread-per-row LayerNorm");
        check_forward_backward(t, &model, ref, path, images, variant ? "[chunked] " : "[seq] ");
    }
    kernel_choices.scan_chunked = default_scan;
    kernel_choices.layernorm_warp = default_ln;

    check_dropout_step(t, &model, ref, path, images, TOL);
    check_dropout_determinism(t, &model, ref, path, images);
    check_vision_steps(t, &model, ref, path, images, TOL);
    cudaCheck(cudaFree(images));
    model_free(&model.buf);
}

int main(int argc, char** argv) {
    std::vector<const char*> paths(argv + 1, argv + argc);
    if (paths.empty())
        paths = {"data/ref_mamba_vit.bin", "data/ref_mamba_vit_1x28x28_p4.bin", "data/ref_mamba_vit_1x28x28_p7.bin",
                 "data/ref_mamba_vit_bi.bin", "data/ref_mamba_vit2.bin"};
    Tests t;
    printf("backend %s\n", BACKEND_NAME);
    check_flip(t);
    for (const char* path : paths) check_state(t, path);
    return t.summary();
}

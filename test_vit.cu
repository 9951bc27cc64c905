/*
Checks train_vit.cu against the PyTorch reference states written by
dev/reference/vit.py (make test writes them): data/ref_vit.bin (3 x 32 x 32
images, patch 4), data/ref_vit_1x28x28_p4.bin and data/ref_vit_1x28x28_p7.bin
(one channel, 28 x 28: 49 and 16 patches), or the states given as arguments.
For each:
  - every layer's activations (patches, patch LayerNorm, embedding and its
    LayerNorm, + positions, each block's, final LayerNorm, pooled), logits
    and loss of one forward pass, and every parameter gradient, with both
    kernel variants (thread-per-row and warp-per-row LayerNorm and softmax)
  - one training forward and backward with dropout 0.1: the reference
    computes the same counter-based masks, so logits, loss and every
    gradient must agree too
  - dropout itself: the rate, the 1/(1-p) scale, masks that repeat for the
    same (seed, step, site) and differ across steps, p = 0 and evaluation
    as the identity
  - the losses of 10 AdamW steps with gradient clipping, and the parameters
    after them
  - bit-identical gradients on a re-run, and bit-identical losses and
    parameters after saving a checkpoint, reloading it and re-running steps
    (with dropout on, so the masks resume too)

Errors are printed per tensor as max abs and relative error, where relative
is max|got - ref| / max|ref| over the tensor (llmc/testing.h). Tolerance:
1e-4 relative, as test_gpt.cu (fp32 against a float64 reference).
*/
#define TESTING
#include "train_vit.cu"
#include "llmc/testing.h"

// 1e-4 in fp32. In the host's TF32 mode (HOST_TF32=1, the GPU trainers'
// arithmetic) 2e-2: TF32 rounds the matmul inputs to 2^-11 relative, which
// reaches ~1e-3 in gradients, and AdamW turns that into full-size updates in
// the parameters after 10 steps (worst measured 8.5e-3); a wrong index or
// formula is O(1).
static const double TOL = tf32_tolerance(1e-4, 2e-2);
// forward + backward at the reference parameters without dropout; compares
// activations, loss and gradients. label prefixes the lines (the kernel variant).
static void check_forward_backward(Tests& t, ViT* model, const RefState& ref, const char* path, const float* images,
                                   const char* label) {
    ViTConfig c = model->config;
    int B = ref.B, T = tokens_of(c), L = c.num_layers;
    load_params(&model->buf, ref.get("params", path).f);
    vit_forward(model, images, ref.get("labels", path).i.data(), B, -1);
    ActivationTensors a = model->acts;
    struct { const char* name; const float* ptr; } head[] = {
        {"patches", a.embed.patches}, {"patch_ln", a.embed.patch_ln}, {"embed", a.embed.embed}, {"embed_ln", a.embed.embed_ln},
        {"encoded", a.encoded}};
    for (auto& x : head) compare_ref(t, ref, path, x.name, x.ptr, label, TOL);
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
    compare_ref(t, ref, path, "pooled", a.pooled, label, TOL);
    compare_ref(t, ref, path, "logits", a.logits, label, TOL);
    check_loss(t, model->buf.mean_loss, ref.get("loss", path).f[0], label, "loss", TOL);

    vit_backward(model, B);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%sgrad ", label);
    check_grads(t, &model->buf, ref, path, "grads", prefix, TOL);
}


// the dropout kernel on its own
static void check_dropout_kernel(Tests& t) {
    printf("--- dropout kernel\n");
    const long n = 1 << 20;
    const float p = 0.1f, scale = 1.0f / (1.0f - p);
    std::vector<float> ones(n, 1.0f), grad(n);
    uint64_t rng = 3;
    for (auto& g : grad) g = 2.0f * random_uniform(&rng) - 1.0f;
    float *x, *y;
    cudaCheck(cudaMalloc(&x, n * sizeof(float)));
    cudaCheck(cudaMalloc(&y, n * sizeof(float)));
    upload(x, ones);
    int* step;  // the training step the masks are keyed by, in device memory as the trainers keep it
    cudaCheck(cudaMalloc(&step, sizeof(int)));
    auto set_step = [&](int s) { cudaCheck(cudaMemcpy(step, &s, sizeof(int), cudaMemcpyHostToDevice)); };
    set_step(5);
    DropoutSite key = dropout_site(1337, step, 3);
    dropout_apply(y, x, n, p, key);
    std::vector<float> a = device_to_vector(y, n);
    long dropped = 0, bad = 0;
    for (float v : a) { dropped += v == 0.0f; bad += v != 0.0f && v != scale; }
    double rate = (double)dropped / n;
    t.check(fabs(rate - p) < 0.002 && bad == 0, "rate %.4f of %ld elements dropped (p %.2f); kept ones scaled to exactly %.7f (%ld others)",
            rate, n, p, scale, bad);
    dropout_apply(y, x, n, p, key);
    std::vector<float> b = device_to_vector(y, n);
    t.check(a == b, "the same (seed, step, site) gives the same mask");
    set_step(6);
    dropout_apply(y, x, n, p, key);
    std::vector<float> c = device_to_vector(y, n);
    set_step(5);
    dropout_apply(y, x, n, p, dropout_site(1337, step, 4));
    std::vector<float> e = device_to_vector(y, n);
    long same_step = 0, same_site = 0;
    for (long i = 0; i < n; i++) { same_step += (a[i] == 0) == (c[i] == 0); same_site += (a[i] == 0) == (e[i] == 0); }
    // independent masks agree on 0.9^2 + 0.1^2 = 0.82 of the elements
    t.check(fabs((double)same_step / n - 0.82) < 0.005 && fabs((double)same_site / n - 0.82) < 0.005,
            "another step or another site gives an independent mask (agreement %.3f and %.3f, independent 0.820)",
            (double)same_step / n, (double)same_site / n);
    // backward: the same call on the gradient passes it where the forward kept, scaled
    upload(x, grad);
    dropout_apply(x, x, n, p, key);  // in place
    std::vector<float> g = device_to_vector(x, n);
    long wrong = 0;
    for (long i = 0; i < n; i++) wrong += g[i] != (a[i] != 0.0f ? grad[i] * scale : 0.0f);
    t.check(wrong == 0, "backward (in place) = gradient * mask * 1/(1-p) exactly (%ld wrong)", wrong);
    upload(x, grad);
    dropout_apply(y, x, n, 0.0f, key);
    t.check(device_to_vector(y, n) == grad, "p = 0 is the identity, bit for bit");
    cudaCheck(cudaFree(x));
    cudaCheck(cudaFree(y));
    cudaCheck(cudaFree(step));
}

// every check of one reference state
static void check_state(Tests& t, const char* path) {
    RefState ref;
    ref_state_load(&ref, path);
    if (ref.kind != MODEL_VIT) fail("%s: reference state of model kind %d, expected a ViT (%d)", path, ref.kind, MODEL_VIT);
    ViTConfig config = {ref.config[0], ref.config[1], ref.config[2], ref.config[3], ref.config[4], ref.config[5],
                        image_shape_from_slots(path, ref.image_shape)};
    printf("=== reference %s: ViT L %d C %d H %d F %d | images %d x %d x %d, patch %d | K %d | B %d T %d\n", path,
           config.num_layers, config.channels, config.num_heads, config.ffn, config.image.channels,
           config.image.height, config.image.width, config.patch, config.num_classes, ref.B, ref.T);
    ViT model;
    vit_build(&model, config);
    vit_allocate_activations(&model, ref.B);
    t.check(model.buf.num_parameters == ref.config[6] && model.buf.num_parameters == ref.get("params", path).numel() &&
            tokens_of(config) == ref.T, "parameter count %ld (reference %d), %d patches (reference %d)",
            model.buf.num_parameters, ref.config[6], tokens_of(config), ref.T);
    float* images = vector_to_device(ref.get("images", path).f);  // (B, Cc, H, W)

    // both kernel variants of LayerNorm and softmax, each against the reference
    bool default_ln = kernel_choices.layernorm_warp, default_sm = kernel_choices.softmax_warp;
    for (int variant = 0; variant < 2; variant++) {
        kernel_choices.layernorm_warp = kernel_choices.softmax_warp = variant == 1;
        printf("--- kernels: %s\n", variant ? "warp per row" : "thread per row");
        check_forward_backward(t, &model, ref, path, images, variant ? "[warp] " : "[rows] ");
    }
    kernel_choices.layernorm_warp = default_ln;
    kernel_choices.softmax_warp = default_sm;

    check_dropout_step(t, &model, ref, path, images, TOL);
    check_dropout_determinism(t, &model, ref, path, images);
    // the parameters after the steps leave out the key bias, as in test_gpt.cu (softmax is
    // invariant to it: its exact gradient is 0 and AdamW turns rounding noise into steps of
    // size ~lr; its gradient is checked above)
    long C = config.channels;
    ParamFilter not_key_bias = [C](const TensorSpec& ts, long j) { return strcmp(ts.name, "qkv_b") || (j % (3 * C)) / C != 1; };
    check_vision_steps(t, &model, ref, path, images, TOL, not_key_bias, " (q, v)");
    cudaCheck(cudaFree(images));
    model_free(&model.buf);
}

int main(int argc, char** argv) {
    std::vector<const char*> paths(argv + 1, argv + argc);
    if (paths.empty()) paths = {"data/ref_vit.bin", "data/ref_vit_1x28x28_p4.bin", "data/ref_vit_1x28x28_p7.bin"};
    Tests t;
    printf("backend %s\n", BACKEND_NAME);
    check_dropout_kernel(t);
    for (const char* path : paths) check_state(t, path);
    return t.summary();
}

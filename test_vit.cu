/*
Checks train_vit.cu against the PyTorch reference state written by
dev/reference/vit.py (make test writes data/ref_vit.bin):
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

static const double TOL = 1e-4;
// which parameter tensors are stacked over layers (compared layer by layer)
static const int param_per_layer[NUM_PARAMETER_TENSORS] = {0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                                           0, 0, 0, 0};

static std::vector<float> device_to_vector(const float* d, long n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

static void upload(float* d, const std::vector<float>& h) {
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
}

static void load_params(ViT* model, const std::vector<float>& params) {
    upload(model->params_memory, params);
    cudaCheck(cudaMemset(model->m_memory, 0, params.size() * sizeof(float)));
    cudaCheck(cudaMemset(model->v_memory, 0, params.size() * sizeof(float)));
}

static void compare(Tests& t, const RefState& ref, const char* path, const char* name, const float* device, const char* label) {
    const RefTensor& r = ref.get(name, path);
    std::vector<float> got = device_to_vector(device, r.numel());
    char full[96];
    snprintf(full, sizeof(full), "%s%s", label, name);
    check_tensor(t, full, got.data(), r.f.data(), r.numel(), TOL);
}

static void check_loss(Tests& t, float got, float want, const char* label, const char* what) {
    t.check(fabsf(got - want) <= TOL * fabsf(want), "%s%s %.7f vs reference %.7f (abs err %.2e)", label, what, got,
            want, fabsf(got - want));
}

// the reference images, uploaded into the model's image buffer
static const float* reference_images(ViT* model, const RefState& ref, const char* path) {
    upload(model->acts.images, ref.get("images", path).f);
    return model->acts.images;
}

// forward + backward at the reference parameters without dropout; compares
// activations, loss and gradients. label prefixes the lines (the kernel variant).
static void check_forward_backward(Tests& t, ViT* model, const RefState& ref, const char* path, const char* label) {
    ViTConfig c = model->config;
    int B = ref.B, T = tokens_of(c), L = c.num_layers;
    load_params(model, ref.get("params", path).f);
    vit_forward(model, reference_images(model, ref, path), ref.get("labels", path).i.data(), B, -1);
    ActivationTensors a = model->acts;
    struct { const char* name; const float* ptr; } head[] = {
        {"patches", a.patches}, {"patch_ln", a.patch_ln}, {"embed", a.embed}, {"embed_ln", a.embed_ln},
        {"encoded", a.encoded}};
    for (auto& x : head) compare(t, ref, path, x.name, x.ptr, label);
    for (int l = 0; l < L; l++) {
        TransformerStackActs la = transformer_layer_acts(a.tower, l, B, T, dims_of(c));
        struct { const char* name; const float* ptr; } acts[] = {
            {"ln1", la.ln1}, {"qkv", la.qkv}, {"att", la.att}, {"atty", la.atty}, {"attproj", la.attproj},
            {"res2", la.residual2}, {"ln2", la.ln2}, {"fch", la.fch}, {"fch_gelu", la.fch_gelu},
            {"fcproj", la.fcproj}, {"res3", la.residual3}};
        for (auto& x : acts) {
            char name[64];
            snprintf(name, sizeof(name), "h%d.%s", l, x.name);
            compare(t, ref, path, name, x.ptr, label);
        }
    }
    compare(t, ref, path, "lnf", a.lnf, label);
    compare(t, ref, path, "pooled", a.pooled, label);
    compare(t, ref, path, "logits", a.logits, label);
    check_loss(t, model->mean_loss, ref.get("loss", path).f[0], label, "loss");

    vit_backward(model, B);
    std::vector<float> grads = device_to_vector(model->grads_memory, model->num_parameters);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%sgrad ", label);
    check_flat_tensors(t, prefix, param_names, model->param_sizes, param_per_layer, NUM_PARAMETER_TENSORS, L,
                       grads.data(), ref.get("grads", path).f.data(), TOL);
}

// a training step's forward + backward with the reference's dropout (rate, seed, step)
static void check_dropout_step(Tests& t, ViT* model, const RefState& ref, const char* path) {
    const RefTensor& d = ref.get("dropout", path);
    model->dropout = ref.get("dropout_p", path).f[0];
    model->dropout_seed = (uint64_t)d.i[0];
    load_params(model, ref.get("params", path).f);
    printf("--- a training step with dropout %g (seed %d, step %d)\n", model->dropout, d.i[0], d.i[1]);
    vit_forward(model, reference_images(model, ref, path), ref.get("labels", path).i.data(), ref.B, d.i[1]);
    compare(t, ref, path, "drop_logits", model->acts.logits, "");
    check_loss(t, model->mean_loss, ref.get("drop_loss", path).f[0], "", "dropout loss");
    vit_backward(model, ref.B);
    std::vector<float> grads = device_to_vector(model->grads_memory, model->num_parameters);
    check_flat_tensors(t, "dropout grad ", param_names, model->param_sizes, param_per_layer, NUM_PARAMETER_TENSORS,
                       model->config.num_layers, grads.data(), ref.get("drop_grads", path).f.data(), TOL);
    model->dropout = 0.0f;
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
    uint64_t key = dropout_key(1337, 5, 3);
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
    dropout_apply(y, x, n, p, dropout_key(1337, 6, 3));
    std::vector<float> c = device_to_vector(y, n);
    dropout_apply(y, x, n, p, dropout_key(1337, 5, 4));
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
}

// n AdamW steps on the reference batch with constant lr; training steps
// first_step.. (dropout as model->dropout); returns the losses
static std::vector<float> run_steps(ViT* model, const RefState& ref, const char* path, int first_step, int n) {
    const RefTensor& h = ref.get("adamw", path);
    AdamWConfig opt = {h.f[0], h.f[1], h.f[2], h.f[3], h.f[4], h.f[5]};
    std::vector<float> losses;
    for (int s = first_step; s < first_step + n; s++) {
        vit_forward(model, reference_images(model, ref, path), ref.get("labels", path).i.data(), ref.B, s);
        losses.push_back(model->mean_loss);
        vit_backward(model, ref.B);
        vit_update(model, &opt, opt.lr, s + 1);
    }
    return losses;
}

int main(int argc, char** argv) {
    const char* path = argc > 1 ? argv[1] : "data/ref_vit.bin";
    Tests t;
    RefState ref;
    ref_state_load(&ref, path);
    if (ref.kind != MODEL_VIT) fail("%s: reference state of model kind %d, expected a ViT (%d)", path, ref.kind, MODEL_VIT);
    ViTConfig config = {ref.config[0], ref.config[1], ref.config[2], ref.config[3], ref.config[4], ref.config[5]};
    printf("backend %s | reference %s: ViT L %d C %d H %d F %d patch %d K %d | B %d T %d\n", BACKEND_NAME, path,
           config.num_layers, config.channels, config.num_heads, config.ffn, config.patch, config.num_classes, ref.B, ref.T);
    ViT model;
    vit_build(&model, config);
    vit_allocate_activations(&model, ref.B);
    t.check(model.num_parameters == ref.config[6] && model.num_parameters == ref.get("params", path).numel() &&
            tokens_of(config) == ref.T, "parameter count %ld (reference %d), %d patches (reference %d)",
            model.num_parameters, ref.config[6], tokens_of(config), ref.T);

    // both kernel variants of LayerNorm and softmax, each against the reference
    bool default_ln = layernorm_use_warp, default_sm = softmax_use_warp;
    for (int variant = 0; variant < 2; variant++) {
        layernorm_use_warp = softmax_use_warp = variant == 1;
        printf("--- kernels: %s\n", variant ? "warp per row" : "thread per row");
        check_forward_backward(t, &model, ref, path, variant ? "[warp] " : "[rows] ");
    }
    layernorm_use_warp = default_ln;
    softmax_use_warp = default_sm;

    check_dropout_kernel(t);
    check_dropout_step(t, &model, ref, path);

    // determinism; dropout only at training steps
    {
        printf("--- determinism\n");
        const int* labels = ref.get("labels", path).i.data();
        model.dropout = 0.1f;
        model.dropout_seed = 99;
        load_params(&model, ref.get("params", path).f);
        vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, 7);
        vit_backward(&model, ref.B);
        std::vector<float> g1 = device_to_vector(model.grads_memory, model.num_parameters);
        float loss7 = model.mean_loss;
        vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, 7);
        vit_backward(&model, ref.B);
        std::vector<float> g2 = device_to_vector(model.grads_memory, model.num_parameters);
        t.check(memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)) == 0 && loss7 == model.mean_loss,
                "gradients bit-identical on a re-run of the same training step (dropout on)");
        vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, 8);
        t.check(model.mean_loss != loss7, "the next step draws other dropout masks (loss %.7f vs %.7f)", model.mean_loss, loss7);
        vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, -1);
        float eval_loss = model.mean_loss;
        std::vector<float> eval_logits = device_to_vector(model.acts.logits, (long)ref.B * config.num_classes);
        model.dropout = 0.0f;
        vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, 7);
        std::vector<float> plain = device_to_vector(model.acts.logits, (long)ref.B * config.num_classes);
        t.check(eval_logits == plain && eval_loss == model.mean_loss,
                "evaluation (dropout 0.1 set) gives the logits of dropout 0, bit for bit");
    }

    // 10 AdamW steps against the reference trajectory (no dropout)
    const RefTensor& ref_losses = ref.get("step_losses", path);
    int nsteps = (int)ref_losses.numel();
    model.dropout = 0.0f;
    load_params(&model, ref.get("params", path).f);
    std::vector<float> losses = run_steps(&model, ref, path, 0, nsteps);
    for (int s = 0; s < nsteps; s++) {
        double err = fabs(losses[s] - ref_losses.f[s]);
        t.check(err <= TOL * fabs(ref_losses.f[s]), "step %2d loss %.7f vs reference %.7f (abs err %.2e)", s + 1,
                losses[s], ref_losses.f[s], err);
    }
    // Parameters after the steps, per tensor, but for the key bias (as in
    // test_gpt.cu: softmax is invariant to it, its exact gradient is 0 and
    // AdamW turns rounding noise into steps of size ~lr; its gradient is checked above).
    std::vector<float> params_after = device_to_vector(model.params_memory, model.num_parameters);
    const std::vector<float>& ref_after = ref.get("step_params", path).f;
    long off = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        char name[64];
        snprintf(name, sizeof(name), "after steps: %s", param_names[i]);
        if (!strcmp(param_names[i], "qkvb")) {
            std::vector<float> got, want;  // q and v biases of every layer
            long C = config.channels;
            for (long j = 0; j < model.param_sizes[i]; j++) {
                if ((j % (3 * C)) / C == 1) continue;
                got.push_back(params_after[off + j]);
                want.push_back(ref_after[off + j]);
            }
            strcat(name, " (q, v)");
            check_tensor(t, name, got.data(), want.data(), (long)got.size(), TOL);
        } else {
            check_tensor(t, name, params_after.data() + off, ref_after.data() + off, model.param_sizes[i], TOL);
        }
        off += model.param_sizes[i];
    }

    // checkpoint: 5 steps, save, 5 more; reload, 5 again: bit-identical (dropout on)
    {
        int half = nsteps / 2;
        char dir[] = "/tmp/test_vit_XXXXXX";
        if (!mkdtemp(dir)) fail("cannot create a temporary directory");
        std::string ckpt = checkpoint_path(dir, half);
        model.dropout = 0.1f;
        model.dropout_seed = 1234;
        load_params(&model, ref.get("params", path).f);
        run_steps(&model, ref, path, 0, half);
        CheckpointState s = {MODEL_VIT, {0}, half, 123, 1234, ref.B, ref.T};
        memcpy(s.config, model.config_slots, sizeof(s.config));
        checkpoint_save(ckpt.c_str(), &s, model.params_memory, model.m_memory, model.v_memory);
        std::vector<float> first = run_steps(&model, ref, path, half, nsteps - half);
        std::vector<float> first_params = device_to_vector(model.params_memory, model.num_parameters);
        load_params(&model, std::vector<float>(model.num_parameters, 0.0f));  // wipe
        model.dropout_seed = 0;
        CheckpointState r;
        r.kind = MODEL_VIT;
        memcpy(r.config, model.config_slots, sizeof(r.config));
        checkpoint_load(ckpt.c_str(), &r, vit_slot_names, model.params_memory, model.m_memory, model.v_memory);
        model.dropout_seed = r.sample_rng;  // the run's seed, as vision_resume restores it
        std::vector<float> second = run_steps(&model, ref, path, r.step, nsteps - half);
        std::vector<float> second_params = device_to_vector(model.params_memory, model.num_parameters);
        bool same = r.step == half && r.train_rng == 123 && r.sample_rng == 1234 &&
                    memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0 &&
                    memcmp(first_params.data(), second_params.data(), first_params.size() * sizeof(float)) == 0;
        t.check(same, "resume from checkpoint at step %d (dropout on): losses and parameters bit-identical (last loss %.7f vs %.7f)",
                half, first.back(), second.back());
        remove(ckpt.c_str());
        rmdir(dir);
    }
    vit_free(&model);
    return t.summary();
}

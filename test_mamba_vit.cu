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

static const double TOL = 1e-4;
// which parameter tensors are stacked over layers (compared layer by layer)
static const int param_per_layer[NUM_PARAMETER_TENSORS] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};

static std::vector<float> device_to_vector(const float* d, long n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

static void upload(float* d, const std::vector<float>& h) {
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
}

static void load_params(MambaViT* model, const std::vector<float>& params) {
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
static const float* reference_images(MambaViT* model, const RefState& ref, const char* path) {
    upload(model->acts.images, ref.get("images", path).f);
    return model->acts.images;
}

// forward + backward at the reference parameters without dropout; compares
// activations, loss and gradients. label prefixes the lines (the kernel variant).
static void check_forward_backward(Tests& t, MambaViT* model, const RefState& ref, const char* path, const char* label) {
    MambaViTConfig c = model->config;
    int B = ref.B, T = tokens_of(c), L = c.num_layers;
    load_params(model, ref.get("params", path).f);
    mamba_vit_forward(model, reference_images(model, ref, path), ref.get("labels", path).i.data(), B, -1);
    ActivationTensors a = model->acts;
    struct { const char* name; const float* ptr; } head[] = {
        {"patches", a.patches}, {"patch_ln", a.patch_ln}, {"embed", a.embed}, {"embed_ln", a.embed_ln}};
    for (auto& x : head) compare(t, ref, path, x.name, x.ptr, label);
    for (int l = 0; l < L; l++) {
        MambaStackActs la = mamba_layer_acts(a.tower, l, B, T, dims_of(c));
        struct { const char* name; const float* ptr; } acts[] = {
            {"xz", la.xz}, {"conv", la.conv}, {"u", la.u}, {"x_dbl", la.x_dbl}, {"dt", la.dt}, {"scan", la.y},
            {"gated", la.gated}, {"out", la.out}, {"res", la.res}, {"ln", la.ln}};
        for (auto& x : acts) {
            char name[64];
            snprintf(name, sizeof(name), "m%d.%s", l, x.name);
            compare(t, ref, path, name, x.ptr, label);
        }
    }
    compare(t, ref, path, "pooled", a.pooled, label);
    compare(t, ref, path, "logits", a.logits, label);
    check_loss(t, model->mean_loss, ref.get("loss", path).f[0], label, "loss");

    mamba_vit_backward(model, B);
    std::vector<float> grads = device_to_vector(model->grads_memory, model->num_parameters);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%sgrad ", label);
    check_flat_tensors(t, prefix, param_names, model->param_sizes, param_per_layer, NUM_PARAMETER_TENSORS, L,
                       grads.data(), ref.get("grads", path).f.data(), TOL);
}

// a training step's forward + backward with the reference's dropout (rate, seed, step)
static void check_dropout_step(Tests& t, MambaViT* model, const RefState& ref, const char* path) {
    const RefTensor& d = ref.get("dropout", path);
    model->dropout = ref.get("dropout_p", path).f[0];
    model->dropout_seed = (uint64_t)d.i[0];
    load_params(model, ref.get("params", path).f);
    printf("--- a training step with dropout %g (seed %d, step %d)\n", model->dropout, d.i[0], d.i[1]);
    mamba_vit_forward(model, reference_images(model, ref, path), ref.get("labels", path).i.data(), ref.B, d.i[1]);
    compare(t, ref, path, "drop_logits", model->acts.logits, "");
    check_loss(t, model->mean_loss, ref.get("drop_loss", path).f[0], "", "dropout loss");
    mamba_vit_backward(model, ref.B);
    std::vector<float> grads = device_to_vector(model->grads_memory, model->num_parameters);
    check_flat_tensors(t, "dropout grad ", param_names, model->param_sizes, param_per_layer, NUM_PARAMETER_TENSORS,
                       model->config.num_layers, grads.data(), ref.get("drop_grads", path).f.data(), TOL);
    model->dropout = 0.0f;
}

// n AdamW steps on the reference batch with constant lr; training steps
// first_step.. (dropout as model->dropout); returns the losses
static std::vector<float> run_steps(MambaViT* model, const RefState& ref, const char* path, int first_step, int n) {
    const RefTensor& h = ref.get("adamw", path);
    AdamWConfig opt = {h.f[0], h.f[1], h.f[2], h.f[3], h.f[4], h.f[5]};
    std::vector<float> losses;
    for (int s = first_step; s < first_step + n; s++) {
        mamba_vit_forward(model, reference_images(model, ref, path), ref.get("labels", path).i.data(), ref.B, s);
        losses.push_back(model->mean_loss);
        mamba_vit_backward(model, ref.B);
        mamba_vit_update(model, &opt, opt.lr, s + 1);
    }
    return losses;
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
    t.check(model.num_parameters == ref.config[6] && model.num_parameters == ref.get("params", path).numel() &&
            tokens_of(config) == ref.T, "parameter count %ld (reference %d), %d patches (reference %d)",
            model.num_parameters, ref.config[6], tokens_of(config), ref.T);

    // both scan variants (with both LayerNorm variants), each against the reference
    bool default_scan = scan_use_chunked, default_ln = layernorm_use_warp;
    for (int variant = 0; variant < 2; variant++) {
        scan_use_chunked = layernorm_use_warp = variant == 1;
        printf("--- kernels: %s\n", variant ? "chunked parallel scan, warp-per-row LayerNorm" : "sequential scan, thread-per-row LayerNorm");
        check_forward_backward(t, &model, ref, path, variant ? "[chunked] " : "[seq] ");
    }
    scan_use_chunked = default_scan;
    layernorm_use_warp = default_ln;

    check_dropout_step(t, &model, ref, path);

    // determinism; dropout only at training steps
    {
        printf("--- determinism\n");
        const int* labels = ref.get("labels", path).i.data();
        model.dropout = 0.1f;
        model.dropout_seed = 99;
        load_params(&model, ref.get("params", path).f);
        mamba_vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, 7);
        mamba_vit_backward(&model, ref.B);
        std::vector<float> g1 = device_to_vector(model.grads_memory, model.num_parameters);
        float loss7 = model.mean_loss;
        mamba_vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, 7);
        mamba_vit_backward(&model, ref.B);
        std::vector<float> g2 = device_to_vector(model.grads_memory, model.num_parameters);
        t.check(memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)) == 0 && loss7 == model.mean_loss,
                "gradients bit-identical on a re-run of the same training step (dropout on)");
        mamba_vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, 8);
        t.check(model.mean_loss != loss7, "the next step draws other dropout masks (loss %.7f vs %.7f)", model.mean_loss, loss7);
        mamba_vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, -1);
        float eval_loss = model.mean_loss;
        std::vector<float> eval_logits = device_to_vector(model.acts.logits, (long)ref.B * config.num_classes);
        model.dropout = 0.0f;
        mamba_vit_forward(&model, reference_images(&model, ref, path), labels, ref.B, 7);
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
    std::vector<float> after = device_to_vector(model.params_memory, model.num_parameters);
    check_flat_tensors(t, "after steps: ", param_names, model.param_sizes, param_per_layer, NUM_PARAMETER_TENSORS,
                       config.num_layers, after.data(), ref.get("step_params", path).f.data(), TOL);

    // checkpoint: 5 steps, save, 5 more; reload, 5 again: bit-identical (dropout on)
    {
        int half = nsteps / 2;
        char dir[] = "/tmp/test_mamba_vit_XXXXXX";
        if (!mkdtemp(dir)) fail("cannot create a temporary directory");
        std::string ckpt = checkpoint_path(dir, half);
        model.dropout = 0.1f;
        model.dropout_seed = 1234;
        load_params(&model, ref.get("params", path).f);
        run_steps(&model, ref, path, 0, half);
        CheckpointState s = {MODEL_MAMBA_VIT, {0}, half, 123, 1234, ref.B, ref.T};
        memcpy(s.config, model.config_slots, sizeof(s.config));
        checkpoint_save(ckpt.c_str(), &s, model.params_memory, model.m_memory, model.v_memory);
        std::vector<float> first = run_steps(&model, ref, path, half, nsteps - half);
        std::vector<float> first_params = device_to_vector(model.params_memory, model.num_parameters);
        load_params(&model, std::vector<float>(model.num_parameters, 0.0f));  // wipe
        model.dropout_seed = 0;
        CheckpointState r;
        r.kind = MODEL_MAMBA_VIT;
        memcpy(r.config, model.config_slots, sizeof(r.config));
        checkpoint_load(ckpt.c_str(), &r, mamba_vit_slot_names, model.params_memory, model.m_memory, model.v_memory);
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
    mamba_vit_free(&model);
    return t.summary();
}

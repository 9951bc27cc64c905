/*
Checks train_gpt.cu against the PyTorch reference state written by
dev/reference/gpt.py (make test writes data/ref_gpt.bin):
  - logits, every layer's activations and the loss of one forward pass
  - every parameter gradient of one backward pass
  - both kernel variants (thread-per-row and warp-per-row LayerNorm and
    softmax) on this backend, each against the reference
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

static const double TOL = 1e-4;
// which parameter tensors are stacked over layers (compared layer by layer)
static const int param_per_layer[NUM_PARAMETER_TENSORS] = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};

static std::vector<float> device_to_vector(const float* d, long n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

static void load_params(GPT* model, const std::vector<float>& params) {
    cudaCheck(cudaMemcpy(model->params_memory, params.data(), params.size() * sizeof(float), cudaMemcpyHostToDevice));
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

// forward + backward at the reference parameters; compares activations,
// loss and gradients. label prefixes the lines (the kernel variant).
static void check_forward_backward(Tests& t, GPT* model, const RefState& ref, const char* path, const char* label) {
    GPTConfig c = model->config;
    int B = ref.B, T = ref.T, L = c.num_layers;
    const RefTensor& inputs = ref.get("inputs", path);
    const RefTensor& targets = ref.get("targets", path);
    load_params(model, ref.get("params", path).f);
    gpt_forward(model, inputs.i.data(), targets.i.data(), B, T);
    ActivationTensors a = model->acts;
    compare(t, ref, path, "encoded", a.encoded, label);
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
    compare(t, ref, path, "logits", a.logits, label);
    float ref_loss = ref.get("loss", path).f[0];
    t.check(fabsf(model->mean_loss - ref_loss) <= TOL * fabsf(ref_loss), "%sloss %.7f vs reference %.7f (abs err %.2e)",
            label, model->mean_loss, ref_loss, fabsf(model->mean_loss - ref_loss));

    gpt_backward(model, B, T);
    std::vector<float> grads = device_to_vector(model->grads_memory, model->num_parameters);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%sgrad ", label);
    check_flat_tensors(t, prefix, param_names, model->param_sizes, param_per_layer, NUM_PARAMETER_TENSORS, L,
                       grads.data(), ref.get("grads", path).f.data(), TOL);
}

// n AdamW steps on the reference batch with constant lr; returns the losses
static std::vector<float> run_steps(GPT* model, const RefState& ref, const char* path, int first_step, int n) {
    const RefTensor& h = ref.get("adamw", path);
    AdamWConfig opt = {h.f[0], h.f[1], h.f[2], h.f[3], h.f[4], h.f[5]};
    const int* inputs = ref.get("inputs", path).i.data();
    const int* targets = ref.get("targets", path).i.data();
    std::vector<float> losses;
    for (int s = first_step; s < first_step + n; s++) {
        gpt_forward(model, inputs, targets, ref.B, ref.T);
        losses.push_back(model->mean_loss);
        gpt_backward(model, ref.B, ref.T);
        gpt_update(model, &opt, opt.lr, s + 1);
    }
    return losses;
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
    t.check(model.num_parameters == ref.config[6] && model.num_parameters == ref.get("params", path).numel(),
            "parameter count %ld (reference %d)", model.num_parameters, ref.config[6]);

    // both kernel variants of LayerNorm and softmax, each against the reference
    bool default_ln = layernorm_use_warp, default_sm = softmax_use_warp;
    for (int variant = 0; variant < 2; variant++) {
        layernorm_use_warp = softmax_use_warp = variant == 1;
        printf("--- kernels: %s\n", variant ? "warp per row" : "thread per row");
        check_forward_backward(t, &model, ref, path, variant ? "[warp] " : "[rows] ");
    }
    layernorm_use_warp = default_ln;
    softmax_use_warp = default_sm;

    // determinism: the same forward and backward give bit-identical gradients
    {
        check_forward_backward(t, &model, ref, path, "[rerun] ");
        std::vector<float> g1 = device_to_vector(model.grads_memory, model.num_parameters);
        gpt_forward(&model, ref.get("inputs", path).i.data(), ref.get("targets", path).i.data(), ref.B, ref.T);
        gpt_backward(&model, ref.B, ref.T);
        std::vector<float> g2 = device_to_vector(model.grads_memory, model.num_parameters);
        t.check(memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)) == 0, "gradients bit-identical on a re-run");
    }

    // 10 AdamW steps against the reference trajectory
    const RefTensor& ref_losses = ref.get("step_losses", path);
    int nsteps = (int)ref_losses.numel();
    load_params(&model, ref.get("params", path).f);
    std::vector<float> losses = run_steps(&model, ref, path, 0, nsteps);
    for (int s = 0; s < nsteps; s++) {
        double err = fabs(losses[s] - ref_losses.f[s]);
        t.check(err <= TOL * fabs(ref_losses.f[s]), "step %2d loss %.7f vs reference %.7f (abs err %.2e)", s + 1,
                losses[s], ref_losses.f[s], err);
    }
    // Parameters after the steps, per tensor. One slice is left out: the
    // key bias. Softmax is invariant to it, so its gradient is exactly zero
    // in exact arithmetic and only rounding noise (1e-9 in fp32, 1e-17 in
    // the float64 reference) reaches AdamW, which normalizes any nonzero
    // gradient to a step of size ~lr. Its gradient itself is checked above.
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

    // checkpoint: 5 steps, save, 5 more; reload, 5 again: bit-identical
    {
        int half = nsteps / 2;
        char dir[] = "/tmp/test_gpt_XXXXXX";
        if (!mkdtemp(dir)) fail("cannot create a temporary directory");
        std::string ckpt = checkpoint_path(dir, half);
        load_params(&model, ref.get("params", path).f);
        run_steps(&model, ref, path, 0, half);
        CheckpointState s = {MODEL_GPT, {0}, half, 123, 456, ref.B, ref.T};
        memcpy(s.config, model.config_slots, sizeof(s.config));
        checkpoint_save(ckpt.c_str(), &s, model.params_memory, model.m_memory, model.v_memory);
        std::vector<float> first = run_steps(&model, ref, path, half, nsteps - half);
        std::vector<float> first_params = device_to_vector(model.params_memory, model.num_parameters);
        load_params(&model, std::vector<float>(model.num_parameters, 0.0f));  // wipe
        CheckpointState r;
        r.kind = MODEL_GPT;
        memcpy(r.config, model.config_slots, sizeof(r.config));
        checkpoint_load(ckpt.c_str(), &r, gpt_slot_names, model.params_memory, model.m_memory, model.v_memory);
        std::vector<float> second = run_steps(&model, ref, path, r.step, nsteps - half);
        std::vector<float> second_params = device_to_vector(model.params_memory, model.num_parameters);
        bool same = r.step == half && r.train_rng == 123 && r.sample_rng == 456 &&
                    memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0 &&
                    memcmp(first_params.data(), second_params.data(), first_params.size() * sizeof(float)) == 0;
        t.check(same, "resume from checkpoint at step %d: losses and parameters bit-identical (last loss %.7f vs %.7f)",
                half, first.back(), second.back());
        remove(ckpt.c_str());
        rmdir(dir);
    }
    gpt_free(&model);
    return t.summary();
}

/*
Small helpers shared by the test programs: a pass/fail counter that ends with
the line "N passed, M failed", a seeded random generator, and tensor
comparison with max absolute and relative error.

Relative error of a tensor is max|got - ref| / max|ref|: the largest error
measured against the tensor's own scale. It is robust to entries near zero,
where an elementwise ratio means nothing, and is what the tolerances in the
tests bound.
*/
#pragma once

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>

struct Tests {
    int passed = 0, failed = 0;
    // prints one line "ok" or "FAIL" with the formatted detail
    bool check(bool ok, const char* fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        printf("%s ", ok ? "ok  " : "FAIL");
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
        fflush(stdout);
        (ok ? passed : failed)++;
        return ok;
    }
    int summary() {
        printf("%d passed, %d failed\n", passed, failed);
        return failed == 0 ? 0 : 1;
    }
};

// xorshift64*: a small seeded generator for test data
inline uint32_t random_u32(uint64_t* state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}
inline float random_uniform(uint64_t* state) { return (random_u32(state) >> 8) / 16777216.0f; }

struct TensorError { double max_abs, max_ref, rel; };

inline TensorError tensor_error(const float* got, const float* ref, long n) {
    TensorError e = {0.0, 0.0, 0.0};
    for (long i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= e.max_abs)) e.max_abs = d;  // NaN propagates
        double r = fabs((double)ref[i]);
        if (r > e.max_ref) e.max_ref = r;
    }
    e.rel = e.max_abs / (e.max_ref > 0.0 ? e.max_ref : 1.0);
    return e;
}

// compares one tensor, prints its errors, counts pass/fail against rel_tol
inline bool check_tensor(Tests& t, const char* name, const float* got, const float* ref, long n, double rel_tol) {
    TensorError e = tensor_error(got, ref, n);
    return t.check(e.rel <= rel_tol, "%-22s n=%-8ld max abs %.3e  rel %.3e  (tol %.0e)", name, n, e.max_abs, e.rel, rel_tol);
}

// ----------------------------------------------------------------------------
// reference states written by dev/reference (format: README, "File formats")

#include <map>
#include <string>
#include <vector>
#include "utils.h"

struct RefTensor {
    int dtype;  // 0 float32, 1 int32
    std::vector<int> shape;
    std::vector<float> f;
    std::vector<int> i;
    long numel() const { long n = 1; for (int d : shape) n *= d; return n; }
};

struct RefState {
    int kind;
    int config[7];
    int B, T;
    int image_shape[IMAGE_SHAPE_SLOTS];  // header[24..26]: a vision state's images (channels, height, width); 0 0 0: 3 x 32 x 32
    std::map<std::string, RefTensor> tensors;
    const RefTensor& get(const char* name, const char* path) const {
        auto it = tensors.find(name);
        if (it == tensors.end()) fail("%s: reference state has no tensor '%s'", path, name);
        return it->second;
    }
};

inline void ref_state_parse(RefState* s, const char* path, const unsigned char* data, long size) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_STATE, "reference state", header);
    s->kind = header[2];
    for (int i = 0; i < 7; i++) s->config[i] = header[3 + i];
    s->B = header[10]; s->T = header[11];
    for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) s->image_shape[i] = header[IMAGE_SHAPE_SLOT + i];
    int K = header[12];
    if (K < 1) fail("%s: holds %d tensors", path, K);
    if (s->B < 1 || s->T < 1) fail("%s: batch %d x %d is not positive", path, s->B, s->T);
    ByteReader r = {path, data, size, HEADER_BYTES};
    s->tensors.clear();
    for (int k = 0; k < K; k++) {
        char name[49] = {0};
        int meta[6];
        byte_reader_read(&r, name, 48, "a tensor name");
        byte_reader_read(&r, meta, sizeof(meta), "a tensor header");
        RefTensor t;
        t.dtype = meta[0];
        int ndim = meta[1];
        if (t.dtype != 0 && t.dtype != 1) fail("%s: tensor '%s' has unknown dtype %d", path, name, t.dtype);
        if (ndim < 1 || ndim > 4) fail("%s: tensor '%s' has ndim %d", path, name, ndim);
        long n = 1;
        for (int d = 0; d < ndim; d++) {
            if (meta[2 + d] < 1 || n > (size / 4) / meta[2 + d]) fail("%s: tensor '%s' has a bad shape", path, name);
            t.shape.push_back(meta[2 + d]);
            n *= meta[2 + d];
        }
        if (4 * n > size - r.pos) fail("%s: file ends inside tensor '%s'", path, name);
        if (t.dtype == 0) { t.f.resize(n); byte_reader_read(&r, t.f.data(), 4 * n, name); }
        else { t.i.resize(n); byte_reader_read(&r, t.i.data(), 4 * n, name); }
        if (s->tensors.count(name)) fail("%s: tensor '%s' appears twice", path, name);
        s->tensors[name] = std::move(t);
    }
    if (r.pos != size) fail("%s: records end at byte %ld, but the file is %ld bytes", path, r.pos, size);
}

inline void ref_state_load(RefState* s, const char* path) {
    std::vector<unsigned char> bytes;
    read_whole_file(path, &bytes);
    ref_state_parse(s, path, bytes.data(), (long)bytes.size());
}

// ----------------------------------------------------------------------------
// device buffers, and the checks every model test makes (test_gpt.cu,
// test_mamba.cu, test_vit.cu, test_mamba_vit.cu): a model's ModelBuffers
// (model.h) against a reference state

#include <algorithm>
#include <functional>
#include <cstring>
#include <unistd.h>
#include "model.h"
#include "checkpoint.h"

inline std::vector<float> device_to_vector(const float* d, long n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

inline void upload(float* d, const std::vector<float>& h) {
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
}

// a new device buffer holding h
inline float* vector_to_device(const std::vector<float>& h) {
    float* d;
    cudaCheck(cudaMalloc(&d, h.size() * sizeof(float)));
    upload(d, h);
    return d;
}

inline std::vector<float> random_vector(long n, float lo, float hi, uint64_t* rng) {
    std::vector<float> v(n);
    for (auto& x : v) x = lo + (hi - lo) * random_uniform(rng);
    return v;
}

// Compares a buffer laid out as a model's tensor table, tensor by tensor;
// tensors stacked over layers are compared layer by layer, so that a layer
// with small values is measured against its own scale.
inline void check_table_tensors(Tests& t, const char* prefix, const TensorSpec* table, int count, const float* got,
                                const float* ref, double tol) {
    long off = 0;
    for (int i = 0; i < count; i++) {
        if (table[i].size == 0) continue;  // an empty row (another variant's tensor)
        long n = table[i].size / table[i].layers;
        for (int l = 0; l < table[i].layers; l++) {
            char name[96];
            if (table[i].layers > 1) snprintf(name, sizeof(name), "%s%s[%d]", prefix, table[i].name, l);
            else snprintf(name, sizeof(name), "%s%s", prefix, table[i].name);
            check_tensor(t, name, got + off, ref + off, n, tol);
            off += n;
        }
    }
}

// the reference's parameters, and AdamW moments zeroed
inline void load_params(ModelBuffers* m, const std::vector<float>& params) {
    upload(m->params_memory, params);
    cudaCheck(cudaMemset(m->m_memory, 0, params.size() * sizeof(float)));
    cudaCheck(cudaMemset(m->v_memory, 0, params.size() * sizeof(float)));
}

// one device tensor against the reference's tensor of that name
inline void compare_ref(Tests& t, const RefState& ref, const char* path, const char* name, const float* device,
                        const char* label, double tol) {
    const RefTensor& r = ref.get(name, path);
    std::vector<float> got = device_to_vector(device, r.numel());
    char full[96];
    snprintf(full, sizeof(full), "%s%s", label, name);
    check_tensor(t, full, got.data(), r.f.data(), r.numel(), tol);
}

inline void check_loss(Tests& t, float got, float want, const char* label, const char* what, double tol) {
    t.check(fabsf(got - want) <= tol * fabsf(want), "%s%s %.7f vs reference %.7f (abs err %.2e)", label, what, got,
            want, fabsf(got - want));
}

// the gradients of the last backward against the reference's tensor `name`, per tensor of the table
inline void check_grads(Tests& t, const ModelBuffers* m, const RefState& ref, const char* path, const char* name,
                        const char* prefix, double tol) {
    std::vector<float> grads = device_to_vector(m->grads_memory, m->num_parameters);
    check_table_tensors(t, prefix, m->param_table, m->num_param_tensors, grads.data(), ref.get(name, path).f.data(), tol);
}

// A model's forward and backward of a training step at step s (the loss in m->mean_loss)
typedef std::function<void(int step)> TrainStep;

// n AdamW steps, steps first..first+n-1, at the reference's constant lr and
// hyperparameters ("adamw": lr, beta1, beta2, eps, weight decay, clip); returns the losses
inline std::vector<float> run_steps(ModelBuffers* m, const RefState& ref, const char* path, const TrainStep& step,
                                    int first, int n) {
    const RefTensor& h = ref.get("adamw", path);
    AdamWConfig opt = {h.f[0], h.f[1], h.f[2], h.f[3], h.f[4], h.f[5]};
    std::vector<float> losses;
    for (int s = first; s < first + n; s++) {
        step(s);
        losses.push_back(m->mean_loss);
        model_update(m, &opt, opt.lr, s + 1);
    }
    return losses;
}

// Which entries of a parameter tensor the after-steps comparison covers (all when null).
typedef std::function<bool(const TensorSpec& tensor, long index)> ParamFilter;

// From the reference parameters, the reference's trajectory ("step_losses")
// and the parameters after it ("step_params"), per tensor of the table.
inline void check_trajectory(Tests& t, ModelBuffers* m, const RefState& ref, const char* path, const TrainStep& step,
                             double tol, const ParamFilter& include = nullptr, const char* filter_note = "") {
    const RefTensor& ref_losses = ref.get("step_losses", path);
    int nsteps = (int)ref_losses.numel();
    load_params(m, ref.get("params", path).f);
    std::vector<float> losses = run_steps(m, ref, path, step, 0, nsteps);
    for (int s = 0; s < nsteps; s++) {
        double err = fabs(losses[s] - ref_losses.f[s]);
        t.check(err <= tol * fabs(ref_losses.f[s]), "step %2d loss %.7f vs reference %.7f (abs err %.2e)", s + 1,
                losses[s], ref_losses.f[s], err);
    }
    std::vector<float> after = device_to_vector(m->params_memory, m->num_parameters);
    const std::vector<float>& ref_after = ref.get("step_params", path).f;
    long off = 0;
    for (int i = 0; i < m->num_param_tensors; i++) {
        const TensorSpec& ts = m->param_table[i];
        if (ts.size == 0) continue;  // an empty row
        long per_layer = ts.size / ts.layers;
        for (int l = 0; l < ts.layers; l++) {  // layer by layer, as check_table_tensors
            bool filtered = false;
            std::vector<float> got, want;
            for (long j = l * per_layer; j < (l + 1) * per_layer; j++) {
                if (include && !include(ts, j)) { filtered = true; continue; }
                got.push_back(after[off + j]);
                want.push_back(ref_after[off + j]);
            }
            char name[96], layer[16] = "";
            if (ts.layers > 1) snprintf(layer, sizeof(layer), "[%d]", l);
            snprintf(name, sizeof(name), "after steps: %s%s%s", ts.name, layer, filtered ? filter_note : "");
            check_tensor(t, name, got.data(), want.data(), (long)got.size(), tol);
        }
        off += ts.size;
    }
}

// the same step twice from the same parameters: bit-identical loss and gradients
inline void check_rerun_identical(Tests& t, ModelBuffers* m, const TrainStep& step, int s, const char* what) {
    step(s);
    std::vector<float> g1 = device_to_vector(m->grads_memory, m->num_parameters);
    float loss1 = m->mean_loss;
    step(s);
    std::vector<float> g2 = device_to_vector(m->grads_memory, m->num_parameters);
    t.check(memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)) == 0 && loss1 == m->mean_loss,
            "gradients bit-identical on a re-run%s", what);
}

// n steps, a checkpoint after n/2, the rest; then the checkpoint reloaded
// into wiped buffers and the rest again: losses and parameters must be
// bit-identical, and the checkpoint's step, generator, seed and data size
// slots restored.
// on_reload (may be null) restores what the model keeps outside the
// buffers from the checkpoint (a model's dropout seed).
inline void check_resume(Tests& t, ModelBuffers* m, const RefState& ref, const char* path, const TrainStep& step,
                         uint64_t train_rng, uint64_t sample_rng, const char* what,
                         const std::function<void(const CheckpointState&)>& on_reload = nullptr) {
    int nsteps = (int)ref.get("step_losses", path).numel(), half = nsteps / 2;
    char dir[] = "/tmp/test_resume_XXXXXX";
    if (!mkdtemp(dir)) fail("cannot create a temporary directory");
    std::string ckpt = checkpoint_path(dir, half);
    load_params(m, ref.get("params", path).f);
    run_steps(m, ref, path, step, 0, half);
    CheckpointState s;
    memset(&s, 0, sizeof(s));
    s.kind = m->kind;
    memcpy(s.config, m->config_slots, sizeof(s.config));
    s.step = half; s.train_rng = train_rng; s.sample_rng = sample_rng; s.B = ref.B; s.T = ref.T;
    s.seed = is_vision_kind(m->kind) ? (int)sample_rng : 1337;  // a vision checkpoint's seed is its second generator slot
    s.data_size = ref.B * ref.T;                                 // the run's training data: the reference batch
    memcpy(s.image_shape, m->image_shape, sizeof(s.image_shape));
    checkpoint_save(ckpt.c_str(), &s, m->params_memory, m->m_memory, m->v_memory);
    std::vector<float> first = run_steps(m, ref, path, step, half, nsteps - half);
    std::vector<float> first_params = device_to_vector(m->params_memory, m->num_parameters);
    load_params(m, std::vector<float>(m->num_parameters, 0.0f));  // wipe
    CheckpointState r;
    r.kind = m->kind;
    memcpy(r.config, m->config_slots, sizeof(r.config));
    checkpoint_load(ckpt.c_str(), &r, m->slot_names, m->params_memory, m->m_memory, m->v_memory);
    if (on_reload) on_reload(r);
    std::vector<float> second = run_steps(m, ref, path, step, r.step, nsteps - half);
    std::vector<float> second_params = device_to_vector(m->params_memory, m->num_parameters);
    bool same = r.step == half && r.train_rng == train_rng && r.sample_rng == sample_rng && r.seed == s.seed &&
                !memcmp(r.image_shape, m->image_shape, sizeof(r.image_shape)) &&
                r.data_size == s.data_size && r.version == MODEL_FORMAT_VERSION &&
                memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0 &&
                memcmp(first_params.data(), second_params.data(), first_params.size() * sizeof(float)) == 0;
    t.check(same, "resume from checkpoint at step %d%s: losses and parameters bit-identical (last loss %.7f vs %.7f)",
            half, what, first.back(), second.back());
    remove(ckpt.c_str());
    rmdir(dir);
}

// ----------------------------------------------------------------------------
// the dropout checks of every model with a dropout (TrainDropout, llmc/model.h):
// over a forward at a training step (ForwardAt(s), s >= 0; -1: evaluation)
// and the backward of the last forward, and the model's fields dropout, buf
// and acts.logits (n_logits of them)

typedef std::function<void(int train_step)> ForwardAt;
typedef std::function<void()> BackwardOfLast;

// a training step's forward + backward with the reference's dropout (rate, seed, step)
template <typename M> void check_dropout_step(Tests& t, M* model, const RefState& ref, const char* path,
                                              const ForwardAt& forward, const BackwardOfLast& backward, double tol) {
    const RefTensor& d = ref.get("dropout", path);
    model->dropout.rate = ref.get("dropout_p", path).f[0];
    model->dropout.seed = (uint64_t)d.i[0];
    load_params(&model->buf, ref.get("params", path).f);
    printf("--- a training step with dropout %g (seed %d, step %d)\n", model->dropout.rate, d.i[0], d.i[1]);
    forward(d.i[1]);
    compare_ref(t, ref, path, "drop_logits", model->acts.logits, "", tol);
    check_loss(t, model->buf.mean_loss, ref.get("drop_loss", path).f[0], "", "dropout loss", tol);
    backward();
    check_grads(t, &model->buf, ref, path, "drop_grads", "dropout grad ", tol);
    model->dropout.rate = 0.0f;
}

// dropout only at training steps, its masks a function of the step
template <typename M> void check_dropout_determinism(Tests& t, M* model, const RefState& ref, const char* path,
                                                     const ForwardAt& forward, const BackwardOfLast& backward,
                                                     long n_logits) {
    printf("--- determinism\n");
    model->dropout.rate = 0.1f;
    model->dropout.seed = 99;
    load_params(&model->buf, ref.get("params", path).f);
    TrainStep step = [&](int s) { forward(s); backward(); };
    check_rerun_identical(t, &model->buf, step, 7, " of the same training step (dropout on)");
    float loss7 = model->buf.mean_loss;
    forward(8);
    t.check(model->buf.mean_loss != loss7, "the next step draws other dropout masks (loss %.7f vs %.7f)",
            model->buf.mean_loss, loss7);
    forward(-1);
    float eval_loss = model->buf.mean_loss;
    std::vector<float> eval_logits = device_to_vector(model->acts.logits, n_logits);
    model->dropout.rate = 0.0f;
    forward(7);
    std::vector<float> plain = device_to_vector(model->acts.logits, n_logits);
    t.check(eval_logits == plain && eval_loss == model->buf.mean_loss,
            "evaluation (dropout 0.1 set) gives the logits of dropout 0, bit for bit");
}

// the vision models' (test_vit.cu, test_mamba_vit.cu), over the hooks of
// vision_trainer.h (vision_forward, vision_backward) and config.num_classes
template <typename M> void check_dropout_step(Tests& t, M* model, const RefState& ref, const char* path,
                                              const float* images, double tol) {
    const int* labels = ref.get("labels", path).i.data();
    check_dropout_step(t, model, ref, path, [&](int s) { vision_forward(model, images, labels, ref.B, s); },
                       [&]() { vision_backward(model, ref.B); }, tol);
}

template <typename M> void check_dropout_determinism(Tests& t, M* model, const RefState& ref, const char* path,
                                                     const float* images) {
    const int* labels = ref.get("labels", path).i.data();
    check_dropout_determinism(t, model, ref, path, [&](int s) { vision_forward(model, images, labels, ref.B, s); },
                              [&]() { vision_backward(model, ref.B); }, (long)ref.B * model->config.num_classes);
}

// the 10-step trajectory without dropout, then resume with dropout on (the
// masks resume too: the checkpoint's second generator slot is the run's seed)
template <typename M> void check_vision_steps(Tests& t, M* model, const RefState& ref, const char* path,
                                              const float* images, double tol, const ParamFilter& include = nullptr,
                                              const char* filter_note = "") {
    const int* labels = ref.get("labels", path).i.data();
    TrainStep step = [&](int s) { vision_forward(model, images, labels, ref.B, s); vision_backward(model, ref.B); };
    model->dropout.rate = 0.0f;
    check_trajectory(t, &model->buf, ref, path, step, tol, include, filter_note);
    model->dropout.rate = 0.1f;
    model->dropout.seed = 1234;
    check_resume(t, &model->buf, ref, path, step, 123, 1234, " (dropout on)", [&](const CheckpointState& r) {
        model->dropout.seed = r.sample_rng;  // as vision_run restores it
    });
}

// ----------------------------------------------------------------------------
// the language models' dropout checks (test_gpt.cu, test_gpt_plus.cu,
// test_mamba.cu, test_hybrid.cu), over the hooks of lm_trainer.h
// (lm_forward, lm_backward) on the reference batch: the training step with
// the reference's masks against PyTorch, determinism, and a run resumed
// from a checkpoint with dropout on (the masks resume: the checkpoint holds
// the run's seed, lm_run's dropout seed, and the step)
template <typename M> void check_lm_dropout(Tests& t, M* model, const RefState& ref, const char* path, double tol) {
    const int* inputs = ref.get("inputs", path).i.data();
    const int* targets = ref.get("targets", path).i.data();
    ForwardAt forward = [&](int s) { lm_forward(model, inputs, targets, ref.B, ref.T, s); };
    BackwardOfLast backward = [&]() { lm_backward(model, ref.B, ref.T); };
    check_dropout_step(t, model, ref, path, forward, backward, tol);
    check_dropout_determinism(t, model, ref, path, forward, backward, (long)ref.B * ref.T * model->config.vocab_size);
    TrainStep step = [&](int s) { forward(s); backward(); };
    model->dropout.rate = 0.1f;
    model->dropout.seed = 1337;  // the seed check_resume's checkpoints hold for a language model
    check_resume(t, &model->buf, ref, path, step, 123, 456, " (dropout on)", [&](const CheckpointState& r) {
        model->dropout.seed = (uint64_t)r.seed;  // as lm_run restores it
    });
    model->dropout.rate = 0.0f;
}

// ----------------------------------------------------------------------------
// the language models' generation checks (test_gpt.cu, test_gpt_plus.cu,
// test_mamba.cu, test_hybrid.cu), over the hooks of lm_trainer.h
// (lm_forward, lm_generate_begin/end, lm_prefill, lm_step) and a model's
// fields acts.logits, gen.logits, config.vocab_size

// the parallel forward's logits (B, T, V) of tokens (B, T)
template <typename M> std::vector<float> forward_logits(M* model, const int* tokens, int B, int T) {
    lm_forward(model, tokens, nullptr, B, T, -1);
    return device_to_vector(model->acts.logits, (long)B * T * model->config.vocab_size);
}

// the logits (B, T, V) of tokens (B, T) by lm_eval_chunked in chunks of Tc
// (models that evaluate in chunks, each layer's state carried)
template <typename M> std::vector<float> chunked_logits(M* model, const int* tokens, int B, int T, int Tc) {
    int V = model->config.vocab_size;
    std::vector<float> logits((size_t)B * T * V), part;
    auto read = [&](int t0, int n, int* inputs, int* targets) {
        for (int b = 0; b < B; b++)
            for (int i = 0; i < n; i++) {
                inputs[(size_t)b * n + i] = tokens[(size_t)b * T + t0 + i];
                targets[(size_t)b * n + i] = 0;  // (the logits do not depend on them)
            }
    };
    lm_eval_chunked(model, B, T, Tc, read, [&](int t0, int n, const int*) {
        part = device_to_vector(model->acts.logits, (long)B * n * V);
        for (int b = 0; b < B; b++)
            memcpy(&logits[((size_t)b * T + t0) * V], &part[(size_t)b * n * V], (size_t)n * V * sizeof(float));
    });
    return logits;
}

// Prefill the first P tokens of each row, then step through the rest: the
// logits after each position, (B, T, V) with positions before P-1 zero.
template <typename M> std::vector<float> stepped_logits(M* model, const std::vector<int>& tokens, int B, int T, int P) {
    int V = model->config.vocab_size;
    std::vector<float> out((long)B * T * V, 0.0f);
    std::vector<int> prompt((long)B * P), column(B);
    for (int b = 0; b < B; b++) std::copy(&tokens[(long)b * T], &tokens[(long)b * T] + P, &prompt[(long)b * P]);
    lm_generate_begin(model, B);
    lm_prefill(model, prompt.data(), B, P);
    for (int t = P - 1; t < T; t++) {
        if (t >= P) {
            for (int b = 0; b < B; b++) column[b] = tokens[(long)b * T + t];
            lm_step(model, column.data(), B);
        }
        std::vector<float> l = device_to_vector(model->gen.logits, (long)B * V);
        for (int b = 0; b < B; b++) std::copy(&l[(long)b * V], &l[(long)b * V] + V, &out[((long)b * T + t) * V]);
    }
    lm_generate_end(model);
    return out;
}

// the logits at positions P-1..T-1 of stepping, against the parallel forward's
template <typename M> void check_steps_against_forward(Tests& t, M* model, const std::vector<int>& tokens, int B, int T,
                                                       int P, double tol, const char* what) {
    int V = model->config.vocab_size;
    std::vector<float> want = forward_logits(model, tokens.data(), B, T);
    std::vector<float> got = stepped_logits(model, tokens, B, T, P);
    std::vector<float> g, w;
    for (int b = 0; b < B; b++)
        for (int p = P - 1; p < T; p++)
            for (int v = 0; v < V; v++) { g.push_back(got[((long)b * T + p) * V + v]); w.push_back(want[((long)b * T + p) * V + v]); }
    char name[96];
    snprintf(name, sizeof(name), "%s: prefill %d + %d steps, B %d", what, P, T - P, B);
    check_tensor(t, name, g.data(), w.data(), (long)g.size(), tol);
}

// A KV-cache model past its context W (the GPTs' and the hybrid LM's: the
// cache's length): each step's logits are a parallel forward's over the
// newest tokens; the first step past it keeps W/2 of them, the next W/2 + 1.
// inputs: (B, W).
template <typename M> void check_cache_full(Tests& t, M* model, const std::vector<int>& inputs, int B, int W, double tol) {
    int keep = W / 2, V = model->config.vocab_size, extra = 3;
    std::vector<int> seq((long)B * (W + extra));  // each row: its W inputs, then `extra` more tokens
    for (int b = 0; b < B; b++)
        for (int i = 0; i < W + extra; i++) seq[(long)b * (W + extra) + i] = i < W ? inputs[(long)b * W + i] : (b * 7 + i) % V;
    std::vector<int> prompt((long)B * W), column(B), window;
    for (int b = 0; b < B; b++) std::copy(&seq[(long)b * (W + extra)], &seq[(long)b * (W + extra)] + W, &prompt[(long)b * W]);
    lm_generate_begin(model, B);
    lm_prefill(model, prompt.data(), B, W);
    for (int j = 0; j < extra; j++) {
        for (int b = 0; b < B; b++) column[b] = seq[(long)b * (W + extra) + W + j];
        lm_step(model, column.data(), B);
        std::vector<float> got = device_to_vector(model->gen.logits, (long)B * V);
        int n = keep + j, first = W + j + 1 - n;  // the window: tokens first .. W+j of each row
        window.resize((long)B * n);
        for (int b = 0; b < B; b++) std::copy(&seq[(long)b * (W + extra) + first], &seq[(long)b * (W + extra) + first] + n, &window[(long)b * n]);
        std::vector<float> all = forward_logits(model, window.data(), B, n), want;
        for (int b = 0; b < B; b++) want.insert(want.end(), &all[((long)b * n + n - 1) * V], &all[((long)b * n + n) * V]);
        char name[96];
        snprintf(name, sizeof(name), "cache full (W %d): step %d = forward over the last %d", W, j + 1, n);
        check_tensor(t, name, got.data(), want.data(), (long)B * V, tol);
    }
    lm_generate_end(model);
}

// n greedy tokens after a prompt, twice: the same tokens and logits, bit for bit
template <typename M> void check_greedy_repeatable(Tests& t, M* model, const std::vector<int>& prompt, int n) {
    int V = model->config.vocab_size;
    std::vector<int> runs[2];
    std::vector<float> last[2];
    for (int r = 0; r < 2; r++) {
        lm_generate_begin(model, 1);
        lm_prefill(model, prompt.data(), 1, (int)prompt.size());
        for (int i = 0; i < n; i++) {
            last[r] = device_to_vector(model->gen.logits, V);
            int next = (int)(std::max_element(last[r].begin(), last[r].end()) - last[r].begin());
            runs[r].push_back(next);
            lm_step(model, &next, 1);
        }
        lm_generate_end(model);
    }
    t.check(runs[0] == runs[1] && last[0] == last[1], "greedy generation of %d tokens bit-identical run to run", n);
}

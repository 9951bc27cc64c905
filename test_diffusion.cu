/*
Checks train_diffusion.cu against the PyTorch reference states written by
dev/reference/diffusion.py (make test writes them): one per denoiser,
data/ref_diffusion_{vit,mamba,bimamba,mamba2}.bin (1 x 12 x 12 images at
patch 2: 36 patch tokens + time + class = 38 tokens, past one 32-position
scan chunk; 2 layers, C 32, C 16 for the Mamba-1 denoisers, 3 classes, a
batch of 4 with t = 1, t = 1000 and a row without its class), or the
states given as arguments. For each:
  - the schedule's device tables (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t),
    the time embedding of every t) against the reference's float64 ones
  - one training forward: x_t, the patches, the tokens, every block's
    output, the final LayerNorm (vit), the head's rows, eps_pred, the loss;
    then every parameter gradient
  - the losses of 10 AdamW steps with gradient clipping, and the
    parameters after them
  - bit-identical gradients on a re-run, and bit-identical losses and
    parameters after a checkpoint is saved, reloaded and the steps re-run
  - the negative ELBO's terms: the step coefficients of t = 2..1000, the
    prior term and the t = 1 decoder term of the batch's images (the
    decoder from this model's eps_pred at t = 1, unconditional)
  - the DDIM (50 steps) and DDPM (1000 and 50 steps) sampler coefficients
  - sampling (DDIM and DDPM, a few steps, with guidance) twice from the same seed:
    bit-identical files; another seed: different images
Tolerance: 1e-4 relative, as the vision models' tests (fp32 against a
float64 reference); the schedule's tables and coefficients 1e-6 (fp32
rounding of float64 values); the ELBO terms 1e-5 (double on both sides,
from fp32 inputs; the decoder term 1e-3 under HOST_TF32, see ELBO_TOL).
*/
#define TESTING
#include "train_diffusion.cu"
#include "llmc/testing.h"

static const double TOL = tf32_tolerance(1e-4, 2e-2);  // TF32: see test_vit.cu
// the ELBO's image terms: double on both sides from fp32 inputs, 1e-5; under
// TF32 the decoder term reads an eps_pred whose products were rounded to
// 2^-11 (~5e-4 relative), which moves a sum of 144 per-pixel log-probabilities
// by up to ~1e-4 relative (measured 8.9e-5): 1e-3 there
static const double ELBO_TOL = tf32_tolerance(1e-5, 1e-3);

// the forward of one training step on the reference batch (inputs uploaded)
static void reference_forward(Diffusion* model, const RefState& ref, const char* path, const float* images) {
    const RefTensor& eps = ref.get("eps", path);
    diffusion_upload_inputs(model, ref.get("t", path).i.data(), ref.get("y", path).i.data(), eps.f.data(), ref.B);
    diffusion_forward(model, images, ref.B);
}

static void check_tables(Tests& t, Diffusion* model, const RefState& ref, const char* path) {
    printf("--- the schedule's tables\n");
    long n = DIFFUSION_STEPS + 1;
    compare_ref(t, ref, path, "sqrt_alpha_bar", model->tables.sqrt_alpha_bar, "", 1e-6);
    compare_ref(t, ref, path, "sqrt_one_minus_ab", model->tables.sqrt_one_minus_ab, "", 1e-6);
    compare_ref(t, ref, path, "time_embedding", model->tables.time_embedding, "", 1e-6);
    DiffusionSchedule s = diffusion_schedule();
    const RefTensor& coef = ref.get("elbo_step_coefficients", path);
    std::vector<float> got(n, 0.0f);
    for (int step = 2; step <= DIFFUSION_STEPS; step++) got[step] = (float)elbo_step_coefficient(s, step);
    check_tensor(t, "ELBO step coefficients, t = 2..1000", got.data(), coef.f.data(), n, 1e-6);
    const char* names[3] = {"ddim50", "ddpm50", "ddpm"};
    for (int k = 0; k < 3; k++) {
        int ddpm = k > 0;
        const RefTensor& r = ref.get(names[k], path);
        int steps = r.shape[0];
        std::vector<float> c(steps * 6);
        for (int i = 0; i < steps; i++) {
            SamplerStep st = sampler_step(s, ddpm ? SAMPLER_DDPM : SAMPLER_DDIM, steps, i);
            float row[6] = {(float)st.t, st.s0, st.s1, st.a, st.b, st.sigma};
            memcpy(c.data() + i * 6, row, sizeof(row));
        }
        char what[64];
        snprintf(what, sizeof(what), "%s %d step coefficients (t s0 s1 a b sigma)", ddpm ? "DDPM" : "DDIM", steps);
        check_tensor(t, what, c.data(), r.f.data(), steps * 6, 1e-6);
    }
}

static void check_forward_backward(Tests& t, Diffusion* model, const RefState& ref, const char* path,
                                   const float* images) {
    printf("--- forward and backward\n");
    DiffusionConfig c = model->config;
    int B = ref.B;
    load_params(&model->buf, ref.get("params", path).f);
    reference_forward(model, ref, path, images);
    ActivationTensors a = model->acts;
    compare_ref(t, ref, path, "noisy", a.noisy, "", TOL);
    compare_ref(t, ref, path, "patches", a.patches, "", TOL);
    compare_ref(t, ref, path, "tokens", a.tokens, "", TOL);
    for (int l = 0; l < c.num_layers; l++) {
        char name[32];
        snprintf(name, sizeof(name), "block%d", l);
        compare_ref(t, ref, path, name, block_output(model, l, B), "", TOL);
    }
    if (c.backbone == BACKBONE_VIT) compare_ref(t, ref, path, "lnf", a.lnf, "", TOL);
    compare_ref(t, ref, path, "rows", a.rows, "", TOL);
    compare_ref(t, ref, path, "eps_pred", a.eps_pred, "", TOL);
    check_loss(t, model->buf.mean_loss, ref.get("loss", path).f[0], "", "loss", TOL);
    diffusion_backward(model, B);
    check_grads(t, &model->buf, ref, path, "grads", "grad ", TOL);
}

// the ELBO's prior and decoder terms of the reference images at the reference parameters
static void check_elbo_terms(Tests& t, Diffusion* model, const RefState& ref, const char* path, const float* images) {
    printf("--- the negative ELBO's image terms\n");
    int B = ref.B, K = model->config.num_classes;
    long D = image_dim_of(model->config);
    DiffusionSchedule s = diffusion_schedule();
    load_params(&model->buf, ref.get("params", path).f);
    std::vector<int> t1(B, 1), null_class(B, K);
    diffusion_upload_inputs(model, t1.data(), null_class.data(), ref.get("eps", path).f.data(), B);
    diffusion_forward(model, images, B);
    std::vector<float> pred = device_to_vector(model->acts.eps_pred, B * D);
    std::vector<float> x1 = device_to_vector(model->acts.noisy, B * D);
    std::vector<float> x0 = ref.get("images", path).f;
    for (auto& v : x0) v = 2.0f * v - 1.0f;
    std::vector<float> prior(B), decoder(B);
    double sigma = sqrt(reverse_variance(s, 1));
    for (int b = 0; b < B; b++) {
        prior[b] = (float)elbo_prior_term(s, x0.data() + b * D, D);
        double sum = 0.0;
        for (long i = b * D; i < (b + 1) * D; i++) sum += elbo_decoder_term(x0[i], elbo_decoder_mean(s, x1[i], pred[i]), sigma);
        decoder[b] = (float)sum;
    }
    check_tensor(t, "ELBO prior term per image (nats)", prior.data(), ref.get("elbo_prior", path).f.data(), B, 1e-5);
    check_tensor(t, "ELBO decoder term per image, t = 1 (nats)", decoder.data(), ref.get("elbo_decoder", path).f.data(),
                 B, ELBO_TOL);
}

static std::vector<unsigned char> read_bytes(const char* path) {
    std::vector<unsigned char> bytes;
    read_whole_file(path, &bytes);
    return bytes;
}

// two samplings from one seed give the same file; another seed, other images
static void check_sampling(Tests& t, Diffusion* model, const RefState& ref, const char* path) {
    printf("--- sampling\n");
    load_params(&model->buf, ref.get("step_params", path).f);
    char dir[] = "/tmp/test_diffusion_XXXXXX";
    if (!mkdtemp(dir)) fail("cannot create a temporary directory");
    std::string a = std::string(dir) + "/a.bin", b = std::string(dir) + "/b.bin", c = std::string(dir) + "/c.bin";
    struct { int sampler, steps; float guidance; } runs[] = {{SAMPLER_DDIM, 7, 2.0f}, {SAMPLER_DDPM, 6, 1.5f}};
    for (auto& r : runs) {
        const char* name = r.sampler == SAMPLER_DDPM ? "DDPM" : "DDIM";
        diffusion_sample(model, 1, r.sampler, r.steps, r.guidance, 5, a.c_str());
        diffusion_sample(model, 1, r.sampler, r.steps, r.guidance, 5, b.c_str());
        diffusion_sample(model, 1, r.sampler, r.steps, r.guidance, 6, c.c_str());
        std::vector<unsigned char> fa = read_bytes(a.c_str()), fb = read_bytes(b.c_str()), fc = read_bytes(c.c_str());
        ImageData d;
        image_data_load(&d, a.c_str());
        bool labels = d.count == model->config.num_classes;
        for (int i = 0; i < d.count && labels; i++) labels = d.labels[i] == i;
        t.check(fa == fb, "%s sampling (%d steps, guidance %g) bit-identical for a seed (%zu bytes)", name, r.steps,
                r.guidance, fa.size());
        t.check(fa != fc, "%s sampling: another seed gives other images", name);
        t.check(labels, "%s sampling: one image per class, labelled with its class, in class order", name);
        remove(a.c_str()); remove(b.c_str()); remove(c.c_str());
    }
    rmdir(dir);
}

static void check_state(Tests& t, const char* path) {
    RefState ref;
    ref_state_load(&ref, path);
    int backbone = -1;
    for (int b = 0; b < 4; b++) if (ref.kind == backbone_kinds[b]) backbone = b;
    if (backbone < 0) fail("%s: kind %d is no diffusion model (11..14)", path, ref.kind);
    DiffusionConfig config = diffusion_config(backbone, ref.config, image_shape_from_slots(path, ref.image_shape));
    printf("=== reference %s: diffusion, %s denoiser L %d C %d | images %d x %d x %d, patch %d | K %d | B %d T %d\n",
           path, backbone_names[backbone], config.num_layers, config.channels, config.image.channels,
           config.image.height, config.image.width, config.patch, config.num_classes, ref.B, ref.T);
    Diffusion model;
    diffusion_build(&model, config);
    int rows = std::max(ref.B, 2 * config.num_classes);  // sampling: two rows per image
    diffusion_allocate_activations(&model, rows);
    t.check(model.buf.num_parameters == ref.config[6] && model.buf.num_parameters == ref.get("params", path).numel() &&
            tokens_of(config) == ref.T, "parameter count %ld (reference %d), %d tokens (reference %d)",
            model.buf.num_parameters, ref.config[6], tokens_of(config), ref.T);
    float* images = vector_to_device(ref.get("images", path).f);

    check_tables(t, &model, ref, path);
    check_forward_backward(t, &model, ref, path, images);
    TrainStep step = [&](int) {
        reference_forward(&model, ref, path, images);
        diffusion_backward(&model, ref.B);
    };
    // the parameters after the steps leave out the ViT's key bias, as test_vit.cu (softmax is
    // invariant to it: its gradient is rounding noise, which AdamW's normalization magnifies)
    int C = config.channels;
    ParamFilter not_key_bias = [C](const TensorSpec& ts, long j) { return strcmp(ts.name, "qkv_b") || (j % (3 * C)) / C != 1; };
    check_trajectory(t, &model.buf, ref, path, step, TOL, not_key_bias, " (q, v)");
    load_params(&model.buf, ref.get("params", path).f);
    check_rerun_identical(t, &model.buf, step, 0, "");
    check_resume(t, &model.buf, ref, path, step, 123, 1234, "");
    check_elbo_terms(t, &model, ref, path, images);
    check_sampling(t, &model, ref, path);
    cudaCheck(cudaFree(images));
    model_free(&model.buf);
}

int main(int argc, char** argv) {
    std::vector<const char*> paths(argv + 1, argv + argc);
    if (paths.empty())
        paths = {"data/ref_diffusion_vit.bin", "data/ref_diffusion_mamba.bin", "data/ref_diffusion_bimamba.bin",
                 "data/ref_diffusion_mamba2.bin"};
    Tests t;
    printf("backend %s\n", BACKEND_NAME);
    for (const char* path : paths) check_state(t, path);
    return t.summary();
}

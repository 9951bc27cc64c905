/*
What the image classifiers' trainers (train_vit.cu, train_mamba_vit.cu)
share: their flags, loading and checking the image files, training batches
(shuffled per epoch, augmented) and evaluation batches, checkpoint
bookkeeping, and counting correct predictions. The schedule, clipping plus
AdamW, the non-finite guard and the step line come from trainer.h. Each
train_*.cu keeps its own model and main loop, so it still reads top to bottom.

Checkpoints are the language models' format (checkpoint.h); in a vision
checkpoint the data generator slot holds the augmentation generator and the
sampling generator slot holds the run's seed (the data order and the dropout
masks are functions of the seed and the step), and T is the number of
patches. So a resumed run continues bit-identically (with the same flags).
*/
#pragma once

#include <string>
#include <vector>
#include "cuda_common.h"
#include "augment.cuh"
#include "checkpoint.h"
#include "image_data.h"
#include "logger.h"
#include "trainer.h"
#include "utils.h"

// the image geometry the vision models take (CIFAR-10's)
#define VISION_CHANNELS 3
#define VISION_SIZE 32

typedef struct {
    const char* train_path;  // -i
    const char* test_path;   // -j
    const char* init_path;   // -e: model file to start from
    const char* out_dir;     // -o
    int checkpoint_every;    // -n
    int resume;              // -y
    int B, eval_B;           // -b, -B
    int epochs;              // -E
    int max_steps;           // -x; -1: epochs * steps per epoch
    int warmup;              // -u
    float lr, final_frac, weight_decay, grad_clip, beta2;  // -l -q -c -p -a
    float dropout;           // -D
    int eval_every;          // -v, in epochs
    int eval_batches;        // -m, 0 = all
    int print_every;         // -s, step lines
    int seed;                // -r
    int L, C, H, F, patch;   // model shape (-L -C -H -F -P; each model uses what it has)
    int augment;             // -A: 0 switches every transform off
    AugmentConfig aug;       // -f -d -R -z -w
} VisionTrainConfig;

// the seed configuration of the CIFAR-10 runs (model shape set by each trainer)
static VisionTrainConfig default_vision_config() {
    VisionTrainConfig c;
    memset(&c, 0, sizeof(c));
    c.train_path = "data/cifar10_train.bin";
    c.test_path = "data/cifar10_test.bin";
    c.B = 128; c.eval_B = 256; c.epochs = 100; c.max_steps = -1;
    c.lr = 3e-4f; c.final_frac = 0.1f; c.weight_decay = 1e-5f; c.grad_clip = 0.0f; c.beta2 = 0.999f;
    c.dropout = 0.1f;
    c.eval_every = 1; c.print_every = 50; c.seed = 1337;
    c.patch = 4;
    c.augment = 1;
    c.aug = augment_default();
    return c;
}

static void vision_usage(const char* program, const VisionTrainConfig* d, const char* model_flags, int status) {
    fprintf(status ? stderr : stdout,
        "Usage: %s [options]\n"
        "  -i <path>   train images          (default %s)\n"
        "  -j <path>   test images           (default %s)\n"
        "  -e <path>   initialize from a model file instead of random\n"
        "  -o <dir>    output directory: checkpoints, log.jsonl and the final model.bin\n"
        "  -n <int>    checkpoint every n steps, with -o (default 0: only at the end)\n"
        "  -y <0|1>    resume from the newest checkpoint in -o (default 0)\n"
        "  -b <int>    batch size (default %d)\n"
        "  -B <int>    evaluation batch size (default %d)\n"
        "  -E <int>    epochs (default %d)\n"
        "  -x <int>    training steps instead of -E epochs; 0 = only evaluate (default: -E epochs)\n"
        "  -l <float>  learning rate (default %g)\n"
        "  -u <int>    warmup steps (default %d)\n"
        "  -q <float>  final learning rate as a fraction of -l, cosine decay (default %g)\n"
        "  -c <float>  weight decay (default %g)\n"
        "  -p <float>  gradient norm clip, 0 = none (default %g)\n"
        "  -a <float>  AdamW beta2 (default %g; beta1 0.9)\n"
        "  -D <float>  dropout (default %g)\n"
        "  -v <int>    evaluate on the test images every v epochs, 0 = only at the end (default %d)\n"
        "  -m <int>    evaluation batches, 0 = all (default %d)\n"
        "  -s <int>    print a step line every s steps, 0 = none (default %d)\n"
        "  -r <int>    random seed (default %d)\n"
        "  -A <0|1>    augmentation; 0 switches off all of -f -d -R -z -w (default %d)\n"
        "  -f <0|1>    random horizontal flip (default %d)\n"
        "  -d <int>    random crop with this zero padding, 0 = off (default %d)\n"
        "  -R <float>  random rotation within +-R degrees, bilinear, 0 = off (default %g)\n"
        "  -z <float>  random erasing probability, 0 = off (default %g)\n"
        "  -w <float>  random perspective probability (distortion 0.5), 0 = off (default %g)\n"
        "%s"
        "  -h          this help\n",
        program, d->train_path, d->test_path, d->B, d->eval_B, d->epochs, d->lr, d->warmup, d->final_frac,
        d->weight_decay, d->grad_clip, d->beta2, d->dropout, d->eval_every, d->eval_batches, d->print_every, d->seed,
        d->augment, d->aug.flip, d->aug.crop_pad, d->aug.rotate_deg, d->aug.erase_p, d->aug.perspective_p, model_flags);
    exit(status);
}

// parses "-x value" pairs over the defaults in c; model_flags is the help text
// of the shape flags for this model, allowed the shape letters it takes
static void parse_vision_flags(int argc, char** argv, VisionTrainConfig* c, const char* model_flags, const char* allowed) {
    VisionTrainConfig defaults = *c;
    for (int i = 1; i < argc; i++) {
        const char* f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) vision_usage(argv[0], &defaults, model_flags, 0);
        if (f[0] != '-' || strlen(f) != 2) fail("unknown argument '%s' (see -h)", f);
        if (strchr("LCHFP", f[1]) && !strchr(allowed, f[1])) fail("unknown flag %s for this model (see -h)", f);
        if (i + 1 >= argc) fail("flag %s needs a value (see -h)", f);
        const char* v = argv[++i];
        switch (f[1]) {
            case 'i': c->train_path = v; break;
            case 'j': c->test_path = v; break;
            case 'e': c->init_path = v; break;
            case 'o': c->out_dir = v; break;
            case 'n': c->checkpoint_every = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'y': c->resume = parse_int_flag(f, v, 0, 1); break;
            case 'b': c->B = parse_int_flag(f, v, 1, 1 << 16); break;
            case 'B': c->eval_B = parse_int_flag(f, v, 1, 1 << 16); break;
            case 'E': c->epochs = parse_int_flag(f, v, 0, 1 << 20); break;
            case 'x': c->max_steps = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'l': c->lr = parse_float_flag(f, v, 0.0f, 10.0f); break;
            case 'u': c->warmup = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'q': c->final_frac = parse_float_flag(f, v, 0.0f, 1.0f); break;
            case 'c': c->weight_decay = parse_float_flag(f, v, 0.0f, 10.0f); break;
            case 'p': c->grad_clip = parse_float_flag(f, v, 0.0f, 1e6f); break;
            case 'a': c->beta2 = parse_float_flag(f, v, 0.0f, 0.99999f); break;
            case 'D': c->dropout = parse_float_flag(f, v, 0.0f, 0.95f); break;
            case 'v': c->eval_every = parse_int_flag(f, v, 0, 1 << 20); break;
            case 'm': c->eval_batches = parse_int_flag(f, v, 0, 1 << 30); break;
            case 's': c->print_every = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'r': c->seed = parse_int_flag(f, v, 0, 2147483647); break;
            case 'L': c->L = parse_int_flag(f, v, 1, 1024); break;
            case 'C': c->C = parse_int_flag(f, v, 1, 1 << 16); break;
            case 'H': c->H = parse_int_flag(f, v, 1, 1024); break;
            case 'F': c->F = parse_int_flag(f, v, 1, 1 << 20); break;
            case 'P': c->patch = parse_int_flag(f, v, 1, VISION_SIZE); break;
            case 'A': c->augment = parse_int_flag(f, v, 0, 1); break;
            case 'f': c->aug.flip = parse_int_flag(f, v, 0, 1); break;
            case 'd': c->aug.crop_pad = parse_int_flag(f, v, 0, VISION_SIZE); break;
            case 'R': c->aug.rotate_deg = parse_float_flag(f, v, 0.0f, 180.0f); break;
            case 'z': c->aug.erase_p = parse_float_flag(f, v, 0.0f, 1.0f); break;
            case 'w': c->aug.perspective_p = parse_float_flag(f, v, 0.0f, 1.0f); break;
            default: fail("unknown flag %s (see -h)", f);
        }
    }
    if ((c->checkpoint_every || c->resume) && !c->out_dir) fail("flags -n and -y need an output directory (-o)");
    if (VISION_SIZE % c->patch != 0) fail("flag -P: patch size %d does not divide the image size %d", c->patch, VISION_SIZE);
    if (!c->augment) {
        c->aug.flip = 0; c->aug.crop_pad = 0;
        c->aug.rotate_deg = c->aug.erase_p = c->aug.perspective_p = 0.0f;
    }
}

// loads the train and test images and checks that the model can take them
static void load_vision_data(const VisionTrainConfig* c, ImageData* train, ImageData* test) {
    image_data_load(train, c->train_path);
    image_data_load(test, c->test_path);
    for (const ImageData* d : {train, test}) {
        if (d->channels != VISION_CHANNELS || d->height != VISION_SIZE || d->width != VISION_SIZE)
            fail("%s: images are %d x %d x %d; the vision models take %d x %d x %d", d->path, d->channels, d->height,
                 d->width, VISION_CHANNELS, VISION_SIZE, VISION_SIZE);
    }
    if (train->classes != test->classes)
        fail("%s: %d classes, but %s has %d", c->test_path, test->classes, c->train_path, train->classes);
    if (train->count < c->B) fail("flag -b: batch %d is larger than the %d images of %s", c->B, train->count, c->train_path);
}

// ----------------------------------------------------------------------------
// batches

typedef struct {
    int max_B;
    unsigned char* pixels_dev;          // device (max_B, 3, 32, 32)
    std::vector<unsigned char> pixels;  // host staging
    std::vector<int> order;             // the current epoch's order
    int order_epoch;                    // which epoch `order` is (-1: none)
    AugmentBuffers aug_dev;
    AugmentParams aug;                  // the last drawn parameters
} VisionBatcher;

static void vision_batcher_init(VisionBatcher* vb, int max_B) {
    vb->max_B = max_B;
    long bytes = (long)max_B * VISION_CHANNELS * VISION_SIZE * VISION_SIZE;
    cudaCheck(cudaMalloc(&vb->pixels_dev, bytes));
    vb->pixels.resize(bytes);
    vb->order_epoch = -1;
    augment_buffers_alloc(&vb->aug_dev, max_B);
}

static void vision_batcher_free(VisionBatcher* vb) {
    cudaCheck(cudaFree(vb->pixels_dev));
    augment_buffers_free(&vb->aug_dev);
}

// uploads B gathered images and converts them to floats in img (device)
static void vision_upload(VisionBatcher* vb, const ImageData* d, const int* indices, int B, float* img, int* labels) {
    image_data_gather(d, indices, B, vb->pixels.data(), labels);
    long n = (long)B * d->image_bytes;
    cudaCheck(cudaMemcpy(vb->pixels_dev, vb->pixels.data(), n, cudaMemcpyHostToDevice));
    images_to_float(img, vb->pixels_dev, n);
}

// The training batch of a step (steps_per_epoch batches per epoch, in the
// epoch's shuffled order), augmented with parameters drawn from aug_rng.
// img and tmp are (B, 3, 32, 32) device buffers; returns the one that holds
// the batch. labels: B host ints.
static float* vision_train_batch(VisionBatcher* vb, const ImageData* d, const AugmentConfig* aug, uint64_t seed,
                                 int step, int steps_per_epoch, int B, Rng* aug_rng, float* img, float* tmp,
                                 int* labels) {
    int epoch = step / steps_per_epoch, i = step % steps_per_epoch;
    if (vb->order_epoch != epoch) {
        image_data_epoch_order(seed, epoch, d->count, &vb->order);
        vb->order_epoch = epoch;
    }
    vision_upload(vb, d, vb->order.data() + (long)i * B, B, img, labels);
    if (!augment_enabled(aug)) return img;
    augment_draw(aug, aug_rng, B, d->height, d->width, &vb->aug);
    return augment_apply(aug, &vb->aug, &vb->aug_dev, img, tmp, B, d->channels, d->height, d->width);
}

// evaluation batch: images first .. first+B-1 in file order
static void vision_eval_batch(VisionBatcher* vb, const ImageData* d, int first, int B, float* img, int* labels) {
    std::vector<int> indices(B);
    for (int b = 0; b < B; b++) indices[b] = first + b;
    vision_upload(vb, d, indices.data(), B, img, labels);
}

// the number of rows of logits (B, K) whose largest entry (first on ties) is the label
static int count_correct(const float* logits, const int* labels, int B, int K) {
    int correct = 0;
    for (int b = 0; b < B; b++) {
        const float* row = logits + (long)b * K;
        int best = 0;
        for (int k = 1; k < K; k++) if (row[k] > row[best]) best = k;
        correct += best == labels[b];
    }
    return correct;
}

// ----------------------------------------------------------------------------
// checkpoints

// resumes from the newest checkpoint in c->out_dir; returns the step to continue from
static int vision_resume(const VisionTrainConfig* c, int kind, const int* config_slots, const char* const* slot_names,
                         int tokens, float* params, float* m, float* v, Rng* aug_rng, uint64_t* seed) {
    std::vector<int> steps = checkpoint_steps(c->out_dir);
    if (steps.empty()) fail("flag -y: no checkpoint in %s", c->out_dir);
    CheckpointState s;
    s.kind = kind;
    memcpy(s.config, config_slots, sizeof(s.config));
    std::string path = checkpoint_path(c->out_dir, steps.back());
    checkpoint_load(path.c_str(), &s, slot_names, params, m, v);
    if (s.B != c->B) fail("%s: written with -b %d, resumed with -b %d", path.c_str(), s.B, c->B);
    if (s.T != tokens) fail("%s: written for %d patches per image, this model has %d", path.c_str(), s.T, tokens);
    aug_rng->state = s.train_rng;
    *seed = s.sample_rng;
    printf("resumed from %s at step %d\n", path.c_str(), s.step);
    return s.step;
}

// the fields of trainer.h's TrainConfig that its guards read (output directory, resume)
static TrainConfig trainer_view(const VisionTrainConfig* c) {
    TrainConfig t;
    memset(&t, 0, sizeof(t));
    t.out_dir = c->out_dir;
    t.resume = c->resume;
    t.B = c->B;
    return t;
}

// checks the parameters are finite (trainer.h's check_params_finite), then writes the checkpoint
static void vision_save_checkpoint(const VisionTrainConfig* c, int kind, const int* config_slots, int step, int tokens,
                                   const Rng* aug_rng, uint64_t seed, const float* params, const float* m, const float* v,
                                   float* norm_buffer) {
    TrainConfig t = trainer_view(c);
    check_params_finite(&t, step, params, config_slots[CONFIG_SLOTS - 1], norm_buffer);
    CheckpointState s = {kind, {0}, step, aug_rng->state, seed, c->B, tokens};
    memcpy(s.config, config_slots, sizeof(s.config));
    checkpoint_save(checkpoint_path(c->out_dir, step).c_str(), &s, params, m, v);
    checkpoint_prune(c->out_dir, 3);
}

// trainer.h's guard against a non-finite loss or gradient norm
static void vision_check_finite(const VisionTrainConfig* c, int step, float loss, float norm) {
    TrainConfig t = trainer_view(c);
    check_finite(&t, step, loss, norm);
}

// one evaluation line of log.jsonl, with the epoch (dev/plot.py draws test_acc against it):
//   {"step": 780, "epoch": 10, "test_loss": 0.41, "test_acc": 86.5, "elapsed_s": 130.2}
static void log_test(Logger* lg, int step, double epoch, float test_loss, float test_acc, double elapsed) {
    if (!lg->f) return;
    fprintf(lg->f, "{\"step\": %d, \"epoch\": %.6g, \"test_loss\": %.6f, \"test_acc\": %.4f, \"elapsed_s\": %.3f}\n",
            step, epoch, test_loss, test_acc, elapsed);
    fflush(lg->f);
}

// "epoch 3/20 (step 234): train loss 1.234567 | test loss 1.100000 | test acc 56.20% | 812 images/s | 1m12s";
// train loss and images/s are over the steps since the last evaluation ("-" when there were none)
static void print_epoch(int step, int steps_per_epoch, int epochs, float train_loss, float test_loss, float test_acc,
                        double images_per_s, double elapsed) {
    char t[32], loss[32], rate[32];
    format_duration(t, sizeof(t), elapsed);
    if (std::isfinite(train_loss)) snprintf(loss, sizeof(loss), "%f", train_loss); else snprintf(loss, sizeof(loss), "-");
    if (std::isfinite(images_per_s)) snprintf(rate, sizeof(rate), "%.0f", images_per_s); else snprintf(rate, sizeof(rate), "-");
    printf("epoch %d/%d (step %d): train loss %s | test loss %f | test acc %.2f%% | %s images/s | %s\n",
           (step + steps_per_epoch - 1) / steps_per_epoch, epochs, step, loss, test_loss, test_acc, rate, t);
    fflush(stdout);
}

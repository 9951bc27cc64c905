/*
The image classifiers' training loop, vision_run, and what only they need:
their flags, loading and checking the image files, training batches
(shuffled per epoch, augmented) and evaluation batches, evaluation (loss and
accuracy), and the epoch line. What they share with the language models
(schedule, guards, step line, checkpoints) is in trainer.h; the update
(clipping plus AdamW) in model.h. A model file (train_vit.cu,
train_mamba_vit.cu) defines its model and the two hooks vision_run calls.

Checkpoints are the language models' format (checkpoint.h); in a vision
checkpoint the data generator slot holds the augmentation generator and the
sampling generator slot holds the run's seed (the data order and the dropout
masks are functions of the seed and the step), T is the number of
patches, and the image shape slots hold the images' shape. So a resumed run
continues bit-identically (with the same flags).

The images may have any shape (channels, height, width: the images file's
header says it); train and test files must agree, the patch size must divide
height and width, and a model started from a file (-e) or resumed must have
been built for the same shape.
*/
#pragma once

#include <string>
#include <vector>
#include "cuda_common.h"
#include "augment.cuh"
#include "checkpoint.h"
#include "image_data.h"
#include "logger.h"
#include "model.h"
#include "trainer.h"
#include "vision.cuh"
#include "utils.h"


typedef struct {
    const char* train_path;  // -i
    const char* test_path;   // -j
    const char* features_path;  // -W: the final evaluation's pooled features go to this file (null: none)
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
    int seed_given;          // -r was given
    char shape_given[8];     // the shape flags given (letters of -L -C -H -F -P): with -e they must agree with the file
    int L, C, H, F, patch;   // model shape (-L -C -H -F -P; each model uses what it has)
    const char* mixer;       // -M (the Mamba-ViT's): "uni" one mixer per block, "bi" bidirectional blocks, "2"
                             // Mamba-2 mixers; null: not given (uni, or with -e the file's)
    int augment;             // -A: 0 switches every transform off
    AugmentConfig aug;       // -f -d -R -z -w
    int preset;              // -S: PRESET_SEED or PRESET_CPU (trainer.h)
} VisionTrainConfig;

// what a preset sets (the rest of the defaults are common to both)
typedef struct {
    int L, C;                // model shape
    int B, epochs, max_steps, warmup;  // max_steps -1: epochs
    float lr, grad_clip, dropout;
    int augment;
} VisionPreset;

// the vision trainers' defaults but for those a preset sets
static VisionTrainConfig default_vision_config() {
    VisionTrainConfig c;
    memset(&c, 0, sizeof(c));
    c.train_path = "data/cifar10_train.bin";
    c.test_path = "data/cifar10_test.bin";
    c.eval_B = 256;
    c.final_frac = 0.1f; c.weight_decay = 1e-5f; c.beta2 = 0.999f;
    c.eval_every = 1; c.print_every = 50; c.seed = 1337;
    c.patch = 4;
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
        "  -W <path>   write the pooled features (the head's input) of the final evaluation's test images,\n"
        "              in file order, to this file (doc/flags.md has its format; not under mpirun)\n"
        "  -s <int>    print a step line every s steps, 0 = none (default %d)\n"
        "  -r <int>    random seed (default %d)\n"
        "  -A <0|1>    augmentation; 0 switches off all of -f -d -R -z -w (default %d)\n"
        "  -f <0|1>    random horizontal flip (default %d)\n"
        "  -d <int>    random crop with this zero padding, 0 = off (default %d)\n"
        "  -R <float>  random rotation within +-R degrees, bilinear, 0 = off (default %g)\n"
        "  -z <float>  random erasing probability, 0 = off (default %g)\n"
        "  -w <float>  random perspective probability (distortion 0.5), 0 = off (default %g)\n"
        "  -S <name>   preset of the defaults: seed (the write-up's) or cpu (default %s)\n"
        "  -Z <0|1>    under mpirun: ZeRO-1, the AdamW state sharded over the ranks (default 0); -b is per rank,\n"
        "              -B the whole evaluation batch (a multiple of the ranks)\n"
        "%s"
        "  -h          this help\n",
        program, d->train_path, d->test_path, d->B, d->eval_B, d->epochs, d->lr, d->warmup, d->final_frac,
        d->weight_decay, d->grad_clip, d->beta2, d->dropout, d->eval_every, d->eval_batches, d->print_every, d->seed,
        d->augment, d->aug.flip, d->aug.crop_pad, d->aug.rotate_deg, d->aug.erase_p, d->aug.perspective_p,
        d->preset == PRESET_CPU ? "cpu" : "seed", model_flags);
    exit(status);
}

// Sets the preset's defaults (-S, else the backend's), then parses "-x
// value" pairs over them. presets: the model's seed and cpu presets;
// model_flags is the help text of the shape flags for this model, allowed
// the shape letters it takes.
// model_flag, when given, takes the model's own flags first (returns whether it took the letter).
static void parse_vision_flags(int argc, char** argv, VisionTrainConfig* c, const VisionPreset* presets,
                               const char* model_flags, const char* allowed,
                               bool (*model_flag)(char letter, const char* f, const char* v) = nullptr) {
    dist_init();  // the ranks, when mpirun started this process (distributed.h)
    c->preset = find_preset(argc, argv);
    const VisionPreset& p = presets[c->preset];
    c->L = p.L; c->C = p.C; c->B = p.B; c->epochs = p.epochs; c->max_steps = p.max_steps; c->warmup = p.warmup;
    c->lr = p.lr; c->grad_clip = p.grad_clip; c->dropout = p.dropout; c->augment = p.augment;
    VisionTrainConfig defaults = *c;
    bool steps_given = false, epochs_given = false;
    for (int i = 1; i < argc; i++) {
        const char* f = argv[i];
        const char* v = nullptr;
        char letter = next_flag(argc, argv, &i, "LCHFPM", allowed, &v);
        if (letter == 'h') vision_usage(argv[0], &defaults, model_flags, 0);
        if (letter == 'x') steps_given = true;
        if (letter == 'E') epochs_given = true;
        if (letter == 'P') note_shape_flag(c, 'P');
        if (model_flag && model_flag(letter, f, v)) continue;
        if (parse_shared_flag(c, letter, f, v)) continue;
        switch (letter) {
            case 'j': c->test_path = v; break;
            case 'W': c->features_path = v; break;
            case 'b': c->B = parse_int_flag(f, v, 1, 1 << 16); break;
            case 'B': c->eval_B = parse_int_flag(f, v, 1, 1 << 16); break;
            case 'E': c->epochs = parse_int_flag(f, v, 0, 1 << 20); break;
            case 'a': c->beta2 = parse_float_flag(f, v, 0.0f, 0.99999f); break;
            case 'D': c->dropout = parse_float_flag(f, v, 0.0f, 0.95f); break;
            case 'v': c->eval_every = parse_int_flag(f, v, 0, 1 << 20); break;
            case 'm': c->eval_batches = parse_int_flag(f, v, 0, 1 << 30); break;
            case 's': c->print_every = parse_int_flag(f, v, 0, 1 << 30); break;
            case 'P': c->patch = parse_int_flag(f, v, 1, 4096); break;
            case 'M':
                if (strcmp(v, "uni") && strcmp(v, "bi") && strcmp(v, "2"))
                    fail("flag -M: '%s' is not a kind of block (uni, bi or 2)", v);
                c->mixer = v;
                break;
            case 'A': c->augment = parse_int_flag(f, v, 0, 1); break;
            case 'f': c->aug.flip = parse_int_flag(f, v, 0, 1); break;
            case 'd': c->aug.crop_pad = parse_int_flag(f, v, 0, 4096); break;
            case 'R': c->aug.rotate_deg = parse_float_flag(f, v, 0.0f, 180.0f); break;
            case 'z': c->aug.erase_p = parse_float_flag(f, v, 0.0f, 1.0f); break;
            case 'w': c->aug.perspective_p = parse_float_flag(f, v, 0.0f, 1.0f); break;
            case 'S': break;  // find_preset
            case 'Z': dist.zero = parse_int_flag(f, v, 0, 1); break;
            default: fail("unknown flag %s (see -h)", f);
        }
    }
    if ((c->checkpoint_every || c->resume) && !c->out_dir) fail("flags -n and -y need an output directory (-o)");
    // a run's length is -x steps or -E epochs, whichever is given (a preset may set either)
    if (steps_given && epochs_given) fail("flags -x and -E: give one, the steps (-x) or the epochs (-E)");
    if (epochs_given) c->max_steps = -1;
    if (!c->augment) {
        c->aug.flip = 0; c->aug.crop_pad = 0;
        c->aug.rotate_deg = c->aug.erase_p = c->aug.perspective_p = 0.0f;
    }
}

static ImageShape image_shape_of(const ImageData* d) {
    ImageShape s = {d->channels, d->height, d->width};
    return s;
}

// Loads the train and test images and checks that they agree (shape,
// classes), that the batch fits the train set and that the crop padding is
// smaller than the images; the patch size is checked when the model's shape
// is known (check_patch_size, check_model_images).
static void load_vision_data(const VisionTrainConfig* c, ImageData* train, ImageData* test) {
    const char* make_cifar = "`make cifar10 CIFAR10_DIR=<the official files>` (or `make cifar-synthetic` for a "
                             "synthetic set, then -i data/cifar10_synthetic_train.bin -j data/cifar10_synthetic_test.bin)";
    check_data_file(c->train_path, "data/cifar10_train.bin", make_cifar);
    check_data_file(c->test_path, "data/cifar10_test.bin", make_cifar);
    image_data_load(train, c->train_path);
    image_data_load(test, c->test_path);
    if (!image_shape_equal(image_shape_of(train), image_shape_of(test)))
        fail("%s: images are %d x %d x %d, but %s has %d x %d x %d", c->test_path, test->channels, test->height,
             test->width, c->train_path, train->channels, train->height, train->width);
    if (train->classes != test->classes)
        fail("%s: %d classes, but %s has %d", c->test_path, test->classes, c->train_path, train->classes);
    if (train->count < c->B) fail("flag -b: batch %d is larger than the %d images of %s", c->B, train->count, c->train_path);
    if (c->aug.crop_pad > 0 && (c->aug.crop_pad >= train->height || c->aug.crop_pad >= train->width))
        fail("flag -d: crop padding %d is not smaller than the %d x %d images of %s", c->aug.crop_pad, train->height,
             train->width, c->train_path);
}

// The patch size (of the flag `what`, or of a model file) must divide the
// images' height and width: one line naming both and the sizes that would.
static void check_patch_size(const char* what, int patch, const ImageData* d) {
    if (patch >= 1 && d->height % patch == 0 && d->width % patch == 0) return;
    std::string fits;
    for (int p = 1; p <= d->height && p <= d->width; p++)
        if (d->height % p == 0 && d->width % p == 0) fits += (fits.empty() ? "" : ", ") + std::to_string(p);
    fail("%s: patch size %d does not divide the %d x %d images of %s (patch sizes that do: %s)", what, patch,
         d->height, d->width, d->path, fits.c_str());
}

// a model file of -e must fit the images: built for their shape, its patch size divides them, its classes are theirs
static void check_model_images(const VisionTrainConfig* c, int patch, int classes, ImageShape shape,
                               const ImageData* train) {
    if (!image_shape_equal(shape, image_shape_of(train)))
        fail("%s: a model for images of %d x %d x %d, but %s has %d x %d x %d", c->init_path, shape.channels,
             shape.height, shape.width, c->train_path, train->channels, train->height, train->width);
    check_shape_flag_int(c, 'P', c->patch, "patch_size", patch);
    check_patch_size(c->init_path, patch, train);
    if (classes != train->classes) fail("%s: a model for %d classes, but %s has %d", c->init_path, classes, c->train_path, train->classes);
}

// ----------------------------------------------------------------------------
// batches

typedef struct {
    int max_B;
    float* images;                      // device (max_B, Cc, H, W), floats in [0, 1]
    float* images_tmp;                  // device, augmentation's second buffer
    unsigned char* pixels_dev;          // device (max_B, Cc, H, W)
    std::vector<unsigned char> pixels;  // host staging
    std::vector<int> order;             // the current epoch's order
    int order_epoch;                    // which epoch `order` is (-1: none)
    AugmentBuffers aug_dev;
    AugmentParams aug;                  // the last drawn parameters
} VisionBatcher;

// sized for max_B images of shape s
static void vision_batcher_init(VisionBatcher* vb, int max_B, ImageShape s) {
    vb->max_B = max_B;
    long bytes = max_B * image_values(s);
    cudaCheck(cudaMalloc(&vb->images, bytes * sizeof(float)));
    cudaCheck(cudaMalloc(&vb->images_tmp, bytes * sizeof(float)));
    cudaCheck(cudaMalloc(&vb->pixels_dev, bytes));
    vb->pixels.resize(bytes);
    vb->order_epoch = -1;
    augment_buffers_alloc(&vb->aug_dev, max_B);
}

static void vision_batcher_free(VisionBatcher* vb) {
    cudaCheck(cudaFree(vb->images));
    cudaCheck(cudaFree(vb->images_tmp));
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
// Returns the device buffer (B, Cc, H, W) that holds the batch. labels: B host ints.
// Over several ranks the step's batch is the global one (B per rank, its
// augmentation drawn for all of it), of which this rank takes its B rows.
static float* vision_train_batch(VisionBatcher* vb, const ImageData* d, const AugmentConfig* aug, uint64_t seed,
                                 int step, int steps_per_epoch, int B, Rng* aug_rng, int* labels) {
    float *img = vb->images, *tmp = vb->images_tmp;
    int epoch = step / steps_per_epoch, i = step % steps_per_epoch, G = B * dist.world;
    long mine = dist_rows(B);
    if (vb->order_epoch != epoch) {
        image_data_epoch_order(seed, epoch, d->count, &vb->order);
        vb->order_epoch = epoch;
    }
    vision_upload(vb, d, vb->order.data() + (long)i * G + mine, B, img, labels);
    if (!augment_enabled(aug)) return img;
    augment_draw(aug, aug_rng, G, d->height, d->width, &vb->aug);
    if (dist.world > 1) augment_params_rows(&vb->aug, mine, B);
    return augment_apply(aug, &vb->aug, &vb->aug_dev, img, tmp, B, d->channels, d->height, d->width);
}

// evaluation batch: images first .. first+B-1 in file order, into vb->images
static void vision_eval_batch(VisionBatcher* vb, const ImageData* d, int first, int B, int* labels) {
    std::vector<int> indices(B);
    for (int b = 0; b < B; b++) indices[b] = first + b;
    vision_upload(vb, d, indices.data(), B, vb->images, labels);
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

// one evaluation line of log.jsonl, with the epoch (dev/plot.py draws test_acc against it):
//   {"step": 780, "epoch": 10, "test_loss": 0.41, "test_acc": 86.5, "elapsed_s": 130.2}
static void log_test(Logger* lg, int step, double epoch, float test_loss, float test_acc, double elapsed) {
    logger_write(lg, "{\"step\": %d, \"epoch\": %.6g, \"test_loss\": %s, \"test_acc\": %s, \"elapsed_s\": %.3f}\n",
                 step, epoch, json_number("%.6f", test_loss).c_str(), json_number("%.4f", test_acc).c_str(), elapsed);
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

// -y: loads the newest checkpoint of -o into the model and checks it fits the
// run (the global batch G, the patches, the images, the seed, the data, the
// steps); sets the augmentation generator and the seed as the run had them,
// returns the step to go on from
static int vision_resume(ModelBuffers* m, const VisionTrainConfig* vc, const ImageData* train, int G, int max_steps,
                         Rng* aug_rng, uint64_t* seed) {
    int T = m->seq_len;
    std::string path;
    CheckpointState s = load_newest_checkpoint(m, vc->out_dir, &path);
    if (s.B != G && dist.world == 1) fail("%s: written with -b %d, resumed with -b %d", path.c_str(), s.B, vc->B);
    if (s.B != G)
        fail("%s: written with a global batch of %d, resumed with -b %d on %d ranks (%d)", path.c_str(), s.B, vc->B,
             dist.world, G);
    if (s.T != T) fail("%s: written for %d patches per image, this model has %d", path.c_str(), s.T, T);
    ImageShape written = image_shape_from_slots(path.c_str(), s.image_shape), shape = image_shape_of(train);
    if (!image_shape_equal(written, shape))
        fail("%s: written for images of %d x %d x %d, but %s has %d x %d x %d", path.c_str(), written.channels,
             written.height, written.width, vc->train_path, shape.channels, shape.height, shape.width);
    check_resume(path.c_str(), &s, (int)s.sample_rng, vc->seed_given, vc->seed, train->count, vc->train_path,
                 "images", max_steps, vc->max_steps >= 0 ? "-x" : "-E");
    aug_rng->state = s.train_rng;
    *seed = s.sample_rng;
    return s.step;
}

// ----------------------------------------------------------------------------
// Features (-W): the pooled features (B, C) that the head reads, of every
// image the final evaluation runs (all test images, or the first -m batches),
// in file order, as a features file:
//   header: 256 little-endian int32: [0] MAGIC_FEATURES, [1] FEATURES_VERSION,
//           [2] N rows (images), [3] D columns (the model's channels C), the rest 0
//   then N * D float32, row by row (image i's features at float i * D)
// written atomically (PATH.tmp, then renamed over PATH). dev/frechet.py reads
// two of them and prints the Frechet distance between them.

#define MAGIC_FEATURES 20261207
#define FEATURES_VERSION 1

// -W, before any work: check_output_file's checks (a features file, outside
// -o); one process only.
static void check_features_path(const VisionTrainConfig* c) {
    if (!c->features_path) return;
    if (dist.world > 1) fail("flag -W: not under mpirun (write the features from an evaluation in one process)");
    check_output_file("-W", c->features_path, MAGIC_FEATURES, "a features file", c->out_dir);
}

// features: N rows of D floats (host)
static void write_features(const char* path, const std::vector<float>& features, int D) {
    int header[HEADER_INTS] = {0};
    long N = (long)features.size() / D;
    header[0] = MAGIC_FEATURES; header[1] = FEATURES_VERSION; header[2] = (int)N; header[3] = D;
    std::string tmp; FILE* f;
    write_atomically_begin(path, &tmp, &f);
    fwrite_or_fail(header, HEADER_BYTES, f, tmp.c_str());
    fwrite_or_fail(features.data(), features.size() * sizeof(float), f, tmp.c_str());
    write_atomically_end(path, tmp, f);
    printf("features: %ld test images x %d (pooled) written to %s\n", N, D, path);
}

// ----------------------------------------------------------------------------
// What a vision training loop keeps from step to step (vision_run's, and
// train_diffusion's): the batches, the step runner, the log, the times.

typedef struct {
    VisionBatcher vb;
    StepRunner runner;
    Logger logger;
    std::vector<int> labels;   // the step's labels (host)
    const float* step_images;  // where the training batches are (the captured step reads them there)
    double run_start, train_seconds;
} VisionLoop;

static void vision_loop_begin(VisionLoop* L, ModelBuffers* m, const char* out_dir, int start_step, int B,
                              const ImageData* train) {
    logger_open(&L->logger, out_dir, start_step);
    vision_batcher_init(&L->vb, m->batch_size, image_shape_of(train));
    step_runner_init(&L->runner, m);
    L->labels.assign(B, 0);
    L->step_images = nullptr;
    L->run_start = host_clock();
    L->train_seconds = 0.0;
}

// One training step at `step` (0-based): the batch (vision_train_batch:
// shuffled per epoch, augmented on the device) and its labels, then
// stage(labels), which puts the model's other inputs on the device
// (outside the captured step), then forward_backward(images) and the update
// (step_run); a step line every -s steps and a log line. Returns the step's
// seconds; m->mean_loss holds its loss.
template <typename Stage, typename ForwardBackward>
static double vision_loop_step(VisionLoop* L, ModelBuffers* m, const VisionTrainConfig* vc, const AdamWConfig* opt,
                               const ImageData* train, uint64_t seed, int step, int start_step, int max_steps,
                               Rng* aug_rng, const char* out_dir, Stage stage, ForwardBackward forward_backward) {
    NVTX_RANGE("step");
    int G = vc->B * dist.world, steps_per_epoch = train->count / G;
    double t0 = host_clock();
    step_profile_begin();
    const float* images = vision_train_batch(&L->vb, train, &vc->aug, seed, step, steps_per_epoch, vc->B, aug_rng,
                                             L->labels.data());
    if (L->step_images && images != L->step_images) fail("the training batch moved between buffers");
    L->step_images = images;  // the same buffer every step: which one follows from the augmentation's settings
    stage(L->labels.data());
    m->in_train_step = 1;  // the inputs are on the device; no round trip to the host until step_run's one copy
    float lr = learning_rate(opt->lr, step, vc->warmup, max_steps, vc->final_frac);
    float norm = step_run(&L->runner, m, opt, lr, step + 1, [&]() { forward_backward(images); });
    m->in_train_step = 0;
    check_finite(out_dir, step + 1, m->mean_loss, norm);
    step_profile_end(step + 1);
    double seconds = host_clock() - t0;
    L->train_seconds += seconds;
    if (vc->print_every > 0 && (step + 1) % vc->print_every == 0)
        print_step(step + 1, start_step, max_steps, m->mean_loss, lr, norm, seconds, G, "images/s", L->train_seconds);
    log_train(&L->logger, step + 1, m->mean_loss, lr, norm, "images_per_s", G / seconds, host_clock() - L->run_start);
    return seconds;
}

// after the last step: the final model file in out_dir (and the older checkpoints pruned)
static void vision_loop_end(VisionLoop* L, ModelBuffers* m, const char* out_dir, int max_steps) {
    step_runner_free(&L->runner, m);
    logger_close(&L->logger);
    if (out_dir) {
        save_model_file(m, out_dir, max_steps);
        checkpoint_prune(out_dir, 3, std::vector<int>());  // the run ended well: the ones it found may go too
    }
    vision_batcher_free(&L->vb);
}

// ----------------------------------------------------------------------------
// The image classifiers' evaluation and training loop. A model type M has
// the fields config.num_classes, config.channels, acts.logits, acts.pooled
// (B, C), dropout (TrainDropout, llmc/model.h) and buf (ModelBuffers, its
// seq_len the number of patches, its image_shape the images'), and provides
// the hooks
//   void vision_forward(M*, const float* images, const int* labels, int B, int train_step)
//        images (B, Cc, H, W) on the device, labels host (may be null);
//        train_step >= 0: a training step (dropout on, masks keyed by the step), -1: evaluation
//   void vision_backward(M*, int B)
// The forward sets buf.mean_loss when given labels.

// mean loss and accuracy (percent) over the test images (the first
// max_batches batches of eval_B when max_batches > 0); over several ranks
// each rank runs its eval_B / ranks rows of every batch and the sums are
// summed over the ranks. With features (one rank only, check_features_path):
// the pooled features of the n images evaluated, (n, C) in file order.
template <typename M> static void vision_evaluate(M* model, VisionBatcher* vb, const ImageData* test, int eval_B,
                                                  int max_batches, float* loss, float* acc,
                                                  std::vector<float>* features = nullptr) {
    NVTX_RANGE("evaluate");
    int n = test->count, K = model->config.num_classes, per_rank = eval_B / dist.world, C = model->config.channels;
    if (max_batches > 0 && (long)max_batches * eval_B < n) n = max_batches * eval_B;
    if (features) features->assign((long)n * C, 0.0f);
    std::vector<int> labels(per_rank);
    std::vector<float> logits((long)per_rank * K);
    double sums[2] = {0.0, 0.0};  // the loss sum, the right answers
    for (int first = 0; first < n; first += eval_B) {
        int rows = n - first < eval_B ? n - first : eval_B;
        int mine = dist.rank * per_rank, B = std::max(0, std::min(per_rank, rows - mine));
        if (B == 0) continue;
        vision_eval_batch(vb, test, first + mine, B, labels.data());
        vision_forward(model, vb->images, labels.data(), B, -1);
        cudaCheck(cudaMemcpy(logits.data(), model->acts.logits, (long)B * K * sizeof(float), cudaMemcpyDeviceToHost));
        if (features)
            cudaCheck(cudaMemcpy(features->data() + (long)(first + mine) * C, model->acts.pooled,
                                 (long)B * C * sizeof(float), cudaMemcpyDeviceToHost));
        sums[1] += count_correct(logits.data(), labels.data(), B, K);
        sums[0] += (double)model->buf.mean_loss * B;
    }
    dist_sum_host(sums, 2);
    *loss = (float)(sums[0] / n);
    *acc = (float)(100.0 * sums[1] / n);
}

// After the model is built, initialized and its activations allocated for
// max(-b, -B) images: resumes (-y), then trains: an evaluation every -v
// epochs and at the end, checkpoints every -n (and at the end), a step line
// every -s steps and a log line per step, the final model in -o. Returns the
// exit status.
//
// Over several ranks (distributed.h, under mpirun) -b is each rank's batch
// and -B the whole evaluation batch (split evenly over the ranks): every
// rank takes its rows of the global batch (vision_train_batch), the loss and
// the gradients are the global batch's (model.h), the evaluation sums are
// summed over the ranks, and only rank 0 prints, logs and writes files. A
// checkpoint records the global batch. Each rank's dropout masks are its
// own (the run's seed mixed with the rank).
template <typename M> static int vision_run(M* model, VisionTrainConfig* vc, const ImageData* train,
                                            const ImageData* test) {
    ModelBuffers* m = &model->buf;
    int T = m->seq_len, G = vc->B * dist.world;  // G: the global batch
    AdamWConfig opt = {vc->lr, 0.9f, vc->beta2, 1e-8f, vc->weight_decay, vc->grad_clip};
    if (vc->eval_B % dist.world)
        fail("flag -B: the evaluation batch %d does not split evenly over %d ranks", vc->eval_B, dist.world);
    check_features_path(vc);
    if (train->count < G)
        fail("flag -b: the global batch %d (%d ranks x -b %d) is larger than the %d images of %s", G, dist.world, vc->B,
             train->count, vc->train_path);
    int steps_per_epoch = train->count / G;  // the last partial batch of an epoch is dropped
    int max_steps = vc->max_steps >= 0 ? vc->max_steps : vc->epochs * steps_per_epoch;
    int epochs = CEIL_DIV(max_steps, steps_per_epoch);
    Rng aug_rng;
    rng_seed(&aug_rng, vc->seed);
    uint64_t seed = vc->seed;
    const char* out_dir = open_output_dir(vc->out_dir, vc->resume, max_steps == 0);  // null: the run writes nowhere
    std::vector<int> found_steps = out_dir ? checkpoint_steps(out_dir) : std::vector<int>();
    int start_step = vc->resume ? vision_resume(m, vc, train, G, max_steps, &aug_rng, &seed) : 0;
    check_ranks_alike(m, {vc->B, vc->eval_B, T, max_steps, start_step, dist.zero, train->count, test->count,
                          (long)aug_rng.state, (long)seed});
    model->dropout.rate = vc->dropout;
    model->dropout.seed = seed + (uint64_t)dist.rank * 0x9E3779B97F4A7C15ull;  // rank 0's (a single run's): the seed
    printf("batch %d (eval %d) | %d epochs of %d steps (%d steps) | lr %g warmup %d final x%g | betas 0.9 %g | wd %g | "
           "clip %g | dropout %g\n", vc->B, vc->eval_B, epochs, steps_per_epoch, max_steps, opt.lr, vc->warmup,
           vc->final_frac, opt.beta2, opt.weight_decay, opt.grad_clip, vc->dropout);
    if (dist.on)
        printf("data parallel: %d ranks x batch %d = global batch %d (eval %d per rank) | %s\n", dist.world, vc->B, G,
               vc->eval_B / dist.world, m->zero ? "ZeRO-1: AdamW state sharded" : "gradients all-reduced");
    printf("augment: flip %d | crop pad %d | rotate %g deg | erase p %g | perspective p %g | train %d images, test %d\n",
           vc->aug.flip, vc->aug.crop_pad, vc->aug.rotate_deg, vc->aug.erase_p, vc->aug.perspective_p, train->count,
           test->count);

    VisionLoop L;
    vision_loop_begin(&L, m, out_dir, start_step, vc->B, train);
    double window_seconds = 0.0, window_loss = 0.0;
    int window_steps = 0;
    float test_loss = NAN, test_acc = NAN;
    for (int step = start_step; step <= max_steps; step++) {
        bool last = step == max_steps;
        int eval_interval = vc->eval_every * steps_per_epoch;
        if ((eval_interval > 0 && step > 0 && step % eval_interval == 0) || last) {
            std::vector<float> features;  // the final evaluation's, with -W
            bool keep = last && vc->features_path;
            vision_evaluate(model, &L.vb, test, vc->eval_B, vc->eval_batches, &test_loss, &test_acc,
                            keep ? &features : nullptr);
            print_epoch(step, steps_per_epoch, epochs, window_steps ? (float)(window_loss / window_steps) : NAN,
                        test_loss, test_acc, window_steps ? window_steps * G / window_seconds : NAN,
                        host_clock() - L.run_start);
            if (keep) write_features(vc->features_path, features, model->config.channels);
            log_test(&L.logger, step, (double)step / steps_per_epoch, test_loss, test_acc, host_clock() - L.run_start);
            window_seconds = window_loss = 0.0;
            window_steps = 0;
        }
        if (vc->out_dir && step > start_step && ((vc->checkpoint_every > 0 && step % vc->checkpoint_every == 0) || last))
            save_checkpoint(m, out_dir, step, aug_rng.state, seed, G, T, (int)seed, train->count,
                            found_steps);  // (every rank: out_dir is rank 0's)
        if (last) break;
        window_seconds += vision_loop_step(
            &L, m, vc, &opt, train, seed, step, start_step, max_steps, &aug_rng, out_dir,
            [&](const int* labels) { model_upload_batch(m, nullptr, 0, labels, vc->B); },
            [&](const float* images) {
                vision_forward(model, images, L.labels.data(), vc->B, step);
                vision_backward(model, vc->B);
            });
        window_loss += m->mean_loss;
        window_steps++;
    }
    vision_loop_end(&L, m, out_dir, max_steps);
    printf("final test acc %.2f%% | test loss %f | %.1f s\n", test_acc, test_loss, host_clock() - L.run_start);
    return 0;
}

/*
Model files and checkpoints.

Model file (magic 20261103): header[2] = model kind, header[3..9] = the
model's config (each trainer defines its seven slots; the last is the number
of parameters P), header[24..26] = the image shape of a vision model
(channels, height, width; 0 0 0 for the language models, and in vision
files written before the slots existed, which means 3 x 32 x 32), then P
float32 parameters in flat-buffer order.

Checkpoint (magic 20261105): the same kind and config slots, then
header[10] = completed steps, header[11..12] = training-data generator state,
header[13..14] = sampling generator state (each uint64 as two int32, low
first), header[15] = batch size B, header[16] = sequence length T,
header[24..26] the image shape as in a model file; then P parameters, P
AdamW first moments, P second moments (float32). Enough to resume
bit-identically.

Version 2 of both (MODEL_FORMAT_VERSION, what the trainers write) adds, in
slots version 1 left 0:
  header[17], header[18]  checkpoints: the run's seed (-r) and the size of its
                          training data (tokens, or images), which a resume
                          must match
  header[20]              CRC-32C (utils.h) of everything after the header
  header[21]              CRC-32C of the header's 1024 bytes with header[21] 0
Every other slot is 0. A reader checks the header's checksum, then every
slot against the ranges the trainers can run (model_config_check) and the
file's size, before it reads the rest; then the checksum of the rest and
that every value is finite. Version 1 files (written before the checksums)
load with a one-line warning that they could not be verified.

Model files and checkpoints are written atomically: to PATH.tmp, flushed
and synced, then renamed over PATH, so a killed process never leaves a file
that loads wrong.
*/
#pragma once

#include <algorithm>
#include <dirent.h>
#include <unistd.h>
#include <string>
#include <vector>
#include "cuda_common.h"
#include "selective_scan.cuh"  // the scan's d_state limits, which a Mamba's config slot must meet
#include "ssd.cuh"  // Mamba-2's d_state and headdim limits
#include "utils.h"

#define CONFIG_SLOTS 7
#define SLOT_SEED 17        // checkpoints, version 2: the run's seed
#define SLOT_DATA_SIZE 18   // checkpoints, version 2: the size of the training data
#define SLOT_BODY_CRC 20    // version 2: CRC-32C of everything after the header
#define SLOT_HEADER_CRC 21  // version 2: CRC-32C of the header with this slot 0

typedef struct {
    int kind;
    int config[CONFIG_SLOTS];  // model-specific; config[6] = P
    int step;
    uint64_t train_rng, sample_rng;
    int B, T;
    int image_shape[IMAGE_SHAPE_SLOTS];  // a vision model's (channels, height, width); 0 0 0 otherwise
    int seed;                  // the run's seed (-r); -1 in a version 1 file
    int data_size;             // the training data's tokens or images; 0 in a version 1 file
    int version;               // the file's format version
} CheckpointState;

static void header_put_u64(int* h, int slot, uint64_t v) { h[slot] = (int)(uint32_t)v; h[slot + 1] = (int)(uint32_t)(v >> 32); }
static uint64_t header_get_u64(const int* h, int slot) { return (uint64_t)(uint32_t)h[slot] | (uint64_t)(uint32_t)h[slot + 1] << 32; }

// a model kind (MODEL_*, utils.h) and the program that trains it, for messages
static const char* model_kind_name(int kind) {
    switch (kind) {
        case MODEL_GPT: return "GPT (train_gpt)";
        case MODEL_MAMBA: return "Mamba LM (train_mamba)";
        case MODEL_MAMBA_LTI: return "time-invariant Mamba LM (train_mamba -M lti)";
        case MODEL_MAMBA2: return "Mamba-2 LM (train_mamba -M 2)";
        case MODEL_VIT: return "ViT (train_vit)";
        case MODEL_MAMBA_VIT: return "Mamba-ViT (train_mamba_vit)";
        case MODEL_MAMBA_VIT_BI: return "bidirectional Mamba-ViT (train_mamba_vit -M bi)";
        case MODEL_MAMBA_VIT2: return "Mamba-2 ViT (train_mamba_vit -M 2)";
        case MODEL_DIFFUSION_VIT: return "ViT diffusion model (train_diffusion -M vit)";
        case MODEL_DIFFUSION_MAMBA: return "Mamba diffusion model (train_diffusion -M mamba)";
        case MODEL_DIFFUSION_BIMAMBA: return "bidirectional Mamba diffusion model (train_diffusion -M bimamba)";
        case MODEL_DIFFUSION_MAMBA2: return "Mamba-2 diffusion model (train_diffusion -M mamba2)";
        case MODEL_HYBRID: return "hybrid LM (train_hybrid)";
        case MODEL_GPT_PLUS: return "Transformer++ (train_gpt_plus)";
        default: return "model of no known kind";
    }
}

static bool is_vision_kind(int kind) {
    return kind == MODEL_VIT || kind == MODEL_MAMBA_VIT || kind == MODEL_MAMBA_VIT_BI || kind == MODEL_MAMBA_VIT2 ||
           (kind >= MODEL_DIFFUSION_VIT && kind <= MODEL_DIFFUSION_MAMBA2);
}

// ----------------------------------------------------------------------------
// the config slots: what each trainer can run

// The selective scan's d_state limits (selective_scan.cuh's
// scan_check_limits), checked where the file is named
static void check_d_state(const char* path, int N) {
    check_slot(path, "d_state", N, 1, MAX_DSTATE);
    if (kernel_choices.scan_chunked && N != SCAN_DSTATE)
        fail("%s: d_state %d; this build's chunked scan is compiled for d_state %d", path, N, SCAN_DSTATE);
}

// Checks the seven config slots of a model file or checkpoint of a known
// kind against the ranges its trainer can run (the flags' ranges, heads that
// divide the width, the scan's d_state, the dt rank the width implies, a
// positive parameter count). The message names the file and the slot.
static void model_config_check(const char* path, int kind, const int* s) {
    const long max_vocab = 65537;  // 65536 token ids, and the start token of -I
    switch (kind) {
        case MODEL_GPT:
        case MODEL_GPT_PLUS:  // max_seq_len, vocab_size, num_layers, num_heads, channels, ffn
            check_slot(path, "max_seq_len", s[0], 1, 1 << 16);
            check_slot(path, "vocab_size", s[1], 1, max_vocab);
            check_slot(path, "num_layers", s[2], 1, 1024);
            check_slot(path, "num_heads", s[3], 1, 1024);
            check_slot(path, "channels", s[4], 1, 1 << 16);
            check_slot(path, "ffn", s[5], 1, 1 << 20);
            if (s[4] % s[3]) fail("%s: channels %d are not divisible by num_heads %d", path, s[4], s[3]);
            if (kind == MODEL_GPT_PLUS && (s[4] / s[3]) % 2)
                fail("%s: head size %d (channels %d / num_heads %d) is odd; rotary embeddings need an even one", path,
                     s[4] / s[3], s[4], s[3]);
            break;
        case MODEL_MAMBA:  // vocab_size, num_layers, channels, inner, d_state, dt_rank (0: none, the LTI ablation)
        case MODEL_MAMBA_LTI:
            check_slot(path, "vocab_size", s[0], 1, max_vocab);
            check_slot(path, "num_layers", s[1], 1, 1024);
            check_slot(path, "channels", s[2], 1, 1 << 16);
            check_slot(path, "inner", s[3], 1, 1 << 17);
            check_slot(path, "d_state", s[4], 1, MAX_DSTATE);  // the LTI scan takes any; the selective one, check_d_state
            if (kind == MODEL_MAMBA_LTI) {
                if (s[5] != 0) fail("%s: dt_rank %d; the time-invariant model has no dt_proj (0)", path, s[5]);
                break;
            }
            check_d_state(path, s[4]);
            if (s[5] != CEIL_DIV(s[2], 16))
                fail("%s: dt_rank %d; channels %d make dt rank %d (ceil(C/16))", path, s[5], s[2], CEIL_DIV(s[2], 16));
            break;
        case MODEL_MAMBA2:  // vocab_size, num_layers, channels, inner, d_state, headdim
            check_slot(path, "vocab_size", s[0], 1, max_vocab);
            check_slot(path, "num_layers", s[1], 1, 1024);
            check_slot(path, "channels", s[2], 1, 1 << 16);
            check_slot(path, "inner", s[3], 1, 1 << 17);
            check_slot(path, "d_state", s[4], 1, SSD_MAX_N);
            check_slot(path, "headdim", s[5], 1, SSD_MAX_P);
            if (s[3] != 2 * s[2]) fail("%s: inner %d is not 2 x channels %d", path, s[3], s[2]);
            if (s[3] % s[5]) fail("%s: inner %d is not divisible by headdim %d", path, s[3], s[5]);
            break;
        case MODEL_VIT:  // patch_size, num_classes, num_layers, num_heads, channels, ffn
        case MODEL_DIFFUSION_VIT:
            check_slot(path, "patch_size", s[0], 1, 4096);
            check_slot(path, "num_classes", s[1], 1, 256);
            check_slot(path, "num_layers", s[2], 1, 1024);
            check_slot(path, "num_heads", s[3], 1, 1024);
            check_slot(path, "channels", s[4], 1, 1 << 16);
            check_slot(path, "ffn", s[5], 1, 1 << 20);
            if (s[4] % s[3]) fail("%s: channels %d are not divisible by num_heads %d", path, s[4], s[3]);
            break;
        case MODEL_MAMBA_VIT:
        case MODEL_MAMBA_VIT_BI:  // patch_size, num_classes, num_layers, channels, inner, d_state
        case MODEL_DIFFUSION_MAMBA:
        case MODEL_DIFFUSION_BIMAMBA:
            check_slot(path, "patch_size", s[0], 1, 4096);
            check_slot(path, "num_classes", s[1], 1, 256);
            check_slot(path, "num_layers", s[2], 1, 1024);
            check_slot(path, "channels", s[3], 1, 1 << 16);
            check_slot(path, "inner", s[4], 1, 1 << 17);
            check_d_state(path, s[5]);
            break;
        case MODEL_MAMBA_VIT2:  // patch_size, num_classes, num_layers, channels, d_state, headdim (inner 2 x channels)
        case MODEL_DIFFUSION_MAMBA2:
            check_slot(path, "patch_size", s[0], 1, 4096);
            check_slot(path, "num_classes", s[1], 1, 256);
            check_slot(path, "num_layers", s[2], 1, 1024);
            check_slot(path, "channels", s[3], 1, 1 << 16);
            check_slot(path, "d_state", s[4], 1, SSD_MAX_N);
            check_slot(path, "headdim", s[5], 1, SSD_MAX_P);
            if (2 * s[3] % s[5]) fail("%s: inner width %d (2 x channels) is not divisible by headdim %d", path, 2 * s[3], s[5]);
            break;
        case MODEL_HYBRID:  // max_seq_len, vocab_size, channels, num_heads, ffn, pattern (decoded by train_hybrid)
            check_slot(path, "max_seq_len", s[0], 1, 1 << 16);
            check_slot(path, "vocab_size", s[1], 1, max_vocab);
            check_slot(path, "channels", s[2], 1, 1 << 16);
            check_slot(path, "num_heads", s[3], 1, 1024);
            check_slot(path, "ffn", s[4], 1, 1 << 20);
            // at most 15 base-4 digits; with Mamba-2 (S) layers, bit 30 and at most 12 base-5 digits (5^12 - 1)
            check_slot(path, "pattern", s[5], 1, (1L << 30) + 244140624L);
            break;
        default:
            fail("%s: model kind %d is none of 1..14", path, kind);
    }
    check_slot(path, "num_params", s[CONFIG_SLOTS - 1], 1, 2147483647L);
}

// a file (model file or checkpoint) whose header says kind file_kind must hold a model of kind `kind`
static void check_kind(const char* path, int file_kind, int kind) {
    if (file_kind != kind)
        fail("%s: holds a %s, kind %d; this program's model is a %s, kind %d", path, model_kind_name(file_kind),
             file_kind, model_kind_name(kind), kind);
}

// checks the kind and config of a file against the model's; names the first difference
static void check_config(const char* path, const int* header, int kind, const int* config, const char* const* slot_names) {
    check_kind(path, header[2], kind);
    for (int i = 0; i < CONFIG_SLOTS; i++) {
        if (header[3 + i] != config[i])
            fail("%s: %s is %d in the file but %d in this model", path, slot_names[i], header[3 + i], config[i]);
    }
}

// ----------------------------------------------------------------------------
// headers, checksums, values

static uint32_t header_checksum(const int* header) {
    int copy[HEADER_INTS];
    memcpy(copy, header, HEADER_BYTES);
    copy[SLOT_HEADER_CRC] = 0;
    return crc32c(0, copy, HEADER_BYTES);
}

// Checks every slot of a model file's (checkpoint false) or a checkpoint's
// header, its magic and version already checked, and the file's size
// against it: the header's checksum first (version 2), then the kind and
// config, the checkpoint's run state, the slots left 0. Nothing after the
// header is needed. Returns the number of floats after the header.
static long model_header_check(const char* path, const int* header, long size, bool checkpoint) {
    const char* what = checkpoint ? "checkpoint" : "model";
    int version = header[1];
    if (version >= 2 && (uint32_t)header[SLOT_HEADER_CRC] != header_checksum(header))
        fail("%s: the header's checksum does not match (CRC-32C %08x, header[%d] %08x): the file is corrupt", path,
             header_checksum(header), SLOT_HEADER_CRC, (uint32_t)header[SLOT_HEADER_CRC]);
    int kind = header[2];
    model_config_check(path, kind, header + 3);
    int first_zero = 10;
    if (checkpoint) {
        bool vision = is_vision_kind(kind);
        check_slot(path, "step", header[10], 0, 1 << 30);
        if (header_get_u64(header, 11) == 0) fail("%s: the data generator's state (header[11..12]) is 0, which no run reaches", path);
        if (vision) check_slot(path, "seed (header[13..14])", (long)header_get_u64(header, 13), 0, 2147483647L);
        else if (header_get_u64(header, 13) == 0)
            fail("%s: the sampling generator's state (header[13..14]) is 0, which no run reaches", path);
        check_slot(path, "batch size", header[15], 1, 1 << 16);
        check_slot(path, vision ? "patches per image" : "sequence length", header[16], 1, vision ? 1 << 24 : 1 << 16);
        first_zero = 17;
        if (version >= 2) {
            check_slot(path, "seed", header[SLOT_SEED], 0, 2147483647L);
            if (vision && (long)header_get_u64(header, 13) != header[SLOT_SEED])
                fail("%s: the seed is %lu in header[13..14] but %d in header[%d]", path,
                     (unsigned long)header_get_u64(header, 13), header[SLOT_SEED], SLOT_SEED);
            check_slot(path, "training data size", header[SLOT_DATA_SIZE], 1, 2147483647L);
            first_zero = SLOT_DATA_SIZE + 1;
        }
    }
    // a vision kind's image shape: 0 0 0 (3 x 32 x 32), or channels, height and width
    int rest[HEADER_INTS];
    memcpy(rest, header, HEADER_BYTES);
    if (is_vision_kind(kind)) {
        const int* shape = header + IMAGE_SHAPE_SLOT;
        if (shape[0] || shape[1] || shape[2]) {
            check_slot(path, "image channels (header[24])", shape[0], 1, 64);
            check_slot(path, "image height (header[25])", shape[1], 1, 1 << 14);
            check_slot(path, "image width (header[26])", shape[2], 1, 1 << 14);
        }
        for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) rest[IMAGE_SHAPE_SLOT + i] = 0;
    }
    if (version >= 2) {
        check_zero_slots(path, rest, first_zero, SLOT_BODY_CRC, what);
        check_zero_slots(path, rest, SLOT_HEADER_CRC + 1, HEADER_INTS, what);
    } else {
        check_zero_slots(path, rest, first_zero, HEADER_INTS, what);
    }
    long P = header[3 + CONFIG_SLOTS - 1], floats = checkpoint ? 3 * P : P;
    if (size != HEADER_BYTES + 4 * floats)
        fail("%s: header says %ld parameters (%ld bytes%s), but the file is %ld bytes", path, P, HEADER_BYTES + 4 * floats,
             checkpoint ? " with the two AdamW moments" : "", size);
    return floats;
}

// What comes after a checked header: its checksum (version 2), then every
// value finite (and the AdamW second moments, after 2P, not negative).
static void model_body_check(const char* path, const int* header, const unsigned char* data, long size, bool checkpoint) {
    long floats = (size - HEADER_BYTES) / 4, P = checkpoint ? floats / 3 : floats;
    if (header[1] >= 2) {
        uint32_t crc = crc32c(0, data + HEADER_BYTES, size - HEADER_BYTES);
        if (crc != (uint32_t)header[SLOT_BODY_CRC])
            fail("%s: the checksum of the %s does not match (CRC-32C %08x, header[%d] %08x): the file is corrupt", path,
                 checkpoint ? "parameters and moments" : "parameters", crc, SLOT_BODY_CRC, (uint32_t)header[SLOT_BODY_CRC]);
    }
    const float* values = (const float*)(data + HEADER_BYTES);
    static const char* const parts[3] = {"parameter", "AdamW first moment", "AdamW second moment"};
    for (long i = 0; i < floats; i++) {
        if (!std::isfinite(values[i]) || (i >= 2 * P && values[i] < 0.0f))
            fail("%s: %s %ld of %ld is %g", path, parts[i / P], i % P, P, values[i]);
    }
}

// The warning a version 1 file (no checksums) loads with
static void warn_unverified(const char* path, const int* header, const char* what) {
    if (header[1] < 2)
        warn("%s: a %s of format version 1, written before checksums; loaded without verifying its contents", path, what);
}

// ----------------------------------------------------------------------------
// model files

// Validates a model file in memory: the header (model_header_check), the
// checksum and the values (model_body_check). With an expected kind and
// config (non-null) they must match. Returns the parameters (inside data);
// *kind and config get the header's, and image_shape (unless null) its image
// shape slots.
static const float* model_file_parse(const char* path, const unsigned char* data, long size, int* kind, int* config,
                                     int expected_kind, const int* expected_config, const char* const* slot_names,
                                     int* image_shape = nullptr) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_MODEL, "model", header, MODEL_FORMAT_VERSION);
    model_header_check(path, header, size, false);
    if (expected_config) check_config(path, header, expected_kind, expected_config, slot_names);
    model_body_check(path, header, data, size, false);
    *kind = header[2];
    for (int i = 0; i < CONFIG_SLOTS; i++) config[i] = header[3 + i];
    if (image_shape) for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) image_shape[i] = header[IMAGE_SHAPE_SLOT + i];
    return (const float*)(data + HEADER_BYTES);
}

// The model file whose config slots decide the shape of the model about to
// be built (model_file_config sets it): model_build (model.h) checks that
// the shape makes the file's parameter count before it allocates anything.
static std::string shape_file_path;
static long shape_file_params = 0;

// The config slots (and, unless null, the image shape slots) of a model file
// from its header alone (what decides the shape of a model started from it),
// every slot checked; the file must hold a model of this kind.
static void model_file_config(const char* path, int kind, int* config, int* image_shape = nullptr) {
    int header[HEADER_INTS];
    long size = read_file_header(path, "model", header);
    check_magic_version(path, header, MAGIC_MODEL, "model", MODEL_FORMAT_VERSION);
    model_header_check(path, header, size, false);
    check_kind(path, header[2], kind);
    for (int i = 0; i < CONFIG_SLOTS; i++) config[i] = header[3 + i];
    if (image_shape) for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) image_shape[i] = header[IMAGE_SHAPE_SLOT + i];
    shape_file_path = path;
    shape_file_params = config[CONFIG_SLOTS - 1];
}

// The model kind of a model file, from its header (magic and version checked)
static int model_file_kind(const char* path) {
    int header[HEADER_INTS];
    read_file_header(path, "model", header);
    check_magic_version(path, header, MAGIC_MODEL, "model", MODEL_FORMAT_VERSION);
    return header[2];
}

// The header first (checked, and against the model's kind and config),
// then the whole file (checksum, finite values), then the parameters to the device.
static void model_file_load(const char* path, int kind, const int* config, const char* const* slot_names, float* params) {
    int header[HEADER_INTS];
    long size = read_file_header(path, "model", header);
    check_magic_version(path, header, MAGIC_MODEL, "model", MODEL_FORMAT_VERSION);
    model_header_check(path, header, size, false);
    check_config(path, header, kind, config, slot_names);
    std::vector<unsigned char> bytes;
    read_whole_file(path, &bytes, size);
    int k, c[CONFIG_SLOTS];
    const float* p = model_file_parse(path, bytes.data(), (long)bytes.size(), &k, c, kind, config, slot_names);
    warn_unverified(path, header, "model file");
    cudaCheck(cudaMemcpy(params, p, (long)config[CONFIG_SLOTS - 1] * sizeof(float), cudaMemcpyHostToDevice));
}

// Writes a version 2 file: the header, then the device arrays (n floats
// each) one after another; then the header again with both checksums.
static void write_model_format(const char* path, int* header, const float* const* arrays, int count, long n) {
    std::string tmp; FILE* f;
    write_atomically_begin(path, &tmp, &f);
    fwrite_or_fail(header, HEADER_BYTES, f, tmp.c_str());
    std::vector<float> host(n);
    uint32_t crc = 0;
    for (int i = 0; i < count; i++) {
        cudaCheck(cudaMemcpy(host.data(), arrays[i], n * sizeof(float), cudaMemcpyDeviceToHost));
        crc = crc32c(crc, host.data(), n * sizeof(float));
        fwrite_or_fail(host.data(), n * sizeof(float), f, tmp.c_str());
    }
    header[SLOT_BODY_CRC] = (int)crc;
    header[SLOT_HEADER_CRC] = (int)header_checksum(header);
    if (fseek(f, 0, SEEK_SET) != 0) fail("%s: write failed (%s)", tmp.c_str(), strerror(errno));
    fwrite_or_fail(header, HEADER_BYTES, f, tmp.c_str());
    write_atomically_end(path, tmp, f);
}

static void model_file_save(const char* path, int kind, const int* config, const int* image_shape, const float* params) {
    int header[HEADER_INTS] = {0};
    header[0] = MAGIC_MODEL; header[1] = MODEL_FORMAT_VERSION; header[2] = kind;
    for (int i = 0; i < CONFIG_SLOTS; i++) header[3 + i] = config[i];
    for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) header[IMAGE_SHAPE_SLOT + i] = image_shape[i];
    const float* arrays[1] = {params};
    write_model_format(path, header, arrays, 1, config[CONFIG_SLOTS - 1]);
}

// ----------------------------------------------------------------------------
// checkpoints

static void checkpoint_save(const char* path, const CheckpointState* s, const float* params, const float* m, const float* v) {
    int header[HEADER_INTS] = {0};
    header[0] = MAGIC_CHECKPOINT; header[1] = MODEL_FORMAT_VERSION; header[2] = s->kind;
    for (int i = 0; i < CONFIG_SLOTS; i++) header[3 + i] = s->config[i];
    header[10] = s->step;
    header_put_u64(header, 11, s->train_rng);
    header_put_u64(header, 13, s->sample_rng);
    header[15] = s->B; header[16] = s->T;
    for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) header[IMAGE_SHAPE_SLOT + i] = s->image_shape[i];
    header[SLOT_SEED] = s->seed;
    header[SLOT_DATA_SIZE] = s->data_size;
    const float* arrays[3] = {params, m, v};
    write_model_format(path, header, arrays, 3, s->config[CONFIG_SLOTS - 1]);
}

// the run state of a checked checkpoint header
static void checkpoint_state_of(const int* header, CheckpointState* s) {
    s->step = header[10];
    s->train_rng = header_get_u64(header, 11);
    s->sample_rng = header_get_u64(header, 13);
    s->B = header[15]; s->T = header[16];
    for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) s->image_shape[i] = header[IMAGE_SHAPE_SLOT + i];
    s->version = header[1];
    s->seed = s->version >= 2 ? header[SLOT_SEED] : -1;
    s->data_size = s->version >= 2 ? header[SLOT_DATA_SIZE] : 0;
}

// Validates a checkpoint in memory for this model (s->kind and s->config
// are the model's on entry and must match): the header, the checksum, the
// values. Fills the rest of s and returns the 3P floats (parameters, first
// moments, second moments) inside data.
static const float* checkpoint_parse(const char* path, const unsigned char* data, long size, CheckpointState* s,
                                     const char* const* slot_names) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_CHECKPOINT, "checkpoint", header, MODEL_FORMAT_VERSION);
    model_header_check(path, header, size, true);
    check_config(path, header, s->kind, s->config, slot_names);
    model_body_check(path, header, data, size, true);
    checkpoint_state_of(header, s);
    return (const float*)(data + HEADER_BYTES);
}

static void checkpoint_load(const char* path, CheckpointState* s, const char* const* slot_names, float* params, float* m, float* v) {
    int header[HEADER_INTS];
    long size = read_file_header(path, "checkpoint", header);
    check_magic_version(path, header, MAGIC_CHECKPOINT, "checkpoint", MODEL_FORMAT_VERSION);
    model_header_check(path, header, size, true);
    check_config(path, header, s->kind, s->config, slot_names);
    std::vector<unsigned char> bytes;
    read_whole_file(path, &bytes, size);
    const float* p = checkpoint_parse(path, bytes.data(), (long)bytes.size(), s, slot_names);
    warn_unverified(path, header, "checkpoint");
    long P = s->config[CONFIG_SLOTS - 1];
    cudaCheck(cudaMemcpy(params, p, P * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(m, p + P, P * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(v, p + 2 * P, P * sizeof(float), cudaMemcpyHostToDevice));
}

// What a resume would refuse a checkpoint for (the header, a version 2
// file's checksums, values not finite), as the message fail() would give;
// empty when it passes. The run goes on either way.
static void throw_checkpoint_problem(const char* message) { throw std::string(message); }
static std::string checkpoint_problem(const char* path) {
    void (*saved)(const char*) = fail_hook;
    fail_hook = throw_checkpoint_problem;
    std::string problem;
    try {
        int header[HEADER_INTS];
        long size = read_file_header(path, "checkpoint", header);
        check_magic_version(path, header, MAGIC_CHECKPOINT, "checkpoint", MODEL_FORMAT_VERSION);
        model_header_check(path, header, size, true);
        std::vector<unsigned char> bytes;
        read_whole_file(path, &bytes, size);
        model_body_check(path, header, bytes.data(), size, true);
    } catch (const std::string& message) {
        problem = message;
    }
    fail_hook = saved;
    return problem;
}

// checkpoint path for a step: DIR/ckpt_00001234.bin
static std::string checkpoint_path(const char* dir, int step) {
    char name[64];
    snprintf(name, sizeof(name), "/ckpt_%08d.bin", step);
    return std::string(dir) + name;
}

// steps of the checkpoints in dir, ascending
static std::vector<int> checkpoint_steps(const char* dir) {
    std::vector<int> steps;
    DIR* d = opendir(dir);
    if (!d) return steps;
    while (struct dirent* e = readdir(d)) {
        int step; char tail[8];
        if (sscanf(e->d_name, "ckpt_%d.%7s", &step, tail) == 2 && strcmp(tail, "bin") == 0 && strlen(e->d_name) == 17)
            steps.push_back(step);
    }
    closedir(d);
    std::sort(steps.begin(), steps.end());
    return steps;
}

// deletes all but the newest `keep` checkpoints, but those of the steps in `kept`
static void checkpoint_prune(const char* dir, int keep, const std::vector<int>& kept) {
    std::vector<int> steps = checkpoint_steps(dir);
    for (int i = 0; i + keep < (int)steps.size(); i++)
        if (std::find(kept.begin(), kept.end(), steps[i]) == kept.end()) remove(checkpoint_path(dir, steps[i]).c_str());
}

static void make_dir_or_fail(const char* dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) fail("flag -o: cannot create directory %s (%s)", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) fail("flag -o: %s is not a directory", dir);
}

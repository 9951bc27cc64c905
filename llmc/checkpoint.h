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

Checkpoints are written atomically: to PATH.tmp, flushed and synced, then
renamed over PATH, so a killed process never leaves a file that loads wrong.
*/
#pragma once

#include <algorithm>
#include <dirent.h>
#include <unistd.h>
#include <string>
#include <vector>
#include "cuda_common.h"
#include "utils.h"

#define CONFIG_SLOTS 7
#define IMAGE_SHAPE_SLOT 24  // header[24..26]: a vision model's image shape (channels, height, width)
#define IMAGE_SHAPE_SLOTS 3

typedef struct {
    int kind;
    int config[CONFIG_SLOTS];  // model-specific; config[6] = P
    int step;
    uint64_t train_rng, sample_rng;
    int B, T;
    int image_shape[IMAGE_SHAPE_SLOTS];  // a vision model's (channels, height, width); 0 0 0 otherwise
} CheckpointState;

static void copy_device_to_file(FILE* f, const char* path, const float* device, long n) {
    std::vector<float> host(n);
    cudaCheck(cudaMemcpy(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost));
    fwrite_or_fail(host.data(), n * sizeof(float), f, path);
}

static void header_put_u64(int* h, int slot, uint64_t v) { h[slot] = (int)(uint32_t)v; h[slot + 1] = (int)(uint32_t)(v >> 32); }
static uint64_t header_get_u64(const int* h, int slot) { return (uint64_t)(uint32_t)h[slot] | (uint64_t)(uint32_t)h[slot + 1] << 32; }

// a model kind (MODEL_*, utils.h) and the program that trains it, for messages
static const char* model_kind_name(int kind) {
    switch (kind) {
        case MODEL_GPT: return "GPT (train_gpt)";
        case MODEL_MAMBA: return "Mamba LM (train_mamba)";
        case MODEL_VIT: return "ViT (train_vit)";
        case MODEL_MAMBA_VIT: return "Mamba-ViT (train_mamba_vit)";
        case MODEL_MAMBA_VIT_BI: return "bidirectional Mamba-ViT (train_mamba_vit -M bi)";
        case MODEL_HYBRID: return "hybrid LM (train_hybrid)";
        case MODEL_GPT_PLUS: return "Transformer++ (train_gpt_plus)";
        default: return "model of no known kind";
    }
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

// Validates a model file in memory: the header's config, P > 0 and the
// length. With an expected kind and config (non-null) they must match.
// Returns the parameters (inside data); *kind and config get the header's,
// and image_shape (unless null) its image shape slots.
static const float* model_file_parse(const char* path, const unsigned char* data, long size, int* kind, int* config,
                                     int expected_kind, const int* expected_config, const char* const* slot_names,
                                     int* image_shape = nullptr) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_MODEL, "model", header);
    if (expected_config) check_config(path, header, expected_kind, expected_config, slot_names);
    *kind = header[2];
    for (int i = 0; i < CONFIG_SLOTS; i++) config[i] = header[3 + i];
    if (image_shape) for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) image_shape[i] = header[IMAGE_SHAPE_SLOT + i];
    long P = config[CONFIG_SLOTS - 1];
    if (P < 1) fail("%s: parameter count %ld is not positive", path, P);
    if (size != HEADER_BYTES + 4 * P) fail("%s: header says %ld parameters (%ld bytes), but the file is %ld bytes", path, P, HEADER_BYTES + 4 * P, size);
    return (const float*)(data + HEADER_BYTES);
}

// The config slots (and, unless null, the image shape slots) of a model file
// without loading it (what decides the shape of a model started from it);
// the file must hold a model of this kind.
static void model_file_config(const char* path, int kind, int* config, int* image_shape = nullptr) {
    std::vector<unsigned char> bytes;
    read_whole_file(path, &bytes);
    int file_kind;
    model_file_parse(path, bytes.data(), (long)bytes.size(), &file_kind, config, 0, nullptr, nullptr, image_shape);
    check_kind(path, file_kind, kind);
}

static void model_file_load(const char* path, int kind, const int* config, const char* const* slot_names, float* params) {
    std::vector<unsigned char> bytes;
    read_whole_file(path, &bytes);
    int k, c[CONFIG_SLOTS];
    const float* p = model_file_parse(path, bytes.data(), (long)bytes.size(), &k, c, kind, config, slot_names);
    cudaCheck(cudaMemcpy(params, p, (long)config[CONFIG_SLOTS - 1] * sizeof(float), cudaMemcpyHostToDevice));
}

static void write_atomically_begin(const char* path, std::string* tmp, FILE** f) {
    *tmp = std::string(path) + ".tmp";
    *f = fopen_or_fail(tmp->c_str(), "wb");
}

static void write_atomically_end(const char* path, const std::string& tmp, FILE* f) {
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) fail("%s: write failed (%s)", tmp.c_str(), strerror(errno));
    fclose(f);
    if (rename(tmp.c_str(), path) != 0) fail("%s: cannot rename into place (%s)", path, strerror(errno));
}

static void model_file_save(const char* path, int kind, const int* config, const int* image_shape, const float* params) {
    int header[HEADER_INTS] = {0};
    header[0] = MAGIC_MODEL; header[1] = FORMAT_VERSION; header[2] = kind;
    for (int i = 0; i < CONFIG_SLOTS; i++) header[3 + i] = config[i];
    for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) header[IMAGE_SHAPE_SLOT + i] = image_shape[i];
    std::string tmp; FILE* f;
    write_atomically_begin(path, &tmp, &f);
    fwrite_or_fail(header, HEADER_BYTES, f, tmp.c_str());
    copy_device_to_file(f, tmp.c_str(), params, config[CONFIG_SLOTS - 1]);
    write_atomically_end(path, tmp, f);
}

static void checkpoint_save(const char* path, const CheckpointState* s, const float* params, const float* m, const float* v) {
    int header[HEADER_INTS] = {0};
    header[0] = MAGIC_CHECKPOINT; header[1] = FORMAT_VERSION; header[2] = s->kind;
    for (int i = 0; i < CONFIG_SLOTS; i++) header[3 + i] = s->config[i];
    header[10] = s->step;
    header_put_u64(header, 11, s->train_rng);
    header_put_u64(header, 13, s->sample_rng);
    header[15] = s->B; header[16] = s->T;
    for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) header[IMAGE_SHAPE_SLOT + i] = s->image_shape[i];
    long P = s->config[CONFIG_SLOTS - 1];
    std::string tmp; FILE* f;
    write_atomically_begin(path, &tmp, &f);
    fwrite_or_fail(header, HEADER_BYTES, f, tmp.c_str());
    copy_device_to_file(f, tmp.c_str(), params, P);
    copy_device_to_file(f, tmp.c_str(), m, P);
    copy_device_to_file(f, tmp.c_str(), v, P);
    write_atomically_end(path, tmp, f);
}

// Validates a checkpoint in memory for this model (s->kind and s->config
// are the model's on entry and must match); fills the rest of s and returns
// the 3P floats (parameters, first moments, second moments) inside data.
static const float* checkpoint_parse(const char* path, const unsigned char* data, long size, CheckpointState* s,
                                     const char* const* slot_names) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_CHECKPOINT, "checkpoint", header);
    check_config(path, header, s->kind, s->config, slot_names);
    long P = s->config[CONFIG_SLOTS - 1];
    if (size != HEADER_BYTES + 12 * P) fail("%s: expected %ld bytes for %ld parameters, the file is %ld bytes", path, HEADER_BYTES + 12 * P, P, size);
    if (header[10] < 0) fail("%s: negative step %d", path, header[10]);
    if (header[15] < 1 || header[16] < 1) fail("%s: batch %d x %d is not positive", path, header[15], header[16]);
    s->step = header[10];
    s->train_rng = header_get_u64(header, 11);
    s->sample_rng = header_get_u64(header, 13);
    s->B = header[15]; s->T = header[16];
    for (int i = 0; i < IMAGE_SHAPE_SLOTS; i++) s->image_shape[i] = header[IMAGE_SHAPE_SLOT + i];
    return (const float*)(data + HEADER_BYTES);
}

static void checkpoint_load(const char* path, CheckpointState* s, const char* const* slot_names, float* params, float* m, float* v) {
    std::vector<unsigned char> bytes;
    read_whole_file(path, &bytes);
    const float* p = checkpoint_parse(path, bytes.data(), (long)bytes.size(), s, slot_names);
    long P = s->config[CONFIG_SLOTS - 1];
    cudaCheck(cudaMemcpy(params, p, P * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(m, p + P, P * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(v, p + 2 * P, P * sizeof(float), cudaMemcpyHostToDevice));
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

// deletes all but the newest `keep` checkpoints
static void checkpoint_prune(const char* dir, int keep) {
    std::vector<int> steps = checkpoint_steps(dir);
    for (int i = 0; i + keep < (int)steps.size(); i++) remove(checkpoint_path(dir, steps[i]).c_str());
}

static void make_dir_or_fail(const char* dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) fail("flag -o: cannot create directory %s (%s)", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) fail("flag -o: %s is not a directory", dir);
}

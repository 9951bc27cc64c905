/*
Model files and checkpoints.

Model file (magic 20261103): header[2] = model kind, header[3..9] = the
model's config (each trainer defines its seven slots; the last is the number
of parameters P), then P float32 parameters in flat-buffer order.

Checkpoint (magic 20261105): the same kind and config slots, then
header[10] = completed steps, header[11..12] = training-data generator state,
header[13..14] = sampling generator state (each uint64 as two int32, low
first), header[15] = batch size B, header[16] = sequence length T; then P
parameters, P AdamW first moments, P second moments (float32). Enough to
resume bit-identically.

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

typedef struct {
    int kind;
    int config[CONFIG_SLOTS];  // model-specific; config[6] = P
    int step;
    uint64_t train_rng, sample_rng;
    int B, T;
} CheckpointState;

static void copy_device_to_file(FILE* f, const char* path, const float* device, long n) {
    std::vector<float> host(n);
    cudaCheck(cudaMemcpy(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost));
    fwrite_or_fail(host.data(), n * sizeof(float), f, path);
}

static void copy_file_to_device(FILE* f, const char* path, float* device, long n, const char* what) {
    std::vector<float> host(n);
    fread_or_fail(host.data(), n * sizeof(float), f, path, what);
    cudaCheck(cudaMemcpy(device, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
}

static void header_put_u64(int* h, int slot, uint64_t v) { h[slot] = (int)(uint32_t)v; h[slot + 1] = (int)(uint32_t)(v >> 32); }
static uint64_t header_get_u64(const int* h, int slot) { return (uint64_t)(uint32_t)h[slot] | (uint64_t)(uint32_t)h[slot + 1] << 32; }

// checks the kind and config of a file against the model's; names the first difference
static void check_config(const char* path, const int* header, int kind, const int* config, const char* const* slot_names) {
    if (header[2] != kind) fail("%s: holds a model of kind %d, this program's model is kind %d", path, header[2], kind);
    for (int i = 0; i < CONFIG_SLOTS; i++) {
        if (header[3 + i] != config[i])
            fail("%s: %s is %d in the file but %d in this model", path, slot_names[i], header[3 + i], config[i]);
    }
}

// reads the kind and config of a model file without loading it
static void model_file_peek(const char* path, int* kind, int* config) {
    int header[HEADER_INTS];
    long size;
    FILE* f = open_with_header(path, MAGIC_MODEL, "model", header, &size);
    fclose(f);
    *kind = header[2];
    for (int i = 0; i < CONFIG_SLOTS; i++) config[i] = header[3 + i];
    long P = config[CONFIG_SLOTS - 1];
    if (P < 1) fail("%s: parameter count %ld is not positive", path, P);
    if (size != HEADER_BYTES + 4 * P) fail("%s: header says %ld parameters, but the file is %ld bytes (expected %ld)", path, P, size, HEADER_BYTES + 4 * P);
}

static void model_file_load(const char* path, int kind, const int* config, const char* const* slot_names, float* params) {
    int header[HEADER_INTS];
    long size;
    FILE* f = open_with_header(path, MAGIC_MODEL, "model", header, &size);
    check_config(path, header, kind, config, slot_names);
    long P = config[CONFIG_SLOTS - 1];
    if (size != HEADER_BYTES + 4 * P) fail("%s: expected %ld bytes for %ld parameters, the file is %ld bytes", path, HEADER_BYTES + 4 * P, P, size);
    copy_file_to_device(f, path, params, P, "the parameters");
    fclose(f);
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

static void model_file_save(const char* path, int kind, const int* config, const float* params) {
    int header[HEADER_INTS] = {0};
    header[0] = MAGIC_MODEL; header[1] = FORMAT_VERSION; header[2] = kind;
    for (int i = 0; i < CONFIG_SLOTS; i++) header[3 + i] = config[i];
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
    long P = s->config[CONFIG_SLOTS - 1];
    std::string tmp; FILE* f;
    write_atomically_begin(path, &tmp, &f);
    fwrite_or_fail(header, HEADER_BYTES, f, tmp.c_str());
    copy_device_to_file(f, tmp.c_str(), params, P);
    copy_device_to_file(f, tmp.c_str(), m, P);
    copy_device_to_file(f, tmp.c_str(), v, P);
    write_atomically_end(path, tmp, f);
}

// loads a checkpoint of this model (kind and config must match: s->kind and
// s->config are the model's on entry); fills the rest of s
static void checkpoint_load(const char* path, CheckpointState* s, const char* const* slot_names, float* params, float* m, float* v) {
    int header[HEADER_INTS];
    long size;
    FILE* f = open_with_header(path, MAGIC_CHECKPOINT, "checkpoint", header, &size);
    check_config(path, header, s->kind, s->config, slot_names);
    long P = s->config[CONFIG_SLOTS - 1];
    if (size != HEADER_BYTES + 12 * P) fail("%s: expected %ld bytes for %ld parameters, the file is %ld bytes", path, HEADER_BYTES + 12 * P, P, size);
    if (header[10] < 0) fail("%s: negative step %d", path, header[10]);
    s->step = header[10];
    s->train_rng = header_get_u64(header, 11);
    s->sample_rng = header_get_u64(header, 13);
    s->B = header[15]; s->T = header[16];
    copy_file_to_device(f, path, params, P, "the parameters");
    copy_file_to_device(f, path, m, P, "the first moments");
    copy_file_to_device(f, path, v, P, "the second moments");
    fclose(f);
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

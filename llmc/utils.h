/*
Host utilities: checked file I/O with one-line errors that name the file,
the common 256-int32 file header, a seeded random generator, and flag
parsing helpers shared by the trainers.
*/
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <vector>

#define HEADER_INTS 256
#define HEADER_BYTES (HEADER_INTS * 4)
#define FORMAT_VERSION 1
#define MAGIC_TOKENS 20261101
#define MAGIC_VOCAB 20261102
#define MAGIC_MODEL 20261103
#define MAGIC_STATE 20261104
#define MAGIC_CHECKPOINT 20261105
#define MAGIC_IMAGES 20261106

#define MODEL_GPT 1
#define MODEL_MAMBA 2
#define MODEL_VIT 3
#define MODEL_MAMBA_VIT 4
#define MODEL_HYBRID 5
#define MODEL_GPT_PLUS 6  // train_gpt_plus (Transformer++)
#define MODEL_MAMBA_VIT_BI 7  // train_mamba_vit -M bi (the bidirectional Mamba-ViT)

// Where fail() goes: by default it prints one line "error: ..." and exits
// with status 1. A fuzzing harness sets fail_hook to turn the failure into
// an exception instead (the readers hold no resources but std::vectors).
inline void (*fail_hook)(const char* message) = nullptr;

[[noreturn]] inline void fail(const char* fmt, ...) {
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (fail_hook) fail_hook(message);
    fprintf(stderr, "error: %s\n", message);
    exit(EXIT_FAILURE);
}

inline FILE* fopen_or_fail(const char* path, const char* mode) {
    FILE* f = fopen(path, mode);
    if (!f) fail("%s: cannot open (%s)", path, strerror(errno));
    return f;
}

inline void fwrite_or_fail(const void* src, size_t n, FILE* f, const char* path) {
    if (n && fwrite(src, 1, n, f) != n) fail("%s: write failed (%s)", path, strerror(errno));
}

// Reads a whole regular file into memory. All readers parse from memory, so
// a bad file never leaves a file open and parsing can be fuzzed directly.
inline void read_whole_file(const char* path, std::vector<unsigned char>* out) {
    struct stat st;
    if (stat(path, &st) != 0) fail("%s: cannot open (%s)", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) fail("%s: not a regular file", path);
    FILE* f = fopen_or_fail(path, "rb");
    out->resize(st.st_size);
    size_t got = st.st_size ? fread(out->data(), 1, st.st_size, f) : 0;
    fclose(f);
    if (got != (size_t)st.st_size) fail("%s: read failed (%s)", path, strerror(errno));
}

// A bounds-checked cursor over a file's bytes in memory.
typedef struct {
    const char* path;
    const unsigned char* data;
    long size;
    long pos;
} ByteReader;

inline void byte_reader_read(ByteReader* r, void* dst, long n, const char* what) {
    if (n < 0 || n > r->size - r->pos) fail("%s: file ends while reading %s", r->path, what);
    memcpy(dst, r->data + r->pos, n);
    r->pos += n;
}

// Checks magic and version of a file in memory and copies its header out.
inline void check_header(const char* path, const unsigned char* data, long size, int magic, const char* what, int* header) {
    if (size < HEADER_BYTES) fail("%s: too short for a %s file (%ld bytes, header is %d)", path, what, size, HEADER_BYTES);
    memcpy(header, data, HEADER_BYTES);
    if (header[0] != magic) fail("%s: not a %s file (magic %d, expected %d)", path, what, header[0], magic);
    if (header[1] != FORMAT_VERSION) fail("%s: %s format version %d, this program reads version %d", path, what, header[1], FORMAT_VERSION);
}

// ----------------------------------------------------------------------------
// random numbers: xorshift64*, with uniform and normal draws

typedef struct { uint64_t state; } Rng;

inline void rng_seed(Rng* r, uint64_t seed) { r->state = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull; if (!r->state) r->state = 1; }
inline uint32_t rng_u32(Rng* r) {
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (uint32_t)((r->state * 0x2545F4914F6CDD1Dull) >> 32);
}
inline float rng_uniform(Rng* r) { return (rng_u32(r) >> 8) / 16777216.0f; }  // [0, 1)
inline float rng_normal(Rng* r) {  // Box-Muller
    float u1 = rng_uniform(r), u2 = rng_uniform(r);
    return sqrtf(-2.0f * logf(1.0f - u1)) * cosf(6.2831853071795864f * u2);
}

// ----------------------------------------------------------------------------
// flag parsing: "-x value" pairs, with checked numbers

inline int parse_int_flag(const char* flag, const char* value, int lo, int hi) {
    char* end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || *end || end == value) fail("flag %s: '%s' is not an integer", flag, value);
    if (v < lo || v > hi) fail("flag %s: %ld is out of range [%d, %d]", flag, v, lo, hi);
    return (int)v;
}

inline float parse_float_flag(const char* flag, const char* value, float lo, float hi) {
    char* end;
    errno = 0;
    float v = strtof(value, &end);
    if (errno || *end || end == value || !std::isfinite(v)) fail("flag %s: '%s' is not a number", flag, value);
    if (v < lo || v > hi) fail("flag %s: %g is out of range [%g, %g]", flag, v, lo, hi);
    return v;
}

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

#define HEADER_INTS 256
#define HEADER_BYTES (HEADER_INTS * 4)
#define FORMAT_VERSION 1
#define MAGIC_TOKENS 20261101
#define MAGIC_VOCAB 20261102
#define MAGIC_MODEL 20261103
#define MAGIC_STATE 20261104
#define MAGIC_CHECKPOINT 20261105

#define MODEL_GPT 1
#define MODEL_MAMBA 2
#define MODEL_VIT 3
#define MODEL_MAMBA_VIT 4

// prints one line "error: ..." and exits with status 1
[[noreturn]] inline void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(EXIT_FAILURE);
}

inline FILE* fopen_or_fail(const char* path, const char* mode) {
    FILE* f = fopen(path, mode);
    if (!f) fail("%s: cannot open (%s)", path, strerror(errno));
    return f;
}

inline long file_size_or_fail(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0) fail("%s: cannot open (%s)", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) fail("%s: not a regular file", path);
    return (long)st.st_size;
}

// reads exactly n bytes or fails naming the file and what was being read
inline void fread_or_fail(void* dst, size_t n, FILE* f, const char* path, const char* what) {
    if (n && fread(dst, 1, n, f) != n) fail("%s: file ends while reading %s", path, what);
}

inline void fwrite_or_fail(const void* src, size_t n, FILE* f, const char* path) {
    if (n && fwrite(src, 1, n, f) != n) fail("%s: write failed (%s)", path, strerror(errno));
}

// Opens a file, reads its header and checks magic, version and that the file
// is at least as long as the header. Returns the open file, positioned after
// the header; *size gets the file length.
inline FILE* open_with_header(const char* path, int magic, const char* what, int* header, long* size) {
    *size = file_size_or_fail(path);
    if (*size < HEADER_BYTES) fail("%s: too short for a %s file (%ld bytes, header is %d)", path, what, *size, HEADER_BYTES);
    FILE* f = fopen_or_fail(path, "rb");
    fread_or_fail(header, HEADER_BYTES, f, path, "the header");
    if (header[0] != magic) fail("%s: not a %s file (magic %d, expected %d)", path, what, header[0], magic);
    if (header[1] != FORMAT_VERSION) fail("%s: %s format version %d, this program reads version %d", path, what, header[1], FORMAT_VERSION);
    return f;
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

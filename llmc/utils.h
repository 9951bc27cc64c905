/*
Host utilities: checked file I/O with one-line errors that name the file,
the common 256-int32 file header and its checks, the checksum of model files
and checkpoints (CRC-32C), a seeded random generator, and flag parsing
helpers shared by the trainers.
*/
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#define HEADER_INTS 256
#define HEADER_BYTES (HEADER_INTS * 4)
#define FORMAT_VERSION 1        // tokens, vocabulary, reference state and images files
#define MODEL_FORMAT_VERSION 2  // model files and checkpoints: version 2 adds the checksums (checkpoint.h)
#define MAGIC_TOKENS 20261101
#define MAGIC_VOCAB 20261102
#define MAGIC_MODEL 20261103
#define MAGIC_STATE 20261104
#define MAGIC_CHECKPOINT 20261105
#define MAGIC_IMAGES 20261106
#define MAGIC_TASK 20261107
#define TARGET_IGNORED (-1)     // a position without a target (task files): no loss, no gradient

#define MODEL_GPT 1
#define MODEL_MAMBA 2
#define MODEL_VIT 3
#define MODEL_MAMBA_VIT 4
#define MODEL_HYBRID 5
#define MODEL_GPT_PLUS 6  // train_gpt_plus (Transformer++)
#define MODEL_MAMBA_VIT_BI 7  // train_mamba_vit -M bi (the bidirectional Mamba-ViT)
#define MODEL_MAMBA_LTI 8  // train_mamba -M lti (the selection ablation: dt, B, C per channel)
#define MODEL_MAMBA2 9  // train_mamba -M 2 (the Mamba-2 mixer)
#define MODEL_MAMBA_VIT2 10  // train_mamba_vit -M 2 (the Mamba-ViT with Mamba-2 mixers)
#define MODEL_DIFFUSION_VIT 11      // train_diffusion -M vit (a ViT denoiser)
#define MODEL_DIFFUSION_MAMBA 12    // train_diffusion -M mamba (a one-way Mamba denoiser)
#define MODEL_DIFFUSION_BIMAMBA 13  // train_diffusion -M bimamba (a bidirectional Mamba denoiser)
#define MODEL_DIFFUSION_MAMBA2 14   // train_diffusion -M mamba2 (a Mamba-2 denoiser)
#define IMAGE_SHAPE_SLOT 24  // header[24..26]: a vision model's image shape (channels, height, width); 0 0 0: 3 x 32 x 32
#define IMAGE_SHAPE_SLOTS 3

// Where fail() goes: by default it prints one line "error: ..." and exits
// with status 1. A fuzzing harness sets fail_hook to turn the failure into
// an exception instead (the readers hold no resources but std::vectors).
inline void (*fail_hook)(const char* message) = nullptr;

// The message as one printable line: control bytes (a newline in a path or
// a prompt, an escape sequence) become \xNN, so that what a user typed or a
// file held can neither split the line nor drive the terminal.
inline std::string escape_control_bytes(const char* text) {
    std::string out;
    for (const unsigned char* p = (const unsigned char*)text; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            char hex[5];
            snprintf(hex, sizeof(hex), "\\x%02x", *p);
            out += hex;
        } else {
            out += (char)*p;
        }
    }
    return out;
}

// printf into a std::string of whatever length the text has
inline std::string vformat(const char* fmt, va_list ap) {
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(nullptr, 0, fmt, again);
    va_end(again);
    if (n < 0) return fmt;
    std::string text((size_t)n + 1, '\0');
    vsnprintf(&text[0], text.size(), fmt, ap);
    text.resize(n);
    return text;
}

[[noreturn]] inline void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string message = escape_control_bytes(vformat(fmt, ap).c_str());
    va_end(ap);
    if (fail_hook) fail_hook(message.c_str());
    fprintf(stderr, "error: %s\n", message.c_str());
    exit(EXIT_FAILURE);
}

// One line "warning: ..." on stderr (escaped as fail's); the run goes on.
inline void warn(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string message = escape_control_bytes(vformat(fmt, ap).c_str());
    va_end(ap);
    fprintf(stderr, "warning: %s\n", message.c_str());
}

inline FILE* fopen_or_fail(const char* path, const char* mode) {
    FILE* f = fopen(path, mode);
    if (!f) fail("%s: cannot open (%s)", path, strerror(errno));
    return f;
}

inline void fwrite_or_fail(const void* src, size_t n, FILE* f, const char* path) {
    if (n && fwrite(src, 1, n, f) != n) fail("%s: write failed (%s)", path, strerror(errno));
}

// A file written whole or not at all: written to path.tmp, flushed to disk,
// then renamed over path (a reader never sees half a file)
inline void write_atomically_begin(const char* path, std::string* tmp, FILE** f) {
    *tmp = std::string(path) + ".tmp";
    *f = fopen_or_fail(tmp->c_str(), "wb");
}

inline void write_atomically_end(const char* path, const std::string& tmp, FILE* f) {
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) fail("%s: write failed (%s)", tmp.c_str(), strerror(errno));
    fclose(f);
    if (rename(tmp.c_str(), path) != 0) fail("%s: cannot rename into place (%s)", path, strerror(errno));
}

// The size of a regular file; fails naming it when there is none.
inline long file_size_or_fail(const char* path) {
    struct stat st;
    if (stat(path, &st) != 0) fail("%s: cannot open (%s)", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) fail("%s: not a regular file", path);
    return (long)st.st_size;
}

// Reads the first HEADER_BYTES of a file into header, and nothing more;
// returns the file's size. A reader checks the header against that size
// before it reads the rest, so that a file whose size disagrees with its
// header is refused before anything of its size is allocated.
inline long read_file_header(const char* path, const char* what, int* header) {
    long size = file_size_or_fail(path);
    if (size < HEADER_BYTES) fail("%s: too short for a %s file (%ld bytes, header is %d)", path, what, size, HEADER_BYTES);
    FILE* f = fopen_or_fail(path, "rb");
    size_t got = fread(header, 1, HEADER_BYTES, f);
    fclose(f);
    if (got != (size_t)HEADER_BYTES) fail("%s: read failed (%s)", path, strerror(errno));
    return size;
}

// Reads a whole regular file into memory. All readers parse from memory, so
// a bad file never leaves a file open and parsing can be fuzzed directly.
// With expected_size >= 0 (what the file's header, already checked, says),
// a file of another size is refused before its size is allocated.
inline void read_whole_file(const char* path, std::vector<unsigned char>* out, long expected_size = -1) {
    long size = file_size_or_fail(path);
    if (expected_size >= 0 && size != expected_size)
        fail("%s: the header says %ld bytes, but the file is %ld bytes", path, expected_size, size);
    try {
        out->resize(size);
    } catch (const std::bad_alloc&) {
        fail("%s: %ld bytes do not fit in memory", path, size);
    }
    FILE* f = fopen_or_fail(path, "rb");
    size_t got = size ? fread(out->data(), 1, size, f) : 0;
    bool longer = fgetc(f) != EOF;  // grew since its size was taken
    fclose(f);
    if (got != (size_t)size || longer) fail("%s: read failed (the file changed while it was read)", path);
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

// Checks the magic and the version (1..max_version) of a header.
inline void check_magic_version(const char* path, const int* header, int magic, const char* what, int max_version) {
    if (header[0] != magic) fail("%s: not a %s file (magic %d, expected %d)", path, what, header[0], magic);
    if (header[1] < 1 || header[1] > max_version) {
        if (max_version == 1) fail("%s: %s format version %d, this program reads version 1", path, what, header[1]);
        fail("%s: %s format version %d, this program reads versions 1 to %d", path, what, header[1], max_version);
    }
}

// A data file (version 1) read header first: its magic and version, then
// header_check(path, header, size) of its slots against the file's size,
// before the whole file is read into bytes.
template <typename F>
inline void read_checked_file(const char* path, const char* what, int magic, F header_check, std::vector<unsigned char>* bytes) {
    int header[HEADER_INTS];
    long size = read_file_header(path, what, header);
    check_magic_version(path, header, magic, what, FORMAT_VERSION);
    header_check(path, header, size);
    read_whole_file(path, bytes, size);
}

// Checks magic and version of a file in memory and copies its header out.
inline void check_header(const char* path, const unsigned char* data, long size, int magic, const char* what, int* header,
                         int max_version = FORMAT_VERSION) {
    if (size < HEADER_BYTES) fail("%s: too short for a %s file (%ld bytes, header is %d)", path, what, size, HEADER_BYTES);
    memcpy(header, data, HEADER_BYTES);
    check_magic_version(path, header, magic, what, max_version);
}

// The header slots [from, to) are ones the format leaves 0.
inline void check_zero_slots(const char* path, const int* header, int from, int to, const char* what) {
    for (int i = from; i < to; i++)
        if (header[i] != 0) fail("%s: header[%d] is %d; a %s file leaves it 0", path, i, header[i], what);
}

// A header slot within [lo, hi]; the message names the slot by name.
inline void check_slot(const char* path, const char* name, long value, long lo, long hi) {
    if (value < lo || value > hi) fail("%s: %s %ld is out of range [%ld, %ld]", path, name, value, lo, hi);
}

// ----------------------------------------------------------------------------
// CRC-32C (Castagnoli: the reflected polynomial 0x82F63B78, initial value and
// final XOR 0xFFFFFFFF; crc32c of "123456789" is 0xE3069283), the checksum of
// model files and checkpoints. crc is the value of the bytes before (0 for
// none), so a file can be checksummed piece by piece. Eight bytes per step
// through eight tables (each table the previous one advanced by a zero byte).
inline uint32_t crc32c(uint32_t crc, const void* data, size_t n) {
    static uint32_t table[8][256];
    static const bool ready = [] {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            table[0][i] = c;
        }
        for (int t = 1; t < 8; t++)
            for (int i = 0; i < 256; i++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
        return true;
    }();
    (void)ready;
    const unsigned char* p = (const unsigned char*)data;
    crc = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);  // little-endian, as the files are
        memcpy(&hi, p + 4, 4);
        lo ^= crc;
        crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24] ^
              table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^ table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
    }
    for (; n > 0; n--, p++) crc = table[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
    return ~crc;
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

/*
Token data: the tokens file (header, then uint16 tokens) and its vocabulary,
read and validated whole, and batches drawn from them; and task files (the
synthetic tasks: fixed-length sequences with a target per position, most
of them none), read into the same struct.

Training batches take B windows of T+1 tokens at random offsets (seeded; the
generator state is part of a checkpoint). Validation batches are the file's
consecutive non-overlapping windows, from the start, so every evaluation
sees the same data. From a task file, training batches are B whole
sequences drawn by the same seeded generator, validation batches its
sequences in order.
*/
#pragma once

#include <algorithm>
#include <string>
#include <vector>
#include "utils.h"

// A tokens file, or a task file (task > 0): then tokens holds its S
// sequences' inputs (S, T) one after another, targets their targets (S, T),
// TARGET_IGNORED where a position has none, and num_tokens is S * T.
typedef struct {
    const char* path;
    int vocab_size;
    long num_tokens;
    std::vector<int> tokens;
    int task;                  // 0: a tokens file; TASK_COPY or TASK_INDUCTION: a task file
    int seq_len;               // task files: T
    long num_sequences;        // task files: S
    int targets_per_sequence;  // task files: K, the positions of each sequence with a target
    std::vector<int> targets;  // task files: (S, T)
    FILE* file;                // a task file opened by task_data_open (read per batch; tokens, targets empty), else null
} TokenData;

// Checks every slot of a tokens file's header (magic and version checked)
// against the file's size: N >= 2 tokens, 1 <= V <= 65536, the rest 0, the
// size 1024 + 2N. Returns N.
inline long token_header_check(const char* path, const int* header, long size) {
    long n = header[2];
    int V = header[3];
    if (n < 2) fail("%s: holds %ld tokens; need at least 2", path, n);
    if (V < 1 || V > 65536) fail("%s: vocabulary size %d is out of range [1, 65536]", path, V);
    check_zero_slots(path, header, 4, HEADER_INTS, "tokens");
    if (size != HEADER_BYTES + 2 * n) fail("%s: header says %ld tokens (%ld bytes), but the file is %ld bytes", path, n, HEADER_BYTES + 2 * n, size);
    return n;
}

// validates a tokens file held in memory and fills d
inline void token_data_parse(TokenData* d, const char* path, const unsigned char* data, long size) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_TOKENS, "tokens", header);
    long n = token_header_check(path, header, size);
    int V = header[3];
    d->path = path;
    d->vocab_size = V;
    d->num_tokens = n;
    d->task = d->seq_len = d->targets_per_sequence = 0;
    d->num_sequences = 0;
    d->targets.clear();
    d->file = nullptr;
    d->tokens.resize(n);
    const unsigned char* p = data + HEADER_BYTES;
    for (long i = 0; i < n; i++) {
        int tok = p[2 * i] | p[2 * i + 1] << 8;  // little-endian uint16
        if (tok >= V) fail("%s: token %ld is %d, outside the vocabulary of %d", path, i, tok, V);
        d->tokens[i] = tok;
    }
}

// the header first, checked against the file's size, then the whole file
inline void token_data_load(TokenData* d, const char* path) {
    std::vector<unsigned char> bytes;
    read_checked_file(path, "tokens", MAGIC_TOKENS, token_header_check, &bytes);
    token_data_parse(d, path, bytes.data(), (long)bytes.size());
}

// fills inputs and targets (B*T each) with B random windows
inline void token_data_train_batch(const TokenData* d, Rng* rng, int B, int T, int* inputs, int* targets) {
    long span = d->num_tokens - T;  // window start in [0, span)
    for (int b = 0; b < B; b++) {
        long off = (long)(((uint64_t)rng_u32(rng) << 32 | rng_u32(rng)) % (uint64_t)span);
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = d->tokens[off + t];
            targets[b * T + t] = d->tokens[off + t + 1];
        }
    }
}

inline int token_data_num_val_batches(const TokenData* d, int B, int T) { return (int)((d->num_tokens - 1) / ((long)B * T)); }

// the i-th consecutive validation batch
inline void token_data_val_batch(const TokenData* d, int i, int B, int T, int* inputs, int* targets) {
    for (int b = 0; b < B; b++) {
        long off = ((long)i * B + b) * T;
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = d->tokens[off + t];
            targets[b * T + t] = d->tokens[off + t + 1];
        }
    }
}

// ----------------------------------------------------------------------------
// Images as token sequences (the LM trainers' -I N): the file is whole
// images of N tokens each, one after another (dev/data/cifar10.py --pixels:
// N = 3072 pixel values). A window is one whole image: its targets are the
// image's N tokens, its inputs the start token (an id outside the data's
// vocabulary) followed by the image's first N-1 tokens, so the first pixel
// is predicted from the start token alone, never from the previous image.

inline long token_data_num_images(const TokenData* d, int N) { return d->num_tokens / N; }

// inputs and targets (B, N) of the images first .. first+B-1
inline void token_data_image_batch(const TokenData* d, long first, int B, int N, int start_token, int* inputs,
                                   int* targets) {
    for (int b = 0; b < B; b++) {
        const int* img = d->tokens.data() + (first + b) * N;
        inputs[(long)b * N] = start_token;
        for (int t = 0; t < N; t++) {
            if (t + 1 < N) inputs[(long)b * N + t + 1] = img[t];
            targets[(long)b * N + t] = img[t];
        }
    }
}

// B images drawn uniformly (with replacement) by the seeded generator
inline void token_data_image_train_batch(const TokenData* d, Rng* rng, int B, int N, int start_token, int* inputs,
                                         int* targets) {
    uint64_t n = (uint64_t)token_data_num_images(d, N);
    for (int b = 0; b < B; b++) {
        long img = (long)((((uint64_t)rng_u32(rng) << 32) | rng_u32(rng)) % n);
        token_data_image_batch(d, img, 1, N, start_token, inputs + (long)b * N, targets + (long)b * N);
    }
}

// ----------------------------------------------------------------------------
// vocabulary: token id -> UTF-8 text

typedef struct {
    int size;
    std::vector<std::string> text;
} Vocab;

// Checks every slot of a vocabulary file's header (magic and version
// checked) against the file's size: 1 <= V <= 65536, the rest 0, and room
// for V tokens of 1..255 bytes each (a length byte before each).
inline int vocab_header_check(const char* path, const int* header, long size) {
    int V = header[2];
    if (V < 1 || V > 65536) fail("%s: vocabulary size %d is out of range [1, 65536]", path, V);
    check_zero_slots(path, header, 3, HEADER_INTS, "vocabulary");
    long least = HEADER_BYTES + 2L * V, most = HEADER_BYTES + 256L * V;
    if (size < least || size > most)
        fail("%s: header says %d tokens (%ld to %ld bytes), but the file is %ld bytes", path, V, least, most, size);
    return V;
}

inline void vocab_parse(Vocab* v, const char* path, const unsigned char* data, long size) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_VOCAB, "vocabulary", header);
    int V = vocab_header_check(path, header, size);
    v->size = V;
    v->text.assign(V, std::string());
    ByteReader r = {path, data, size, HEADER_BYTES};
    for (int i = 0; i < V; i++) {
        unsigned char len;
        char buf[256];
        byte_reader_read(&r, &len, 1, "a token length");
        if (len == 0) fail("%s: token %d has length 0", path, i);
        byte_reader_read(&r, buf, len, "a token's text");
        v->text[i].assign(buf, len);
    }
    if (r.pos != size) fail("%s: %d tokens end at byte %ld, but the file is %ld bytes", path, V, r.pos, size);
}

// the header first, checked against the file's size, then the whole file
inline void vocab_load(Vocab* v, const char* path) {
    std::vector<unsigned char> bytes;
    read_checked_file(path, "vocabulary", MAGIC_VOCAB, vocab_header_check, &bytes);
    vocab_parse(v, path, bytes.data(), (long)bytes.size());
}

inline int vocab_find(const Vocab* v, const char* s) {
    for (int i = 0; i < v->size; i++) if (v->text[i] == s) return i;
    return -1;
}

// ----------------------------------------------------------------------------
// Task files (dev/data/synthetic.py): header[2] sequences S, [3] length T,
// [4] vocabulary V, [5] the task, [6] targets per sequence K, the other
// slots 0; then per sequence T uint16 inputs and T uint16 targets,
// TASK_FILE_NO_TARGET where a position has none. Every input and every
// other target is below V, and every sequence has exactly K targets.

#define TASK_COPY 1                  // selective copying
#define TASK_INDUCTION 2             // induction heads
#define TASK_FILE_NO_TARGET 65535    // in the file; TARGET_IGNORED once read
#define TASK_MAX_TOKENS 2147483647L  // S * T: the tokens of a file, counted in an int

inline const char* task_name(int task) { return task == TASK_COPY ? "selective copying" : "induction heads"; }

// The magic number in a file's first 4 bytes; 0 when it cannot be read or is shorter.
inline int file_magic(const char* path) {
    FILE* f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char b[4];
    size_t got = fread(b, 1, 4, f);
    fclose(f);
    return got == 4 ? (int)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24) : 0;
}

// Checks every slot of a task file's header (magic and version checked)
// against the file's size: S >= 1, T >= 1, S * T at most TASK_MAX_TOKENS,
// 1 <= V <= 65535 (65535 marks no target), the task 1 or 2, 1 <= K <= T,
// the rest 0, the size 1024 + 4 S T. Returns S * T.
inline long task_header_check(const char* path, const int* header, long size) {
    long S = header[2], T = header[3], V = header[4], task = header[5], K = header[6];
    check_slot(path, "sequences (header[2])", S, 1, TASK_MAX_TOKENS);
    check_slot(path, "length (header[3])", T, 1, TASK_MAX_TOKENS);
    if (S * T > TASK_MAX_TOKENS) fail("%s: %ld sequences of %ld tokens, more than %ld tokens", path, S, T, TASK_MAX_TOKENS);
    check_slot(path, "vocabulary (header[4])", V, 1, TASK_FILE_NO_TARGET);
    check_slot(path, "task (header[5]; 1 selective copying, 2 induction heads)", task, TASK_COPY, TASK_INDUCTION);
    check_slot(path, "targets per sequence (header[6])", K, 1, T);
    check_zero_slots(path, header, 7, HEADER_INTS, "task");
    long want = HEADER_BYTES + 4 * S * T;
    if (size != want)
        fail("%s: header says %ld sequences of %ld tokens (%ld bytes), but the file is %ld bytes", path, S, T, want, size);
    return S * T;
}

// the header's facts into d (its tokens and targets left empty)
inline void task_data_describe(TokenData* d, const char* path, const int* header, long n) {
    d->path = path;
    d->vocab_size = header[4];
    d->num_tokens = n;
    d->task = header[5];
    d->seq_len = header[3];
    d->num_sequences = header[2];
    d->targets_per_sequence = header[6];
    d->tokens.clear();
    d->targets.clear();
    d->file = nullptr;
}

// Checks n positions t0 .. t0+n-1 of sequence s (in and tg: their uint16
// little-endian inputs and targets) and turns them into ints (targets
// TARGET_IGNORED where there is none); returns how many have a target.
inline int task_check_positions(const char* path, int V, long s, long t0, long n, const unsigned char* in,
                                const unsigned char* tg, int* inputs, int* targets) {
    int count = 0;
    for (long i = 0; i < n; i++) {
        long t = t0 + i;
        int x = in[2 * i] | in[2 * i + 1] << 8, y = tg[2 * i] | tg[2 * i + 1] << 8;
        if (x >= V) fail("%s: sequence %ld, position %ld: input %d is outside the vocabulary of %d", path, s, t, x, V);
        if (y != TASK_FILE_NO_TARGET && y >= V)
            fail("%s: sequence %ld, position %ld: target %d is outside the vocabulary of %d (and not %d, no target)",
                 path, s, t, y, V, TASK_FILE_NO_TARGET);
        inputs[i] = x;
        targets[i] = y == TASK_FILE_NO_TARGET ? TARGET_IGNORED : y;
        count += y != TASK_FILE_NO_TARGET;
    }
    return count;
}

inline void task_check_count(const char* path, long s, int count, int K) {
    if (count != K) fail("%s: sequence %ld has %d targets, but header[6] says %d per sequence", path, s, count, K);
}

// validates a task file held in memory and fills d
inline void task_data_parse(TokenData* d, const char* path, const unsigned char* data, long size) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_TASK, "task", header);
    long n = task_header_check(path, header, size);
    task_data_describe(d, path, header, n);
    long S = d->num_sequences, T = d->seq_len;
    d->tokens.resize(n);
    d->targets.resize(n);
    const unsigned char* p = data + HEADER_BYTES;
    for (long s = 0; s < S; s++) {
        const unsigned char* in = p + 4 * s * T;  // T inputs, then T targets, uint16 little-endian
        int count = task_check_positions(path, d->vocab_size, s, 0, T, in, in + 2 * T, &d->tokens[s * T], &d->targets[s * T]);
        task_check_count(path, s, count, d->targets_per_sequence);
    }
}

// the header first, checked against the file's size, then the whole file
inline void task_data_load(TokenData* d, const char* path) {
    std::vector<unsigned char> bytes;
    read_checked_file(path, "task", MAGIC_TASK, task_header_check, &bytes);
    task_data_parse(d, path, bytes.data(), (long)bytes.size());
}

#define TASK_READ_POSITIONS 65536  // positions per read of a task file read in pieces

// reads n positions from t0 of sequence s of the task file f (d's): their
// uint16 inputs into in (2n bytes) and targets into tg
inline void task_file_read(const TokenData* d, FILE* f, long s, long t0, long n, unsigned char* in, unsigned char* tg) {
    long T = d->seq_len, at = HEADER_BYTES + 4 * s * T + 2 * t0;
    bool ok = fseeko(f, at, SEEK_SET) == 0 && fread(in, 1, 2 * n, f) == (size_t)(2 * n) &&
              fseeko(f, at + 2 * T, SEEK_SET) == 0 && fread(tg, 1, 2 * n, f) == (size_t)(2 * n);
    if (!ok) fail("%s: read failed (the file changed while it was read)", d->path);
}

// a file closed when this goes out of scope (a refusal that throws, in the
// fuzzer, included) unless released
struct ScopedFile {
    FILE* f;
    ~ScopedFile() { if (f) fclose(f); }
    FILE* release() { FILE* g = f; f = nullptr; return g; }
};

// A task file opened to be read in pieces (task_data_read), memory constant
// in its length: the header checked against the file's size, then every
// sequence checked as task_data_load checks it (the same messages, in the
// same order), TASK_READ_POSITIONS positions at a time. The file stays open
// (d->file) once accepted; a refused one is closed.
inline void task_data_open(TokenData* d, const char* path) {
    int header[HEADER_INTS];
    long size = read_file_header(path, "task", header);
    check_magic_version(path, header, MAGIC_TASK, "task", FORMAT_VERSION);
    long n = task_header_check(path, header, size);
    task_data_describe(d, path, header, n);
    ScopedFile file = {fopen_or_fail(path, "rb")};
    long S = d->num_sequences, T = d->seq_len, piece = std::min<long>(T, TASK_READ_POSITIONS);
    std::vector<unsigned char> in(2 * piece), tg(2 * piece);
    std::vector<int> inputs(piece), targets(piece);
    for (long s = 0; s < S; s++) {
        int count = 0;
        for (long t0 = 0; t0 < T; t0 += piece) {
            long m = std::min(piece, T - t0);
            task_file_read(d, file.f, s, t0, m, in.data(), tg.data());
            count += task_check_positions(path, d->vocab_size, s, t0, m, in.data(), tg.data(), inputs.data(), targets.data());
        }
        task_check_count(path, s, count, d->targets_per_sequence);
    }
    d->file = file.release();
}

// inputs and targets (rows, n) of positions t0 .. t0+n-1 of the sequences
// first .. first+rows-1, from memory or (task_data_open) from the file
inline void task_data_read(const TokenData* d, long first, int rows, int t0, int n, int* inputs, int* targets) {
    long T = d->seq_len;
    if (!d->file) {
        for (int r = 0; r < rows; r++) {
            long from = (first + r) * T + t0;
            std::copy(d->tokens.begin() + from, d->tokens.begin() + from + n, inputs + (long)r * n);
            std::copy(d->targets.begin() + from, d->targets.begin() + from + n, targets + (long)r * n);
        }
        return;
    }
    std::vector<unsigned char> in(2L * n), tg(2L * n);
    for (int r = 0; r < rows; r++) {
        task_file_read(d, d->file, first + r, t0, n, in.data(), tg.data());
        task_check_positions(d->path, d->vocab_size, first + r, t0, n, in.data(), tg.data(), inputs + (long)r * n,
                             targets + (long)r * n);
    }
}

// inputs and targets (rows, T) of the sequences first .. first+rows-1
inline void task_data_batch(const TokenData* d, long first, int rows, int* inputs, int* targets) {
    task_data_read(d, first, rows, 0, d->seq_len, inputs, targets);
}

// B sequences drawn uniformly (with replacement) by the seeded generator
inline void task_data_train_batch(const TokenData* d, Rng* rng, int B, int* inputs, int* targets) {
    uint64_t n = (uint64_t)d->num_sequences;
    for (int b = 0; b < B; b++) {
        long s = (long)((((uint64_t)rng_u32(rng) << 32) | rng_u32(rng)) % n);
        task_data_batch(d, s, 1, inputs + (long)b * d->seq_len, targets + (long)b * d->seq_len);
    }
}

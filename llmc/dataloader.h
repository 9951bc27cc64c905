/*
Token data: the tokens file (header, then uint16 tokens) and its vocabulary,
read and validated whole, and batches drawn from them.

Training batches take B windows of T+1 tokens at random offsets (seeded; the
generator state is part of a checkpoint). Validation batches are the file's
consecutive non-overlapping windows, from the start, so every evaluation
sees the same data.
*/
#pragma once

#include <string>
#include <vector>
#include "utils.h"

typedef struct {
    const char* path;
    int vocab_size;
    long num_tokens;
    std::vector<int> tokens;
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

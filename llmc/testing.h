/*
Small helpers shared by the test programs: a pass/fail counter that ends with
the line "N passed, M failed", a seeded random generator, and tensor
comparison with max absolute and relative error.

Relative error of a tensor is max|got - ref| / max|ref|: the largest error
measured against the tensor's own scale. It is robust to entries near zero,
where an elementwise ratio means nothing, and is what the tolerances in the
tests bound.
*/
#pragma once

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>

struct Tests {
    int passed = 0, failed = 0;
    // prints one line "ok" or "FAIL" with the formatted detail
    bool check(bool ok, const char* fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        printf("%s ", ok ? "ok  " : "FAIL");
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
        fflush(stdout);
        (ok ? passed : failed)++;
        return ok;
    }
    int summary() {
        printf("%d passed, %d failed\n", passed, failed);
        return failed == 0 ? 0 : 1;
    }
};

// xorshift64*: a small seeded generator for test data
inline uint32_t random_u32(uint64_t* state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}
inline float random_uniform(uint64_t* state) { return (random_u32(state) >> 8) / 16777216.0f; }

struct TensorError { double max_abs, max_ref, rel; };

inline TensorError tensor_error(const float* got, const float* ref, long n) {
    TensorError e = {0.0, 0.0, 0.0};
    for (long i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= e.max_abs)) e.max_abs = d;  // NaN propagates
        double r = fabs((double)ref[i]);
        if (r > e.max_ref) e.max_ref = r;
    }
    e.rel = e.max_abs / (e.max_ref > 0.0 ? e.max_ref : 1.0);
    return e;
}

// compares one tensor, prints its errors, counts pass/fail against rel_tol
inline bool check_tensor(Tests& t, const char* name, const float* got, const float* ref, long n, double rel_tol) {
    TensorError e = tensor_error(got, ref, n);
    return t.check(e.rel <= rel_tol, "%-22s n=%-8ld max abs %.3e  rel %.3e  (tol %.0e)", name, n, e.max_abs, e.rel, rel_tol);
}

// Compares a buffer laid out like the flat parameters, tensor by tensor.
// Tensors stacked over the L layers (per_layer[i] set) are compared layer by
// layer, so that a layer with small values is measured against its own scale.
inline void check_flat_tensors(Tests& t, const char* prefix, const char* const* names, const long* sizes,
                               const int* per_layer, int count, int L, const float* got, const float* ref, double tol) {
    long off = 0;
    for (int i = 0; i < count; i++) {
        int parts = per_layer[i] ? L : 1;
        long n = sizes[i] / parts;
        for (int l = 0; l < parts; l++) {
            char name[96];
            if (per_layer[i]) snprintf(name, sizeof(name), "%s%s[%d]", prefix, names[i], l);
            else snprintf(name, sizeof(name), "%s%s", prefix, names[i]);
            check_tensor(t, name, got + off, ref + off, n, tol);
            off += n;
        }
    }
}

// ----------------------------------------------------------------------------
// reference states written by dev/reference (format: README, "File formats")

#include <map>
#include <string>
#include <vector>
#include "utils.h"

struct RefTensor {
    int dtype;  // 0 float32, 1 int32
    std::vector<int> shape;
    std::vector<float> f;
    std::vector<int> i;
    long numel() const { long n = 1; for (int d : shape) n *= d; return n; }
};

struct RefState {
    int kind;
    int config[7];
    int B, T;
    std::map<std::string, RefTensor> tensors;
    const RefTensor& get(const char* name, const char* path) const {
        auto it = tensors.find(name);
        if (it == tensors.end()) fail("%s: reference state has no tensor '%s'", path, name);
        return it->second;
    }
};

inline void ref_state_parse(RefState* s, const char* path, const unsigned char* data, long size) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_STATE, "reference state", header);
    s->kind = header[2];
    for (int i = 0; i < 7; i++) s->config[i] = header[3 + i];
    s->B = header[10]; s->T = header[11];
    int K = header[12];
    if (K < 1) fail("%s: holds %d tensors", path, K);
    if (s->B < 1 || s->T < 1) fail("%s: batch %d x %d is not positive", path, s->B, s->T);
    ByteReader r = {path, data, size, HEADER_BYTES};
    s->tensors.clear();
    for (int k = 0; k < K; k++) {
        char name[49] = {0};
        int meta[6];
        byte_reader_read(&r, name, 48, "a tensor name");
        byte_reader_read(&r, meta, sizeof(meta), "a tensor header");
        RefTensor t;
        t.dtype = meta[0];
        int ndim = meta[1];
        if (t.dtype != 0 && t.dtype != 1) fail("%s: tensor '%s' has unknown dtype %d", path, name, t.dtype);
        if (ndim < 1 || ndim > 4) fail("%s: tensor '%s' has ndim %d", path, name, ndim);
        long n = 1;
        for (int d = 0; d < ndim; d++) {
            if (meta[2 + d] < 1 || n > (size / 4) / meta[2 + d]) fail("%s: tensor '%s' has a bad shape", path, name);
            t.shape.push_back(meta[2 + d]);
            n *= meta[2 + d];
        }
        if (4 * n > size - r.pos) fail("%s: file ends inside tensor '%s'", path, name);
        if (t.dtype == 0) { t.f.resize(n); byte_reader_read(&r, t.f.data(), 4 * n, name); }
        else { t.i.resize(n); byte_reader_read(&r, t.i.data(), 4 * n, name); }
        if (s->tensors.count(name)) fail("%s: tensor '%s' appears twice", path, name);
        s->tensors[name] = std::move(t);
    }
    if (r.pos != size) fail("%s: records end at byte %ld, but the file is %ld bytes", path, r.pos, size);
}

inline void ref_state_load(RefState* s, const char* path) {
    std::vector<unsigned char> bytes;
    read_whole_file(path, &bytes);
    ref_state_parse(s, path, bytes.data(), (long)bytes.size());
}

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

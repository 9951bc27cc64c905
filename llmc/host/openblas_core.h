/*
The OpenBLAS core check (host backend): OpenBLAS 0.3.21 (Debian 12) does not
recognise some newer CPUs and then runs its SSE3 kernels ("Prescott"), 4-8x
slower than its AVX2 or AVX-512 ones. A host program that finds OpenBLAS so
on a CPU with AVX-512 or AVX2 re-executes itself once, before main, with
OPENBLAS_CORETYPE set to SkylakeX or Haswell. A value the user set wins;
HOST_PROFILE=1 prints the core in use.
*/
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <strings.h>
#include <unistd.h>
#include <cblas.h>

// The cores OpenBLAS falls back to when it does not know a CPU: none of them
// uses AVX2 or AVX-512.
inline bool host_blas_core_is_fallback(const char* core) {
    static const char* const old_cores[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                            "Sandybridge", "Katmai", "Coppermine", "Northwood", "Banias"};
    for (const char* c : old_cores) if (!strcasecmp(core, c)) return true;
    return false;
}

// Runs before main: when OpenBLAS picked a fallback core on a CPU that has
// better kernels and the user did not choose one, re-execute this program
// (same arguments, read from /proc/self/cmdline) with OPENBLAS_CORETYPE set.
// The new process finds the variable set and goes on. Any failure leaves the
// program running as it was.
__attribute__((constructor)) static void host_blas_core_check() {
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char* core = openblas_get_corename();
    if (!core || !host_blas_core_is_fallback(core)) return;
    const char* better = nullptr;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) better = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) better = "Haswell";
    if (!better) return;
    FILE* f = fopen("/proc/self/cmdline", "rb");
    if (!f) return;
    std::vector<char> cmdline;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) cmdline.insert(cmdline.end(), buf, buf + n);
    fclose(f);
    if (cmdline.empty() || cmdline.back() != '\0') return;
    std::vector<char*> argv;
    for (size_t i = 0; i < cmdline.size(); i += strlen(&cmdline[i]) + 1) argv.push_back(&cmdline[i]);
    argv.push_back(nullptr);
    setenv("OPENBLAS_CORETYPE", better, 0);
    execv("/proc/self/exe", argv.data());
    unsetenv("OPENBLAS_CORETYPE");  // exec failed: run on as we are
}

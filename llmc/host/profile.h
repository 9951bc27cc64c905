/*
Profiling on the host backend (part 3): with HOST_PROFILE=1 the time of every
kernel and cuBLAS call, summed by name and printed at exit, and one line per
training step with what the step asked of the device; NVTX ranges, which are
no-ops here.
*/
#pragma once

#include <cblas.h>
#include "runtime.h"

// Optional profile: with HOST_PROFILE=1 (host_settings.profile), the time of every
// kernel and cuBLAS call is summed by name and printed at exit.
struct HostProfile {
    bool enabled;
    std::vector<std::pair<const char*, std::pair<double, long>>> entries;  // name -> (seconds, calls)
    HostProfile() : enabled(host_settings.profile) {}
    ~HostProfile() {
        if (!enabled || entries.empty()) return;
        std::sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.second.first > b.second.first; });
        double total = 0.0;
        for (auto& e : entries) total += e.second.first;
        fprintf(stderr, "host profile: %.3f s in kernels and cuBLAS (OpenBLAS core %s)\n", total, openblas_get_corename());
        for (auto& e : entries)
            fprintf(stderr, "  %8.3f s %5.1f%% %8ld calls  %s\n", e.second.first, 100.0 * e.second.first / total, e.second.second, e.first);
    }
    void add(const char* name, double seconds) {
        for (auto& e : entries) if (e.first == name || !strcmp(e.first, name)) { e.second.first += seconds; e.second.second++; return; }
        entries.push_back({name, {seconds, 1}});
    }
};
inline HostProfile host_profile;

// HOST_PROFILE=1: one line per training step with what the step asked of the
// device (HostDeviceCounts), between host_profile_step_begin() and _end()
inline HostDeviceCounts& host_profile_step_start() { static HostDeviceCounts c; return c; }
inline void host_profile_step_begin() { host_profile_step_start() = host_counts(); }
inline void host_profile_step_end(int step) {
    if (!host_profile.enabled) return;
    const HostDeviceCounts &a = host_profile_step_start(), &b = host_counts();
    fprintf(stderr, "host profile step %d: %ld kernel launches (%ld of them by %ld graph launches), %ld cuBLAS calls, "
            "%ld device-to-host copies, %ld host-to-device, %ld device-to-device, %ld memsets, %ld synchronizations\n",
            step, b.kernels - a.kernels, b.graph_kernels - a.graph_kernels, b.graph_launches - a.graph_launches,
            b.blas - a.blas, b.d2h - a.d2h, b.h2d - a.h2d, b.d2d - a.d2d, b.memsets - a.memsets, b.syncs - a.syncs);
}

// times a scope into the profile when profiling is on
struct HostProfileScope {
    const char* name; double t0;
    explicit HostProfileScope(const char* n) : name(n), t0(host_profile.enabled ? host_seconds() : 0.0) {}
    ~HostProfileScope() { if (host_profile.enabled) host_profile.add(name, host_seconds() - t0); }
};

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes):

// ----------------------------------------------------------------------------
// NVTX: ranges are no-ops on the host

inline int nvtxRangePushA(const char*) { return 0; }
inline int nvtxRangePop() { return 0; }

/*
Kernel playground for the selective scan (llmc/selective_scan.cuh): a plain
sequential reference on the CPU, and each kernel variant validated against
it, then timed. On a GPU it also prints the effective memory bandwidth
(bytes each pass must read and write, over its time).

Build and run (either backend):
  make dev/cuda/selective_scan && ./dev/cuda/selective_scan [B T E N]
Defaults: the seed Mamba layer, B 16 T 256 E 512 N 16 (R 16).
SCAN_VARIANT=vec (or seq, chunked) runs only that variant. Each variant's
forward is also checked with an initial state h0 (B, E, N) against the
reference started from it.

Variants:
  seq      sequential in time, one thread per (b, e) forward, per (b, group
           of 8 channels) backward; barrier-free
  vec      the same with d_state fixed at compile time (N = 16 only): the
           loops over states vectorize on the host, exp is fast_expf (the
           host backend's choice for N = 16)
  chunked  parallel scan (N = 16 only): one warp per (b, e), 8 channels a
           block sharing each chunk's B and C rows in shared memory,
           Hillis-Steele with shuffles across lanes (forward: 4 steps a lane),
           state carried between chunks (the GPU's choice)
*/
#include "../../llmc/cuda_common.h"
#include "../../llmc/selective_scan.cuh"
#include "../../llmc/testing.h"

#include <ctime>
#include <vector>

// forward reference in double: y and gated (B,T,E) for the same inputs,
// from the initial state h0 (B,E,N), or zeros when null
static void scan_reference(std::vector<double>& y, std::vector<double>& gated, const std::vector<float>& u,
                           const std::vector<float>& dt, const std::vector<float>& x_dbl, const std::vector<float>& A_log,
                           const std::vector<float>& D, const std::vector<float>& xz, int B, int T, int E, int N, int R,
                           const std::vector<float>* h0 = nullptr) {
    int X = R + 2 * N;
    std::vector<double> h(N);
    for (int b = 0; b < B; b++)
        for (int e = 0; e < E; e++) {
            for (int n = 0; n < N; n++) h[n] = h0 ? (*h0)[((long)b * E + e) * N + n] : 0.0;
            for (int t = 0; t < T; t++) {
                long row = (long)b * T + t;
                double d = dt[row * E + e], uv = u[row * E + e], acc = 0.0;
                for (int n = 0; n < N; n++) {
                    double A = -exp((double)A_log[e * N + n]);
                    h[n] = exp(d * A) * h[n] + d * x_dbl[row * X + R + n] * uv;
                    acc += h[n] * x_dbl[row * X + R + N + n];
                }
                double yv = acc + D[e] * uv, z = xz[row * 2 * E + E + e];
                y[row * E + e] = yv;
                gated[row * E + e] = yv * z / (1.0 + exp(-z));
            }
        }
}

static float* upload(const std::vector<float>& h) {
    float* d;
    cudaCheck(cudaMalloc(&d, h.size() * sizeof(float)));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}

int main(int argc, char** argv) {
    int B = 16, T = 256, E = 512, N = 16;
    if (argc == 5) { B = atoi(argv[1]); T = atoi(argv[2]); E = atoi(argv[3]); N = atoi(argv[4]); }
    else if (argc != 1) { fprintf(stderr, "usage: %s [B T E N]\n", argv[0]); return 1; }
    if (B < 1 || T < 1 || E < 1) { fprintf(stderr, "error: B, T, E must be positive\n"); return 1; }
    kernel_choices.scan_chunked = N == SCAN_DSTATE;  // (each variant is selected below; the chunked one needs N = 16)
    scan_check_limits(N);
    int R = CEIL_DIV(E / 2, 16), X = R + 2 * N;
    long BT = (long)B * T;
    printf("selective scan, backend %s: B %d T %d E %d N %d R %d\n", BACKEND_NAME, B, T, E, N, R);

    uint64_t rng = 1;
    auto rand_vec = [&](long n, float lo, float hi) {
        std::vector<float> v(n);
        for (auto& x : v) x = lo + (hi - lo) * random_uniform(&rng);
        return v;
    };
    std::vector<float> u = rand_vec(BT * E, -1, 1), dt = rand_vec(BT * E, 1e-3f, 0.1f);
    std::vector<float> x_dbl = rand_vec(BT * X, -1, 1), A_log = rand_vec((long)E * N, 0, 2.7f);
    std::vector<float> D = rand_vec(E, 0.5f, 1.5f), xz = rand_vec(BT * 2 * E, -2, 2), dg = rand_vec(BT * E, -1, 1);
    std::vector<double> y_ref(BT * E), gated_ref(BT * E);
    scan_reference(y_ref, gated_ref, u, dt, x_dbl, A_log, D, xz, B, T, E, N, R);
    std::vector<float> gated_ref_f(gated_ref.begin(), gated_ref.end());
    std::vector<float> h0 = rand_vec((long)B * E * N, -1, 1);
    scan_reference(y_ref, gated_ref, u, dt, x_dbl, A_log, D, xz, B, T, E, N, R, &h0);
    std::vector<float> gated_h0_ref_f(gated_ref.begin(), gated_ref.end());
    float* d_h0 = upload(h0);

    float *d_u = upload(u), *d_dt = upload(dt), *d_x = upload(x_dbl), *d_A = upload(A_log), *d_D = upload(D);
    float *d_xz = upload(xz), *d_dg = upload(dg);
    float *d_y, *d_gated, *d_states, *d_du, *d_ddt, *d_dxz, *d_dx, *d_dA, *d_dD, *d_scratch;
    cudaCheck(cudaMalloc(&d_y, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&d_gated, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&d_states, scan_states_size(B, T, E, N) * sizeof(float)));
    cudaCheck(cudaMalloc(&d_du, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&d_ddt, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dxz, BT * 2 * E * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dx, BT * X * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dA, (long)E * N * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dD, E * sizeof(float)));
    cudaCheck(cudaMalloc(&d_scratch, scan_backward_scratch_size(B, T, E, N) * sizeof(float)));

    // bytes each pass must move at least (fp32): forward reads u, dt, z, B, C, writes y, gated, states;
    // backward also reads dgated and y, and writes du, ddt, dz, dB, dC
    double fwd_bytes = 4.0 * (BT * E * 5 + BT * 2 * N + scan_states_size(B, T, E, N));
    double bwd_bytes = 4.0 * (BT * E * 9 + BT * 4 * N + scan_states_size(B, T, E, N));
    std::vector<float> ref_grads;
    Tests t;
    cudaEvent_t t0, t1;
    cudaCheck(cudaEventCreate(&t0));
    cudaCheck(cudaEventCreate(&t1));
    const char* names[3] = {"seq", "vec", "chunked"};
    for (int variant = 0; variant < 3; variant++) {
        if (variant == 1 && N != SCAN_VEC_N) continue;
        if (variant == 2 && N != SCAN_DSTATE) { printf("chunked  (compiled for N = %d only)\n", SCAN_DSTATE); continue; }
        if (getenv("SCAN_VARIANT") && strcmp(getenv("SCAN_VARIANT"), names[variant])) continue;
        // the host backend runs the chunked kernel's warps as fibers: minutes at the default size
        if (variant == 2 && BACKEND_NAME[0] == 'h' && BT * E > (1 << 16)) {
            printf("chunked  (skipped on the host at this size: run with a small B T E N)\n");
            continue;
        }
        kernel_choices.scan_chunked = variant == 2;
        kernel_choices.scan_vec = variant == 1;
        const char* name = names[variant];
        auto forward = [&]() { selective_scan_forward(d_y, d_gated, d_states, d_u, d_dt, d_x, R, d_A, d_D, d_xz, B, T, E, N); };
        auto backward = [&]() {
            selective_scan_backward(d_du, d_ddt, d_dxz, d_dx, d_dA, d_dD, d_scratch, d_dg, d_y, d_u, d_dt, d_x, R,
                                    d_A, d_D, d_xz, d_states, B, T, E, N);
        };
        forward();
        std::vector<float> gated(BT * E);
        cudaCheck(cudaMemcpy(gated.data(), d_gated, gated.size() * sizeof(float), cudaMemcpyDeviceToHost));
        char label[64];
        snprintf(label, sizeof(label), "%s forward vs reference", name);
        check_tensor(t, label, gated.data(), gated_ref_f.data(), BT * E, 1e-5);
        selective_scan_forward(d_y, d_gated, d_states, d_u, d_dt, d_x, R, d_A, d_D, d_xz, B, T, E, N, d_h0);
        cudaCheck(cudaMemcpy(gated.data(), d_gated, gated.size() * sizeof(float), cudaMemcpyDeviceToHost));
        snprintf(label, sizeof(label), "%s forward from h0", name);
        check_tensor(t, label, gated.data(), gated_h0_ref_f.data(), BT * E, 1e-5);
        forward();  // the states the backward reads (from zeros)
        // backward: the two variants must agree (the finite-difference checks are in test_mamba)
        cudaCheck(cudaMemset(d_dA, 0, (long)E * N * sizeof(float)));
        cudaCheck(cudaMemset(d_dD, 0, E * sizeof(float)));
        backward();
        std::vector<float> grads(BT * E);
        cudaCheck(cudaMemcpy(grads.data(), d_du, grads.size() * sizeof(float), cudaMemcpyDeviceToHost));
        if (ref_grads.empty()) ref_grads = grads;  // the first variant run is the reference
        else {
            snprintf(label, sizeof(label), "%s du vs seq du", name);
            check_tensor(t, label, grads.data(), ref_grads.data(), BT * E, 1e-5);
        }

        int reps = BACKEND_NAME[0] == 'c' ? 20 : 2;
        // ms per call of run over reps calls, by events
        auto time_reps = [&](auto&& run) {
            float ms;
            cudaCheck(cudaEventRecord(t0));
            for (int i = 0; i < reps; i++) run();
            cudaCheck(cudaEventRecord(t1));
            cudaCheck(cudaEventSynchronize(t1));
            cudaCheck(cudaEventElapsedTime(&ms, t0, t1));
            return ms / reps;
        };
        // on the host also the process CPU time (robust when other jobs share the cores)
        clock_t c0 = clock();
        float ms_f = time_reps(forward);
        clock_t c1 = clock();
        float ms_b = time_reps(backward);
        clock_t c2 = clock();
        printf("%-8s forward %9.3f ms (%7.1f GB/s)   backward %9.3f ms (%7.1f GB/s)", name, ms_f,
               fwd_bytes / ms_f / 1e6, ms_b, bwd_bytes / ms_b / 1e6);
        if (BACKEND_NAME[0] == 'h')
            printf("   cpu time forward %9.3f ms, backward %9.3f ms", 1e3 * (c1 - c0) / CLOCKS_PER_SEC / reps,
                   1e3 * (c2 - c1) / CLOCKS_PER_SEC / reps);
        printf("\n");
    }
    return t.summary();
}

/*
Kernel playground for Mamba-2's SSD scan (llmc/ssd.cuh): a plain sequential
reference in double on the CPU; the plain recurrence kernel (ssd_sequential,
one thread per (b, h, p)) and the chunked SSD forward (ssd_forward)
validated against it, from a zero and from a random initial state; the
chunked backward's gradients summed against finite differences of the
double reference along one random direction; then each timed.

Build and run (either backend):
  make dev/cuda/ssd && ./dev/cuda/ssd [B T H P N]
Defaults: the seed-width Mamba-2 layer, B 16 T 256 H 8 P 64 N 64 (E 512).
*/
#include "../../llmc/cuda_common.h"
#include "../../llmc/ssd.cuh"
#include "../../llmc/testing.h"

#include <cmath>
#include <ctime>
#include <vector>

// y (B,T,E) in double for the same inputs (dt after softplus), from h0 (B,H,P,N) or zeros
static std::vector<double> ssd_reference(const std::vector<float>& xbc, const std::vector<double>& dt,
                                         const std::vector<double>& A_log, const std::vector<double>& D, int B, int T,
                                         int H, int P, int N, const std::vector<float>* h0 = nullptr) {
    int E = H * P, X = E + 2 * N;
    std::vector<double> y((long)B * T * E), S(N);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int p = 0; p < P; p++) {
                long hp = ((long)b * H + h) * P + p;
                for (int n = 0; n < N; n++) S[n] = h0 ? (*h0)[hp * N + n] : 0.0;
                double A = -exp(A_log[h]);
                for (int t = 0; t < T; t++) {
                    long row = (long)b * T + t;
                    const float* r = &xbc[row * X];
                    double d = dt[row * H + h], xv = r[h * P + p], a = exp(d * A), acc = 0.0;
                    for (int n = 0; n < N; n++) {
                        S[n] = a * S[n] + d * xv * r[E + n];
                        acc += S[n] * r[E + N + n];
                    }
                    y[row * E + h * P + p] = acc + D[h] * xv;
                }
            }
    return y;
}

static float* upload(const std::vector<float>& h) {
    float* d;
    cudaCheck(cudaMalloc(&d, h.size() * sizeof(float)));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}

static std::vector<float> download(const float* d, long n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

int main(int argc, char** argv) {
    int B = 16, T = 256, H = 8, P = 64, N = 64;
    if (argc == 6) { B = atoi(argv[1]); T = atoi(argv[2]); H = atoi(argv[3]); P = atoi(argv[4]); N = atoi(argv[5]); }
    else if (argc != 1) { fprintf(stderr, "usage: %s [B T H P N]\n", argv[0]); return 1; }
    if (B < 1 || T < 1 || H < 1) { fprintf(stderr, "error: B, T, H must be positive\n"); return 1; }
    int E = H * P, X = E + 2 * N;
    ssd_check_limits(E, P, N);
    long BT = (long)B * T;
    printf("SSD scan, backend %s: B %d T %d H %d P %d N %d (E %d, chunks of %d)\n", BACKEND_NAME, B, T, H, P, N, E,
           SSD_CHUNK);

    uint64_t rng = 1;
    auto rand_vec = [&](long n, float lo, float hi) {
        std::vector<float> v(n);
        for (auto& x : v) x = lo + (hi - lo) * random_uniform(&rng);
        return v;
    };
    std::vector<float> xbc = rand_vec(BT * X, -1, 1), dt_raw = rand_vec(BT * H, -4, 0), dt_bias(H, 0.0f);
    std::vector<float> A_log = rand_vec(H, 0, 2.7f), D = rand_vec(H, 0.5f, 1.5f), dy = rand_vec(BT * E, -1, 1);
    std::vector<float> h0 = rand_vec((long)B * E * N, -1, 1);
    float *d_xbc = upload(xbc), *d_raw = upload(dt_raw), *d_bias = upload(dt_bias), *d_A = upload(A_log);
    float *d_D = upload(D), *d_dy = upload(dy), *d_h0 = upload(h0);
    float *d_dt, *d_y, *d_states, *d_cum, *d_hf, *d_dxbc, *d_ddt, *d_dA, *d_dD, *d_dbias, *d_scratch;
    cudaCheck(cudaMalloc(&d_dt, BT * H * sizeof(float)));
    cudaCheck(cudaMalloc(&d_y, BT * E * sizeof(float)));
    cudaCheck(cudaMalloc(&d_states, ssd_states_size(B, T, E, N) * sizeof(float)));
    cudaCheck(cudaMalloc(&d_cum, BT * H * sizeof(float)));
    cudaCheck(cudaMalloc(&d_hf, (long)B * E * N * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dxbc, BT * X * sizeof(float)));
    cudaCheck(cudaMalloc(&d_ddt, BT * H * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dA, H * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dD, H * sizeof(float)));
    cudaCheck(cudaMalloc(&d_dbias, H * sizeof(float)));
    cudaCheck(cudaMalloc(&d_scratch, ssd_backward_scratch_size(B, T, E, H, N) * sizeof(float)));
    ssd_dt_forward(d_dt, d_raw, H, d_bias, BT, H);
    std::vector<float> dt_f = download(d_dt, BT * H);  // the references read the same dt
    std::vector<double> dt(dt_f.begin(), dt_f.end()), Ad(A_log.begin(), A_log.end()), Dd(D.begin(), D.end());

    Tests t;
    auto check = [&](const char* label, const std::vector<double>& ref) {
        std::vector<float> got = download(d_y, BT * E), want(ref.begin(), ref.end());
        check_tensor(t, label, got.data(), want.data(), BT * E, 1e-5);
    };
    for (int from_h0 = 0; from_h0 < 2; from_h0++) {
        std::vector<double> ref = ssd_reference(xbc, dt, Ad, Dd, B, T, H, P, N, from_h0 ? &h0 : nullptr);
        const float* init = from_h0 ? d_h0 : nullptr;
        ssd_sequential(d_y, nullptr, d_xbc, d_dt, d_A, d_D, init, B, T, H, P, N);
        check(from_h0 ? "sequential forward from h0" : "sequential forward", ref);
        ssd_forward(d_y, d_states, d_cum, d_xbc, d_dt, d_A, d_D, init, d_hf, B, T, H, P, N);
        check(from_h0 ? "chunked forward from h0" : "chunked forward", ref);
    }

    // the backward's x gradient along a random direction v against (L(x + eps v) - L(x - eps v)) / 2 eps
    // of the double reference, L = sum(y * dy)
    ssd_forward(d_y, d_states, d_cum, d_xbc, d_dt, d_A, d_D, nullptr, nullptr, B, T, H, P, N);
    auto backward = [&]() {
        cudaCheck(cudaMemset(d_dA, 0, H * sizeof(float)));
        cudaCheck(cudaMemset(d_dD, 0, H * sizeof(float)));
        cudaCheck(cudaMemset(d_dbias, 0, H * sizeof(float)));
        ssd_backward(d_dxbc, d_ddt, H, d_dA, d_dD, d_dbias, d_scratch, d_dy, d_xbc, d_dt, d_cum, d_states, d_A, d_D, B,
                     T, H, P, N);
    };
    backward();
    {
        std::vector<float> g = download(d_dxbc, BT * X), v = rand_vec(BT * X, -1, 1), x1 = xbc, x2 = xbc;
        double analytic = 0.0, eps = 1e-3;
        for (long i = 0; i < BT * X; i++) {
            analytic += (double)g[i] * v[i];
            x1[i] += eps * v[i];
            x2[i] -= eps * v[i];
        }
        std::vector<double> y1 = ssd_reference(x1, dt, Ad, Dd, B, T, H, P, N), y2 = ssd_reference(x2, dt, Ad, Dd, B, T, H, P, N);
        double numeric = 0.0;
        for (long i = 0; i < BT * E; i++) numeric += (y1[i] - y2[i]) * dy[i];
        numeric /= 2.0 * eps;
        double rel = fabs(numeric - analytic) / fmax(fabs(analytic), 1e-9);
        t.check(rel < 1e-3, "chunked backward d/d(x, B, C) along a random direction: %+.6e vs finite differences "
                            "%+.6e, rel err %.1e (tol 1e-3: fp32 sums of %ld terms)", analytic, numeric, rel, BT * X);
    }

    // timing (events; on the host also the process CPU time)
    cudaEvent_t t0, t1;
    cudaCheck(cudaEventCreate(&t0));
    cudaCheck(cudaEventCreate(&t1));
    int reps = BACKEND_NAME[0] == 'c' ? 20 : 2;
    auto time_reps = [&](auto&& run, double* cpu_ms) {
        float ms;
        clock_t c0 = clock();
        cudaCheck(cudaEventRecord(t0));
        for (int i = 0; i < reps; i++) run();
        cudaCheck(cudaEventRecord(t1));
        cudaCheck(cudaEventSynchronize(t1));
        cudaCheck(cudaEventElapsedTime(&ms, t0, t1));
        *cpu_ms = 1e3 * (clock() - c0) / CLOCKS_PER_SEC / reps;
        return ms / reps;
    };
    double c_seq, c_fwd, c_bwd;
    float ms_seq = time_reps([&]() { ssd_sequential(d_y, nullptr, d_xbc, d_dt, d_A, d_D, nullptr, B, T, H, P, N); }, &c_seq);
    float ms_fwd = time_reps([&]() { ssd_forward(d_y, d_states, d_cum, d_xbc, d_dt, d_A, d_D, nullptr, nullptr, B, T, H, P, N); }, &c_fwd);
    float ms_bwd = time_reps(backward, &c_bwd);
    printf("sequential forward %9.3f ms | chunked forward %9.3f ms | chunked backward %9.3f ms\n", ms_seq, ms_fwd, ms_bwd);
    if (BACKEND_NAME[0] == 'h')
        printf("cpu time: sequential forward %9.3f ms | chunked forward %9.3f ms | chunked backward %9.3f ms\n", c_seq,
               c_fwd, c_bwd);
    return t.summary();
}

/*
Kernel playground for attention (llmc/attention.cuh): times forward +
backward of one layer's attention for each variant, after checking the
tiled variants' output and gradients against the materialized one, and
prints the memory each keeps and uses as scratch. These timings set the rule
by which attention_uses_tiled picks a variant on a backend (see
llmc/attention.cuh, "variant selection").

Build and run (either backend):
  make dev/cuda/attention && ./dev/cuda/attention [B T C NH causal [variants]]
Defaults: the seed GPT's layer (C 256, NH 4, causal) at B 16 T 256, B 1 T 1024
and B 1 T 4096. variants: a comma list of materialized, tiled-rows,
tiled-smem (default all on the GPU; on the host all but tiled-smem, whose
barriers run as fibers there, past T 1024).

Variants:
  materialized  cuBLAS q k^T and att v, softmax over the stored T x T rows
                (thread-per-row softmax on the host, warp-per-row on the GPU)
  tiled-rows    online softmax, one thread per query (key) row, no barriers
                (the host backend's tiled kernels)
  tiled-smem    the same with k, v (q, dout) tiles staged in shared memory by
                the block (the GPU's tiled kernels)
*/
#include "../../llmc/cuda_common.h"
#include "../../llmc/attention.cuh"
#include "../../llmc/testing.h"

#include <algorithm>
#include <string>
#include <vector>

typedef struct { const char* name; int variant; bool smem; } BenchVariant;
static const BenchVariant BENCH_VARIANTS[] = {
    {"materialized", ATTENTION_MATERIALIZED, false},
    {"tiled-rows", ATTENTION_TILED, false},
    {"tiled-smem", ATTENTION_TILED, true},
};

static float* device_alloc(long n) {
    float* d;
    cudaCheck(cudaMalloc(&d, (n > 0 ? n : 1) * sizeof(float)));
    cudaCheck(cudaMemset(d, 0, (n > 0 ? n : 1) * sizeof(float)));
    return d;
}

static double seconds_now() {
    cudaCheck(cudaDeviceSynchronize());
    cudaEvent_t e;
    cudaCheck(cudaEventCreate(&e));
    cudaCheck(cudaEventRecord(e));
    cudaCheck(cudaEventSynchronize(e));
    static cudaEvent_t origin = nullptr;
    if (!origin) { cudaCheck(cudaEventCreate(&origin)); cudaCheck(cudaEventRecord(origin)); cudaCheck(cudaEventSynchronize(origin)); }
    float ms;
    cudaCheck(cudaEventElapsedTime(&ms, origin, e));
    cudaCheck(cudaEventDestroy(e));
    return ms * 1e-3;
}

// one shape: each variant's median time of forward + backward (the variants
// take turns, so that a busy machine slows them alike), and its output and
// gradient against the first variant's
typedef struct {
    const BenchVariant* v;
    AttentionSizes s;
    float *out, *qkvr, *att, *preatt, *y, *dqkv, *dqkvr, *dy, *datt;
    std::vector<double> times;
} BenchRun;

static void select_variant(const BenchVariant* v) {
    kernel_choices.attention_variant = v->variant;
    kernel_choices.attention_tiled_smem = v->smem;
}

static void bench_shape(cublasHandle_t h, int B, int T, int C, int NH, int causal, const std::vector<std::string>& names) {
    KernelChoices saved = kernel_choices;
    long btc = (long)B * T * C;
    uint64_t rng = 1234;
    std::vector<float> qkv(3 * btc), dout(btc);
    for (auto& x : qkv) x = 3.0f * random_uniform(&rng) - 1.5f;
    for (auto& x : dout) x = 2.0f * random_uniform(&rng) - 1.0f;
    printf("B %d T %d C %d NH %d (hs %d) %s\n", B, T, C, NH, C / NH, causal ? "causal" : "non-causal");
    float *d_qkv = device_alloc(3 * btc), *d_dout = device_alloc(btc);
    cudaCheck(cudaMemcpy(d_qkv, qkv.data(), 3 * btc * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_dout, dout.data(), btc * sizeof(float), cudaMemcpyHostToDevice));
    std::vector<BenchRun> runs;
    for (const BenchVariant& v : BENCH_VARIANTS) {
        if (std::find(names.begin(), names.end(), v.name) == names.end()) continue;
        if (v.variant == ATTENTION_TILED && !attention_tiled_supports(C / NH)) continue;
        select_variant(&v);
        BenchRun r;
        r.v = &v;
        r.s = attention_act_sizes(B, T, C, NH);
        r.out = device_alloc(btc); r.qkvr = device_alloc(3 * btc); r.att = device_alloc(r.s.state);
        r.preatt = device_alloc(r.s.preatt); r.y = device_alloc(btc); r.dqkv = device_alloc(3 * btc);
        r.dqkvr = device_alloc(3 * btc); r.dy = device_alloc(btc); r.datt = device_alloc(r.s.datt);
        runs.push_back(r);
    }
    double total = 0.0;
    for (int rep = 0; rep < 7 && (rep < 3 || total < 60.0); rep++)
        for (BenchRun& r : runs) {
            select_variant(r.v);
            double t0 = seconds_now();
            attention_forward(h, r.out, r.qkvr, r.att, r.preatt, r.y, d_qkv, B, T, C, NH, causal);
            attention_backward(h, r.dqkv, r.dqkvr, r.dy, r.datt, d_dout, r.qkvr, r.att, B, T, C, NH, causal);
            r.times.push_back(seconds_now() - t0);
            total += r.times.back();
        }
    std::vector<float> ref_out, ref_dqkv;
    double ref_ms = 0.0;
    for (BenchRun& r : runs) {
        std::sort(r.times.begin(), r.times.end());
        double ms = 1e3 * r.times[r.times.size() / 2];
        std::vector<float> o(btc), g(3 * btc);
        cudaCheck(cudaMemcpy(o.data(), r.out, btc * sizeof(float), cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(g.data(), r.dqkv, 3 * btc * sizeof(float), cudaMemcpyDeviceToHost));
        double mib = (r.s.state + r.s.preatt + r.s.datt) * 4.0 / (1 << 20);
        printf("  %-13s %10.2f ms fwd+bwd (median of %zu)  kept+scratch %9.1f MiB", r.v->name, ms, r.times.size(), mib);
        if (ref_out.empty()) {
            ref_out = o; ref_dqkv = g; ref_ms = ms;
            printf("\n");
        } else {
            TensorError eo = tensor_error(o.data(), ref_out.data(), btc), eg = tensor_error(g.data(), ref_dqkv.data(), 3 * btc);
            printf("  %.2fx  rel err vs first: out %.1e dqkv %.1e\n", ref_ms / ms, eo.rel, eg.rel);
        }
        for (float* p : {r.out, r.qkvr, r.att, r.preatt, r.y, r.dqkv, r.dqkvr, r.dy, r.datt}) cudaCheck(cudaFree(p));
    }
    cudaCheck(cudaFree(d_qkv));
    cudaCheck(cudaFree(d_dout));
    kernel_choices = saved;
}

static std::vector<std::string> split(const char* s) {
    std::vector<std::string> r;
    std::string cur;
    for (const char* p = s; ; p++) {
        if (*p == ',' || !*p) { if (!cur.empty()) r.push_back(cur); cur.clear(); if (!*p) break; }
        else cur += *p;
    }
    return r;
}

int main(int argc, char** argv) {
    cublasHandle_t h;
    cublasCheck(cublasCreate(&h));
    printf("backend %s\n", BACKEND_NAME);
    bool host = !strcmp(BACKEND_NAME, "host");
    if (argc >= 6) {
        int B = atoi(argv[1]), T = atoi(argv[2]), C = atoi(argv[3]), NH = atoi(argv[4]), causal = atoi(argv[5]);
        if (B < 1 || T < 1 || NH < 1 || C < NH || C % NH) { fprintf(stderr, "error: bad shape\n"); return 1; }
        std::vector<std::string> names = split(argc > 6 ? argv[6] : "materialized,tiled-rows,tiled-smem");
        bench_shape(h, B, T, C, NH, causal, names);
    } else if (argc == 1) {
        int shapes[3][2] = {{16, 256}, {1, 1024}, {1, 4096}};
        for (auto& s : shapes) {
            std::vector<std::string> names = {"materialized", "tiled-rows"};
            if (!host || s[1] <= 1024) names.push_back("tiled-smem");
            bench_shape(h, s[0], s[1], 256, 4, 1, names);
        }
    } else {
        fprintf(stderr, "usage: %s [B T C NH causal [variants]]\n", argv[0]);
        return 1;
    }
    cublasCheck(cublasDestroy(h));
    return 0;
}

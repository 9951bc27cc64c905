/*
A denoising diffusion model's own parts (Ho et al. 2020, DDPM; sampling
also by DDIM, Song et al. 2021); the denoiser's layers are the vision
models' (train_diffusion.cu).

  schedule     the cosine schedule of DIFFUSION_STEPS = 1000 steps (Nichol and
               Dhariwal 2021): beta_t = min(1 - f(t) / f(t - 1), 0.999),
               f(t) = cos^2((t / 1000 + 0.008) / 1.008 * pi / 2), and alpha_bar_t =
               prod_{s<=t} (1 - beta_s), t = 1..1000 (it spends fewer steps than
               Ho et al.'s linear one where small images are already pure
               noise); in double on the host, and the
               device tables the kernels read (sqrt(alpha_bar_t),
               sqrt(1 - alpha_bar_t), the time step's sinusoidal embedding)
  noising      x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, with
               x_0 = 2 * pixel / 255 - 1 in [-1, 1]
  tokens       the denoiser's input sequence (B, T + 2, C): the time token,
               the class token, the T patch tokens, plus learned positions;
               forward and backward
  patch rows   the head's output rows 2.. (B, T + 2, PD) back to an image
               (B, Cc, H, W) (the inverse of vision.cuh's patchify), and
               the image gradient back to those rows
  mse          the loss, the mean over the image of (eps_pred - eps)^2, per
               image; and its gradient
  sampler      one step of DDIM (eta 0) or ancestral DDPM with classifier-free
               guidance, from x_t to x_{t'}
  ELBO terms   the negative ELBO's terms in nats (host, double): the prior
               KL at t = T, the KL of step t >= 2 as a multiple of
               ||eps - eps_pred||^2, the discretized Gaussian decoder at t = 1
  draws        the per-row random numbers of training, evaluation and
               sampling: a generator keyed by (seed, what, index), so a
               row's draws do not depend on the batch it is in
*/
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#include "cuda_common.h"
#include "utils.h"
#include "vision.cuh"

#define DIFFUSION_STEPS 1000

// ----------------------------------------------------------------------------
// the schedule (host, double): index t = 0..DIFFUSION_STEPS, t = 0 is "no noise"

typedef struct {
    std::vector<double> beta;       // beta[t], t >= 1 (beta[0] = 0)
    std::vector<double> alpha_bar;  // alpha_bar[t] (alpha_bar[0] = 1)
} DiffusionSchedule;

static DiffusionSchedule diffusion_schedule() {
    DiffusionSchedule s;
    s.beta.assign(DIFFUSION_STEPS + 1, 0.0);
    s.alpha_bar.assign(DIFFUSION_STEPS + 1, 1.0);
    auto f = [](int t) {
        double c = cos(((double)t / DIFFUSION_STEPS + 0.008) / 1.008 * 1.5707963267948966);
        return c * c;
    };
    for (int t = 1; t <= DIFFUSION_STEPS; t++) {
        s.beta[t] = std::min(1.0 - f(t) / f(t - 1), 0.999);
        s.alpha_bar[t] = s.alpha_bar[t - 1] * (1.0 - s.beta[t]);
    }
    return s;
}

// the posterior variance of q(x_{t-1} | x_t, x_0), beta~_t, t >= 2
static double posterior_variance(const DiffusionSchedule& s, int t) {
    return s.beta[t] * (1.0 - s.alpha_bar[t - 1]) / (1.0 - s.alpha_bar[t]);
}

// The variance sigma_t^2 of the reverse step p(x_{t-1} | x_t): beta~_t, and
// at t = 1 (where beta~_1 = 0) beta~_2, as Ho et al.'s code clips it
static double reverse_variance(const DiffusionSchedule& s, int t) {
    return posterior_variance(s, t < 2 ? 2 : t);
}

// U-ViT's timestep embedding of t: C/2 frequencies f_j = 10000^(-j/(C/2)),
// [cos(t f_j) ..., sin(t f_j) ...]; an odd C's last channel is 0
static void timestep_embedding(float* out, int t, int C) {
    int half = C / 2;
    for (int j = 0; j < half; j++) {
        double arg = t * exp(-log(10000.0) * j / half);
        out[j] = (float)cos(arg);
        out[half + j] = (float)sin(arg);
    }
    if (C % 2) out[C - 1] = 0.0f;
}

// the device tables of the kernels, rows t = 0..DIFFUSION_STEPS
typedef struct {
    float* sqrt_alpha_bar;      // (STEPS + 1)
    float* sqrt_one_minus_ab;   // (STEPS + 1)
    float* time_embedding;      // (STEPS + 1, C)
} DiffusionTables;

static long diffusion_tables_size(int C) { return (long)(DIFFUSION_STEPS + 1) * (C + 2); }

// fills the tables, laid out in `memory` (device, diffusion_tables_size(C) floats)
static DiffusionTables diffusion_tables_upload(float* memory, int C) {
    DiffusionSchedule s = diffusion_schedule();
    long n = DIFFUSION_STEPS + 1;
    std::vector<float> host(diffusion_tables_size(C));
    for (long t = 0; t < n; t++) {
        host[t] = (float)sqrt(s.alpha_bar[t]);
        host[n + t] = (float)sqrt(1.0 - s.alpha_bar[t]);
        timestep_embedding(host.data() + 2 * n + t * C, (int)t, C);
    }
    cudaCheck(cudaMemcpy(memory, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
    DiffusionTables d = {memory, memory + n, memory + 2 * n};
    return d;
}

// ----------------------------------------------------------------------------
// kernels

// noisy[b, i] = sqrt_ab[t_b] (2 img[b, i] - 1) + sqrt_1mab[t_b] eps[b, i]; img in [0, 1], D values per image
__global__ void noise_images_kernel(float* noisy, const float* img, const float* eps, const int* t,
                                    const float* sqrt_ab, const float* sqrt_1mab, int B, long D) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * D) return;
    int tb = t[idx / D];
    noisy[idx] = sqrt_ab[tb] * (2.0f * img[idx] - 1.0f) + sqrt_1mab[tb] * eps[idx];
}

// out[b, tt, c] = wpe[tt, c] + (tt == 0: temb[t_b, c]; tt == 1: class_emb[y_b, c];
// else patch_emb[b, tt - 2, c]); TT = T + 2 rows per image. One thread per element.
__global__ void diffusion_tokens_forward_kernel(float* out, const float* patch_emb, const float* class_emb,
                                                const float* temb, const float* wpe, const int* t, const int* y,
                                                int B, int T, int C) {
    int TT = T + 2;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * TT * C) return;
    int c = idx % C, tt = (idx / C) % TT, b = idx / ((long)TT * C);
    float v = tt == 0 ? temb[(long)t[b] * C + c]
            : tt == 1 ? class_emb[(long)y[b] * C + c]
                      : patch_emb[((long)b * T + tt - 2) * C + c];
    out[idx] = wpe[(long)tt * C + c] + v;
}

// dpatch_emb[b, i, c] = dtokens[b, i + 2, c] (overwrites); one thread per element
__global__ void diffusion_patch_rows_backward_kernel(float* dpatch_emb, const float* dtokens, int B, int T, int C) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * T * C) return;
    int c = idx % C;
    long bi = idx / C;
    int i = bi % T, b = bi / T;
    dpatch_emb[idx] = dtokens[((long)b * (T + 2) + i + 2) * C + c];
}

// dclass_emb[k, c] += the sum over the images b of class y_b = k of dtokens[b, 1, c], in order of b.
// One thread per (k, c) of the K1 = K + 1 rows.
__global__ void class_embedding_backward_kernel(float* dclass_emb, const float* dtokens, const int* y, int B, int T,
                                                int K1, int C) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)K1 * C) return;
    int c = idx % C, k = idx / C;
    float s = 0.0f;
    for (int b = 0; b < B; b++)
        if (y[b] == k) s += dtokens[((long)b * (T + 2) + 1) * C + c];
    dclass_emb[idx] += s;
}

// img[b, ch, y, x] = rows[b, 2 + t, (ch, p1, p2)] with t = (y/P)(W/P) + x/P, p1 = y % P, p2 = x % P:
// the patch rows (after the two leading tokens) back to images. One thread per image value.
__global__ void patch_rows_to_images_kernel(float* img, const float* rows, int B, int Cc, int H, int W, int P) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * Cc * H * W) return;
    int x = idx % W, yy = (idx / W) % H, ch = (idx / ((long)W * H)) % Cc;
    long b = idx / ((long)Cc * H * W);
    int gw = W / P, T = (H / P) * gw, PD = Cc * P * P;
    int t = (yy / P) * gw + x / P, pd = (ch * P + yy % P) * P + x % P;
    img[idx] = rows[(b * (T + 2) + 2 + t) * PD + pd];
}

// the reverse: rows[b, tt, pd] = the image value at that patch position for
// tt >= 2, 0 for the two leading tokens. One thread per row value.
__global__ void images_to_patch_rows_kernel(float* rows, const float* img, int B, int Cc, int H, int W, int P) {
    int gw = W / P, T = (H / P) * gw, PD = Cc * P * P;
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * (T + 2) * PD) return;
    int pd = idx % PD, tt = (idx / PD) % (T + 2);
    long b = idx / ((long)PD * (T + 2));
    if (tt < 2) { rows[idx] = 0.0f; return; }
    int t = tt - 2, ch = pd / (P * P), p1 = (pd / P) % P, p2 = pd % P;
    int yy = (t / gw) * P + p1, x = (t % gw) * P + p2;
    rows[idx] = img[((b * Cc + ch) * H + yy) * W + x];
}

// losses[b] = (1/D) sum_i (pred[b, i] - target[b, i])^2, summed in order of i; one thread per image
__global__ void mse_forward_kernel(float* losses, const float* pred, const float* target, int B, long D) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float* p = pred + (long)b * D;
    const float* q = target + (long)b * D;
    float s = 0.0f;
    for (long i = 0; i < D; i++) { float e = p[i] - q[i]; s += e * e; }
    losses[b] = s / D;
}

// dpred[b, i] = dloss[0] * 2 (pred - target) / D: the gradient of dloss[0] * sum_b losses[b]
__global__ void mse_backward_kernel(float* dpred, const float* pred, const float* target, const float* dloss, int B,
                                    long D) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * D) return;
    dpred[idx] = dloss[0] * 2.0f * (pred[idx] - target[idx]) / D;
}

// One sampler step on B images of D values from x (B, D) in place, with the
// model's noise predictions eps (2B, D): rows 0..B-1 conditional, B..2B-1
// unconditional. eps = eps_u + guidance (eps_c - eps_u); x0 = clip((x -
// s1 eps) / s0, -1, 1); x <- a x0 + b x + sigma z (z (B, D) standard normal).
__global__ void sampler_step_kernel(float* x, const float* eps, const float* z, float guidance, float s0, float s1,
                                    float a, float b_coef, float sigma, int B, long D) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * D) return;
    float e_c = eps[idx], e_u = eps[(long)B * D + idx];
    float e = e_u + guidance * (e_c - e_u);
    float x0 = (x[idx] - s1 * e) / s0;
    x0 = fminf(1.0f, fmaxf(-1.0f, x0));
    x[idx] = a * x0 + b_coef * x[idx] + (sigma > 0.0f ? sigma * z[idx] : 0.0f);  // z is not read without noise
}

// ----------------------------------------------------------------------------
// launchers

void noise_images(float* noisy, const float* img, const float* eps, const int* t, const DiffusionTables& tab, int B, long D) {
    LAUNCH(noise_images_kernel, CEIL_DIV((long)B * D, 256), 256, 0)(noisy, img, eps, t, tab.sqrt_alpha_bar,
                                                                     tab.sqrt_one_minus_ab, B, D);
    cudaCheck(cudaGetLastError());
}

void diffusion_tokens_forward(float* out, const float* patch_emb, const float* class_emb, const float* temb,
                              const float* wpe, const int* t, const int* y, int B, int T, int C) {
    long n = (long)B * (T + 2) * C;
    LAUNCH(diffusion_tokens_forward_kernel, CEIL_DIV(n, 256), 256, 0)(out, patch_emb, class_emb, temb, wpe, t, y, B, T, C);
    cudaCheck(cudaGetLastError());
}

// the gradients of the token assembly from dtokens (B, T + 2, C): dwpe and
// dclass_emb accumulated, dpatch_emb (B, T, C) overwritten
void diffusion_tokens_backward(float* dpatch_emb, float* dclass_emb, float* dwpe, const float* dtokens, const int* y,
                               int B, int T, int K1, int C) {
    positions_backward(dwpe, dtokens, B, T + 2, C);
    LAUNCH(class_embedding_backward_kernel, CEIL_DIV((long)K1 * C, 256), 256, 0)(dclass_emb, dtokens, y, B, T, K1, C);
    cudaCheck(cudaGetLastError());
    LAUNCH(diffusion_patch_rows_backward_kernel, CEIL_DIV((long)B * T * C, 256), 256, 0)(dpatch_emb, dtokens, B, T, C);
    cudaCheck(cudaGetLastError());
}

void patch_rows_to_images(float* img, const float* rows, int B, ImageShape s, int P) {
    long n = (long)B * image_values(s);
    LAUNCH(patch_rows_to_images_kernel, CEIL_DIV(n, 256), 256, 0)(img, rows, B, s.channels, s.height, s.width, P);
    cudaCheck(cudaGetLastError());
}

void images_to_patch_rows(float* rows, const float* img, int B, ImageShape s, int P) {
    long n = (long)B * (image_tokens(s, P) + 2) * image_patch_dim(s, P);
    LAUNCH(images_to_patch_rows_kernel, CEIL_DIV(n, 256), 256, 0)(rows, img, B, s.channels, s.height, s.width, P);
    cudaCheck(cudaGetLastError());
}

void mse_forward(float* losses, const float* pred, const float* target, int B, long D) {
    LAUNCH(mse_forward_kernel, CEIL_DIV(B, 64), 64, 0)(losses, pred, target, B, D);
    cudaCheck(cudaGetLastError());
}

void mse_backward(float* dpred, const float* pred, const float* target, const float* dloss, int B, long D) {
    LAUNCH(mse_backward_kernel, CEIL_DIV((long)B * D, 256), 256, 0)(dpred, pred, target, dloss, B, D);
    cudaCheck(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// sampling: the steps and each step's coefficients

// The samplers, over `steps` time steps t_i = (i + 1) DIFFUSION_STEPS / steps
// (integer division), i = steps-1 .. 0, each to the one before (t = 0 after
// the first): DDIM (eta 0), or ancestral DDPM, the chain respaced to those
// steps (beta'_t = 1 - alpha_bar_t / alpha_bar_prev; all 1000 steps are Ho et
// al.'s sampler, sigma^2 = beta~, as in the ELBO), no noise in the last step.
#define SAMPLER_DDIM 0
#define SAMPLER_DDPM 1

typedef struct {
    int t;                    // the step's time step
    float s0, s1;             // x0 = (x_t - s1 eps) / s0
    float a, b, sigma;        // x_prev = a x0 + b x_t + sigma z
} SamplerStep;

static int sampler_time_step(int steps, int i) { return (int)((long)(i + 1) * DIFFUSION_STEPS / steps); }

// the coefficients of step i (from t_i to t_{i-1}, t_{-1} = 0)
static SamplerStep sampler_step(const DiffusionSchedule& s, int sampler, int steps, int i) {
    int t = sampler_time_step(steps, i), prev = i ? sampler_time_step(steps, i - 1) : 0;
    double ab = s.alpha_bar[t], ab_prev = s.alpha_bar[prev];
    SamplerStep st;
    st.t = t;
    st.s0 = (float)sqrt(ab);
    st.s1 = (float)sqrt(1.0 - ab);
    if (sampler == SAMPLER_DDPM) {  // the posterior q(x_prev | x_t, x0)'s mean, and its deviation
        double beta = 1.0 - ab / ab_prev;
        st.a = (float)(sqrt(ab_prev) * beta / (1.0 - ab));
        st.b = (float)(sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab));
        st.sigma = prev > 0 ? (float)sqrt(beta * (1.0 - ab_prev) / (1.0 - ab)) : 0.0f;
    } else {  // x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps', eps' = (x_t - sqrt(ab) x0) / sqrt(1 - ab)
        double r = sqrt((1.0 - ab_prev) / (1.0 - ab));
        st.a = (float)(sqrt(ab_prev) - r * sqrt(ab));
        st.b = (float)r;
        st.sigma = 0.0f;
    }
    return st;
}

void sampler_apply(float* x, const float* eps, const float* z, float guidance, const SamplerStep& st, int B, long D) {
    LAUNCH(sampler_step_kernel, CEIL_DIV((long)B * D, 256), 256, 0)(x, eps, z, guidance, st.s0, st.s1, st.a, st.b,
                                                                     st.sigma, B, D);
    cudaCheck(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// the negative ELBO's terms (nats), as Ho et al. compute them

// L_T = KL(q(x_T | x_0) || N(0, I)) summed over the D values of x0
static double elbo_prior_term(const DiffusionSchedule& s, const float* x0, long D) {
    double ab = s.alpha_bar[DIFFUSION_STEPS], kl = 0.0;
    for (long i = 0; i < D; i++) {
        double mean = sqrt(ab) * x0[i], var = 1.0 - ab;
        kl += 0.5 * (var + mean * mean - 1.0 - log(var));
    }
    return kl;
}

// L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t >= 2 is this
// coefficient times ||eps - eps_pred||^2: the means differ by beta_t / (sqrt(alpha_t)
// sqrt(1 - alpha_bar_t)) (eps_pred - eps), the variances are both beta~_t
static double elbo_step_coefficient(const DiffusionSchedule& s, int t) {
    double beta = s.beta[t], alpha = 1.0 - beta;
    return beta * beta / (2.0 * posterior_variance(s, t) * alpha * (1.0 - s.alpha_bar[t]));
}

static double log_normal_cdf(double z) { return log(0.5 * erfc(-z / sqrt(2.0))); }

// L_0 = -log p(x_0 | x_1) for one value x0 in {-1 + 2k/255}: the Gaussian of
// mean mu and deviation sigma integrated over the value's bin of width 2/255
// (to -inf below -1 + 1/255, to +inf above 1 - 1/255), at least 1e-12
static double elbo_decoder_term(double x0, double mu, double sigma) {
    double lo = (x0 - 1.0 / 255.0 - mu) / sigma, hi = (x0 + 1.0 / 255.0 - mu) / sigma, p;
    if (x0 < -0.999) p = 0.5 * erfc(-hi / sqrt(2.0));
    else if (x0 > 0.999) p = 0.5 * erfc(lo / sqrt(2.0));
    else if (lo > 0.0) p = 0.5 * (erfc(lo / sqrt(2.0)) - erfc(hi / sqrt(2.0)));  // both in the upper tail
    else p = 0.5 * (erfc(-hi / sqrt(2.0)) - erfc(-lo / sqrt(2.0)));
    return -log(p > 1e-12 ? p : 1e-12);
}

// the decoder's mean at t = 1: mu = (x_1 - beta_1 / sqrt(1 - alpha_bar_1) eps_pred) / sqrt(alpha_1)
static double elbo_decoder_mean(const DiffusionSchedule& s, double x1, double eps_pred) {
    return (x1 - s.beta[1] / sqrt(1.0 - s.alpha_bar[1]) * eps_pred) / sqrt(1.0 - s.beta[1]);
}

// ----------------------------------------------------------------------------
// draws: a generator for (seed, what, index), mixed by splitmix64

#define DRAW_TRAIN 1     // index: step * global batch + row
#define DRAW_EVAL 2      // index: test image
#define DRAW_SAMPLE 3    // index: generated image
#define DRAW_ELBO 4      // index: test image * STEPS + t - 1

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static Rng keyed_rng(uint64_t seed, uint64_t what, uint64_t index) {
    Rng r;
    rng_seed(&r, splitmix64(splitmix64(seed ^ (what << 56)) + index));
    return r;
}

static void draw_normals(Rng* r, float* out, long n) {
    for (long i = 0; i < n; i++) out[i] = rng_normal(r);
}

/*
Checks the vision models' data path: the augmentation kernels of
llmc/augment.cuh, the patch and pooling kernels of llmc/vision.cuh, and the
images file reader and batch order of llmc/image_data.h.

  - uint8 -> float, flip, crop and erasing: exact against plain C loops,
    on batches of 3 x 32 x 32 (CIFAR-10's), 1 x 28 x 28 (Fashion-MNIST's)
    and 2 x 20 x 28 images (not square), as the rotation, perspective and
    whole-pipeline checks below
  - rotation and perspective: against plain C with bilinear sampling in
    double (tolerance 2e-5 absolute on values in [0, 1]: float coordinates
    of pixels up to 32 away carry ~4e-6 rounding, which moves a bilinear
    sample by at most that times the largest step between neighbours, 1);
    and exactly where the answer is exact: rotation by 0 and by 90 degrees,
    the identity perspective
  - the perspective coefficients take each end point to its start point
  - the drawn parameters: the rates (flip 0.5, erasing 0.2, perspective
    0.5), their ranges (crop offsets 0..8 all used, angles within +-15,
    erased areas and aspect ratios, corners inward by at most 8), the same
    draws from the same seed, and the whole pipeline against the plain C
    chain, bit-identical on a re-run
  - patchify against plain C (exact) on the three shapes at every patch
    size tried that divides them, and mean pooling
  - the images file: a good file read back exactly; truncated, wrong magic,
    bad label, bad shape refused with one line naming the file; the epoch
    order a permutation, the same for the same (seed, epoch), another for
    the next epoch

Ends with "N passed, M failed".
*/
#include "llmc/cuda_common.h"
#include "llmc/augment.cuh"
#include "llmc/vision.cuh"
#include "llmc/image_data.h"
#include "llmc/testing.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

// the batch's shape: B images of CH x H x W (set_shape), N values
static const int B = 64;
static int CH = 3, H = 32, W = 32;
static long N = (long)B * CH * H * W;
static const double BILINEAR_TOL = 2e-5;

static void set_shape(int channels, int height, int width) {
    CH = channels; H = height; W = width;
    N = (long)B * CH * H * W;
}

// a batch of images with structure (so that a wrong index shows): smooth
// ramps plus noise, values in [0, 1]
static std::vector<float> test_images(uint64_t seed) {
    std::vector<float> img(N);
    uint64_t rng = seed;
    for (long i = 0; i < N; i++) {
        int x = i % W, y = (i / W) % H, c = (i / (W * H)) % CH;
        img[i] = 0.5f * (x + 2 * y + 7 * c) / (W + 2 * H + 14) + 0.5f * random_uniform(&rng);
    }
    return img;
}

// ----------------------------------------------------------------------------
// plain C references

static double ref_bilinear(const float* plane, double sx, double sy) {
    if (!(sx > -2.0 && sx < W + 1.0 && sy > -2.0 && sy < H + 1.0)) return 0.0;
    double fx = floor(sx), fy = floor(sy), ax = sx - fx, ay = sy - fy;
    int x0 = (int)fx, y0 = (int)fy;
    auto tap = [&](int x, int y) -> double { return x >= 0 && x < W && y >= 0 && y < H ? plane[y * W + x] : 0.0; };
    return (1 - ay) * ((1 - ax) * tap(x0, y0) + ax * tap(x0 + 1, y0)) + ay * ((1 - ax) * tap(x0, y0 + 1) + ax * tap(x0 + 1, y0 + 1));
}

static std::vector<float> ref_flip(const std::vector<float>& in, const std::vector<int>& flip) {
    std::vector<float> out(N);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < CH; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    long base = (((long)b * CH + c) * H + y) * W;
                    out[base + x] = in[base + (flip[b] ? W - 1 - x : x)];
                }
    return out;
}

static std::vector<float> ref_crop(const std::vector<float>& in, const std::vector<int>& off, int pad) {
    std::vector<float> out(N, 0.0f);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < CH; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    int sy = y + off[2 * b] - pad, sx = x + off[2 * b + 1] - pad;
                    if (sy < 0 || sy >= H || sx < 0 || sx >= W) continue;
                    out[(((long)b * CH + c) * H + y) * W + x] = in[(((long)b * CH + c) * H + sy) * W + sx];
                }
    return out;
}

static std::vector<double> ref_rotate(const std::vector<float>& in, const std::vector<float>& rot) {
    std::vector<double> out(N);
    double cx = (W - 1) / 2.0, cy = (H - 1) / 2.0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < CH; c++) {
            const float* plane = in.data() + ((long)b * CH + c) * H * W;
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    double dx = x - cx, dy = y - cy, co = rot[2 * b], si = rot[2 * b + 1];
                    out[(((long)b * CH + c) * H + y) * W + x] = ref_bilinear(plane, co * dx - si * dy + cx, si * dx + co * dy + cy);
                }
        }
    return out;
}

static std::vector<float> ref_erase(const std::vector<float>& in, const std::vector<int>& rect) {
    std::vector<float> out = in;
    for (int b = 0; b < B; b++) {
        const int* r = &rect[4 * b];
        for (int c = 0; c < CH; c++)
            for (int y = r[0]; y < r[0] + r[2]; y++)
                for (int x = r[1]; x < r[1] + r[3]; x++) out[(((long)b * CH + c) * H + y) * W + x] = 0.0f;
    }
    return out;
}

static std::vector<double> ref_perspective(const std::vector<float>& in, const std::vector<float>& k8,
                                           const std::vector<int>& apply) {
    std::vector<double> out(N);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < CH; c++) {
            const float* plane = in.data() + ((long)b * CH + c) * H * W;
            const float* k = &k8[8 * b];
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    long i = (((long)b * CH + c) * H + y) * W + x;
                    if (!apply[b]) { out[i] = in[i]; continue; }
                    double X = x + 0.5, Y = y + 0.5, den = k[6] * X + k[7] * Y + 1.0;
                    out[i] = ref_bilinear(plane, (k[0] * X + k[1] * Y + k[2]) / den - 0.5, (k[3] * X + k[4] * Y + k[5]) / den - 0.5);
                }
        }
    return out;
}

static double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
    double m = 0.0;
    for (size_t i = 0; i < a.size(); i++) { double d = fabs(a[i] - b[i]); if (!(d <= m)) m = d; }
    return m;
}

// ----------------------------------------------------------------------------
// the kernels against the references

static void check_kernels(Tests& t) {
    printf("--- augmentation kernels, B %d, %d x %d x %d\n", B, CH, H, W);
    std::vector<float> img = test_images(1);
    float *in, *out;
    int* ints;
    float* floats;
    cudaCheck(cudaMalloc(&in, N * sizeof(float)));
    cudaCheck(cudaMalloc(&out, N * sizeof(float)));
    cudaCheck(cudaMalloc(&ints, 8 * B * sizeof(int)));
    cudaCheck(cudaMalloc(&floats, 10 * B * sizeof(float)));
    int grid = CEIL_DIV(N, 256);
    uint64_t rng = 7;

    {   // uint8 -> float
        std::vector<unsigned char> px(N);
        for (auto& p : px) p = random_u32(&rng) & 255;
        unsigned char* d;
        cudaCheck(cudaMalloc(&d, N));
        cudaCheck(cudaMemcpy(d, px.data(), N, cudaMemcpyHostToDevice));
        images_to_float(out, d, N);
        std::vector<float> got = device_to_vector(out, N);
        long wrong = 0;
        for (long i = 0; i < N; i++) wrong += got[i] != px[i] * (1.0f / 255.0f);
        t.check(wrong == 0 && got[std::max_element(px.begin(), px.end()) - px.begin()] == 1.0f,
                "uint8 -> float: p / 255 exactly, 255 -> 1 (%ld wrong)", wrong);
        cudaCheck(cudaFree(d));
    }
    upload(in, img);
    {   // flip
        std::vector<int> flip(B);
        for (auto& f : flip) f = random_u32(&rng) & 1;
        cudaCheck(cudaMemcpy(ints, flip.data(), B * sizeof(int), cudaMemcpyHostToDevice));
        LAUNCH(flip_kernel, grid, 256, 0)(out, in, ints, B, CH, H, W);
        t.check(device_to_vector(out, N) == ref_flip(img, flip), "flip: exact against plain C");
    }
    {   // crop: every offset 0..8 in both directions appears
        int pad = 4;
        std::vector<int> off(2 * B);
        for (int b = 0; b < B; b++) { off[2 * b] = b % 9; off[2 * b + 1] = (b / 9 + 2 * b) % 9; }
        cudaCheck(cudaMemcpy(ints, off.data(), 2 * B * sizeof(int), cudaMemcpyHostToDevice));
        LAUNCH(crop_kernel, grid, 256, 0)(out, in, ints, pad, B, CH, H, W);
        t.check(device_to_vector(out, N) == ref_crop(img, off, pad), "crop (padding 4, offsets 0..8): exact against plain C");
    }
    {   // rotation: random angles within +-15 degrees, against double-precision bilinear
        std::vector<float> rot(2 * B);
        for (int b = 0; b < B; b++) {
            double a = (2.0 * random_uniform(&rng) - 1.0) * 15.0 * M_PI / 180.0;
            rot[2 * b] = (float)cos(a);
            rot[2 * b + 1] = (float)sin(a);
        }
        upload(floats, rot);
        LAUNCH(rotate_kernel, grid, 256, 0)(out, in, floats, B, CH, H, W);
        double err = max_abs_diff(device_to_vector(out, N), ref_rotate(img, rot));
        t.check(err <= BILINEAR_TOL, "rotation within +-15 deg: bilinear against plain C, max abs err %.2e (tol %.0e)", err, BILINEAR_TOL);
        // exact cases: angle 0 is the identity; 90 degrees (square images) permutes pixels: out[y][x] = in[x][W-1-y]
        int quarter = H == W;
        for (int b = 0; b < B; b++) { rot[2 * b] = b % 2 && quarter ? 0.0f : 1.0f; rot[2 * b + 1] = b % 2 && quarter ? 1.0f : 0.0f; }
        upload(floats, rot);
        LAUNCH(rotate_kernel, grid, 256, 0)(out, in, floats, B, CH, H, W);
        std::vector<float> got = device_to_vector(out, N);
        long wrong = 0;
        for (int b = 0; b < B; b++)
            for (int c = 0; c < CH; c++)
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++) {
                        long plane = ((long)b * CH + c) * H * W;
                        float want = b % 2 && quarter ? img[plane + (long)x * W + (W - 1 - y)] : img[plane + (long)y * W + x];
                        wrong += got[plane + (long)y * W + x] != want;
                    }
        t.check(wrong == 0, "rotation by 0 is the identity%s, exactly (%ld wrong)",
                quarter ? " and by 90 deg a pixel permutation" : "", wrong);
    }
    {   // erasing: rectangles from the drawing code, and one touching each border
        AugmentConfig cfg = {0, 0, 0.0f, 1.0f, 0.0f, 0.5f};
        AugmentParams p;
        Rng r;
        rng_seed(&r, 11);
        augment_draw(&cfg, &r, B, H, W, &p);
        int border[4] = {0, 0, 5, W - 1};
        memcpy(&p.erase[0], border, sizeof(border));
        int corner[4] = {H - 12, W - 7, 12, 7};
        memcpy(&p.erase[4], corner, sizeof(corner));
        cudaCheck(cudaMemcpy(ints, p.erase.data(), 4 * B * sizeof(int), cudaMemcpyHostToDevice));
        upload(out, img);
        LAUNCH(erase_kernel, grid, 256, 0)(out, ints, B, CH, H, W);
        t.check(device_to_vector(out, N) == ref_erase(img, p.erase), "erasing (in place): exact against plain C");
    }
    {   // perspective: drawn coefficients, against double-precision bilinear
        AugmentConfig cfg = {0, 0, 0.0f, 0.0f, 1.0f, 0.5f};
        AugmentParams p;
        Rng r;
        rng_seed(&r, 12);
        augment_draw(&cfg, &r, B, H, W, &p);
        p.persp[3] = 0;  // one image left alone
        upload(floats, p.coeffs);
        cudaCheck(cudaMemcpy(ints, p.persp.data(), B * sizeof(int), cudaMemcpyHostToDevice));
        LAUNCH(perspective_kernel, grid, 256, 0)(out, in, floats, ints, B, CH, H, W);
        double err = max_abs_diff(device_to_vector(out, N), ref_perspective(img, p.coeffs, p.persp));
        t.check(err <= BILINEAR_TOL, "perspective (distortion 0.5): bilinear against plain C, max abs err %.2e (tol %.0e)", err, BILINEAR_TOL);
        // the identity map copies exactly
        std::vector<float> id(8 * B, 0.0f);
        for (int b = 0; b < B; b++) { id[8 * b] = 1.0f; id[8 * b + 4] = 1.0f; }
        std::vector<int> all(B, 1);
        upload(floats, id);
        cudaCheck(cudaMemcpy(ints, all.data(), B * sizeof(int), cudaMemcpyHostToDevice));
        LAUNCH(perspective_kernel, grid, 256, 0)(out, in, floats, ints, B, CH, H, W);
        t.check(device_to_vector(out, N) == img, "perspective with the identity coefficients copies exactly");
    }
    for (void* q : {(void*)in, (void*)out, (void*)ints, (void*)floats}) cudaCheck(cudaFree(q));
}

// ----------------------------------------------------------------------------
// the drawn parameters

static void check_draws(Tests& t) {
    const int n = 20000;
    printf("--- drawn parameters, %d images\n", n);
    AugmentConfig cfg = augment_default();
    AugmentParams p, q;
    Rng r1, r2;
    rng_seed(&r1, 5);
    rng_seed(&r2, 5);
    augment_draw(&cfg, &r1, n, H, W, &p);
    augment_draw(&cfg, &r2, n, H, W, &q);
    t.check(p.flip == q.flip && p.crop == q.crop && p.rot == q.rot && p.erase == q.erase && p.persp == q.persp &&
            p.coeffs == q.coeffs && r1.state == r2.state, "the same seed draws the same parameters");

    long flips = 0, erased = 0, persp = 0, bad_crop = 0, bad_rect = 0, bad_corner = 0;
    std::vector<long> crop_counts(9, 0);
    double max_angle = 0.0, mean_angle = 0.0, min_area = 1.0, max_area = 0.0, min_ratio = 1e9, max_ratio = 0.0;
    double worst_map = 0.0;
    for (int b = 0; b < n; b++) {
        flips += p.flip[b];
        for (int k = 0; k < 2; k++) {
            int o = p.crop[2 * b + k];
            if (o < 0 || o > 8) bad_crop++; else crop_counts[o]++;
        }
        max_angle = fmax(max_angle, fabs(p.angle[b]));
        mean_angle += p.angle[b] / n;
        float c = p.rot[2 * b], s = p.rot[2 * b + 1];
        if (fabs(c - cos(p.angle[b] * M_PI / 180.0)) > 1e-6 || fabs(s - sin(p.angle[b] * M_PI / 180.0)) > 1e-6) bad_rect++;
        const int* e = &p.erase[4 * b];
        if (e[2] > 0) {
            erased++;
            double area = (double)e[2] * e[3] / (H * W), ratio = (double)e[2] / e[3];
            min_area = fmin(min_area, area); max_area = fmax(max_area, area);
            min_ratio = fmin(min_ratio, ratio); max_ratio = fmax(max_ratio, ratio);
            if (e[0] < 0 || e[1] < 0 || e[0] + e[2] > H || e[1] + e[3] > W) bad_rect++;
        }
        if (p.persp[b]) {
            persp++;
            const int* c4 = &p.corners[8 * b];
            double start[8] = {0, 0, W - 1.0, 0, W - 1.0, H - 1.0, 0, H - 1.0};
            for (int i = 0; i < 8; i++) if (fabs(c4[i] - start[i]) > 8) bad_corner++;
            // the coefficients take each end point (the drawn corner) to its start point
            double k[8];
            perspective_coeffs(start, std::vector<double>(c4, c4 + 8).data(), k);
            for (int i = 0; i < 4; i++) {
                double x = c4[2 * i], y = c4[2 * i + 1], den = k[6] * x + k[7] * y + 1.0;
                worst_map = fmax(worst_map, fabs((k[0] * x + k[1] * y + k[2]) / den - start[2 * i]));
                worst_map = fmax(worst_map, fabs((k[3] * x + k[4] * y + k[5]) / den - start[2 * i + 1]));
            }
        }
    }
    auto rate_ok = [&](long count, double p0) { return fabs((double)count / n - p0) < 4.0 * sqrt(p0 * (1 - p0) / n); };
    t.check(rate_ok(flips, 0.5), "flip rate %.4f (p 0.5)", (double)flips / n);
    long cmin = *std::min_element(crop_counts.begin(), crop_counts.end());
    long cmax = *std::max_element(crop_counts.begin(), crop_counts.end());
    t.check(bad_crop == 0 && cmin > 0.9 * 2 * n / 9 && cmax < 1.1 * 2 * n / 9,
            "crop offsets in 0..8, each drawn %ld..%ld times of %d (uniform: %d)", cmin, cmax, 2 * n, 2 * n / 9);
    t.check(max_angle <= 15.0 && max_angle > 14.9 && fabs(mean_angle) < 0.3,
            "rotation angles within +-15 deg (largest %.3f, mean %+.3f); cos and sin match", max_angle, mean_angle);
    t.check(rate_ok(erased, 0.2) && bad_rect == 0, "erasing rate %.4f (p 0.2), every rectangle inside the image", (double)erased / n);
    // rounding h and w to whole pixels moves area and ratio a little outside the drawn ranges
    t.check(min_area >= 0.015 && max_area <= 0.36 && min_area < 0.03 && max_area > 0.3 && min_ratio >= 0.25 && max_ratio <= 3.7,
            "erased area %.3f..%.3f of the image (drawn 0.02..0.33), aspect h/w %.2f..%.2f (drawn 0.3..3.3)", min_area,
            max_area, min_ratio, max_ratio);
    t.check(rate_ok(persp, 0.5) && bad_corner == 0 && worst_map < 1e-9,
            "perspective rate %.4f (p 0.5), corners moved inward by at most 8, coefficients map end to start points (err %.1e)",
            (double)persp / n, worst_map);
}

// the whole pipeline: against the plain C chain, and bit-identical on a re-run
static void check_pipeline(Tests& t) {
    printf("--- the whole pipeline (flip, crop, rotation, erasing, perspective), %d x %d x %d\n", CH, H, W);
    std::vector<float> img = test_images(3);
    AugmentConfig cfg = augment_default();
    AugmentBuffers d;
    augment_buffers_alloc(&d, B);
    float *a, *b;
    cudaCheck(cudaMalloc(&a, N * sizeof(float)));
    cudaCheck(cudaMalloc(&b, N * sizeof(float)));
    Rng r;
    rng_seed(&r, 21);
    AugmentParams p;
    augment_draw(&cfg, &r, B, H, W, &p);
    upload(a, img);
    std::vector<float> got = device_to_vector(augment_apply(&cfg, &p, &d, a, b, B, CH, H, W), N);
    upload(a, img);
    std::vector<float> again = device_to_vector(augment_apply(&cfg, &p, &d, a, b, B, CH, H, W), N);
    std::vector<float> x = ref_crop(ref_flip(img, p.flip), p.crop, cfg.crop_pad);
    std::vector<double> rot = ref_rotate(x, p.rot);
    for (long i = 0; i < N; i++) x[i] = (float)rot[i];
    x = ref_erase(x, p.erase);
    double err = max_abs_diff(got, ref_perspective(x, p.coeffs, p.persp));
    t.check(err <= 2 * BILINEAR_TOL, "pipeline against the plain C chain: max abs err %.2e (tol %.0e)", err, 2 * BILINEAR_TOL);
    t.check(got == again, "pipeline bit-identical on a re-run");
    // with only in-place erasing enabled, the result is in the first buffer
    AugmentConfig only_erase = {0, 0, 0.0f, 1.0f, 0.0f, 0.5f};
    augment_draw(&only_erase, &r, B, H, W, &p);
    upload(a, img);
    const float* where = augment_apply(&only_erase, &p, &d, a, b, B, CH, H, W);
    t.check(where == a && device_to_vector(a, N) == ref_erase(img, p.erase), "erasing alone works in place in the first buffer");
    augment_buffers_free(&d);
    cudaCheck(cudaFree(a));
    cudaCheck(cudaFree(b));
}

// ----------------------------------------------------------------------------
// patches and pooling

// patchify of the current shape at each patch size of `patches` that divides it
static void check_patches(Tests& t, std::vector<int> patches) {
    printf("--- patchify, %d x %d x %d\n", CH, H, W);
    std::vector<float> img = test_images(4);
    float *in, *out;
    cudaCheck(cudaMalloc(&in, N * sizeof(float)));
    cudaCheck(cudaMalloc(&out, N * sizeof(float)));
    upload(in, img);
    for (int P : patches) {
        if (H % P || W % P) continue;
        int gy = H / P, gx = W / P, T = gy * gx, PD = CH * P * P;
        patchify(out, in, B, CH, H, W, P);
        std::vector<float> got = device_to_vector(out, N);
        long wrong = 0;
        for (int b = 0; b < B; b++)
            for (int hy = 0; hy < gy; hy++)
                for (int wx = 0; wx < gx; wx++)
                    for (int c = 0; c < CH; c++)
                        for (int p1 = 0; p1 < P; p1++)
                            for (int p2 = 0; p2 < P; p2++) {
                                long o = ((long)b * T + hy * gx + wx) * PD + (c * P + p1) * P + p2;
                                wrong += got[o] != img[(((long)b * CH + c) * H + hy * P + p1) * W + wx * P + p2];
                            }
        t.check(wrong == 0, "patchify 'b c (h p1) (w p2) -> b (h w) (c p1 p2)', %d x %d x %d at patch %d (%d x %d): exact (%ld wrong)",
                CH, H, W, P, T, PD, wrong);
    }
    cudaCheck(cudaFree(in));
    cudaCheck(cudaFree(out));
}

// mean pooling over (B, 64, 48): the patches of 3 x 32 x 32 images at patch size 4
static void check_pooling(Tests& t) {
    printf("--- mean pooling\n");
    std::vector<float> img = test_images(4);
    float *in, *out;
    cudaCheck(cudaMalloc(&in, N * sizeof(float)));
    cudaCheck(cudaMalloc(&out, N * sizeof(float)));
    upload(in, img);
    int T = 64, C = 48;  // the patches of patch size 4 as (B, T, C)
    mean_pool_forward(out, in, B, T, C);
    std::vector<float> pooled = device_to_vector(out, (long)B * C);
    long wrong = 0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float s = 0.0f;
            for (int t2 = 0; t2 < T; t2++) s += img[((long)b * T + t2) * C + c];
            wrong += pooled[(long)b * C + c] != s / T;
        }
    t.check(wrong == 0, "mean pool forward: the sum in token order / T, exactly (%ld wrong)", wrong);
    mean_pool_backward(out, in, B, T, C);  // dpooled = the first B*C values
    std::vector<float> dx = device_to_vector(out, (long)B * T * C);
    wrong = 0;
    for (long i = 0; i < (long)B * T * C; i++) wrong += dx[i] != img[(i / ((long)T * C)) * C + i % C] / T;
    t.check(wrong == 0, "mean pool backward: dpooled / T to every token, exactly (%ld wrong)", wrong);
    cudaCheck(cudaFree(in));
    cudaCheck(cudaFree(out));
}

// ----------------------------------------------------------------------------
// the images file and the epoch order

struct Refused : std::runtime_error { using std::runtime_error::runtime_error; };
static void refuse(const char* message) { throw Refused(message); }

static std::vector<unsigned char> images_file(int n, int c, int h, int w, int k, uint64_t seed) {
    std::vector<unsigned char> f(HEADER_BYTES + (size_t)n * (1 + c * h * w));
    int header[HEADER_INTS] = {MAGIC_IMAGES, FORMAT_VERSION, n, c, h, w, k};
    memcpy(f.data(), header, HEADER_BYTES);
    uint64_t rng = seed;
    for (size_t i = HEADER_BYTES; i < f.size(); i++) f[i] = random_u32(&rng) & 255;
    for (int i = 0; i < n; i++) f[HEADER_BYTES + (size_t)i * (1 + c * h * w)] = random_u32(&rng) % (k > 0 ? k : 1);
    return f;
}

static void check_images_file(Tests& t) {
    printf("--- images file and epoch order\n");
    const char* path = "fabricated.bin";
    std::vector<unsigned char> good = images_file(7, 3, 32, 32, 10, 1);
    ImageData d;
    image_data_parse(&d, path, good.data(), (long)good.size());
    bool same = d.count == 7 && d.channels == 3 && d.height == 32 && d.width == 32 && d.classes == 10;
    for (int i = 0; i < 7 && same; i++) {
        const unsigned char* rec = good.data() + HEADER_BYTES + (size_t)i * 3073;
        same = d.labels[i] == rec[0] && !memcmp(d.pixels.data() + (size_t)i * 3072, rec + 1, 3072);
    }
    std::vector<int> idx = {6, 0, 3}, labels(3);
    std::vector<unsigned char> px(3 * 3072);
    image_data_gather(&d, idx.data(), 3, px.data(), labels.data());
    same = same && labels[0] == d.labels[6] && !memcmp(px.data() + 2 * 3072, d.pixels.data() + 3 * 3072, 3072);
    t.check(same, "a good file reads back exactly; a batch gathers the images asked for");

    fail_hook = refuse;
    auto expect_refusal = [&](const char* what, std::vector<unsigned char> bytes, const char* want) {
        std::string msg = "(accepted)";
        try { ImageData e; image_data_parse(&e, path, bytes.data(), (long)bytes.size()); }
        catch (Refused& r) { msg = r.what(); }
        t.check(msg.find(path) == 0 && msg.find(want) != std::string::npos && msg.find('\n') == std::string::npos,
                "refused %s: %s", what, msg.c_str());
    };
    std::vector<unsigned char> bad = good;
    bad.pop_back();
    expect_refusal("a truncated file", bad, "bytes");
    expect_refusal("a file shorter than its header", std::vector<unsigned char>(good.begin(), good.begin() + 100), "too short");
    bad = good; bad[0] = 1;
    expect_refusal("a wrong magic", bad, "magic");
    bad = good; bad[4] = 2;
    expect_refusal("a wrong version", bad, "version");
    bad = good; bad[HEADER_BYTES + 3 * 3073] = 10;
    expect_refusal("a label of 10 with 10 classes", bad, "label 10");
    bad = images_file(2, 3, 32, 32, 0, 2);
    expect_refusal("zero classes", bad, "classes");
    bad = good; bad[8] = 0xff; bad[9] = 0xff; bad[10] = 0xff; bad[11] = 0x7f;  // count 2^31 - 1
    expect_refusal("a count past the file", bad, "bytes");
    bad = good; bad[12] = 0;
    expect_refusal("zero channels", bad, "shape");
    fail_hook = nullptr;

    std::vector<int> o1, o2, o3;
    image_data_epoch_order(1337, 4, 1000, &o1);
    image_data_epoch_order(1337, 4, 1000, &o2);
    image_data_epoch_order(1337, 5, 1000, &o3);
    std::vector<int> sorted = o1;
    std::sort(sorted.begin(), sorted.end());
    bool perm = true;
    for (int i = 0; i < 1000; i++) perm = perm && sorted[i] == i;
    int fixed = 0;
    for (int i = 0; i < 1000; i++) fixed += o1[i] == o3[i];
    t.check(perm && o1 == o2 && fixed < 10, "epoch order: a permutation, the same for (seed, epoch), another next epoch (%d in place)", fixed);
}

int main() {
    Tests t;
    printf("backend %s\n", BACKEND_NAME);
    check_draws(t);  // at 3 x 32 x 32
    check_pooling(t);
    int shapes[3][3] = {{3, 32, 32}, {1, 28, 28}, {2, 20, 28}};
    for (auto& s : shapes) {
        set_shape(s[0], s[1], s[2]);
        check_kernels(t);
        check_pipeline(t);
        check_patches(t, {1, 2, 4, 7, 8, 14});
    }
    set_shape(3, 32, 32);
    check_images_file(t);
    return t.summary();
}

/*
Training-time augmentation of image batches, as the seed's torchvision
pipeline does it, in this order:
  RandomHorizontalFlip (p 0.5)
  RandomCrop(32, padding=4)                    zero padding
  RandomRotation(15)                           bilinear, zero fill (the seed used nearest)
  RandomErasing(p 0.2, scale (0.02, 0.33), ratio (0.3, 3.3), value 0)
  RandomPerspective(distortion 0.5, p 0.5)     bilinear, zero fill
on images (B, Cc, H, W) of floats in [0, 1] (images_to_float converts the
uint8 pixels of the data file first).

The random parameters of every image are drawn on the host from the
project's Rng (llmc/utils.h), image by image in batch order and, per image,
transform by transform in the order above (augment_draw); a disabled
transform draws nothing. They go to the device as small arrays and each
transform is one kernel that applies them, so a run is reproducible from its
seed and resumable from the generator state in a checkpoint. Each kernel runs
one thread per output element and is barrier-free.

Coordinates follow torchvision's tensor path (grid_sample with
align_corners=False): pixel (x, y) has its centre at x + 0.5, y + 0.5.
Rotation turns about the image centre ((W-1)/2, (H-1)/2 in pixel indices);
bilinear sampling treats every tap outside the image as 0.
*/
#pragma once
#include <cmath>
#include <utility>
#include <vector>
#include "cuda_common.h"
#include "utils.h"

// ----------------------------------------------------------------------------
// kernels

// out[i] = in[i] / 255: uint8 pixels to floats in [0, 1]. One thread per element.
__global__ void images_to_float_kernel(float* out, const unsigned char* in, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] * (1.0f / 255.0f);
}

// Horizontal flip of the images with flip[b] set, a copy of the others:
// out[b,c,y,x] = in[b,c,y,W-1-x]. One thread per output element.
__global__ void flip_kernel(float* out, const float* in, const int* flip, int B, int Cc, int H, int W) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * Cc * H * W) return;
    int x = idx % W;
    long row = idx / W;  // (b, c, y)
    int b = row / ((long)Cc * H);
    out[idx] = in[row * W + (flip[b] ? W - 1 - x : x)];
}

// The element idx of a (B, Cc, H, W) batch: column x, row y, its plane
// (b, c) as one index, and the image b.
typedef struct { int x, y; long plane; int b; } PixelIndex;
__device__ __forceinline__ PixelIndex pixel_index(long idx, int Cc, int H, int W) {
    PixelIndex p;
    p.x = idx % W;
    p.y = (idx / W) % H;
    p.plane = idx / ((long)H * W);
    p.b = p.plane / Cc;
    return p;
}

// Random crop of the zero-padded image: offsets (B, 2) = (top, left) in the
// padded image, each in [0, 2*pad]; out[b,c,y,x] = in[b,c,y+top-pad,x+left-pad],
// 0 outside the image. One thread per output element.
__global__ void crop_kernel(float* out, const float* in, const int* offsets, int pad, int B, int Cc, int H, int W) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * Cc * H * W) return;
    PixelIndex p = pixel_index(idx, Cc, H, W);
    int x = p.x, y = p.y, b = p.b;
    long plane = p.plane;
    int sy = y + offsets[2 * b] - pad, sx = x + offsets[2 * b + 1] - pad;
    out[idx] = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? in[(plane * H + sy) * W + sx] : 0.0f;
}

// Bilinear sample of one image plane (H, W) at pixel-index coordinates (sx, sy);
// taps outside the plane count as 0 (grid_sample's zero padding).
__device__ __forceinline__ float sample_bilinear_zero(const float* plane, int H, int W, float sx, float sy) {
    if (!(sx > -1.0f && sx < (float)W && sy > -1.0f && sy < (float)H)) return 0.0f;  // also NaN
    float fx = floorf(sx), fy = floorf(sy);
    int x0 = (int)fx, y0 = (int)fy;  // in [-1, W-1] x [-1, H-1]
    float ax = sx - fx, ay = sy - fy;
    bool left = x0 >= 0, right = x0 + 1 < W, top = y0 >= 0, bottom = y0 + 1 < H;
    float v00 = left && top ? plane[y0 * W + x0] : 0.0f;
    float v01 = right && top ? plane[y0 * W + x0 + 1] : 0.0f;
    float v10 = left && bottom ? plane[(y0 + 1) * W + x0] : 0.0f;
    float v11 = right && bottom ? plane[(y0 + 1) * W + x0 + 1] : 0.0f;
    return (1.0f - ay) * ((1.0f - ax) * v00 + ax * v01) + ay * ((1.0f - ax) * v10 + ax * v11);
}

// Rotation about the image centre by the angle whose cosine and sine are
// rot[b] = (cos, sin): the output pixel at offset (dx, dy) from the centre
// samples the input at (cos*dx - sin*dy, sin*dx + cos*dy) from the centre
// (torchvision's inverse matrix for rotate(img, angle)), bilinear, zero fill.
// One thread per output element.
__global__ void rotate_kernel(float* out, const float* in, const float* rot, int B, int Cc, int H, int W) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * Cc * H * W) return;
    PixelIndex p = pixel_index(idx, Cc, H, W);
    int x = p.x, y = p.y, b = p.b;
    long plane = p.plane;
    float c = rot[2 * b], s = rot[2 * b + 1];
    float cx = 0.5f * (W - 1), cy = 0.5f * (H - 1);
    float dx = x - cx, dy = y - cy;
    out[idx] = sample_bilinear_zero(in + plane * H * W, H, W, c * dx - s * dy + cx, s * dx + c * dy + cy);
}

// Random erasing in place: rect (B, 4) = (top, left, h, w); the pixels of all
// channels inside the rectangle become 0 (h = 0: the image is left alone).
// One thread per element.
__global__ void erase_kernel(float* img, const int* rect, int B, int Cc, int H, int W) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * Cc * H * W) return;
    int x = idx % W;
    int y = (idx / W) % H;
    int b = idx / ((long)Cc * H * W);
    const int* r = rect + 4 * b;
    if (y >= r[0] && y < r[0] + r[2] && x >= r[1] && x < r[1] + r[3]) img[idx] = 0.0f;
}

// Perspective warp of the images with apply[b] set (a copy of the others):
// coeffs (B, 8) = (a, b, c, d, e, f, g, h) map an output pixel centre
// (X, Y) = (x + 0.5, y + 0.5) to the input point
//   ((aX + bY + c) / (gX + hY + 1), (dX + eY + f) / (gX + hY + 1)),
// sampled bilinearly at that point minus 0.5 (pixel indices), zero fill:
// torchvision's perspective() on tensors. One thread per output element.
__global__ void perspective_kernel(float* out, const float* in, const float* coeffs, const int* apply, int B, int Cc,
                                   int H, int W) {
    long idx = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long)B * Cc * H * W) return;
    PixelIndex p = pixel_index(idx, Cc, H, W);
    int x = p.x, y = p.y, b = p.b;
    long plane = p.plane;
    if (!apply[b]) { out[idx] = in[idx]; return; }
    const float* k = coeffs + 8 * b;
    float X = x + 0.5f, Y = y + 0.5f;
    float den = k[6] * X + k[7] * Y + 1.0f;
    float sx = (k[0] * X + k[1] * Y + k[2]) / den - 0.5f;
    float sy = (k[3] * X + k[4] * Y + k[5]) / den - 0.5f;
    out[idx] = sample_bilinear_zero(in + plane * H * W, H, W, sx, sy);
}

// ----------------------------------------------------------------------------
// host side: the configuration, drawing a batch's parameters, applying them

typedef struct {
    int flip;             // random horizontal flip, p 0.5
    int crop_pad;         // random crop of the image zero-padded by this much; 0 = off
    float rotate_deg;     // random rotation, angle uniform in [-deg, deg]; 0 = off
    float erase_p;        // random erasing probability; 0 = off
    float perspective_p;  // random perspective probability; 0 = off
    float distortion;     // perspective distortion scale (0.5)
} AugmentConfig;

// the seed's pipeline
static AugmentConfig augment_default() {
    AugmentConfig a = {1, 4, 15.0f, 0.2f, 0.5f, 0.5f};
    return a;
}

static bool augment_enabled(const AugmentConfig* a) {
    return a->flip || a->crop_pad > 0 || a->rotate_deg > 0.0f || a->erase_p > 0.0f || a->perspective_p > 0.0f;
}

// One batch's parameters (host arrays; only the enabled transforms' are filled)
typedef struct {
    std::vector<int> flip;        // (B)
    std::vector<int> crop;        // (B, 2) top, left in the padded image
    std::vector<float> rot;       // (B, 2) cos, sin of the angle
    std::vector<float> angle;     // (B) degrees (for tests and logs)
    std::vector<int> erase;       // (B, 4) top, left, h, w; h = 0: none
    std::vector<int> persp;       // (B) applied?
    std::vector<int> corners;     // (B, 8) the drawn end points (x, y) of the 4 corners
    std::vector<float> coeffs;    // (B, 8)
} AugmentParams;

// integer uniform in [lo, hi]
static int rng_int(Rng* rng, int lo, int hi) { return lo + (int)(rng_u32(rng) % (uint32_t)(hi - lo + 1)); }

// The 8 coefficients of the perspective map that takes each end point to its
// start point (torchvision's _get_perspective_coeffs): the 8 x 8 linear
// system solved in double by Gaussian elimination with partial pivoting.
// pts: 4 (x, y) pairs each. Returns false if the system is singular.
static bool perspective_coeffs(const double* start, const double* end, double* coeffs) {
    double a[8][9];
    for (int i = 0; i < 4; i++) {
        double x = end[2 * i], y = end[2 * i + 1], u = start[2 * i], v = start[2 * i + 1];
        double r0[9] = {x, y, 1, 0, 0, 0, -u * x, -u * y, u};
        double r1[9] = {0, 0, 0, x, y, 1, -v * x, -v * y, v};
        memcpy(a[2 * i], r0, sizeof(r0));
        memcpy(a[2 * i + 1], r1, sizeof(r1));
    }
    for (int col = 0; col < 8; col++) {
        int piv = col;
        for (int r = col + 1; r < 8; r++) if (fabs(a[r][col]) > fabs(a[piv][col])) piv = r;
        if (fabs(a[piv][col]) < 1e-12) return false;
        for (int k = 0; k < 9; k++) std::swap(a[col][k], a[piv][k]);
        for (int r = 0; r < 8; r++) {
            if (r == col) continue;
            double f = a[r][col] / a[col][col];
            for (int k = col; k < 9; k++) a[r][k] -= f * a[col][k];
        }
    }
    for (int i = 0; i < 8; i++) coeffs[i] = a[i][8] / a[i][i];
    return true;
}

// Draws the parameters of B images (H x W) in the fixed order (see the top).
static void augment_draw(const AugmentConfig* cfg, Rng* rng, int B, int H, int W, AugmentParams* p) {
    p->flip.assign(B, 0);
    p->crop.assign(2 * B, cfg->crop_pad);
    p->rot.assign(2 * B, 0.0f);
    p->angle.assign(B, 0.0f);
    p->erase.assign(4 * B, 0);
    p->persp.assign(B, 0);
    p->corners.assign(8 * B, 0);
    p->coeffs.assign(8 * B, 0.0f);
    const double pi = 3.14159265358979323846;
    for (int b = 0; b < B; b++) {
        if (cfg->flip) p->flip[b] = rng_uniform(rng) < 0.5f;
        if (cfg->crop_pad > 0) {
            p->crop[2 * b] = rng_int(rng, 0, 2 * cfg->crop_pad);
            p->crop[2 * b + 1] = rng_int(rng, 0, 2 * cfg->crop_pad);
        }
        if (cfg->rotate_deg > 0.0f) {
            float deg = (2.0f * rng_uniform(rng) - 1.0f) * cfg->rotate_deg;
            p->angle[b] = deg;
            p->rot[2 * b] = (float)cos(deg * pi / 180.0);
            p->rot[2 * b + 1] = (float)sin(deg * pi / 180.0);
        }
        if (cfg->erase_p > 0.0f && rng_uniform(rng) < cfg->erase_p) {
            // torchvision's RandomErasing.get_params: up to 10 tries for a rectangle that fits
            double area = (double)H * W, lr0 = log(0.3), lr1 = log(3.3);
            for (int attempt = 0; attempt < 10; attempt++) {
                double target = area * (0.02 + (0.33 - 0.02) * rng_uniform(rng));
                double ratio = exp(lr0 + (lr1 - lr0) * rng_uniform(rng));
                int h = (int)nearbyint(sqrt(target * ratio)), w = (int)nearbyint(sqrt(target / ratio));  // Python's round
                if (!(h < H && w < W)) continue;
                int* r = &p->erase[4 * b];
                r[0] = rng_int(rng, 0, H - h);
                r[1] = rng_int(rng, 0, W - w);
                r[2] = h;
                r[3] = w;
                break;
            }
        }
        if (cfg->perspective_p > 0.0f && rng_uniform(rng) < cfg->perspective_p) {
            // torchvision's RandomPerspective.get_params: each corner moves inward by up to distortion * half the size
            int hw = (int)(cfg->distortion * (W / 2)), hh = (int)(cfg->distortion * (H / 2));
            int* c = &p->corners[8 * b];
            c[0] = rng_int(rng, 0, hw);             c[1] = rng_int(rng, 0, hh);              // top left
            c[2] = rng_int(rng, W - hw - 1, W - 1); c[3] = rng_int(rng, 0, hh);              // top right
            c[4] = rng_int(rng, W - hw - 1, W - 1); c[5] = rng_int(rng, H - hh - 1, H - 1);  // bottom right
            c[6] = rng_int(rng, 0, hw);             c[7] = rng_int(rng, H - hh - 1, H - 1);  // bottom left
            double start[8] = {0, 0, (double)W - 1, 0, (double)W - 1, (double)H - 1, 0, (double)H - 1}, end[8], k[8];
            for (int i = 0; i < 8; i++) end[i] = c[i];
            if (perspective_coeffs(start, end, k)) {  // always solvable for these corners; skip the image if not
                p->persp[b] = 1;
                for (int i = 0; i < 8; i++) p->coeffs[8 * b + i] = (float)k[i];
            }
        }
    }
}

// device copies of one batch's parameters, sized for up to max_B images
typedef struct {
    int max_B;
    int* ints;      // flip (B) | crop (2B) | erase (4B) | persp (B)
    float* floats;  // rot (2B) | coeffs (8B)
} AugmentBuffers;

static void augment_buffers_alloc(AugmentBuffers* d, int max_B) {
    d->max_B = max_B;
    cudaCheck(cudaMalloc(&d->ints, (long)8 * max_B * sizeof(int)));
    cudaCheck(cudaMalloc(&d->floats, (long)10 * max_B * sizeof(float)));
}

static void augment_buffers_free(AugmentBuffers* d) {
    cudaCheck(cudaFree(d->ints));
    cudaCheck(cudaFree(d->floats));
}

// images (B, Cc, H, W) -> floats in [0, 1]
static void images_to_float(float* out, const unsigned char* in, long n) {
    LAUNCH(images_to_float_kernel, CEIL_DIV(n, 256), 256, 0)(out, in, n);
    cudaCheck(cudaGetLastError());
}

// Keeps the parameters of the B images from row `first` (a rank's rows of a global batch's draw)
static void augment_params_rows(AugmentParams* p, long first, int B) {
    auto keep = [&](auto& v, int per_image) {
        v.erase(v.begin(), v.begin() + first * per_image);
        v.resize((size_t)B * per_image);
    };
    keep(p->flip, 1); keep(p->crop, 2); keep(p->rot, 2); keep(p->angle, 1);
    keep(p->erase, 4); keep(p->persp, 1); keep(p->corners, 8); keep(p->coeffs, 8);
}

// Applies the enabled transforms with the drawn parameters p to the batch in
// `img`, using `tmp` (same size) as the other buffer of each out-of-place
// kernel. Returns the buffer that holds the result (img or tmp).
static float* augment_apply(const AugmentConfig* cfg, const AugmentParams* p, AugmentBuffers* d, float* img,
                            float* tmp, int B, int Cc, int H, int W) {
    if (B > d->max_B) fail("augment_apply: batch %d exceeds the allocation of %d", B, d->max_B);
    int *flip = d->ints, *crop = flip + B, *erase = crop + 2 * B, *persp = erase + 4 * B;
    float *rot = d->floats, *coeffs = rot + 2 * B;
    cudaCheck(cudaMemcpy(flip, p->flip.data(), B * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(crop, p->crop.data(), 2 * B * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(erase, p->erase.data(), 4 * B * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(persp, p->persp.data(), B * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(rot, p->rot.data(), 2 * B * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(coeffs, p->coeffs.data(), 8 * B * sizeof(float), cudaMemcpyHostToDevice));
    long n = (long)B * Cc * H * W;
    int grid = CEIL_DIV(n, 256);
    float *cur = img, *other = tmp;
    auto swap = [&]() { float* t = cur; cur = other; other = t; };
    if (cfg->flip) { LAUNCH(flip_kernel, grid, 256, 0)(other, cur, flip, B, Cc, H, W); swap(); }
    if (cfg->crop_pad > 0) { LAUNCH(crop_kernel, grid, 256, 0)(other, cur, crop, cfg->crop_pad, B, Cc, H, W); swap(); }
    if (cfg->rotate_deg > 0.0f) { LAUNCH(rotate_kernel, grid, 256, 0)(other, cur, rot, B, Cc, H, W); swap(); }
    if (cfg->erase_p > 0.0f) { LAUNCH(erase_kernel, grid, 256, 0)(cur, erase, B, Cc, H, W); }
    if (cfg->perspective_p > 0.0f) { LAUNCH(perspective_kernel, grid, 256, 0)(other, cur, coeffs, persp, B, Cc, H, W); swap(); }
    cudaCheck(cudaGetLastError());
    return cur;
}

/*
Checks the language models' image mode (-I N, llmc/lm_trainer.h and
llmc/dataloader.h "Images as token sequences") on the host backend, with a
small random Mamba LM (train_mamba.cu) and fabricated pixel tokens:

  1. aligned windows: a validation batch of images first..first+B-1 has as
     targets exactly those images' N tokens, as inputs the start token and
     then the image's first N-1 tokens; random training windows are whole
     images too (every row equals one image of the file, its input 0 is the
     start token, never the previous image's last pixel), and the start
     token (= the data's vocabulary size) is never a target;
  2. bits per dimension against a hand computation: for every image alone
     (batch 1, inputs built here) the logits of the parallel forward, a
     log-softmax in double on the host, the summed negative log-likelihood
     of every pixel value over all images / (images * N) / ln 2, against
     lm_validate_images with batch 3 over 7 images (a last batch of one
     image) and with a limit of 4 images; and changing the previous images
     does not change an image's losses (each is predicted from the start);
  3. generated images: write_generated_images turns pixel tokens (raster
     order, R, G, B per pixel) into the images file's CHW records, read back
     by image_data_load pixel for pixel, for 3 x 4 x 4 and 3 x 32 x 32.

Tolerance for 2: 1e-5 relative. Both sides take the same fp32 logits
formula; what differs is the matmuls' summation order on 3 rows against 1
(a few ulps), the fp32 cross-entropy kernel against a double log-softmax
(~1e-7 relative per token) and the fp32 batch means; measured ~1e-7. A
window off by one token, a missing start token or a wrong image count
moves the result by 1e-2 or more.
*/
#define TESTING
#include "train_mamba.cu"
#include "llmc/image_data.h"
#include "llmc/testing.h"

static const double BPD_TOL = 1e-5;

// n images of N tokens, values in [0, V): smooth ramps plus noise, so that neighbours are correlated
static TokenData fabricate_images(int n, int N, int V, uint64_t seed) {
    TokenData d;
    d.path = "fabricated";
    d.vocab_size = V;
    d.num_tokens = (long)n * N;
    d.tokens.resize(d.num_tokens);
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        int base = (int)(random_u32(&s) % V);
        for (int t = 0; t < N; t++) d.tokens[(long)i * N + t] = (base + t / 3 + (int)(random_u32(&s) % 7)) % V;
    }
    return d;
}

static void check_windows(Tests& t) {
    const int N = 48, n = 9, V = 256, start = V, B = 4;
    TokenData d = fabricate_images(n, N, V, 7);
    std::vector<int> in((long)B * N), tg((long)B * N);
    bool ok = true;
    token_data_image_batch(&d, 3, B, N, start, in.data(), tg.data());
    for (int b = 0; b < B; b++)
        for (int k = 0; k < N; k++) {
            ok &= tg[(long)b * N + k] == d.tokens[(long)(3 + b) * N + k];
            ok &= in[(long)b * N + k] == (k == 0 ? start : d.tokens[(long)(3 + b) * N + k - 1]);
        }
    t.check(ok, "validation batch of images 3..6: targets are the images, inputs the start token + their first %d tokens", N - 1);

    Rng rng;
    rng_seed(&rng, 11);
    int rows_ok = 0, rows = 0, starts_ok = 0, targets_ok = 0;
    std::vector<int> seen(n, 0);
    for (int rep = 0; rep < 50; rep++) {
        token_data_image_train_batch(&d, &rng, B, N, start, in.data(), tg.data());
        for (int b = 0; b < B; b++, rows++) {
            const int* row_t = &tg[(long)b * N];
            const int* row_i = &in[(long)b * N];
            int match = -1;
            for (int i = 0; i < n && match < 0; i++)
                if (!memcmp(row_t, d.tokens.data() + (long)i * N, N * sizeof(int))) match = i;
            bool shifted = match >= 0 && !memcmp(row_i + 1, row_t, (N - 1) * sizeof(int));
            rows_ok += match >= 0 && shifted;
            starts_ok += row_i[0] == start;
            bool below = true;
            for (int k = 0; k < N; k++) below &= row_t[k] < V;
            targets_ok += below;
            if (match >= 0) seen[match]++;
        }
    }
    int distinct = 0;
    for (int c : seen) distinct += c > 0;
    t.check(rows_ok == rows && starts_ok == rows && targets_ok == rows,
            "%d random training windows: %d are whole images shifted behind the start token, %d start with it, "
            "%d have every target below it; %d of the %d images drawn", rows, rows_ok, starts_ok, targets_ok, distinct, n);
    t.check(distinct == n, "random windows reach every image (%d of %d in %d draws)", distinct, n, rows);
}

// the negative log-likelihood (double) of each target under softmax(logits (T, V)) of row b of the last forward
static std::vector<double> token_nll(const Mamba* model, int b, int T, const int* targets) {
    int V = model->config.vocab_size;
    std::vector<float> logits((long)T * V);
    cudaCheck(cudaMemcpy(logits.data(), model->acts.logits + (long)b * T * V, logits.size() * sizeof(float),
                         cudaMemcpyDeviceToHost));
    std::vector<double> nll(T);
    for (int k = 0; k < T; k++) {
        const float* l = &logits[(long)k * V];
        double mx = l[0];
        for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += exp((double)l[v] - mx);
        nll[k] = -((double)l[targets[k]] - mx - log(sum));
    }
    return nll;
}

static void check_bits_per_dim(Tests& t) {
    const int N = 48, n = 7, V = 256, start = V, B = 3;
    TokenData d = fabricate_images(n, N, V, 3);
    Mamba model;
    mamba_build(&model, mamba_config(V + 1, 2, 16, 16));
    mamba_init_random(&model, 5);
    mamba_allocate_activations(&model, B, N, false);

    // by hand: each image alone, inputs built here
    std::vector<int> in(N), tg(N);
    std::vector<double> per_image(n);
    std::vector<std::vector<double>> nll(n);
    for (int i = 0; i < n; i++) {
        in[0] = start;
        for (int k = 0; k < N; k++) {
            tg[k] = d.tokens[(long)i * N + k];
            if (k + 1 < N) in[k + 1] = tg[k];
        }
        mamba_forward(&model, in.data(), nullptr, 1, N, -1);
        nll[i] = token_nll(&model, 0, N, tg.data());
        per_image[i] = 0.0;
        for (double x : nll[i]) per_image[i] += x;
    }
    for (int limit : {0, 4}) {
        int m = limit ? limit : n;
        double sum = 0.0;
        for (int i = 0; i < m; i++) sum += per_image[i];
        double hand_bpd = sum / ((double)m * N) / log(2.0);
        double got_bpd = bits_per_dim(lm_validate_images(&model, &d, B, N, start, limit));
        double rel = fabs(got_bpd - hand_bpd) / hand_bpd;
        t.check(rel <= BPD_TOL, "bits/dim over %d images (batch %d, last batch %d): %.7f, by hand %.7f, rel %.2e (tol %.0e)",
                m, B, m % B ? m % B : B, got_bpd, hand_bpd, rel, BPD_TOL);
    }
    // a random model is near 8 bits (uniform over 256 values); a sanity bound on the scale
    double bpd = bits_per_dim(lm_validate_images(&model, &d, B, N, start, 0));
    t.check(bpd > 6.0 && bpd < 12.0, "a random model's bits/dim %.3f is near log2(256) = 8", bpd);

    // an image's losses do not depend on the images before it: batch rows of images 2..4, image 3's
    // row against its losses alone
    std::vector<int> bin((long)B * N), btg((long)B * N);
    token_data_image_batch(&d, 2, B, N, start, bin.data(), btg.data());
    mamba_forward(&model, bin.data(), btg.data(), B, N, -1);
    std::vector<double> row = token_nll(&model, 1, N, &btg[N]);
    double worst = 0.0;
    for (int k = 0; k < N; k++) worst = fmax(worst, fabs(row[k] - nll[3][k]) / nll[3][k]);
    t.check(worst <= BPD_TOL, "image 3's per-pixel losses in a batch behind image 2 equal its losses alone: max rel %.2e (tol %.0e)",
            worst, BPD_TOL);
    model_free(&model.buf);
}

static void check_generated_images(Tests& t) {
    for (int side : {4, 32}) {
        int N = 3 * side * side, B = 3;
        std::vector<int> tokens((long)B * N);
        uint64_t s = 99 + side;
        for (int& v : tokens) v = (int)(random_u32(&s) % 256);
        std::string path = "build/test_pixels_generated.bin";
        make_dir_or_fail("build");
        write_generated_images(path.c_str(), tokens, B, N);
        ImageData img;
        image_data_load(&img, path.c_str());
        bool ok = img.count == B && img.channels == 3 && img.height == side && img.width == side && img.classes == 1;
        for (int b = 0; b < B && ok; b++)
            for (int y = 0; y < side; y++)
                for (int x = 0; x < side; x++)
                    for (int c = 0; c < 3; c++)
                        ok &= img.pixels[(long)b * N + ((long)c * side + y) * side + x] == tokens[(long)b * N + (y * side + x) * 3 + c]
                              && img.labels[b] == 0;
        t.check(ok, "generated images file, 3 x %d x %d: token (y*%d + x)*3 + c of each row is pixel (c, y, x) of its record",
                side, side, side);
        remove(path.c_str());
    }
    int c, h, w;
    image_shape_of(3072, &c, &h, &w);
    bool ok = c == 3 && h == 32 && w == 32;
    image_shape_of(64, &c, &h, &w);
    ok &= c == 1 && h == 8 && w == 8;
    image_shape_of(10, &c, &h, &w);
    ok &= c == 1 && h == 1 && w == 10;
    t.check(ok, "image shapes from the image length: 3072 -> 3 x 32 x 32, 64 -> 1 x 8 x 8, 10 -> 1 x 1 x 10");
}

int main() {
    Tests t;
    check_windows(t);
    check_bits_per_dim(t);
    check_generated_images(t);
    return t.summary();
}

/*
Image data: the images file (magic 20261106), read and validated whole, and
batches drawn from it.

Format: a header of 256 little-endian int32: [0] magic 20261106, [1] version
1, [2] count N, [3] channels, [4] height, [5] width, [6] number of classes;
then N records of one label byte followed by channels*height*width uint8
pixels in CHW order (the CIFAR-10 binary record layout). Every label is
below the number of classes.

Training batches follow a shuffled order of the whole set per epoch: the
permutation of epoch e is a pure function of (seed, e), so a run resumed
from a checkpoint at any step sees the same batches. The last partial batch
of an epoch is dropped. Evaluation batches are the file's images in order.
*/
#pragma once

#include <utility>
#include <vector>
#include "utils.h"


typedef struct {
    const char* path;
    int count, channels, height, width, classes;
    long image_bytes;                    // channels * height * width
    std::vector<unsigned char> labels;   // (N)
    std::vector<unsigned char> pixels;   // (N, channels, height, width)
} ImageData;

// Checks every slot of an images file's header (magic and version checked)
// against the file's size: count, shape and classes in range, the rest 0,
// the size 1024 + N (1 + C H W).
inline void image_header_check(const char* path, const int* header, long size) {
    int n = header[2], c = header[3], h = header[4], w = header[5], k = header[6];
    if (n < 1) fail("%s: holds %d images; need at least 1", path, n);
    if (c < 1 || c > 64 || h < 1 || h > 4096 || w < 1 || w > 4096)
        fail("%s: image shape %d x %d x %d is out of range (channels 1..64, height and width 1..4096)", path, c, h, w);
    if (k < 1 || k > 256) fail("%s: number of classes %d is out of range [1, 256]", path, k);
    check_zero_slots(path, header, 7, HEADER_INTS, "images");
    long record = 1 + (long)c * h * w;
    if ((size - HEADER_BYTES) / record < n || size != HEADER_BYTES + record * n)
        fail("%s: header says %d images of %d x %d x %d (%ld bytes), but the file is %ld bytes", path, n, c, h, w,
             HEADER_BYTES + record * n, size);
}

// validates an images file held in memory and fills d
inline void image_data_parse(ImageData* d, const char* path, const unsigned char* data, long size) {
    int header[HEADER_INTS];
    check_header(path, data, size, MAGIC_IMAGES, "CIFAR-layout images", header);
    image_header_check(path, header, size);
    int n = header[2], c = header[3], h = header[4], w = header[5], k = header[6];
    long image_bytes = (long)c * h * w, record = 1 + image_bytes;
    d->path = path;
    d->count = n; d->channels = c; d->height = h; d->width = w; d->classes = k;
    d->image_bytes = image_bytes;
    d->labels.resize(n);
    d->pixels.resize((size_t)n * image_bytes);
    const unsigned char* p = data + HEADER_BYTES;
    for (long i = 0; i < n; i++, p += record) {
        if (p[0] >= k) fail("%s: image %ld has label %d, but there are %d classes", path, i, p[0], k);
        d->labels[i] = p[0];
        memcpy(d->pixels.data() + i * image_bytes, p + 1, image_bytes);
    }
}

// the header first, checked against the file's size, then the whole file
inline void image_data_load(ImageData* d, const char* path) {
    std::vector<unsigned char> bytes;
    read_checked_file(path, "CIFAR-layout images", MAGIC_IMAGES, image_header_check, &bytes);
    image_data_parse(d, path, bytes.data(), (long)bytes.size());
}

// the order of epoch `epoch`: a Fisher-Yates shuffle of 0..n-1 from a generator seeded by (seed, epoch)
// Writes an images file (atomically): n images of shape channels x height x
// width (pixels (n, C, H, W) uint8) with their labels, below `classes`
inline void image_data_write(const char* path, const unsigned char* labels, const unsigned char* pixels, int n,
                             int channels, int height, int width, int classes) {
    int header[HEADER_INTS] = {MAGIC_IMAGES, 1, n, channels, height, width, classes};
    long image_bytes = (long)channels * height * width;
    std::string tmp;
    FILE* f;
    write_atomically_begin(path, &tmp, &f);
    fwrite_or_fail(header, sizeof(header), f, tmp.c_str());
    for (int i = 0; i < n; i++) {
        fwrite_or_fail(labels + i, 1, f, tmp.c_str());
        fwrite_or_fail(pixels + i * image_bytes, image_bytes, f, tmp.c_str());
    }
    write_atomically_end(path, tmp, f);
}

inline void image_data_epoch_order(uint64_t seed, int epoch, int n, std::vector<int>* order) {
    Rng rng;
    rng_seed(&rng, seed * 0x100000001B3ull + (uint64_t)epoch + 1);
    order->resize(n);
    for (int i = 0; i < n; i++) (*order)[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_u32(&rng) % (uint32_t)(i + 1));
        std::swap((*order)[i], (*order)[j]);
    }
}

// gathers the images indices[0..B) into pixels (B, C, H, W) and their labels
inline void image_data_gather(const ImageData* d, const int* indices, int B, unsigned char* pixels, int* labels) {
    for (int b = 0; b < B; b++) {
        long i = indices[b];
        memcpy(pixels + b * d->image_bytes, d->pixels.data() + i * d->image_bytes, d->image_bytes);
        labels[b] = d->labels[i];
    }
}

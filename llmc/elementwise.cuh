/*
Launch shapes that let one kernel source run at memory speed on both
backends.

Span kernels (elementwise over n): thread i handles elements
[i * span, (i + 1) * span). On the GPU span is 1: one element per thread,
coalesced, the classic form. On the host span is ELEMENTWISE_HOST_SPAN: the
host backend runs a block's threads one after another, so a thread's span is
a plain loop that g++ vectorizes, and the per-thread cost (and the index
arithmetic) is paid once per span instead of once per element.

Row kernels (one block per row, its threads striding over the row in spans
of `span` elements, ROW_FOR): on the GPU a block of up to 256 threads per row
and span 1 (coalesced); on the host a block of one thread and span = the
row's width, so the thread walks the whole row in one countable, unit-stride
loop (vectorized), with the row's index arithmetic once per row instead of a
64-bit division per element. (A plain `i += blockDim.x` stride loop is not
countable for g++, so it stays scalar.)

elementwise_span and row_threads are variables so that tests can run the
GPU's shapes on the host (same results: every element is computed the same
way whatever the shape).
*/
#pragma once
#include "cuda_common.h"


// blocks of kernel_choices.elementwise_threads threads for n elements, kernel_choices.elementwise_span each
inline unsigned int span_blocks(long n) { return (unsigned int)CEIL_DIV(CEIL_DIV(n, (long)kernel_choices.elementwise_span), (long)kernel_choices.elementwise_threads); }
// threads per block of a row kernel whose rows are `width` long: a multiple of 32 up to the maximum
inline int row_threads(int width) {
    int t = 32 * CEIL_DIV(width, 32);
    return t < kernel_choices.row_threads_max ? t : kernel_choices.row_threads_max;
}
// the span of a row kernel's threads: 1 on the GPU, the whole row on the host
inline int row_span(int width) { return kernel_choices.row_threads_max == 1 ? (width > 0 ? width : 1) : 1; }

// for (int i ...) over this thread's elements of a row of n: spans of `span`
// elements, blockDim.x * span apart (an outer loop over passes, an inner
// countable loop over one span)
#define ROW_FOR(i, n, span)                                                                   \
    for (int i##_begin = threadIdx.x * (span); i##_begin < (n); i##_begin += blockDim.x * (span)) \
        for (int i = i##_begin, i##_end = min(i##_begin + (span), (n)); i < i##_end; i++)

// this thread's span [*begin, *end) of n elements
__device__ __forceinline__ void span_range(long* begin, long* end, long n, int span) {
    long b = ((long)blockIdx.x * blockDim.x + threadIdx.x) * span;
    long e = b + span;
    *begin = b;
    *end = e < n ? e : n;
}

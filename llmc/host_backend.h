/*
Host backend: the CUDA vocabulary on the CPU, so that g++ compiles the same
kernel sources that nvcc compiles, and every test runs the real kernels on a
machine without a GPU. cuda_common.h includes this file instead of the CUDA
headers when the compiler is not nvcc. Its parts, each opening with what it
provides:

  host/language.h       qualifiers, thread indices, blocks as sequences or
                        fibers, barriers, shuffles, votes, atomics, math
  host/runtime.h        errors, memory, copies, streams, capture, graphs, events
  host/profile.h        HOST_PROFILE's kernel times and step counts; NVTX
  host/launch.h         kernel launches: limits, workers, LAUNCH
  host/cublas.h         cuBLAS on CBLAS, TF32 rounding
  host/openblas_core.h  the OpenBLAS core check before main

How a launch runs
- Blocks are spread over OpenMP threads ("workers"). All state a kernel sees
  (threadIdx, blockIdx, blockDim, gridDim, the dynamic shared memory) lives in
  thread_local storage of the worker running the block. Static __shared__
  variables are `static thread_local`: one copy per worker, shared by all the
  threads of the block it runs. Like on a GPU, shared memory is not cleared
  between blocks.
- Fast path: a block's threads run one after another on the worker's own
  stack. Running threads in sequence is a legal CUDA schedule up to the first
  synchronizing call, so barrier-free kernels never leave this path.
- Exact path: when some thread first calls a synchronizing primitive
  (__syncthreads, __syncwarp, a shuffle, a vote), the block is turned into
  fibers in place: the threads that already returned count as exited, the
  calling frame becomes a suspended fiber, and the threads not yet run start
  lazily on their own stacks. A scheduler fiber then runs every thread until
  it blocks, releasing a barrier only when every thread of the block (or
  every lane of the warp mask) has reached it. Fibers switch through
  Boost.Context (a few ns a switch).
- A barrier that some thread can never reach (a thread exited, or everything
  left waits on something else) aborts with a message naming the kernel.
- Lanes do not run in lockstep, as on sm_70 and later.
- Launches are checked against sm_90's limits: at most 1024 threads a block,
  block dimensions (1024, 1024, 64), grid dimensions (2^31-1, 65535, 65535)
  (cudaErrorInvalidConfiguration); dynamic shared memory above 48 KB needs
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
  bytes) first, up to 227 KB (cudaErrorInvalidValue).

Fidelity switches, read once into host_settings (llmc/kernel_choices.h; the
table is in doc/testing.md), make the host show what a GPU would:
- HOST_SCHEDULE=reverse|random:SEED: other orders of the blocks of a launch
  and of the threads of a block, between two sync points too. A race or a
  hidden dependency between threads or blocks changes results; the
  deterministic kernels give bitwise the same results under every schedule.
- HOST_POISON (on by default): new cudaMalloc memory and each block's
  dynamic shared memory are filled with 0xff bytes (NaN as float, -1 as
  int), so that a read of memory nobody wrote shows.
- HOST_TF32=1|handle: cuBLAS products with TF32 inputs, as a GPU's tensor
  cores take them (1: every handle; handle: those whose math mode asks).
- HOST_VARIANTS=gpu: the GPU's kernel choices and launch shapes.
Memory is ordinary host memory, so "device" pointers can also be read by the
host; portable code still copies with cudaMemcpy.
*/
#pragma once

#define BACKEND_NAME "host"

#include "kernel_choices.h"
#include "host/language.h"
#include "host/runtime.h"
#include "host/profile.h"
#include "host/launch.h"
#include "host/cublas.h"
#include "host/openblas_core.h"

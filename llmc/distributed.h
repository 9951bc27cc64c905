/*
Data parallel training across processes, one shared piece for every trainer.
Each rank holds the whole model and trains on its own rows of every global
batch; what this header provides:

  dist_init()                   the ranks from MPI, when an MPI launcher
                                started the process (mpirun, srun): rank, world
                                size, the rank on its machine (its GPU); ranks
                                other than 0 print nothing (stdout to /dev/null).
                                dist.on: the data parallel code path runs (under
                                a launcher, one rank too: `mpirun -np 1` trains
                                bit for bit as one process without it, through
                                the collectives). Without a launcher, or in a
                                build without MPI, one process as before.
  dist_allreduce_floats(p, n)   device floats summed over the ranks, in place
  dist_allreduce_doubles(p, n)  the same for device doubles (the loss's sum and count)
  dist_reduce_scatter(p, shard) ZeRO-1: p holds world * shard floats; rank r's block
                                [r * shard, (r + 1) * shard) becomes the sum over the
                                ranks (the other blocks are left as they were)
  dist_all_gather(p, shard)     every rank's block of p to every rank
  dist_sum_host(x, n)           host doubles summed over the ranks (evaluation's sums)
  dist_check_same(what, hash)   every rank must hold the same value (a hash of the
                                model and the run's shape); else every rank fails
  dist_rows(B)                  this rank's first row of a global batch of B * world

On a GPU (nvcc) the device collectives are NCCL's, on main_stream, the
communicator set up from an id that rank 0 draws and MPI broadcasts; on the
host backend they are MPI's on the (host) memory, after the stream's work is
done. Host values (evaluation sums, the checks) go through MPI on both.
Whether MPI (and NCCL under nvcc) is compiled in is the Makefile's USE_MPI.

Failures: with several ranks fail() (utils.h) ends every rank. Rank 0 prints
its line and aborts the job (MPI_Abort, which ends every rank with a non-zero
status); another rank waits a moment first, so that a failure every rank
meets (a flag, a file, a check here) is reported once, by rank 0, and prints
its own line (naming its rank) only when rank 0 did not fail. No rank is left
waiting in a collective.

Summation order: with 2 ranks a sum over the ranks is a + b, the same on both
ranks and in every run; a reduce-scatter and an all-reduce give the same bits
(a + b = b + a), so ZeRO-1 and the plain all-reduce train identically. With
more ranks every rank still gets the same sums (NCCL's ring and tree
algorithms broadcast one result; the MPI standard advises it and OpenMPI's
algorithms do it), in an order fixed by the algorithm chosen for the message
size and the world, but the all-reduce and the reduce-scatter may add in
different orders, so ZeRO-1 and the plain all-reduce then agree only to
rounding.
*/
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <vector>
#include "cuda_common.h"
#include "utils.h"

#ifdef USE_MPI
#include <mpi.h>
#ifdef __CUDACC__
#include <nccl.h>
#endif
#endif

typedef struct {
    int rank, world, local_rank;
    int zero;          // -z 1: ZeRO stage 1 (the optimizer state sharded over the ranks)
    bool on;           // started by an MPI launcher: the data parallel code path runs (any world size)
    bool initialized;  // dist_init ran
    bool mpi;          // MPI_Init was called (and MPI_Finalize is due at exit)
#if defined(USE_MPI) && defined(__CUDACC__)
    ncclComm_t nccl;
#endif
} Dist;

inline Dist dist = {0, 1, 0, 0, false, false, false};

// Whether an MPI launcher started this process, from the environment it
// sets (mpirun: OMPI_COMM_WORLD_SIZE; Slurm's srun: PMI_SIZE with PMI-2,
// PMIX_RANK with PMIx): the world size it says, 1 when it says none, 0 when
// there is no launcher.
static int dist_launcher_world() {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
        const char* v = getenv(name);
        if (v && atoi(v) > 0) return atoi(v);
    }
    return getenv("PMIX_RANK") ? 1 : 0;
}

#ifdef USE_MPI
#ifdef __CUDACC__
#define ncclCheck(call) nccl_check((call), __FILE__, __LINE__)
static void nccl_check(ncclResult_t r, const char* file, int line) {
    if (r != ncclSuccess) fail("NCCL: %s (%s:%d)", ncclGetErrorString(r), file, line);
}
#endif

// fail() with several ranks: see the top
static void dist_fail_hook(const char* message) {
    if (dist.rank != 0) {
        sleep(2);  // rank 0, meeting the same failure, aborts the job meanwhile
        fprintf(stderr, "error: rank %d: %s\n", dist.rank, message);
    } else {
        fprintf(stderr, "error: %s\n", message);
    }
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    _exit(1);
}

static void dist_finalize() {
    if (!dist.mpi) return;
#ifdef __CUDACC__
    ncclCommDestroy(dist.nccl);
#endif
    MPI_Finalize();
    dist.mpi = false;
}
#endif

// Sets up the ranks once (see the top); every trainer calls it first.
static void dist_init() {
    if (dist.initialized) return;
    dist.initialized = true;
    int launcher_world = dist_launcher_world();
    if (launcher_world == 0) return;  // one process, as without MPI
#ifndef USE_MPI
    if (launcher_world > 1)
        fail("started as one of %d ranks, but this build has no MPI; rebuild with MPI (make USE_MPI=1)", launcher_world);
#else
    MPI_Init(nullptr, nullptr);
    dist.mpi = true;
    atexit(dist_finalize);
    MPI_Comm_rank(MPI_COMM_WORLD, &dist.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dist.world);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, dist.rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &dist.local_rank);
    MPI_Comm_free(&local);
    dist.on = true;
    if (dist.world > 1) {
        fail_hook = dist_fail_hook;
        if (dist.rank != 0 && !freopen("/dev/null", "w", stdout)) fail("rank %d: cannot silence stdout", dist.rank);
    }
#ifdef __CUDACC__
    int devices = 0;
    cudaCheck(cudaGetDeviceCount(&devices));
    if (devices < 1) fail("rank %d: no GPU", dist.rank);
    cudaCheck(cudaSetDevice(dist.local_rank % devices));
    ncclUniqueId id;
    if (dist.rank == 0) ncclCheck(ncclGetUniqueId(&id));
    MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclCheck(ncclCommInitRank(&dist.nccl, dist.world, id, dist.rank));
#endif
#endif
}

// this rank's first row of a global batch of B rows per rank
static long dist_rows(long B) { return (long)dist.rank * B; }

#ifdef USE_MPI
// the host backend's collectives read device memory as host memory once the stream's work is done
static void dist_host_wait() {
#ifndef __CUDACC__
    cudaCheck(cudaStreamSynchronize(main_stream));
#endif
}
#endif

static void dist_allreduce_floats(float* p, long n) {
    if (!dist.on) return;
#ifdef USE_MPI
#ifdef __CUDACC__
    ncclCheck(ncclAllReduce(p, p, (size_t)n, ncclFloat, ncclSum, dist.nccl, main_stream));
#else
    dist_host_wait();
    MPI_Allreduce(MPI_IN_PLACE, p, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
#endif
#else
    (void)p; (void)n;
#endif
}

static void dist_allreduce_doubles(double* p, int n) {
    if (!dist.on) return;
#ifdef USE_MPI
#ifdef __CUDACC__
    ncclCheck(ncclAllReduce(p, p, (size_t)n, ncclDouble, ncclSum, dist.nccl, main_stream));
#else
    dist_host_wait();
    MPI_Allreduce(MPI_IN_PLACE, p, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#endif
#else
    (void)p; (void)n;
#endif
}

static void dist_reduce_scatter(float* p, long shard) {
    if (!dist.on) return;
#ifdef USE_MPI
    float* mine = p + (long)dist.rank * shard;
#ifdef __CUDACC__
    ncclCheck(ncclReduceScatter(p, mine, (size_t)shard, ncclFloat, ncclSum, dist.nccl, main_stream));
#else
    dist_host_wait();
    static std::vector<float> block;  // MPI's result lands apart from its input
    block.resize(shard);
    MPI_Reduce_scatter_block(p, block.data(), (int)shard, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    memcpy(mine, block.data(), shard * sizeof(float));
#endif
#else
    (void)p; (void)shard;
#endif
}

static void dist_all_gather(float* p, long shard) {
    if (!dist.on) return;
#ifdef USE_MPI
#ifdef __CUDACC__
    ncclCheck(ncclAllGather(p + (long)dist.rank * shard, p, (size_t)shard, ncclFloat, dist.nccl, main_stream));
#else
    dist_host_wait();
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, p, (int)shard, MPI_FLOAT, MPI_COMM_WORLD);
#endif
#else
    (void)p; (void)shard;
#endif
}

static void dist_sum_host(double* x, int n) {
    if (!dist.on) return;
#ifdef USE_MPI
    MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#else
    (void)x; (void)n;
#endif
}

// FNV-1a over bytes, continuing from h
static uint64_t dist_hash(uint64_t h, const void* data, size_t n) {
    const unsigned char* p = (const unsigned char*)data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001B3ull; }
    return h;
}
#define DIST_HASH_START 0xCBF29CE484222325ull

// Every rank must hold the same value; else each fails with one line naming what differs.
static void dist_check_same(const char* what, uint64_t value) {
    if (dist.world == 1) return;
#ifdef USE_MPI
    unsigned long long v = value, lo = 0, hi = 0;
    MPI_Allreduce(&v, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&v, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (lo != hi) fail("the %d ranks differ in %s; every rank must start alike", dist.world, what);
#else
    (void)what; (void)value;
#endif
}

"""
OpenBLAS's kernels for the PyTorch side of a benchmark, as the trainers get
them (llmc/host_backend.h): OpenBLAS 0.3.21 (Debian 12) does not recognise
some newer CPUs and then runs its SSE3 kernels ("Prescott"), several times
slower than its AVX-512 ones. use_fast_blas() re-executes the script once
with OPENBLAS_CORETYPE set when OpenBLAS made that choice on a CPU with
AVX-512 or AVX2. Call it before importing numpy or torch; a value set in the
environment wins. Nothing happens where the system BLAS is not OpenBLAS.
"""

import ctypes
import os
import sys

FALLBACK_CORES = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom",
                  "sandybridge", "katmai", "coppermine", "northwood", "banias"}


def use_fast_blas():
    if "OPENBLAS_CORETYPE" in os.environ:
        return
    try:
        blas = ctypes.CDLL("libblas.so.3")
        blas.openblas_get_corename.restype = ctypes.c_char_p
        core = blas.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return
    if core.lower() not in FALLBACK_CORES:
        return
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        better = "SkylakeX"
    elif {"avx2", "fma"} <= flags:
        better = "Haswell"
    else:
        return
    os.environ["OPENBLAS_CORETYPE"] = better
    os.execv(sys.executable, [sys.executable] + sys.orig_argv[1:])

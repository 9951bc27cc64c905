# Builds every program for the GPU with nvcc when one is visible, and for the
# CPU with g++ and the host backend (llmc/host_backend.h) otherwise.
#   make train_gpt                      build (backend chosen automatically)
#   make test                           reference states, every test, "N passed, M failed"
#   make cuda-check                     compile every .cu with nvcc for sm_80 and sm_90
#   CUDA_CHECK_ARCHS="90"               (cuda-check) only these architectures
#   make test-fidelity                  the tests under the host backend's fidelity switches
#   BACKEND=host|cuda                   force a backend
#   GPU_COMPUTE_CAPABILITY=90           override the GPU query (implies cuda)
#   PYTHON=/usr/bin/python3             the interpreter that has torch (Debian's python3-torch)
#   make fashion-mnist                  data/fashion_mnist_{train,test}.bin (FASHION_MNIST_DIR=<the IDX files>)
#   USE_MPI=0|1                         data parallel under mpirun (llmc/distributed.h): MPI on the host
#                                       backend, NCCL with MPI under nvcc (default 1 when mpicxx is found)

PYTHON ?= /usr/bin/python3
NVCC ?= nvcc
HOST_CXX ?= g++
TINYSHAKESPEARE ?= dev/data/tinyshakespeare/input.txt

# The GPU query must be a $(shell ...); an explicit GPU_COMPUTE_CAPABILITY wins.
ifeq ($(origin GPU_COMPUTE_CAPABILITY), undefined)
  GPU_COMPUTE_CAPABILITY := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '.')
endif
ifeq ($(strip $(GPU_COMPUTE_CAPABILITY)),)
  BACKEND ?= host
else
  BACKEND ?= cuda
endif

HOST_FLAGS ?= -std=c++17 -O3 -march=native -fopenmp -Wall -Wno-unused-function -Wno-unknown-pragmas
# OpenBLAS built for OpenMP shares the kernels' thread pool instead of
# competing with it (the pthread build's spinning threads halve throughput)
HOST_BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
HOST_LIBS = -L$(HOST_BLAS_DIR) -Wl,-rpath,$(HOST_BLAS_DIR) -lopenblas -lboost_context -lm
CUDA_FLAGS ?= -std=c++17 -O3 -Xcompiler -Wall
CUDA_LIBS = -lcublas

# Whether MPI is compiled in, decided here only: the programs define USE_MPI,
# take MPI's include and library directories from its compiler wrapper (its C
# interface only: the C++ bindings need a library of their own), and
# under nvcc link NCCL (it comes with the CUDA toolkit) for the collectives.
USE_MPI ?= $(if $(shell command -v mpicxx 2>/dev/null),1,0)
ifeq ($(USE_MPI),1)
  MPI_FLAGS := -DUSE_MPI -DOMPI_SKIP_MPICXX -DMPICH_SKIP_MPICXX $(filter -I%,$(shell mpicxx --showme:compile))
  MPI_LIBS := $(addprefix -L,$(shell mpicxx --showme:libdirs)) -lmpi
  HOST_LIBS += $(MPI_LIBS)
  CUDA_LIBS += $(MPI_LIBS) -lnccl
endif

ifeq ($(BACKEND),cuda)
  ifeq ($(strip $(GPU_COMPUTE_CAPABILITY)),)
    $(error BACKEND=cuda needs a visible GPU or GPU_COMPUTE_CAPABILITY=<e.g. 90>)
  endif
  COMPILE = $(NVCC) $(CUDA_FLAGS) $(MPI_FLAGS) -gencode arch=compute_$(GPU_COMPUTE_CAPABILITY),code=sm_$(GPU_COMPUTE_CAPABILITY) -x cu
  LIBS = $(CUDA_LIBS)
else ifeq ($(BACKEND),host)
  COMPILE = $(HOST_CXX) $(HOST_FLAGS) $(MPI_FLAGS) -x c++
  LIBS = $(HOST_LIBS)
else
  $(error BACKEND must be host or cuda, not '$(BACKEND)')
endif

HEADERS = $(wildcard llmc/*.h llmc/*.cuh llmc/host/*.h)
PROGRAMS = train_gpt train_gpt_plus test_gpt test_gpt_plus test_backend train_mamba test_mamba test_mamba2 train_vit train_mamba_vit train_diffusion test_diffusion test_vit test_mamba_vit test_augment test_generate test_attention train_hybrid test_hybrid test_pixels
# longest first (under the GPU's kernel variants, where the chunked scan's warps
# run as fibers), so that dev/run_tests.sh's programs, run one per core, end together
TESTS = test_mamba_vit test_hybrid test_diffusion test_mamba test_vit test_generate test_gpt test_gpt_plus test_attention \
        test_mamba2 test_backend test_pixels test_augment
CUDA_SOURCES = $(wildcard *.cu dev/cuda/*.cu)

# rebuild everything when the backend or GPU changes
BACKEND_STAMP = build/backend.$(BACKEND)$(GPU_COMPUTE_CAPABILITY)mpi$(USE_MPI)
$(BACKEND_STAMP):
	@mkdir -p build && rm -f build/backend.* && touch $@

.PHONY: all test test-fidelity sanitize cuda-check data ref-states synthetic-tasks cifar-synthetic cifar10 cifar-synthetic-pixels \
        cifar10-pixels fashion-mnist fashion-mnist-pixels clean
all: $(PROGRAMS)

$(PROGRAMS): %: %.cu $(HEADERS) $(BACKEND_STAMP)
	$(COMPILE) $< -o $@ $(LIBS)
# The model tests include their trainer's source: every build of such a test
# (the program, its sanitizer build, its cuda-check build) depends on it.
builds_of = $(1) build/sanitize/$(1) build/cuda-check/$(1)
$(call builds_of,test_gpt): train_gpt.cu
$(call builds_of,test_gpt_plus): train_gpt_plus.cu
$(call builds_of,test_mamba) $(call builds_of,test_mamba2) $(call builds_of,test_pixels): train_mamba.cu
$(call builds_of,test_hybrid): train_hybrid.cu
$(call builds_of,test_vit): train_vit.cu
$(call builds_of,test_mamba_vit): train_mamba_vit.cu
$(call builds_of,test_diffusion): train_diffusion.cu

# reference states written by the PyTorch script (CPU)
data/ref_gpt.bin: dev/reference/gpt.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/gpt.py --out $@
data/ref_gpt_plus.bin: dev/reference/gpt_plus.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/gpt_plus.py --out $@
data/ref_mamba.bin: dev/reference/mamba.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/mamba.py --out $@
data/ref_mamba_lti.bin: dev/reference/mamba.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/mamba.py --lti --out $@
data/ref_mamba2.bin: dev/reference/mamba.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/mamba.py --mamba2 --out $@
data/ref_vit.bin data/ref_mamba_vit.bin: data/ref_%.bin: dev/reference/vit.py dev/reference/gpt.py dev/reference/mamba.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/vit.py --model $* --out $@
data/ref_attention.bin: dev/reference/attention.py dev/reference/formats.py
	@mkdir -p data
	$(PYTHON) dev/reference/attention.py --out $@
data/ref_hybrid.bin: dev/reference/hybrid.py dev/reference/gpt.py dev/reference/mamba.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/hybrid.py --out $@
# the hybrid with Mamba-2 layers (S, d_state 64, headdim 64): SMAS, C 64 (2 heads per S layer)
data/ref_hybrid_s.bin: dev/reference/hybrid.py dev/reference/gpt.py dev/reference/mamba.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/hybrid.py --pattern SMAS --C 64 --out $@
# the vision models at patch size 1 (1024 tokens of 3 values), run by dev/test_pixels.sh;
# the Mamba-ViT's with 1 layer, batch 2 and 4 steps, through the log-depth scan (the
# sequential one, a Python loop over the 1024 positions, gives the same fp32 state
# but takes minutes)
data/ref_vit_p1.bin: dev/reference/vit.py dev/reference/gpt.py dev/reference/mamba.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/vit.py --model vit --patch 1 --out $@
data/ref_mamba_vit_p1.bin: dev/reference/vit.py dev/reference/gpt.py dev/reference/mamba.py dev/reference/formats.py dev/reference/common.py
	@mkdir -p data
	$(PYTHON) dev/reference/vit.py --model mamba_vit --patch 1 --L 1 --B 2 --steps 4 --scan parallel --out $@
# the vision models on one-channel 28 x 28 images (Fashion-MNIST's shape) at patch 4 (49
# tokens) and 7 (16 tokens), and the bidirectional Mamba-ViT (-M bi) at patch 4; run by
# test_vit and test_mamba_vit
VISION_REF_DEPS = dev/reference/vit.py dev/reference/gpt.py dev/reference/mamba.py dev/reference/formats.py dev/reference/common.py \
                  dev/reference/common.py
data/ref_vit_1x28x28_p4.bin data/ref_vit_1x28x28_p7.bin: data/ref_vit_1x28x28_p%.bin: $(VISION_REF_DEPS)
	@mkdir -p data
	$(PYTHON) dev/reference/vit.py --model vit --image 1,28,28 --patch $* --out $@
data/ref_mamba_vit_1x28x28_p4.bin data/ref_mamba_vit_1x28x28_p7.bin: data/ref_mamba_vit_1x28x28_p%.bin: $(VISION_REF_DEPS)
	@mkdir -p data
	$(PYTHON) dev/reference/vit.py --model mamba_vit --image 1,28,28 --patch $* --out $@
data/ref_mamba_vit_bi.bin: $(VISION_REF_DEPS)
	@mkdir -p data
	$(PYTHON) dev/reference/vit.py --model mamba_vit_bi --image 1,28,28 --patch 4 --out $@
# the Mamba-ViT with Mamba-2 mixers (-M 2) on 1 x 28 x 28 at patch 4: 49 patches, past one
# 32-position SSD chunk; C 32, d_state 16, headdim 16 (4 heads)
data/ref_mamba_vit2.bin: $(VISION_REF_DEPS)
	@mkdir -p data
	$(PYTHON) dev/reference/vit.py --model mamba_vit2 --image 1,28,28 --patch 4 --headdim 16 --out $@
DIFFUSION_REFS = data/ref_diffusion_vit.bin data/ref_diffusion_mamba.bin data/ref_diffusion_bimamba.bin data/ref_diffusion_mamba2.bin
$(DIFFUSION_REFS): data/ref_diffusion_%.bin: dev/reference/diffusion.py $(VISION_REF_DEPS)
	@mkdir -p data
	$(PYTHON) dev/reference/diffusion.py --model $* $(DIFFUSION_REF_FLAGS) --out $@
# the Mamba-1 denoisers at C 16 (E 32: four of the chunked scan's 8-channel groups, half the
# work that the GPU variants' warp emulation does at C 32)
data/ref_diffusion_mamba.bin data/ref_diffusion_bimamba.bin: DIFFUSION_REF_FLAGS = --C 16
# every reference state the tests read (dev/gpu_check.sh prepares them with `make ref-states`)
REF_STATES = data/ref_gpt.bin data/ref_gpt_plus.bin data/ref_mamba.bin data/ref_mamba_lti.bin data/ref_mamba2.bin data/ref_vit.bin data/ref_mamba_vit.bin \
             data/ref_attention.bin data/ref_hybrid.bin data/ref_hybrid_s.bin data/ref_vit_p1.bin data/ref_mamba_vit_p1.bin \
             data/ref_vit_1x28x28_p4.bin data/ref_vit_1x28x28_p7.bin data/ref_mamba_vit_1x28x28_p4.bin \
             data/ref_mamba_vit_1x28x28_p7.bin data/ref_mamba_vit_bi.bin data/ref_mamba_vit2.bin $(DIFFUSION_REFS)
ref-states: $(REF_STATES)

# CIFAR-10: the synthetic CIFAR-format set (no download), or the official
# files from CIFAR10_DIR (the binary or python version; downloaded when unset)
cifar-synthetic: data/cifar10_synthetic_train.bin
data/cifar10_synthetic_train.bin:
	$(PYTHON) dev/data/cifar10.py --synthetic --out data
cifar10:
	$(PYTHON) dev/data/cifar10.py --out data $(if $(CIFAR10_DIR),--input $(CIFAR10_DIR))
# pixels as tokens for the language models (-I 3072): a smaller synthetic set
# (10,000 train, 1,000 test images, so a CPU validates every test pixel), or
# the official files' pixels beside their images files
cifar-synthetic-pixels: data/cifar10_synthetic_small_pixels_train.bin
data/cifar10_synthetic_small_pixels_train.bin:
	$(PYTHON) dev/data/cifar10.py --synthetic --pixels --train-count 10000 --test-count 1000 --prefix cifar10_synthetic_small --out data
cifar10-pixels:
	$(PYTHON) dev/data/cifar10.py --pixels --out data $(if $(CIFAR10_DIR),--input $(CIFAR10_DIR))

# the Mamba paper's synthetic tasks as task files (dev/data/synthetic.py):
# selective copying (T 256, K 16) and induction heads (T 256, test sets at 2^6 .. 2^20)
synthetic-tasks: data/copy_train.bin data/induction_train.bin
data/copy_train.bin: dev/data/synthetic.py
	$(PYTHON) dev/data/synthetic.py --task copy --out data
data/induction_train.bin: dev/data/synthetic.py
	$(PYTHON) dev/data/synthetic.py --task induction --out data

# Fashion-MNIST (1 x 28 x 28, 10 classes) from the IDX files of Debian's package
# dataset-fashion-mnist, or from FASHION_MNIST_DIR; -pixels also writes the
# 784-token pixel sequences for the language models (-I 784)
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
fashion-mnist:
	$(PYTHON) dev/data/fashion_mnist.py --input $(FASHION_MNIST_DIR) --out data
fashion-mnist-pixels:
	$(PYTHON) dev/data/fashion_mnist.py --input $(FASHION_MNIST_DIR) --pixels --out data

# tinyshakespeare tokens, from the text that ships in dev/data (no network);
# building a language-model trainer writes them when they are missing
data: data/tinyshakespeare_train.bin
data/tinyshakespeare_train.bin: $(TINYSHAKESPEARE) dev/data/tinyshakespeare.py
	@mkdir -p data
	$(PYTHON) dev/data/tinyshakespeare.py --input "$(TINYSHAKESPEARE)" --out data
LM_TRAINERS = train_gpt train_gpt_plus train_mamba train_hybrid
$(LM_TRAINERS): | data/tinyshakespeare_train.bin

# test programs, then the scripts that drive the trainers: bad input, resume
# after a kill, PyTorch interop, the training step as a CUDA graph, the GPU
# check's rehearsal, data parallel training under mpirun, the diffusion trainer
TEST_SCRIPTS = dev/test_bad_input.sh dev/test_resume.sh dev/test_interop.sh dev/test_vision.sh dev/test_pixels.sh \
               dev/test_graphs.sh dev/test_gpu_check.sh dev/test_tasks.sh dev/test_distributed.sh dev/test_diffusion.sh
test: $(TESTS) train_gpt train_gpt_plus train_mamba train_hybrid train_vit train_mamba_vit train_diffusion $(REF_STATES)
	@dev/run_tests.sh $(TESTS) $(TEST_SCRIPTS)

# The tests under the host backend's fidelity switches (llmc/host_backend.h),
# which make the CPU show what a GPU would; dev/test_fidelity.sh says which
# runs and prints their summaries. The lists it runs:
#   FIDELITY_RUNS        each a run of the test programs under that setting
#   FIDELITY_TF32_TESTS  the programs run once more with TF32 products
#   FIDELITY_SCRIPTS     the script tests, run as the trainers run on a GPU
FIDELITY_RUNS = HOST_SCHEDULE=reverse HOST_SCHEDULE=random:1 HOST_VARIANTS=gpu
FIDELITY_TF32_TESTS = test_backend test_gpt test_gpt_plus test_mamba test_mamba2 test_vit test_mamba_vit test_hybrid test_diffusion
FIDELITY_SCRIPTS = dev/test_bad_input.sh dev/test_interop.sh dev/test_vision.sh dev/test_graphs.sh
test-fidelity: $(TESTS) train_gpt train_gpt_plus train_mamba train_hybrid train_vit train_mamba_vit train_diffusion $(REF_STATES)
	@TESTS="$(TESTS)" FIDELITY_RUNS="$(FIDELITY_RUNS)" FIDELITY_TF32_TESTS="$(FIDELITY_TF32_TESTS)" \
	  FIDELITY_SCRIPTS="$(FIDELITY_SCRIPTS)" dev/test_fidelity.sh

# the tests once more under AddressSanitizer and UndefinedBehaviorSanitizer (host backend);
# -g1 keeps the line tables for the reports at a third less compile time than -g
SANITIZE_FLAGS = -std=c++17 -O1 -g1 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                 -fno-omit-frame-pointer -fopenmp $(MPI_FLAGS) -x c++
SANITIZE_PROGRAMS = $(addprefix build/sanitize/,$(TESTS))
$(SANITIZE_PROGRAMS): build/sanitize/%: %.cu $(HEADERS)
	@mkdir -p build/sanitize
	@echo "g++ -fsanitize=address,undefined $<"
	@$(HOST_CXX) $(SANITIZE_FLAGS) $< -o $@ $(HOST_LIBS)
sanitize: $(SANITIZE_PROGRAMS) $(REF_STATES)
	@dev/run_tests.sh $(SANITIZE_PROGRAMS)

# one target per source, so that make -j compiles them in parallel
CUDA_CHECK_PROGRAMS = $(addprefix build/cuda-check/,$(basename $(notdir $(CUDA_SOURCES))))
# CUDA_CHECK_ARCHS="90" checks one architecture in half the time: the sources
# have no architecture-specific code, so the two differ only in nvcc's device
# back end. Host and device code are compiled unoptimized (-O0, and cicc's and
# ptxas's -O0): these binaries are never run, every stage still checks the
# sources (the front ends, PTX, SASS and its resource limits), and the optimized
# builds are the host backend's and the GPU machine's.
CUDA_CHECK_ARCHS ?= 80 90
CUDA_CHECK_COMPILE = $(NVCC) $(subst -O3,-O0,$(CUDA_FLAGS)) -Xcicc -O0 -Xptxas -O0 $(MPI_FLAGS) \
                     $(foreach a,$(CUDA_CHECK_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) -x cu
build/cuda-check/%: %.cu $(HEADERS)
	@mkdir -p build/cuda-check; echo "nvcc $(addprefix sm_,$(CUDA_CHECK_ARCHS)): $<"
	@$(CUDA_CHECK_COMPILE) $< -o $@ $(CUDA_LIBS)
build/cuda-check/%: dev/cuda/%.cu $(HEADERS)
	@mkdir -p build/cuda-check; echo "nvcc $(addprefix sm_,$(CUDA_CHECK_ARCHS)): $<"
	@$(CUDA_CHECK_COMPILE) $< -o $@ $(CUDA_LIBS)
cuda-check: $(CUDA_CHECK_PROGRAMS)
	@echo "cuda-check: all $(words $(CUDA_SOURCES)) files compiled for $(addprefix sm_,$(CUDA_CHECK_ARCHS))"

clean:
	rm -rf build $(PROGRAMS)

# kernel playground: each kernel's versions beside a plain reference
dev/cuda/%: dev/cuda/%.cu $(HEADERS) $(BACKEND_STAMP)
	$(COMPILE) $< -o $@ $(LIBS)

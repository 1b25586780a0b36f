# spotrain build: one binary (build/spotrain), per-module unit tests, CLI
# tests, fuzz targets, benchmarks. `make help` lists the targets.

CC      ?= cc
PREFIX  ?= /usr/local
SAN     ?= 0
MPI     ?= $(shell command -v mpicc >/dev/null 2>&1 && echo 1 || echo 0)
NVCC    ?= nvcc
# CUDA defaults on when nvcc is found, except in the sanitizer build (ASan's
# shadow memory and the CUDA runtime's address-space reservations conflict;
# SAN=1 tests the host code, which is the same with or without CUDA).
ifeq ($(SAN),1)
CUDA    ?= 0
else
CUDA    ?= $(shell command -v $(NVCC) >/dev/null 2>&1 && echo 1 || echo 0)
endif
# Real builds: sm_80 (A100) and sm_90 (H100/H200) code plus PTX for newer
# GPUs. While iterating: make CUDA_GENCODE=-arch=sm_90
CUDA_GENCODE ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
                -gencode arch=compute_90,code=compute_90

ifeq ($(SAN),1)
BUILD   := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT     := -O1 -g
else
BUILD   := build
SANFLAGS :=
OPT     := -O3 -march=x86-64-v3 -g
endif

WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS  += -std=c11 -D_GNU_SOURCE -I. $(OPT) $(WARN) $(SANFLAGS) -fopenmp -MMD -MP
# No -fopenmp at link time: the driver would add a dynamic -lgomp next to
# the static one below, and the binary would load two OpenMP runtimes. Each
# build names its libgomp in LIBS instead.
LDFLAGS += $(SANFLAGS)
STATIC_LIBS := -lzstd -linih -ljson-c -lxxhash -lopenblas -lz
ifeq ($(SAN),1)
# ASan wants to see every allocation; link the libraries dynamically there.
LIBS    := $(STATIC_LIBS) -lgomp -lcurl -lpthread -lm
else
# libgomp too, so the binary needs only libc, libm and MPI at run time
# (OpenBLAS's static archive references no Fortran runtime).
# libcurl stays dynamic: Debian's libcurl.a needs OpenSSL, nghttp2, libssh2,
# LDAP, Kerberos and more linked statically, which Debian does not all ship;
# as-needed, so a binary that does not reach the S3 client does not load it.
LIBS    := -Wl,-Bstatic $(STATIC_LIBS) -lgomp -Wl,-Bdynamic -Wl,--as-needed -lcurl -Wl,--no-as-needed -lpthread -lm
endif

# DEVICE=1: the binary to copy to a GPU test machine, which has the NVIDIA
# driver and libraries but none of our Debian ones: no MPI, and the small
# libraries, OpenMP, gfortran and libstdc++ linked statically.
DEVICE  ?= 0
STDCXX  := -Wl,-Bstatic -lstdc++ -Wl,-Bdynamic -static-libgcc
ifeq ($(DEVICE),1)
override MPI := 0
BUILD   := build/device
LDFLAGS := $(LDFLAGS) -static-libgcc -s
LIBS    := -Wl,-Bstatic $(STATIC_LIBS) -lgfortran -lquadmath -lgomp -lstdc++ -Wl,-Bdynamic -lpthread -lm -ldl
STDCXX  :=
endif

# EMU=1: the CUDA backend (cuda/*.cu, kernels included) compiled by the
# host C++ compiler against tests/emu, a CPU emulation of the CUDA runtime
# and of cuBLASLt, for `make test-emu`; never the production binary.
EMU     ?= 0
EMU_CXX ?= g++
ifeq ($(EMU),1)
override CUDA := 0
override DEVICE := 0
BUILD   := $(BUILD)/emu
EMU_LIB := $(BUILD)/emu-lib
CFLAGS  += -DSPOTRAIN_CUDA=1
EMUFLAGS := -std=c++17 -D_GNU_SOURCE -I. $(OPT) -ffp-contract=off $(WARN) $(SANFLAGS) -DSPOTRAIN_CUDA=1 -Itests/emu
CU_OBJ  := $(patsubst %.cu,$(BUILD)/%.o,$(wildcard cuda/*.cu)) $(BUILD)/tests/emu/emu.o
# -rdynamic: the reference cuBLASLt checks operands against the allocations
LIBS    += -rdynamic -ldl -lstdc++
endif

ifeq ($(MPI),1)
CFLAGS  += -DSPOTRAIN_MPI=1 $(shell mpicc -showme:compile)
LIBS    += $(shell mpicc -showme:link)
endif

# The CUDA runtime is linked statically; cuBLASLt (and later NCCL) are
# opened with dlopen at run time, so the binary starts on machines without a
# GPU or CUDA libraries (backend = auto falls back to the CPU).
ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC))))
CFLAGS  += -DSPOTRAIN_CUDA=1
NVFLAGS := -std=c++17 -I. -O3 $(CUDA_GENCODE) -fmad=false -DSPOTRAIN_CUDA=1 -MMD -MP \
           -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter,-fPIC -Werror all-warnings
LIBS    += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lpthread $(STDCXX)
CU_OBJ  := $(patsubst %.cu,$(BUILD)/%.o,$(wildcard cuda/*.cu))
endif

# The build settings each object was compiled with, in $(BUILD)/.flags:
# rewritten only when they change (CUDA, MPI, SAN, OPT, CC, CFLAGS, NVCC's
# or the emulator's flags, link flags), and every compile depends on it, so
# switching settings in one BUILD directory rebuilds what they touch (the
# library and binaries follow their objects) and an unchanged one nothing.
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW := $(strip CC=$(CC) CFLAGS=$(CFLAGS) CUDA=$(CUDA) NVCC=$(NVCC) NVFLAGS=$(NVFLAGS) EMU=$(EMU) \
             EMU_CXX=$(EMU_CXX) EMUFLAGS=$(EMUFLAGS) DEVICE=$(DEVICE) MPI=$(MPI) LDFLAGS=$(LDFLAGS) LIBS=$(LIBS))

# Each concept's folder (docs/layout.md); main.c and cli/ are the commands.
LIB_DIRS := util model tok hf data config comm backend ckpt s3 spot money train cli cuda
LIB_SRC := $(wildcard $(addsuffix /*.c,$(LIB_DIRS)))
# The device binary has no libcurl: its S3 client and its metadata fetch
# (spot providers other than file and none) refuse with one line.
ifeq ($(DEVICE),1)
LIB_SRC := $(filter-out s3/s3.c spot/fetch.c,$(LIB_SRC))
else
LIB_SRC := $(filter-out s3/s3_off.c spot/fetch_off.c,$(LIB_SRC))
endif
LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC)) $(BUILD)/sample_ini.o $(CU_OBJ)
TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(TEST_SRC))
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
# make test replays each committed corpus (tests/fuzz/corpus/NAME/) through
# its target built without libFuzzer: tests/fuzz/replay.c as main(), the
# target's "fuzz-sources:" as this build's objects (sanitized under SAN=1).
FUZZ_NAMES := $(notdir $(patsubst %/,%,$(wildcard tests/fuzz/corpus/*/)))
FUZZ_REPLAY := $(addprefix $(BUILD)/tests/replay/,$(FUZZ_NAMES))
fuzz_objs = $(patsubst %.c,$(BUILD)/%.o,$(filter-out s3/s3_off.c,$(wildcard $(filter %.c,$(or \
            $(shell sed -n 's/^.*fuzz-sources:[[:space:]]*//p' $(1) | head -n 1),util/*.c)))))
# M="ckpt s3": only the tests whose "module:" tag names one of those folders.
ifneq ($(filter-out $(LIB_DIRS),$(M)),)
$(error M="$(M)": no module '$(firstword $(filter-out $(LIB_DIRS),$(M)))'; the modules are the source folders: $(LIB_DIRS))
endif
ifeq ($(strip $(M)),)
TEST_SEL := $(TEST_BIN) $(FUZZ_REPLAY)
else
TEST_SEL = $(shell M="$(M)" BUILD=$(BUILD) sh tests/run.sh --targets 2>/dev/null)
endif
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all test test-build test-emu bench proof demo fuzz chaos install clean help device-build device-bundle \
        device-rehearsal
all: $(BUILD)/spotrain

# The settings stamp (FLAGS_STAMP above), rewritten when they differ.
ifneq ($(FLAGS_NOW),$(shell cat $(FLAGS_STAMP) 2>/dev/null))
$(FLAGS_STAMP): FORCE
endif
$(FLAGS_STAMP):
	@mkdir -p $(dir $@)
	@echo '$(FLAGS_NOW)' > $@
FORCE:

help:
	@echo "make [CUDA=0|1] [MPI=0|1] [SAN=1]   build $(BUILD)/spotrain"
	@echo "make test [M=\"ckpt s3\"]   unit, numerics (PyTorch reference) and CLI tests, fuzz corpus replays;"
	@echo "             M: only the tests tagged with those modules (the source folders: $(LIB_DIRS))"
	@echo "make test-emu the CUDA kernels and backend run on the CPU through tests/emu (also SAN=1)"
	@echo "make bench    throughput, checkpoint and goodput benchmarks"
	@echo "make proof    the largest model whose zero 3 plan fits 4 CPU ranks here trains and checkpoints; zero 1 is refused"
	@echo "make demo     install missing packages (as root), build, train through a reclaim notice and a kill -9, compare with a straight run"
	@echo "make fuzz     build libFuzzer targets and run each for FUZZ_SECONDS (default 20), seeded from"
	@echo "             tests/fuzz/corpus/NAME/; new inputs go to build/fuzz, never the repo"
	@echo "make chaos    long preemption soak with spotrain-run"
	@echo "make install [PREFIX=/usr/local] [DESTDIR=]   stripped spotrain, spotrain-run, share/spotrain/sample.ini, share/man/man1/spotrain.1"
	@echo "make device-build   build/device/spotrain + tests for a GPU machine (MPI=0, static libs);"
	@echo "                    copy the tree there and run tests/device_check.sh"
	@echo "make device-bundle  the same packed into build/device.tar.xz (~7 MB) for the device tool's carry"
	@echo "make device-rehearsal  tests/device_check.sh with DC_EMU=1: every cuda section on the CPU emulator"

$(BUILD)/spotrain: $(BUILD)/main.o $(BUILD)/libspotrain.a
	$(CC) -o $@ $^ $(LDFLAGS) $(LIBS)

# An archive, so a test links only the objects it uses.
$(BUILD)/libspotrain.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Before the first compile: name the missing packages and the command that
# installs them, instead of "fatal error: ini.h: No such file or directory".
$(BUILD)/.deps-ok: tests/deps.sh
	@CC="$(CC)" sh tests/deps.sh check
	@mkdir -p $(dir $@) && touch $@

# The CPU backend's element-wise loops (SwiGLU's exp rounds with floorf,
# attention's row maxima) vectorise only when the compiler may assume floating-point operations do
# not trap; results are the same IEEE values either way.
$(BUILD)/backend/cpu.o $(BUILD)/backend/cpu_attn.o: CFLAGS += -fno-trapping-math
# AdamW's sqrt vectorises without errno (its argument is never negative).
$(BUILD)/model/optim.o: CFLAGS += -fno-math-errno
$(BUILD)/%.o: %.c $(FLAGS_STAMP) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

ifeq ($(EMU),1)
# Preprocess, rewrite the <<<...>>> launches (tests/emu/launch.c), compile
# as C++; -ffp-contract=off is the host's -fmad=false.
$(BUILD)/cuda/%.o: cuda/%.cu $(BUILD)/tests/emu/launch $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMUFLAGS) -x c++ -E -MMD -MP -MT $@ -MF $(@:.o=.d) -o $(@:.o=.ii) $<
	$(BUILD)/tests/emu/launch $(@:.o=.ii) $(@:.o=.emu.ii)
	$(EMU_CXX) $(EMUFLAGS) -x c++ -fpreprocessed -c -o $@ $(@:.o=.emu.ii)

# -fcf-protection=none: fibers switch stacks by `ret` (emu.cpp), which a
# CET shadow stack would refuse; without the note no shadow stack is used.
$(BUILD)/tests/emu/emu.o: tests/emu/emu.cpp $(FLAGS_STAMP) | $(EMU_LIB)/libcuda.so.1 $(EMU_LIB)/libcublasLt.so.13 \
                         $(EMU_LIB)/libnccl.so.2
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMUFLAGS) -fcf-protection=none -MMD -MP -DEMU_DRIVER='"$(abspath $(EMU_LIB))/libcuda.so.1"' \
	    -DEMU_CUBLASLT='"$(abspath $(EMU_LIB))/libcublasLt.so.13"' \
	    -DEMU_NCCL='"$(abspath $(EMU_LIB))/libnccl.so.2"' -c -o $@ $<

# The emulator's own checks, through the same rewriting.
$(BUILD)/tests/test_emu: tests/emu/test_emu.cu $(BUILD)/tests/emu/launch $(BUILD)/tests/emu/emu.o tests/harness.h \
                          $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMUFLAGS) -x c++ -E -MMD -MP -MT $@ -MF $@.d -o $@.ii $<
	$(BUILD)/tests/emu/launch $@.ii $@.emu.ii
	$(EMU_CXX) $(EMUFLAGS) -x c++ -fpreprocessed $@.emu.ii -x none -o $@ $(BUILD)/tests/emu/emu.o $(SANFLAGS) -ldl

# The emulated NCCL's own checks: MPI, and the library linked in.
$(BUILD)/tests/test_nccl_emu: tests/emu/test_nccl_emu.cu $(BUILD)/tests/emu/launch $(BUILD)/tests/emu/emu.o \
                              tests/harness.h $(EMU_LIB)/libnccl.so.2 $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMUFLAGS) $(EMU_NCCL_MPI) -x c++ -E -MMD -MP -MT $@ -MF $@.d -o $@.ii $<
	$(BUILD)/tests/emu/launch $@.ii $@.emu.ii
	$(EMU_CXX) $(EMUFLAGS) -x c++ -fpreprocessed $@.emu.ii -x none -o $@ $(BUILD)/tests/emu/emu.o \
	    -L$(EMU_LIB) -l:libnccl.so.2 -Wl,-rpath,$(abspath $(EMU_LIB)) $(EMU_NCCL_LIBS) $(SANFLAGS) -ldl

$(BUILD)/tests/emu/launch: tests/emu/launch.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O1 $(WARN) -o $@ $<

# A driver that is only there (cuda_available opens libcuda.so.1), and
# the reference cuBLASLt.
$(EMU_LIB)/libcuda.so.1:
	@mkdir -p $(dir $@)
	echo 'int spotrain_emu_driver;' | $(CC) -x c -shared -fPIC -Wl,-soname,libcuda.so.1 -o $@ -
# The emulated NCCL over MPI point-to-point (one rank without MPI).
ifeq ($(MPI),1)
EMU_NCCL_MPI := -DEMU_NCCL_MPI=1 -DOMPI_SKIP_MPICXX=1 -DMPICH_SKIP_MPICXX=1 $(shell mpicc -showme:compile)
EMU_NCCL_LIBS := $(shell mpicc -showme:link)
endif
$(EMU_LIB)/libnccl.so.2: tests/emu/nccl.cpp tests/emu/nccl.h tests/emu/emu.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMUFLAGS) $(EMU_NCCL_MPI) -fPIC -shared -Wl,-soname,libnccl.so.2 -o $@ $< $(EMU_NCCL_LIBS) $(SANFLAGS)
$(EMU_LIB)/libcublasLt.so.13: tests/emu/cublaslt.cpp tests/emu/cublasLt.h tests/emu/emu.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMUFLAGS) -fPIC -shared -o $@ $< $(SANFLAGS)
else
# -fmad=false: no contraction the C side would not do, so the shared
# per-element math (model/elem.h) rounds the same on both backends.
$(BUILD)/cuda/%.o: cuda/%.cu $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c -o $@ $<
endif

# sample.ini is the embedded default configuration.
$(BUILD)/sample_ini.c: sample.ini
	@mkdir -p $(dir $@)
	@{ echo '/* generated from sample.ini */'; echo 'const char cfg_sample_ini[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; echo ';'; } > $@
$(BUILD)/sample_ini.o: $(BUILD)/sample_ini.c $(FLAGS_STAMP) | $(BUILD)/.deps-ok
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libspotrain.a tests/harness.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libspotrain.a $(LDFLAGS) $(LIBS)

# A target's "fuzz-sources: ckpt/*.c" reads as a comment opening in a comment.
$(BUILD)/tests/fuzz/%.o: CFLAGS += -Wno-comment
$(BUILD)/tests/replay/%: $(BUILD)/tests/fuzz/replay.o $(BUILD)/tests/fuzz/%.o
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDFLAGS) $(LIBS)
# Each replay's objects: its target's "fuzz-sources:".
$(foreach n,$(FUZZ_NAMES),$(eval $(BUILD)/tests/replay/$(n): $(call fuzz_objs,tests/fuzz/$(n).c)))
.SECONDARY: $(BUILD)/tests/fuzz/replay.o $(patsubst %,$(BUILD)/tests/fuzz/%.o,$(FUZZ_NAMES))

# The compiler's lines go to a log, shown only when the build fails; the
# runner checks M and every test's tag before anything is built.
TEST_LOG := $(BUILD)/test-build.log
test:
	@sh tests/deps.sh test
	@M="$(M)" BUILD=$(BUILD) sh tests/run.sh --check
	@mkdir -p $(BUILD) && if ! $(MAKE) --no-print-directory test-build >$(TEST_LOG) 2>&1; then \
	    tail -n 40 $(TEST_LOG); echo "make test: the test build failed; its whole log: $(TEST_LOG)"; exit 1; fi
	@M="$(M)" BUILD=$(BUILD) sh tests/run.sh

test-build: $(BUILD)/spotrain $(TEST_SEL) $(BUILD)/tests/s3tool

# The S3 client's driver for tests/cli/cli_s3.sh and bench/s3.sh (not installed).
$(BUILD)/tests/s3tool: tests/cli/s3tool.c $(BUILD)/libspotrain.a $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libspotrain.a $(LDFLAGS) $(LIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libspotrain.a $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libspotrain.a $(LDFLAGS) $(LIBS)

bench: $(BUILD)/spotrain $(BENCH_BIN) $(BUILD)/tests/s3tool
	@BUILD=$(BUILD) sh bench/run.sh

# bench/proof.sh: minutes and most of the machine's memory, so not in bench.
proof: $(BUILD)/spotrain
	@BUILD=$(BUILD) sh bench/proof.sh

demo:
	@sh tests/demo.sh

# What tests/device_check.sh needs on the GPU machine: the trainer and the
# CUDA kernel-check program, both built with DEVICE=1.
device-build:
	@$(MAKE) --no-print-directory DEVICE=1 build/device/spotrain build/device/tests/test_cuda_kernels \
	    build/device/tests/test_cuda_parity

# The device tool carries at most 64 MiB and the three stripped binaries
# are ~85 MB (static OpenBLAS and CUDA runtime, sm_80 + sm_90 + PTX); xz
# packs them into ~7 MB, which tests/device_check.sh unpacks there.
device-bundle: device-build
	tar -C build/device -cJf build/device.tar.xz spotrain tests/test_cuda_kernels tests/test_cuda_parity

# The CUDA kernels and backend on the CPU through tests/emu (SAN=1 too:
# ASan then catches a kernel indexing past its buffers).
EMU_DIR := $(BUILD)/emu
EMU_TESTS := $(EMU_DIR)/tests/test_emu $(EMU_DIR)/tests/test_cuda_kernels $(EMU_DIR)/tests/test_cuda_parity \
             $(EMU_DIR)/tests/test_nccl_emu
test-emu:
	@$(MAKE) --no-print-directory EMU=1 $(EMU_TESTS) $(EMU_DIR)/spotrain
	@BUILD=$(EMU_DIR) OMP_WAIT_POLICY=passive \
	    RUN_ONLY="$(EMU_TESTS) tests/emu/cli_reverse_emu.sh tests/emu/cli_train_emu.sh tests/emu/cli_probe_emu.sh \
	        tests/emu/cli_elem_emu.sh tests/emu/cli_zero_emu.sh \
	        tests/emu/cli_nccl2_emu.sh tests/emu/cli_nccl_fail_emu.sh" \
	    sh tests/run.sh

# tests/device_check.sh rehearsed on the emulator (DC_EMU=1): the trainer
# and the two test programs built as the device build is (MPI=0) but on
# tests/emu, in their own directory (BUILD on the command line beats the
# EMU=1 default), bundled and unpacked like the real ones.
REHEARSAL_DIR := build/emu-device
device-rehearsal:
	@$(MAKE) --no-print-directory EMU=1 MPI=0 BUILD=$(REHEARSAL_DIR) $(REHEARSAL_DIR)/spotrain \
	    $(REHEARSAL_DIR)/tests/test_cuda_kernels $(REHEARSAL_DIR)/tests/test_cuda_parity
	@bash tests/device_rehearsal.sh $(REHEARSAL_DIR)

FUZZ_SECONDS ?= 20
fuzz:
	@BUILD=build/fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz/fuzz.sh $(FUZZ_SRC)

chaos: $(BUILD)/spotrain
	@BUILD=$(BUILD) CHAOS_ROUNDS=$${CHAOS_ROUNDS:-40} sh tests/cli/cli_chaos.sh

# A stripped binary, the restart wrapper, the sample configuration (also
# what `spotrain init` writes) and the manual page.
install: $(BUILD)/spotrain
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/spotrain $(DESTDIR)$(PREFIX)/share/man/man1
	install -s -m 755 $(BUILD)/spotrain $(DESTDIR)$(PREFIX)/bin/spotrain
	install -m 755 spot/spotrain-run $(DESTDIR)$(PREFIX)/bin/spotrain-run
	install -m 644 sample.ini $(DESTDIR)$(PREFIX)/share/spotrain/sample.ini
	install -m 644 docs/spotrain.1 $(DESTDIR)$(PREFIX)/share/man/man1/spotrain.1

clean:
	rm -rf build

# Every build directory's dependency files, BUILD=elsewhere included, so a
# changed header rebuilds what includes it there too.
-include $(shell find $(sort build $(BUILD)) -name '*.d' 2>/dev/null)

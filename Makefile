# spotrain build: one binary (build/spotrain), per-module unit tests, CLI
# tests, fuzz targets, benchmarks. `make help` lists the targets.

CC      ?= cc
PREFIX  ?= /usr/local
SAN     ?= 0
MPI     ?= $(shell command -v mpicc >/dev/null 2>&1 && echo 1 || echo 0)
NVCC    ?= nvcc
CUDA    ?= $(shell command -v $(NVCC) >/dev/null 2>&1 && test -n "$(wildcard cuda/*.cu)" && echo 1 || echo 0)

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
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(SANFLAGS) -fopenmp -MMD -MP
LDFLAGS += $(SANFLAGS) -fopenmp
STATIC_LIBS := -lzstd -linih -ljson-c -lxxhash -lopenblas
ifeq ($(SAN),1)
# ASan wants to see every allocation; link the libraries dynamically there.
LIBS    := $(STATIC_LIBS) -lcurl -lgfortran -lpthread -lm
else
# libcurl stays dynamic: Debian's libcurl.a needs OpenSSL, nghttp2, libssh2,
# LDAP, Kerberos and more linked statically, which Debian does not all ship.
LIBS    := -Wl,-Bstatic $(STATIC_LIBS) -Wl,-Bdynamic -lcurl -lgfortran -lpthread -lm
endif

ifeq ($(MPI),1)
CFLAGS  += -DSPOTRAIN_MPI=1 $(shell mpicc -showme:compile)
LIBS    += $(shell mpicc -showme:link)
endif

ifeq ($(CUDA),1)
ifeq ($(wildcard cuda/*.cu),)
$(error CUDA=1: this tree has no CUDA backend yet (cuda/ holds no .cu files); build with CUDA=0)
endif
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC))))
CFLAGS  += -DSPOTRAIN_CUDA=1 -I$(CUDA_HOME)/include
LIBS    += -L$(CUDA_HOME)/lib64 -lcudart_static -lcublas -lnccl -ldl -lrt -lstdc++
CU_OBJ  := $(patsubst %.cu,$(BUILD)/%.o,$(wildcard cuda/*.cu))
endif

LIB_SRC := $(wildcard util/*.c train/*.c ckpt/*.c spot/*.c)
LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC)) $(BUILD)/sample_ini.o $(CU_OBJ)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
FUZZ_SRC := $(wildcard tests/fuzz_*.c)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all test test-build bench demo fuzz chaos install clean help
all: $(BUILD)/spotrain

help:
	@echo "make [CUDA=0|1] [MPI=0|1] [SAN=1]   build $(BUILD)/spotrain"
	@echo "make test     unit, numerics (PyTorch reference) and CLI tests"
	@echo "make bench    throughput, checkpoint and goodput benchmarks"
	@echo "make demo     install missing packages (as root), build, train sample.ini, sample"
	@echo "make fuzz     build libFuzzer targets and run each for FUZZ_SECONDS (default 20)"
	@echo "make chaos    long preemption soak with spotrain-run"
	@echo "make install PREFIX=/usr/local"

$(BUILD)/spotrain: $(BUILD)/main.o $(BUILD)/libspotrain.a
	$(CC) -o $@ $^ $(LDFLAGS) $(LIBS)

# An archive, so a test links only the objects it uses.
$(BUILD)/libspotrain.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/cuda/%.o: cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) -O3 -std=c++17 -arch=sm_90 -Xcompiler -Wall,-Werror -c -o $@ $<

# sample.ini is the embedded default configuration.
$(BUILD)/sample_ini.c: sample.ini
	@mkdir -p $(dir $@)
	@{ echo '/* generated from sample.ini */'; echo 'const char cfg_sample_ini[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; echo ';'; } > $@
$(BUILD)/sample_ini.o: $(BUILD)/sample_ini.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(BUILD)/libspotrain.a tests/harness.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libspotrain.a $(LDFLAGS) $(LIBS)

test:
	@sh tests/deps.sh test
	@$(MAKE) --no-print-directory test-build
	@BUILD=$(BUILD) sh tests/run.sh

test-build: $(BUILD)/spotrain $(TEST_BIN) $(BUILD)/tests/s3tool

# The S3 client's driver for tests/cli_s3.sh and bench/s3.sh (not installed).
$(BUILD)/tests/s3tool: tests/s3tool.c $(BUILD)/libspotrain.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libspotrain.a $(LDFLAGS) $(LIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libspotrain.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libspotrain.a $(LDFLAGS) $(LIBS)

bench: $(BUILD)/spotrain $(BENCH_BIN)
	@BUILD=$(BUILD) sh bench/run.sh

demo:
	@sh tests/demo.sh

FUZZ_SECONDS ?= 20
fuzz:
	@BUILD=build/fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) sh tests/fuzz.sh $(FUZZ_SRC)

chaos: $(BUILD)/spotrain
	@BUILD=$(BUILD) CHAOS_ROUNDS=$${CHAOS_ROUNDS:-40} sh tests/cli_chaos.sh

install: $(BUILD)/spotrain
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BUILD)/spotrain $(DESTDIR)$(PREFIX)/bin/spotrain
	install -m 755 spot/spotrain-run $(DESTDIR)$(PREFIX)/bin/spotrain-run

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)

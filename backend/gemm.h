/* The CPU backend's matrix products: one row-major sgemm over OpenBLAS
 * (linked in), oneDNN's dnnl_sgemm or BLIS (both opened with dlopen when
 * asked for, so the binary needs neither), run as fixed row chunks of
 * single-threaded library calls; and train.cpu_gemm = auto's timing. */
#ifndef SPOTRAIN_GEMM_H
#define SPOTRAIN_GEMM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { GEMM_OPENBLAS = 0, GEMM_ONEDNN = 1, GEMM_BLIS = 2, GEMM_LIBS = 3 } gemm_lib;
enum { GEMM_AUTO = -1, GEMM_BAD = -2 };

/* One product the model runs: C[M,N] = op(A) op(B) + beta C, count times a
 * step (row-major; ta: A stored [K,M]; tb: B stored [N,K]). */
typedef struct {
    int ta, tb;
    int64_t M, N, K;
    float beta;
    int64_t count;
} gemm_shape;

/* "openblas" | "onednn" | "blis" -> gemm_lib; "auto" -> GEMM_AUTO; else GEMM_BAD. */
int gemm_parse(const char *name);
const char *gemm_name(int lib);
/* Loads lib (once per process; OpenBLAS is always there). ST_OK, or
 * ST_UNAVAILABLE with one line in why (what is missing, what to install). */
int gemm_open(int lib, char *why, size_t cap);
/* The kernel set the library picked on this CPU ("Cooperlake",
 * "avx512_core_bf16", "zen3"); "" before gemm_open succeeds. */
const char *gemm_kernel(int lib);
/* "onednn 2.6.3 avx512_core_bf16": library, version and kernel. */
void gemm_describe(int lib, char *out, size_t cap);
/* Every library, loaded or why not, on one line (spotrain --version). */
void gemm_list(char *out, size_t cap);

/* C = op(A) op(B) + beta C on nt threads: fixed row chunks of C, each one
 * single-threaded call of lib, so the bits depend on the shape and the
 * library only, never on nt. lib must have been opened. */
void gemm_run(int lib, int nt, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* train.cpu_gemm = auto: the fastest loaded library for these shapes on nt
 * threads. OpenBLAS stays unless another is GEMM_MARGIN faster (timing
 * noise must not flip a run between libraries). cache ("" = none) holds
 * one line keyed by the CPU, the libraries and the shapes: a matching line
 * is the answer without timing; otherwise the timing's answer is written
 * there. note gets one line for the log (the choice and why). */
#define GEMM_MARGIN 0.03
int gemm_pick(const gemm_shape *s, int n, int nt, const char *cpu_model, const char *cache, int *lib, char *note,
              size_t cap);

#endif

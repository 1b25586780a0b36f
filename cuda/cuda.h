/* The CUDA backend's C entry points: what train/backend.c and main.c call.
 * Plain C (no CUDA headers), so every file of the tree can include it; the
 * functions exist only in builds made with CUDA=1 (SPOTRAIN_CUDA). */
#ifndef SPOTRAIN_CUDA_H
#define SPOTRAIN_CUDA_H

#include <stddef.h>
#include <stdio.h>
#include "../train/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when a CUDA backend can start here: the driver loads, a device is
 * present, cuBLASLt opens. Otherwise 0 and why[] names what is missing. */
int cuda_available(char *why, size_t cap);

/* --version lines: compiled architectures, CUDA runtime, driver, cuBLASLt
 * and NCCL versions found, and every device. */
void cuda_describe(FILE *f);

/* The CUDA backend (device-resident state; train/backend.h). */
int backend_cuda_create(backend **out, const model_layout *L, const backend_opts *o);

#ifdef __cplusplus
}
#endif

#endif

/* Emulation shim (tests/emu): stands in for the CUDA runtime header. */
#ifndef SPOTRAIN_EMU_CUDA_RUNTIME_H
#define SPOTRAIN_EMU_CUDA_RUNTIME_H
#include "emu.h"
#endif

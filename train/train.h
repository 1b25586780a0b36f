/* The training loop: the one place that ties config, model, data, backend,
 * optimizer, comm, checkpoints and spot handling together. */
#ifndef SPOTRAIN_TRAIN_H
#define SPOTRAIN_TRAIN_H

#include "config/config.h"
#include "model/model.h"
#include "model/memplan.h"

enum { TRAIN_FRESH = 0, TRAIN_RESUME = 1 };

/* Runs training (the caller has installed the signal handlers). Returns ST_OK when max_steps is reached, ST_TEMPFAIL after
 * a stop on a signal or notice (with the newest state durable), or an
 * error status. force: start fresh even if run_dir holds checkpoints. */
int train_run(const cfg *c, int mode, int force);

/* --dry-run: resolved config, parameter count and per-process memory plan. */
int train_plan(const cfg *c, int world);
/* The memory model's input for c on backend cuda (1) or cpu (0) at world
 * ranks: what --dry-run and `cost estimate` both plan. The ZeRO stage is the
 * implemented one until [train] zero exists. ST_OK or ST_CONFIG. */
int train_memplan_cfg(const cfg *c, const model_shape *s, int cuda, int world, memplan_cfg *m);
/* spotrain selftest comm: patterns reduced and gathered over all ranks,
 * checked bitwise, bus bandwidth per message size (rank 0 prints). */
int train_selftest_comm(const cfg *c);

/* spotrain sample CONFIG|CKPT [--prompt S] [--tokens N] ... */
int train_sample_cli(int argc, char **argv);

#endif

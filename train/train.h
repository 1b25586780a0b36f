/* The training loop: the one place that ties config, model, data, backend,
 * optimizer, comm, checkpoints and spot handling together. */
#ifndef SPOTRAIN_TRAIN_H
#define SPOTRAIN_TRAIN_H

#include "config/config.h"
#include "model/model.h"

enum { TRAIN_FRESH = 0, TRAIN_RESUME = 1 };

/* Runs training (the caller has installed the signal handlers). Returns ST_OK when max_steps is reached, ST_TEMPFAIL after
 * a stop on a signal or notice (with the newest state durable), or an
 * error status. force: start fresh even if run_dir holds checkpoints. */
int train_run(const cfg *c, int mode, int force);

/* spotrain sample CONFIG|CKPT [--prompt S] [--tokens N] ... */
int train_sample_cli(int argc, char **argv);

#endif

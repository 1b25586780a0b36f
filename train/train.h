/* The training loop: the one place that ties config, model, data, backend,
 * optimizer, comm, checkpoints and spot handling together. */
#ifndef SPOTRAIN_TRAIN_H
#define SPOTRAIN_TRAIN_H

#include "config/config.h"
#include "model/model.h"

enum { TRAIN_FRESH = 0, TRAIN_RESUME = 1 };

/* Runs training (the caller has installed the signal handlers). Returns ST_OK when max_steps is reached, ST_TEMPFAIL after
 * a stop on a signal or notice (with the newest state durable), or an
 * error status. force: start fresh even if run_dir holds checkpoints
 * (TRAIN_FRESH: train --force), or when checkpoints exist and none verifies
 * (TRAIN_RESUME: resume --fresh-if-corrupt; without it that is ST_DATA). */
int train_run(const cfg *c, int mode, int force);

/* cfg_ckpt_fn for resume: the resolved config saved in the newest
 * checkpoint whose manifest opens (local first, then checkpoint.remote). */
int train_ckpt_config(const cfg *c, char **text, char *name, size_t cap);

/* spotrain sample CONFIG|CKPT [--prompt S] [--tokens N] ... */
int train_sample_cli(int argc, char **argv);

#endif

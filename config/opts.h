/* A loaded cfg as the option structs of other concepts: spot/'s notice
 * poller and money/'s cost model define their own options (they include
 * nothing from config/), and these fill them. Used by train/ and the
 * commands alike. */
#ifndef SPOTRAIN_CONFIG_OPTS_H
#define SPOTRAIN_CONFIG_OPTS_H

#include "config/config.h"
#include "model/memplan.h"
#include "money/cost.h"
#include "spot/spot.h"

/* The [spot] keys the notice poller needs. */
void cfg_spot_opts(const cfg *c, spot_opts *o);
/* [cost], [price.*] and, when the input names a model, its parameter count
 * and FLOPs per token. ST_OK or ST_CONFIG (a model shape that cannot be). */
int cfg_cost_opts(const cfg *c, cost_opts *o);
/* The memory model's input for c on backend cuda (1) or cpu (0) at world
 * ranks: what --dry-run, `cost estimate` and recompute = auto all plan.
 * auto plans none (memplan_choose_recompute chooses). The ZeRO stage is the
 * implemented one until [train] zero exists. ST_OK or ST_CONFIG. */
int cfg_memplan(const cfg *c, const model_shape *s, int cuda, int world, memplan_cfg *m);
/* The per-GPU plan of backend cuda over world ranks, with zero = auto and
 * recompute = auto resolved against the configured GPU size (gpu_gib, 0 if
 * unknown: auto keeps stage 1) as the trainer resolves them against the
 * device: what --dry-run and cost estimate both print. */
int cfg_memplan_gpu(const cfg *c, const model_shape *s, int world, double gpu_gib, memplan_cfg *m,
                    memplan_bytes *out);

#endif

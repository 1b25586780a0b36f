/* A loaded cfg as the option structs of other concepts: spot/'s notice
 * poller and money/'s cost model define their own options (they include
 * nothing from config/), and these fill them. Used by train/ and the
 * commands alike. */
#ifndef SPOTRAIN_CONFIG_OPTS_H
#define SPOTRAIN_CONFIG_OPTS_H

#include "config/config.h"
#include "money/cost.h"
#include "spot/spot.h"

/* The [spot] keys the notice poller needs. */
void cfg_spot_opts(const cfg *c, spot_opts *o);
/* [cost], [price.*] and, when the input names a model, its parameter count
 * and FLOPs per token. ST_OK or ST_CONFIG (a model shape that cannot be). */
int cfg_cost_opts(const cfg *c, cost_opts *o);

#endif

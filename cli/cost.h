/* The config side of spot/: fills spot/'s option structs from a loaded cfg
 * (model facts included), and the `cost` commands, which read a CONFIG or
 * RUN_DIR/config.ini before spot/cost computes and prints. */
#ifndef SPOTRAIN_CLI_COST_H
#define SPOTRAIN_CLI_COST_H

#include "money/cost.h"
#include "spot/spot.h"
#include "config/config.h"

/* The [spot] keys the notice poller needs. */
void cfg_spot_opts(const cfg *c, spot_opts *o);
/* [cost], [price.*] and, when the input names a model, its parameter count
 * and FLOPs per token. ST_OK or ST_CONFIG (a model shape that cannot be). */
int cfg_cost_opts(const cfg *c, cost_opts *o);

/* `spotrain cost estimate|report ...`: argv[0] is "estimate" or "report". */
int cost_cli_main(int argc, char **argv);

#endif

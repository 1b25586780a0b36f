/* The price of a node: the one definition of a [price.NAME] section, plain
 * data with no dependencies, so the config loader fills it and the cost
 * code reads it without either knowing the other. */
#ifndef SPOTRAIN_PRICE_H
#define SPOTRAIN_PRICE_H

#define COST_MAX_PRICES 16

typedef struct {
    char name[64];      /* the NAME of a [price.NAME] section */
    double ondemand;    /* $ per node-hour */
    double spot;
} cost_price;

#endif

/* `spotrain data ...` commands: the command line of `data tokenize`, whose
 * pipeline is tok/tokenize.c. */
#ifndef SPOTRAIN_CLI_DATA_H
#define SPOTRAIN_CLI_DATA_H

/* spotrain data tokenize ... (argv[0] is "data"). */
int data_cli(int argc, char **argv);

#endif

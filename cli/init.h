/* `spotrain init [FILE]`: the commented sample configuration (the defaults
 * compiled into the binary) as a starting point for a run's INI file. */
#ifndef SPOTRAIN_CLI_INIT_H
#define SPOTRAIN_CLI_INIT_H

/* argv[0] is "init". ST_OK, ST_USAGE (FILE exists without --force) or ST_IOERR. */
int cfg_init_cli(int argc, char **argv);

#endif

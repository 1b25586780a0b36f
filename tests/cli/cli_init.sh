#!/bin/sh
# CLI tests of `spotrain init` (the embedded sample config to a file or
# stdout, no silent overwrite), of CONFIG paths that are not INI files
# (a directory, /dev/zero; /dev/null stays the empty config), and of the
# top-level --help naming every option the commands take.
# module: config cli
. tests/cli/lib.sh
S=$SPOTRAIN
ROOT=$PWD
cd "$T_TMP" || exit 1

t_exit "init to stdout is sample.ini" 0 "" sh -c "'$S' init | cmp -s - '$ROOT/sample.ini'"
t_exit "init FILE writes it" 0 "" "$S" init run.ini
t_exit "init FILE is sample.ini" 0 "" cmp -s run.ini "$ROOT/sample.ini"
t_exit "the written config loads" 0 "" "$S" train run.ini --dry-run
echo "; mine" >>run.ini
t_exit "init refuses to overwrite" 64 "run.ini exists; pass --force" "$S" init run.ini
t_exit "the refused file is untouched" 0 "" grep -q "; mine" run.ini
t_exit "init --force overwrites" 0 "" "$S" init run.ini --force
t_exit "init --force wrote sample.ini" 0 "" cmp -s run.ini "$ROOT/sample.ini"
t_exit "init into a missing directory is an I/O error" 74 "" "$S" init "$T_TMP/no/such/dir/run.ini"
t_exit "init --help" 0 "usage: spotrain init" "$S" init --help
t_exit "train without config points at init" 64 "spotrain init" "$S" train

mkdir cfgdir
t_exit "a directory as CONFIG: exit 66, one clear line" 66 "^spotrain: cfgdir is a directory; give the path of a file$" "$S" train cfgdir
t_exit "a directory as CONFIG never claims to be out of memory" 0 "" sh -c "! '$S' cost estimate cfgdir 2>&1 | grep -q 'out of memory'"
t_exit "/dev/zero as CONFIG: not a text file, exit 78" 78 "/dev/zero is not a text file" "$S" train /dev/zero
printf 'x = 1\0' >nul.ini
t_exit "a config with a NUL byte: exit 78" 78 "nul.ini is not a text file" "$S" train nul.ini --dry-run
t_exit "/dev/null is the empty config" 0 "" "$S" train /dev/null --dry-run

"$S" --help >help.txt
for opt in --set --force --dry-run --world --quiet --json -o --csv --header --config --history --hours \
    --restart-minutes --ondemand --instance-type --per-gpu --gpus --trend-days --deadline --alert-above \
    --prompt --tokens --temperature --seed --version; do
    t_exit "--help names $opt" 0 "" grep -q -- "$opt\\b" help.txt
done
t_exit "--help names init" 0 "" grep -q "init \\[FILE\\]" help.txt
t_end

#!/bin/sh
# The manual page docs/spotrain.1 against the binaries: every long option
# that `spotrain --help`, each `spotrain COMMAND --help` (the commands read
# from `spotrain --help` itself) and `spotrain-run --help` print is in the
# page, every long option in the page is in some --help, and the page
# renders without warnings where groff or man is installed.
# module: cli
. tests/cli/lib.sh
S=$SPOTRAIN
ROOT=$PWD
MAN=$ROOT/docs/spotrain.1
t_exit "the man page exists" 0 "" test -s "$MAN"

"$S" --help >"$T_TMP/help.txt" 2>&1
# Command lines of the top-level help: two spaces, a word, and a second
# lower-case word when the command has subcommands ("ckpt inspect").
cmds=$(sed -n 's/^  \([a-z][a-z]*\)\( [a-z][a-z]*\)\{0,1\}\( .*\)\{0,1\}$/\1\2/p' "$T_TMP/help.txt" | sort -u)
n=$(echo "$cmds" | grep -c .)
# Fewer than the dozen commands means the help's shape changed under this parser.
t_exit "spotrain --help lists the commands ($n found)" 0 "" test "$n" -ge 12
cp "$T_TMP/help.txt" "$T_TMP/all.txt"
echo "$cmds" | while read -r c; do
    # shellcheck disable=SC2086
    if "$S" $c --help >"$T_TMP/one.txt" 2>&1; then
        echo "ok   spotrain $c --help"
    else
        echo "FAIL spotrain $c --help: exit $?"
    fi
    cat "$T_TMP/one.txt" >>"$T_TMP/all.txt"
done >"$T_TMP/sub.txt"
while read -r line; do
    case "$line" in ok*) t_ok "${line#ok   }" ;; *) t_bad "${line#FAIL }" ;; esac
done <"$T_TMP/sub.txt"
"$ROOT/spot/spotrain-run" --help >>"$T_TMP/all.txt" 2>&1
t_exit "spotrain-run --help" 0 "" grep -q -- "--max-stalls" "$T_TMP/all.txt"

opts() { grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }
opts <"$T_TMP/all.txt" >"$T_TMP/help_opts"
# In roff a dash is written \-; read the page's options with them undone.
sed 's/\\-/-/g' "$MAN" | opts >"$T_TMP/man_opts"
while read -r o; do
    if grep -qx -- "$o" "$T_TMP/man_opts"; then t_ok "spotrain.1 documents $o"; else t_bad "spotrain.1 documents $o" "a --help prints it; add it to docs/spotrain.1"; fi
done <"$T_TMP/help_opts"
while read -r o; do
    if grep -qx -- "$o" "$T_TMP/help_opts"; then t_ok "$o of spotrain.1 is in a --help"; else t_bad "$o of spotrain.1 is in a --help" "no --help prints it: a removed or misspelt option"; fi
done <"$T_TMP/man_opts"
# Every command of the top-level help has its own section in the page.
echo "$cmds" | while read -r c; do
    if grep -q "^\\.SS \"spotrain ${c}[ \"]" "$MAN"; then echo "ok   spotrain.1 has a section for $c"; else echo "FAIL spotrain.1 has a section for $c"; fi
done >"$T_TMP/sect.txt"
while read -r line; do
    case "$line" in ok*) t_ok "${line#ok   }" ;; *) t_bad "${line#FAIL }" ;; esac
done <"$T_TMP/sect.txt"

if command -v groff >/dev/null 2>&1; then
    t_exit "groff renders spotrain.1 without warnings" 0 "" sh -c "groff -man -Tutf8 -ww -P-cbu '$MAN' 2>'$T_TMP/warn' >'$T_TMP/out' && test ! -s '$T_TMP/warn' && grep -q 'EXIT STATUS' '$T_TMP/out'"
    [ -s "$T_TMP/warn" ] && head -n 5 "$T_TMP/warn"
elif command -v man >/dev/null 2>&1; then
    t_exit "man -l renders spotrain.1 without warnings" 0 "" sh -c "MANWIDTH=80 man -l '$MAN' 2>'$T_TMP/warn' >'$T_TMP/out' && test ! -s '$T_TMP/warn' && grep -q 'EXIT STATUS' '$T_TMP/out'"
else
    echo "SKIP rendering spotrain.1: neither groff nor man is installed (sh tests/deps.sh test adds groff-base)"
fi
t_end

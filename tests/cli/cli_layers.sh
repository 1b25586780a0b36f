#!/bin/sh
# module: util model tok hf data config comm backend ckpt s3 spot money train cli cuda
# Dependencies run one way. Reads every `#include "..."` of the source tree
# (main.c and the concept folders; tests/, bench/ and tools/ may reach
# anything) and checks the directions allowed:
#   1. nothing outside main.c and cli/ includes cli/ (cli/ is the glue on top)
#   2. ckpt/ spot/ money/ s3/ model/ tok/ data/ comm/ config/ hf/ util/
#      include nothing from train/ (the loop is above them all)
#   3. util/ includes only util/
#   4. ckpt/ includes nothing from spot/ money/ train/ cli/ backend/ cuda/
#      config/ hf/, and from model/ only the plain-data model/shape.h
#   5. in ckpt/ only the object-storage files (remote.c, upload.c,
#      upload.h) include s3/; the reader reads through ckpt_input
#   6. ckpt/ckpt_int.h, ckpt's private header, is included only inside
#      ckpt/ and by cli/ckpt.c (inspect prints the chunk index)
#   7. model/shape.h and money/price.h include nothing of the tree
#   8. cli/selftest.c reaches the data plane through backend/backend.h:
#      nothing from cuda/ or comm/xfer.h
#   9. one definition each: the model shape's fields are declared only in
#      model/shape.h, a node price's only in money/price.h (no mirrors)
#  10. ckpt/'s files call each other one way, in the layers ckpt_int.h
#      lists: read from the symbols of $BUILD/ckpt/*.o, a file may use only
#      files of a lower layer.
. tests/cli/lib.sh

DIRS="backend ckpt cli comm config cuda data hf model money s3 spot tok train util"
INC=$T_TMP/includes
# "FILE INCLUDED" per line, the included path root-relative (a bare name is
# a file of the includer's own folder).
for f in main.c $(find $DIRS -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort); do
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" | while read -r i; do
        case "$i" in
        */*) echo "$f $i" ;;
        *) d=$(dirname "$f"); [ "$d" = . ] && echo "$f $i" || echo "$f $d/$i" ;;
        esac
    done
done >"$INC"
if [ "$(wc -l <"$INC")" -lt 100 ]; then
    t_bad "the tree's includes were read" "only $(wc -l <"$INC") lines in $INC; run from the repository root"
fi

# rule NAME AWK-CONDITION: every include line ($1 file, $2 included) for
# which the condition holds is a violation.
rule() {
    bad=$(awk "$2" "$INC" | head -n 5)
    if [ -z "$bad" ]; then t_ok "$1"; else t_bad "$1" "$(echo "$bad" | tr '\n' ';' | sed 's/;/; /g')"; fi
}

rule "1. nothing outside main.c and cli/ includes cli/" \
    '$2 ~ /^cli\// && $1 != "main.c" && $1 !~ /^cli\// { print $1 " includes " $2 }'
rule "2. nothing below train/ includes train/" \
    '$1 ~ /^(ckpt|spot|money|s3|model|tok|data|comm|config|hf|util)\// && $2 ~ /^train\// { print $1 " includes " $2 }'
rule "3. util/ includes only util/" \
    '$1 ~ /^util\// && $2 !~ /^util\// { print $1 " includes " $2 }'
rule "4. ckpt/ includes nothing of spot/ money/ train/ cli/ backend/ cuda/ config/ hf/, of model/ only shape.h" \
    '$1 ~ /^ckpt\// && ($2 ~ /^(spot|money|train|cli|backend|cuda|config|hf)\// || ($2 ~ /^model\// && $2 != "model/shape.h")) { print $1 " includes " $2 }'
rule "5. in ckpt/ only remote.c and upload.c/.h include s3/" \
    '$1 ~ /^ckpt\// && $2 ~ /^s3\// && $1 !~ /^ckpt\/(remote\.c|upload\.c|upload\.h)$/ { print $1 " includes " $2 }'
rule "6. ckpt/ckpt_int.h only inside ckpt/ and by cli/ckpt.c" \
    '$2 == "ckpt/ckpt_int.h" && $1 !~ /^ckpt\// && $1 != "cli/ckpt.c" { print $1 " includes " $2 }'
rule "7. model/shape.h and money/price.h are plain data" \
    '($1 == "model/shape.h" || $1 == "money/price.h") { print $1 " includes " $2 }'
rule "8. cli/selftest.c reaches the data plane through backend/backend.h" \
    '$1 == "cli/selftest.c" && ($2 ~ /^cuda\// || $2 == "comm/xfer.h") { print $1 " includes " $2 }'

# 9. One definition: the field lines of the shape and of a price.
defs() { grep -l -E "$1" $(find $DIRS -name '*.h' -o -name '*.cuh' | sort) 2>/dev/null | tr '\n' ' ' | sed 's/ $//'; }
got=$(defs 'int64_t[[:space:]]+dim,[[:space:]]*n_layers,[[:space:]]*n_heads,[[:space:]]*n_kv_heads,[[:space:]]*head_dim,')
[ "$got" = model/shape.h ] && t_ok "9. the model shape is defined once (model/shape.h)" ||
    t_bad "9. the model shape is defined once (model/shape.h)" "defined in: $got"
# a price: a "double ondemand;" line followed by a "double spot;" one
got=$(awk 'p && /^[[:space:]]*double[[:space:]]+spot;/ { print FILENAME } { p = /^[[:space:]]*double[[:space:]]+ondemand;/ }' \
    $(find $DIRS -name '*.h' | sort) | sort -u | tr '\n' ' ' | sed 's/ $//')
[ "$got" = money/price.h ] && t_ok "9. a node's price is defined once (money/price.h)" ||
    t_bad "9. a node's price is defined once (money/price.h)" "defined in: $got"

# 10. The call layers of ckpt/, from the objects the build made.
layer() {
    case "$1" in
    sys) echo 1 ;;
    codec | pool | writeback) echo 2 ;;
    manifest) echo 3 ;;
    input) echo 4 ;;
    reader) echo 5 ;;
    store) echo 6 ;;
    writer | remote) echo 7 ;;
    upload) echo 8 ;;
    *) echo 0 ;;
    esac
}
objs=$(ls "$BUILD"/ckpt/*.o 2>/dev/null)
if [ -z "$objs" ]; then
    t_bad "10. ckpt/ calls run one way" "no $BUILD/ckpt/*.o: build first (make $BUILD/spotrain)"
else
    DEF=$T_TMP/defs
    for o in $objs; do
        nm --defined-only -g "$o" | awk -v m="$(basename "$o" .o)" 'NF == 3 { print $3, m }'
    done | sort >"$DEF"
    bad=
    for o in $objs; do
        m=$(basename "$o" .o)
        lm=$(layer "$m")
        if [ "$lm" = 0 ]; then
            bad="$bad ckpt/$m.c has no layer (add it to ckpt_int.h's list and to this test);"
            continue
        fi
        for used in $(nm -u "$o" | awk '{ print $2 }' | sort -u | join - "$DEF" | awk '{ print $2 }' | sort -u); do
            [ "$used" = "$m" ] && continue
            [ "$(layer "$used")" -lt "$lm" ] || bad="$bad ckpt/$m.c (layer $lm) calls ckpt/$used.c (layer $(layer "$used"));"
        done
    done
    [ -z "$bad" ] && t_ok "10. ckpt/ calls run one way (layers of ckpt_int.h)" ||
        t_bad "10. ckpt/ calls run one way (layers of ckpt_int.h)" "$bad"
fi

t_end

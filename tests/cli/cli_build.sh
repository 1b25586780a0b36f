#!/bin/sh
# Build and install checks: a machine without the -dev packages gets one line
# naming them and the install command (not a compiler's "ini.h: No such
# file"), `make install` lays out a stripped binary, the wrapper and the
# sample config and the man page, the run-time libraries docs/building.md
# names are the binary's, and a change of build settings rebuilds.
# module: cli
. tests/cli/lib.sh
S=$SPOTRAIN
ROOT=$PWD
# make test SAN=1 runs this against build/san: install that build.
case "$BUILD" in */san*) SAN=1 ;; *) SAN=0 ;; esac

# A compiler that has every header but inih's.
cat >"$T_TMP/cc" <<'EOT'
#!/bin/sh
in=$(cat)
case "$in" in *"<ini.h>"*) echo "<stdin>:1:10: fatal error: ini.h: No such file or directory" >&2; exit 1 ;; esac
printf '%s\n' "$in" | cc "$@"
EOT
chmod +x "$T_TMP/cc"
t_exit "deps check names the package and the command" 69 "missing headers of the Debian packages libinih-dev; install them with: sudo apt-get install libinih-dev" env CC="$T_TMP/cc" sh tests/deps.sh check
t_exit "deps check passes with every header" 0 "" sh tests/deps.sh check
make -s -C "$ROOT" CC="$T_TMP/cc" BUILD="$T_TMP/b" "$T_TMP/b/main.o" >"$T_TMP/make.txt" 2>&1
t_exit "make stops before compiling and says what to install" 0 "apt-get install libinih-dev" cat "$T_TMP/make.txt"
t_exit "make never reaches the compiler's missing-header error" 1 "" grep -q "No such file or directory" "$T_TMP/make.txt"
t_exit "nothing was compiled" 1 "" test -e "$T_TMP/b/main.o"

make -s -C "$ROOT" install SAN=$SAN DESTDIR="$T_TMP/root" PREFIX=/usr >"$T_TMP/install.txt" 2>&1
t_exit "make install" 0 "" test -x "$T_TMP/root/usr/bin/spotrain"
t_exit "make install: spotrain-run" 0 "" test -x "$T_TMP/root/usr/bin/spotrain-run"
t_exit "make install: the sample config" 0 "" cmp -s "$T_TMP/root/usr/share/spotrain/sample.ini" "$ROOT/sample.ini"
t_exit "make install: the binary is stripped" 0 "" sh -c "! readelf -S '$T_TMP/root/usr/bin/spotrain' | grep -q '\\.symtab'"
t_exit "the installed binary runs" 0 "spotrain" "$T_TMP/root/usr/bin/spotrain" --version
t_exit "make install: the man page" 0 "" cmp -s "$T_TMP/root/usr/share/man/man1/spotrain.1" "$ROOT/docs/spotrain.1"

# The settings stamp ($(BUILD)/.flags): one object built, the same
# settings again leave it up to date (make -q exits 0), other settings
# (MPI=0) make it out of date (exit 1), and back again after that build.
SB="$T_TMP/stamp"
make -s -C "$ROOT" BUILD="$SB" CUDA=0 "$SB/util/util.o" >"$T_TMP/stamp.txt" 2>&1
t_exit "build stamp: the object builds" 0 "" test -e "$SB/util/util.o"
t_exit "build stamp: the same settings are up to date" 0 "" make -q -C "$ROOT" BUILD="$SB" CUDA=0 "$SB/util/util.o"
t_exit "build stamp: MPI=0 rebuilds" 1 "" make -q -C "$ROOT" BUILD="$SB" CUDA=0 MPI=0 "$SB/util/util.o"
make -s -C "$ROOT" BUILD="$SB" CUDA=0 MPI=0 "$SB/util/util.o" >>"$T_TMP/stamp.txt" 2>&1
t_exit "build stamp: after the MPI=0 build it is up to date" 0 "" make -q -C "$ROOT" BUILD="$SB" CUDA=0 MPI=0 "$SB/util/util.o"
t_exit "build stamp: and the first settings rebuild" 1 "" make -q -C "$ROOT" BUILD="$SB" CUDA=0 "$SB/util/util.o"

# docs/building.md lists exactly the libraries the binary needs itself
# (the release build; a sanitizer build links everything dynamically).
DOC=$ROOT/docs/building.md
if [ "$SAN" = 1 ]; then
    echo "SKIP docs/building.md run-time libraries: a sanitizer build links its libraries dynamically"
    t_exit "README has no leftover SECTIONS marker" 1 "" grep -q "<!-- SECTIONS -->" "$ROOT/README.md"
    t_end
    exit $?
fi
# The release binary's NEEDED entries, exactly: libc and libm, the dynamic
# loader, libcurl (kept dynamic, see the Makefile), and MPI's own libraries
# when built with MPI. Everything else (zstd, inih, json-c, xxhash,
# OpenBLAS, libgomp, the CUDA runtime) is linked in; a second OpenMP
# runtime or any other surprise fails here.
interp=$(readelf -l "$S" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
expect="libc.so.6 libm.so.6 libcurl.so.4 $(basename "$interp")"
# soname LIB DIR...: the SONAME of libLIB.so in the first DIR holding it,
# else where the compiler would find it.
soname() {
    lib=lib$1.so
    shift
    f=
    for d in "$@"; do [ -e "$d/$lib" ] && f=$d/$lib && break; done
    [ -n "$f" ] || f=$(${CC:-cc} -print-file-name="$lib")
    readelf -d "$f" 2>/dev/null | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p'
}
if "$S" --version | grep -q "mpi: yes"; then
    dirs=
    for a in $(mpicc -showme:link); do case "$a" in -L*) dirs="$dirs ${a#-L}" ;; esac; done
    for a in $(mpicc -showme:link); do
        # shellcheck disable=SC2086
        case "$a" in -l*) expect="$expect $(soname "${a#-l}" $dirs)" ;; esac
    done
fi
want=$(echo "$expect" | tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' ')
got=$(readelf -d "$S" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | sort -u | tr '\n' ' ')
if [ "$got" = "$want" ]; then
    t_ok "release binary needs exactly: $got"
else
    t_bad "release binary needs exactly: $want" "readelf -d says: $got"
fi
needed=$(readelf -d "$S" | sed -n 's/.*Shared library: \[\(lib[a-z_-]*\)[.].*/\1/p' | sort -u)
# shellcheck disable=SC2016
sect=$(sed -n '/^## What `make` builds and links/,/^## /p' "$DOC")
t_exit "docs/building.md has its section on what make links" 1 "" test -z "$sect"
for lib in $needed; do
    case "$sect" in *"$lib"*) t_ok "docs/building.md names run-time library $lib" ;; *) t_bad "docs/building.md names run-time library $lib" ;; esac
done
# The sentence "... needs at run time only X, Y ... ldd" names them.
rt=$(echo "$sect" | tr '\n' ' ' | sed -n 's/.*at run time only\(.*\)`ldd.*/\1/p')
t_exit "docs/building.md has the run-time list" 1 "" test -z "$rt"
for lib in libgfortran libgomp; do
    if echo "$needed" | grep -qx "$lib"; then
        t_ok "$lib is linked dynamically (docs/building.md may name it)"
    else
        case "$rt" in *"$lib"*) t_bad "docs/building.md does not claim $lib at run time" ;; *) t_ok "docs/building.md does not claim $lib at run time" ;; esac
    fi
done
t_exit "README has no leftover SECTIONS marker" 1 "" grep -q "<!-- SECTIONS -->" "$ROOT/README.md"
t_end

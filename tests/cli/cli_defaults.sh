#!/bin/sh
# sample.ini is the configuration reference: every key it shows must have,
# in the binary, the default it shows. The binary parses its embedded copy
# for defaults, but code may change values afterwards (presets fill the
# shape keys, relations adjust others) and may know keys the file lacks, so
# this compares the file with what `spotrain train EMPTY --dry-run` resolves:
# every shown key and value (numbers numerically), the preset shapes the
# comments state, every resolved key shown in the file, and the commented
# [price.NAME] example staying an example (no prices by default).
# module: config
. tests/cli/lib.sh
S=$SPOTRAIN
ROOT=$PWD
cd "$T_TMP" || exit 1

t_exit "the binary's embedded configuration is sample.ini" 0 "" sh -c "'$S' init | cmp -s - '$ROOT/sample.ini'"
: >empty.ini
for p in tiny small deepseek-7b deepseek-67b; do
    "$S" train empty.ini --dry-run --set "model.preset=$p" >"resolved-$p.txt" 2>"err-$p.txt"
    t_exit "--dry-run resolves the defaults with preset $p" 0 "" test -s "resolved-$p.txt"
done

{
/usr/bin/python3 - "$ROOT/sample.ini" <<'PY' || echo "FAIL the checker exited $?"
import re, sys

def ini_pairs(lines, commented=False):
    """(section, key, value) of active lines; with commented, of the
    commented-out examples '; key = value' (one word as the value, so prose
    such as '; 0 = not by steps' is not one), in the section of the nearest
    header above, active or commented."""
    sect, out = None, []
    for line in lines:
        s = line.strip()
        c = s.startswith(';')
        if c:
            s = s[1:].strip()
        m = re.fullmatch(r'\[([A-Za-z0-9_.-]+)\]', s)
        if m:
            sect = m.group(1)
            continue
        if not s or c != commented:
            continue
        m = re.fullmatch(r'([a-z][a-z_0-9]*) = ?(\S*)' if commented else r'([a-z_0-9]+) = ?(.*)', s)
        if m and sect:
            out.append((sect, m.group(1), m.group(2).strip()))
    return out

def resolved(path):
    """The '; resolved configuration' block of a --dry-run: up to the first
    line that is not INI."""
    lines = open(path).read().split('\n')
    start = next(i for i, l in enumerate(lines) if l.startswith('; resolved configuration'))
    block = []
    for l in lines[start + 1:]:
        if l and not re.match(r'^(\[[^]]+\]|[a-z_0-9]+ = .*)$', l):
            break
        block.append(l)
    return {(s, k): v for s, k, v in ini_pairs(block)}

def same(a, b):
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False

def check(ok, name, why=''):
    print(('ok   ' if ok else 'FAIL ') + name + ('' if ok or not why else '\t' + why))

sample_lines = open(sys.argv[1]).read().split('\n')
shown = ini_pairs(sample_lines)
res = {p: resolved('resolved-%s.txt' % p) for p in ('tiny', 'small', 'deepseek-7b', 'deepseek-67b')}
preset = dict(((s, k), v) for s, k, v in shown)[('model', 'preset')]
r = res[preset]
shape = ['dim', 'n_layers', 'n_heads', 'n_kv_heads', 'ffn_dim', 'vocab_size', 'seq_len']

check(len(shown) > 50, 'sample.ini shows the keys (%d found)' % len(shown))
for s, k, v in shown:
    name = 'sample.ini %s.%s = %s' % (s, k, v)
    if (s, k) not in r:
        check(False, name, 'the binary resolves no such key')
    elif s == 'model' and k in shape and v == '0':
        # 0 = "take the preset's value": checked against the comment below.
        check(r[(s, k)] not in ('', '0'), name + ' resolves to the preset\'s value')
    else:
        check(same(v, r[(s, k)]), name + ' is the binary\'s default', 'resolved: %s' % r[(s, k)])

keys = {(s, k) for s, k, _ in shown}
for s, k in sorted(r):
    check((s, k) in keys, 'resolved key %s.%s is shown in sample.ini' % (s, k),
          'a default that lives only in the code: add the key to sample.ini')

# The preset shapes the [model] comment states ("tiny: 128 dim, 4 layers, ...",
# "deepseek-7b: 4096/30/32/32/11008/102400/4096").
comment = ' '.join(l.lstrip('; ') for l in sample_lines if l.startswith(';'))
tiny = re.search(r'tiny: (\d+) dim, (\d+) layers, (\d+) heads, (\d+) kv heads,\s*ffn (\d+), vocab (\d+), seq (\d+)', comment)
stated = {'tiny': tiny.groups() if tiny else None}
for p in ('deepseek-7b', 'deepseek-67b'):
    m = re.search(re.escape(p) + r': (\d+)/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)/(\d+)', comment)
    stated[p] = m.groups() if m else None
for p, vals in stated.items():
    if vals is None:
        check(False, 'sample.ini states the %s shape' % p, 'its comment no longer has the form this test reads')
        continue
    got = tuple(res[p][('model', k)] for k in shape)
    check(got == vals, 'the %s shape sample.ini states is the binary\'s' % p,
          'sample.ini: %s, binary: %s' % ('/'.join(vals), '/'.join(got)))

# Commented-out examples: '; key = value' lines. The [price.NAME] one is an
# example, not a default; any other commented key must be a real key whose
# default is what the active line shows.
example = ini_pairs(sample_lines, commented=True)
check(any(s.startswith('price.') for s, _, _ in example), 'sample.ini shows a commented [price.NAME] example')
for s, k, v in example:
    if s.startswith('price.'):
        continue
    check((s, k) in r and same(v, r[(s, k)]), 'commented example %s.%s = %s is the binary\'s default' % (s, k, v),
          'resolved: %s' % r.get((s, k), 'no such key'))
check(not any(s.startswith('price.') for s, _ in r), 'no prices by default (the example stays an example)',
      'resolved: %s' % sorted({s for s, _ in r if s.startswith('price.')}))
PY
} >checks.txt 2>&1
# Each line of the checker is one check; a checker that died says so.
t_exit "the checker ran" 0 "" test -s checks.txt
while IFS="$(printf '\t')" read -r line why; do
    case "$line" in
        "ok   "*) t_ok "${line#ok   }" ;;
        "FAIL "*) t_bad "${line#FAIL }" "$why" ;;
        *) t_bad "checker output: $line" ;;
    esac
done <checks.txt
t_end

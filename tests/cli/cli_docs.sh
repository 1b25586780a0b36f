#!/bin/sh
# The documentation's shape: README.md stays a newcomer's first page (under
# 300 lines; the rest lives in docs/), and every relative link of README.md
# and docs/*.md names a file that exists and, after '#', one of its headings
# (GitHub's anchors), so moving a section cannot leave a dead link behind.
# module: cli
. tests/cli/lib.sh
ROOT=$PWD
n=$(wc -l <"$ROOT/README.md")
t_exit "README.md is under 300 lines ($n)" 0 "" test "$n" -lt 300
/usr/bin/python3 - "$ROOT" >"$T_TMP/links.txt" 2>&1 <<'PY' || echo "FAIL the link checker exited $?" >>"$T_TMP/links.txt"
import glob, os, re, sys
root = sys.argv[1]

def slug(title):
    s = re.sub(r'[^\w\- ]', '', title.strip().lower())
    return s.replace(' ', '-')

def anchors(path):
    out, fence = set(), False
    for line in open(path):
        if line.startswith('```'):
            fence = not fence
        m = re.match(r'^#+ (.*)', line)
        if m and not fence:
            out.add(slug(m.group(1)))
    return out

files = [os.path.join(root, 'README.md')] + sorted(glob.glob(os.path.join(root, 'docs', '*.md')))
for f in files:
    name = os.path.relpath(f, root)
    for m in re.finditer(r'\]\(([^)\s]+)\)', open(f).read()):
        target = m.group(1)
        if re.match(r'[a-z]+:', target):
            continue
        path, _, anchor = target.partition('#')
        p = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
        if not os.path.exists(p):
            print('FAIL %s links to %s: no such file' % (name, target))
        elif anchor and p.endswith('.md') and anchor not in anchors(p):
            print('FAIL %s links to %s: no such heading' % (name, target))
        else:
            print('ok   %s links to %s' % (name, target))
PY
t_exit "the link checker found links" 0 "" grep -q '^ok ' "$T_TMP/links.txt"
while read -r line; do
    case "$line" in
        "ok   "*) t_ok "${line#ok   }" ;;
        "FAIL "*) t_bad "${line#FAIL }" ;;
        *) t_bad "link checker: $line" ;;
    esac
done <"$T_TMP/links.txt"
t_end

/* A backtracking matcher for the regex subset of tokenizer.json Split and
 * ByteLevel patterns: parser -> AST -> program of SET/SPLIT/JMP/LOOK/anchor
 * instructions, run with an explicit stack (no recursion per character). */
#include "regex.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_tab.h"

#define RX_NCAT 30
#define RX_INF -1
#define RX_MAX_INSTS 100000

/* --- Unicode --------------------------------------------------------------- */

static uint8_t rx_bmp[0x10000];
static pthread_once_t rx_bmp_once = PTHREAD_ONCE_INIT;

static int rx_cat_search(uint32_t cp)
{
    size_t lo = 0, hi = sizeof uni_ranges / sizeof uni_ranges[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uni_ranges[mid][0])
            hi = mid;
        else if (cp > uni_ranges[mid][1])
            lo = mid + 1;
        else
            return uni_range_cat[mid];
    }
    return 0;
}

static void rx_bmp_init(void)
{
    for (uint32_t cp = 0; cp < 0x10000; cp++)
        rx_bmp[cp] = (uint8_t)rx_cat_search(cp);
}

int rx_category(uint32_t cp)
{
    if (cp < 0x10000) {
        pthread_once(&rx_bmp_once, rx_bmp_init);
        return rx_bmp[cp];
    }
    return cp <= 0x10FFFF ? rx_cat_search(cp) : 0;
}

const char *rx_unicode_version(void) { return UNI_VERSION; }

/* Simple case folding: the next code point in cp's orbit (cp if none). */
static uint32_t rx_fold_next(uint32_t cp)
{
    size_t lo = 0, hi = sizeof uni_fold_next / sizeof uni_fold_next[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uni_fold_next[mid][0])
            hi = mid;
        else if (cp > uni_fold_next[mid][0])
            lo = mid + 1;
        else
            return uni_fold_next[mid][1];
    }
    return cp;
}

/* Whether [lo, hi] holds a case the folding data cannot answer for: a
 * letter newer than it, or one whose full folding is several characters
 * (Oniguruma matches U+00DF against "ss"; the compiled sets cannot). */
static int rx_fold_unsure(uint32_t lo, uint32_t hi, uint32_t *which)
{
    for (size_t i = 0; i < sizeof uni_fold_unknown / sizeof uni_fold_unknown[0]; i++)
        if (lo <= uni_fold_unknown[i][1] && hi >= uni_fold_unknown[i][0]) {
            *which = lo > uni_fold_unknown[i][0] ? lo : uni_fold_unknown[i][0];
            return 1;
        }
    for (size_t i = 0; i < sizeof uni_fold_multi / sizeof uni_fold_multi[0]; i++)
        if (uni_fold_multi[i] >= lo && uni_fold_multi[i] <= hi) {
            *which = uni_fold_multi[i];
            return 1;
        }
    return 0;
}

/* Whether literals a then b, case-insensitively, spell the start of some
 * character's multi-character folding ("ss" for U+00DF, "st" for U+FB06). */
static int rx_fold_pair(uint32_t a, uint32_t b)
{
    for (size_t i = 0; i < sizeof uni_fold_multi_pairs / sizeof uni_fold_multi_pairs[0]; i++) {
        int ina = 0, inb = 0;
        uint32_t x = a, y = b;
        do {
            ina |= x == uni_fold_multi_pairs[i][0];
            x = rx_fold_next(x);
        } while (x != a);
        do {
            inb |= y == uni_fold_multi_pairs[i][1];
            y = rx_fold_next(y);
        } while (y != b);
        if (ina && inb)
            return 1;
    }
    return 0;
}

const char *rx_fold_version(void) { return UNI_FOLD_VERSION; }

/* Oniguruma's \s is the White_Space property (not Python's isspace). */
static int rx_is_space(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

uint32_t rx_decode(const uint8_t *t, size_t n, size_t i, int *len)
{
    uint8_t b = t[i];
    *len = 1;
    if (b < 0x80)
        return b;
    int need;
    uint32_t cp, min;
    if (b >= 0xC2 && b <= 0xDF)
        need = 1, cp = b & 0x1F, min = 0x80;
    else if (b >= 0xE0 && b <= 0xEF)
        need = 2, cp = b & 0x0F, min = 0x800;
    else if (b >= 0xF0 && b <= 0xF4)
        need = 3, cp = b & 0x07, min = 0x10000;
    else
        return 0x110000 + b;
    if (i + (size_t)need >= n)
        return 0x110000 + b;
    for (int k = 1; k <= need; k++) {
        uint8_t c = t[i + (size_t)k];
        if ((c & 0xC0) != 0x80)
            return 0x110000 + b;
        cp = cp << 6 | (c & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0x110000 + b;
    *len = need + 1;
    return cp;
}

/* --- sets ------------------------------------------------------------------ */

enum { IT_RANGE, IT_CATS, IT_NOTCATS, IT_SPACE, IT_NOTSPACE };

typedef struct {
    uint8_t kind;
    uint32_t lo, hi;
    uint32_t cats;          /* bit per category index */
} rx_item;

typedef struct {
    int neg, n;
    rx_item *items;
    uint8_t ascii[16];      /* precomputed membership of 0..127 */
} rx_set;

static int rx_items_match(const rx_set *s, uint32_t c)
{
    int in = 0;
    for (int i = 0; i < s->n && !in; i++) {
        const rx_item *it = &s->items[i];
        switch (it->kind) {
        case IT_RANGE: in = c >= it->lo && c <= it->hi; break;
        case IT_CATS: in = (it->cats >> rx_category(c)) & 1; break;
        case IT_NOTCATS: in = !((it->cats >> rx_category(c)) & 1); break;
        case IT_SPACE: in = rx_is_space(c); break;
        default: in = !rx_is_space(c); break;
        }
    }
    return in != s->neg;
}

static inline int rx_set_match(const rx_set *s, uint32_t c)
{
    if (c < 128)
        return (s->ascii[c >> 3] >> (c & 7)) & 1;
    return rx_items_match(s, c);
}

/* --- AST ------------------------------------------------------------------- */

enum { N_SET, N_ANY, N_CAT, N_ALT, N_REP, N_LOOK, N_BOL, N_EOL, N_BOS, N_EOS, N_EMPTY };

typedef struct {
    int type, a, b;         /* children (node indices) */
    int min, max, neg, set;
    uint32_t lit;           /* 1 + the code point of a case-insensitive literal, else 0 */
} rx_node;

enum { OP_SET, OP_ANY, OP_SPLIT, OP_JMP, OP_BOL, OP_EOL, OP_BOS, OP_EOS, OP_LOOK, OP_MATCH };

typedef struct {
    uint8_t op, neg;
    int32_t x, y;
} rx_inst;

/* Bytes that can come first from a program position on (256 = the end of
 * the text); assertions and MATCH accept anything. SPLIT skips a branch
 * that cannot start with the next byte, and search skips start positions,
 * without changing which match is found. */
typedef struct {
    uint64_t b[5];
} rx_first;

struct rx {
    rx_set *sets;
    int nsets;
    rx_inst *prog;
    int nprog;
    rx_first *first;
};

typedef struct {
    const char *p, *start, *end;
    rx_node *nodes;
    int nnodes, capnodes;
    rx *r;
    int capsets;
    char *err;
    size_t errcap;
    int failed;
    int icase;              /* inside (?i:...) */
} rx_parser;

static int rx_fail(rx_parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rx_fail(rx_parser *ps, const char *fmt, ...)
{
    if (!ps->failed) {
        char msg[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(ps->err, ps->errcap, "%s at offset %d", msg, (int)(ps->p - ps->start));
    }
    ps->failed = 1;
    return -1;
}

static int rx_node_new(rx_parser *ps, int type, int a, int b)
{
    if (ps->failed)
        return -1;
    if (ps->nnodes == ps->capnodes) {
        int cap = ps->capnodes ? ps->capnodes * 2 : 64;
        rx_node *nn = realloc(ps->nodes, (size_t)cap * sizeof *nn);
        if (!nn)
            return rx_fail(ps, "out of memory");
        ps->nodes = nn;
        ps->capnodes = cap;
    }
    rx_node *n = &ps->nodes[ps->nnodes];
    memset(n, 0, sizeof *n);
    n->type = type;
    n->a = a;
    n->b = b;
    return ps->nnodes++;
}

static int rx_set_new(rx_parser *ps, int neg)
{
    rx *r = ps->r;
    if (r->nsets == ps->capsets) {
        int cap = ps->capsets ? ps->capsets * 2 : 16;
        rx_set *ns = realloc(r->sets, (size_t)cap * sizeof *ns);
        if (!ns)
            return rx_fail(ps, "out of memory");
        r->sets = ns;
        ps->capsets = cap;
    }
    rx_set *s = &r->sets[r->nsets];
    memset(s, 0, sizeof *s);
    s->neg = neg;
    return r->nsets++;
}

static int rx_item_add(rx_parser *ps, int set, rx_item it)
{
    rx_set *s = &ps->r->sets[set];
    rx_item *ni = realloc(s->items, (size_t)(s->n + 1) * sizeof *ni);
    if (!ni)
        return rx_fail(ps, "out of memory");
    s->items = ni;
    s->items[s->n++] = it;
    return 0;
}

static int rx_hex(rx_parser *ps, int digits, uint32_t *out)
{
    uint32_t v = 0;
    int k = 0;
    int braced = digits == 0;
    for (; ps->p < ps->end && (braced || k < digits); k++) {
        char c = *ps->p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            break;
        v = v * 16 + (uint32_t)d;
        if (v > 0x10FFFF)
            return rx_fail(ps, "code point escape beyond U+10FFFF");
        ps->p++;
    }
    if (k == 0 || (!braced && k != digits))
        return rx_fail(ps, "malformed hexadecimal escape");
    *out = v;
    return 0;
}

/* Category mask from a property name (\p{...}). */
static int rx_property(rx_parser *ps, const char *name, size_t n, uint32_t *mask)
{
    static const struct { const char *name; const char *cats; } groups[] = {
        {"L", "Lu Ll Lt Lm Lo"}, {"Letter", "Lu Ll Lt Lm Lo"}, {"M", "Mn Mc Me"}, {"Mark", "Mn Mc Me"},
        {"N", "Nd Nl No"}, {"Number", "Nd Nl No"}, {"P", "Pc Pd Ps Pe Pi Pf Po"},
        {"Punct", "Pc Pd Ps Pe Pi Pf Po"}, {"Punctuation", "Pc Pd Ps Pe Pi Pf Po"},
        {"S", "Sm Sc Sk So"}, {"Symbol", "Sm Sc Sk So"}, {"Z", "Zs Zl Zp"}, {"Separator", "Zs Zl Zp"},
        {"C", "Cn Cc Cf Cs Co"}, {"Other", "Cn Cc Cf Cs Co"}, {"LC", "Lu Ll Lt"}, {"L&", "Lu Ll Lt"},
        {"Any", "*"}};
    *mask = 0;
    for (int i = 0; i < RX_NCAT; i++)
        if (strlen(uni_cat_names[i]) == n && !memcmp(uni_cat_names[i], name, n)) {
            *mask = 1u << i;
            return 0;
        }
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        if (strlen(groups[g].name) != n || memcmp(groups[g].name, name, n))
            continue;
        if (groups[g].cats[0] == '*') {
            *mask = (1u << RX_NCAT) - 1;
            return 0;
        }
        for (int i = 0; i < RX_NCAT; i++)
            if (strstr(groups[g].cats, uni_cat_names[i]))
                *mask |= 1u << i;
        return 0;
    }
    return rx_fail(ps, "unsupported Unicode property \\p{%.*s}", (int)n, name);
}

/* After a backslash: fills either a single code point (*cp, returns 1) or a
 * class item (*it, returns 2). */
static int rx_escape(rx_parser *ps, uint32_t *cp, rx_item *it)
{
    if (ps->p >= ps->end)
        return rx_fail(ps, "pattern ends in a backslash");
    char c = *ps->p++;
    memset(it, 0, sizeof *it);
    switch (c) {
    case 'n': *cp = '\n'; return 1;
    case 'r': *cp = '\r'; return 1;
    case 't': *cp = '\t'; return 1;
    case 'f': *cp = '\f'; return 1;
    case 'v': *cp = '\v'; return 1;
    case 'a': *cp = 7; return 1;
    case 'e': *cp = 27; return 1;
    case 'x':
        if (ps->p < ps->end && *ps->p == '{') {
            ps->p++;
            if (rx_hex(ps, 0, cp) || ps->p >= ps->end || *ps->p != '}')
                return rx_fail(ps, "malformed \\x{...} escape");
            ps->p++;
            return 1;
        }
        return rx_hex(ps, 2, cp) ? -1 : 1;
    case 'u': return rx_hex(ps, 4, cp) ? -1 : 1;
    case 's': it->kind = IT_SPACE; return 2;
    case 'S': it->kind = IT_NOTSPACE; return 2;
    case 'd': case 'D':
        it->kind = c == 'd' ? IT_CATS : IT_NOTCATS;
        it->cats = 1u << 9;  /* Nd */
        return 2;
    case 'w': case 'W':
        it->kind = c == 'w' ? IT_CATS : IT_NOTCATS;
        it->cats = (0x1fu << 1) | (7u << 6) | (1u << 9) | (1u << 12);  /* L M Nd Pc */
        return 2;
    case 'p': case 'P': {
        int neg = c == 'P';
        if (ps->p >= ps->end || *ps->p != '{')
            return rx_fail(ps, "\\%c without {name}", c);
        const char *name = ++ps->p;
        while (ps->p < ps->end && *ps->p != '}')
            ps->p++;
        if (ps->p >= ps->end)
            return rx_fail(ps, "unterminated \\%c{", c);
        size_t n = (size_t)(ps->p - name);
        ps->p++;
        if (n && name[0] == '^')
            neg = !neg, name++, n--;
        if (rx_property(ps, name, n, &it->cats))
            return -1;
        it->kind = neg ? IT_NOTCATS : IT_CATS;
        return 2;
    }
    default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            return rx_fail(ps, "unsupported escape \\%c", c);
        *cp = (uint8_t)c;
        return 1;
    }
}

static int rx_next_cp(rx_parser *ps, uint32_t *cp)
{
    int len;
    *cp = rx_decode((const uint8_t *)ps->p, (size_t)(ps->end - ps->p), 0, &len);
    if (*cp >= 0x110000)
        return rx_fail(ps, "pattern is not valid UTF-8");
    ps->p += len;
    return 0;
}

/* [lo, hi] into a set; inside (?i:...) also every code point that folds
 * together with one in it (categories and \s stay as they are, as in
 * Oniguruma, where (?i:\p{Ll}) does not match "A"). */
static int rx_range_add(rx_parser *ps, int set, uint32_t lo, uint32_t hi)
{
    rx_item r = {IT_RANGE, lo, hi, 0};
    uint32_t bad;
    if (rx_item_add(ps, set, r))
        return -1;
    if (!ps->icase)
        return 0;
    if (rx_fold_unsure(lo, hi, &bad))
        return rx_fail(ps, "unsupported case-insensitive match of U+%04X (its folding is several "
                       "characters or newer than Unicode %s)", (unsigned)bad, UNI_FOLD_VERSION);
    size_t i = 0, end = sizeof uni_fold_next / sizeof uni_fold_next[0];
    for (size_t top = end; i < top;) {     /* the first entry at or above lo */
        size_t mid = (i + top) / 2;
        if (uni_fold_next[mid][0] < lo)
            i = mid + 1;
        else
            top = mid;
    }
    for (; i < end && uni_fold_next[i][0] <= hi; i++) {
        uint32_t m = uni_fold_next[i][0];
        for (uint32_t o = rx_fold_next(m); o != m; o = rx_fold_next(o)) {
            rx_item f = {IT_RANGE, o, o, 0};
            if ((o < lo || o > hi) && rx_item_add(ps, set, f))
                return -1;
        }
    }
    return 0;
}

static int rx_parse_class(rx_parser *ps)
{
    int neg = 0;
    if (ps->p < ps->end && *ps->p == '^')
        neg = 1, ps->p++;
    int set = rx_set_new(ps, neg);
    if (set < 0)
        return -1;
    int first = 1;
    for (;;) {
        if (ps->p >= ps->end)
            return rx_fail(ps, "unterminated character class");
        char c = *ps->p;
        if (c == ']' && !first) {
            ps->p++;
            break;
        }
        first = 0;
        if (c == '[')
            return rx_fail(ps, "unsupported nested class or POSIX bracket '['");
        if (c == '&' && ps->p + 1 < ps->end && ps->p[1] == '&')
            return rx_fail(ps, "unsupported class intersection '&&'");
        uint32_t lo;
        rx_item it;
        int kind = 1;
        if (c == '\\') {
            ps->p++;
            kind = rx_escape(ps, &lo, &it);
            if (kind < 0)
                return -1;
        } else if (rx_next_cp(ps, &lo)) {
            return -1;
        }
        if (kind == 2) {
            if (rx_item_add(ps, set, it))
                return -1;
            continue;
        }
        uint32_t hi = lo;
        if (ps->p + 1 < ps->end && *ps->p == '-' && ps->p[1] != ']') {
            ps->p++;
            if (*ps->p == '\\') {
                ps->p++;
                kind = rx_escape(ps, &hi, &it);
                if (kind != 1)
                    return kind < 0 ? -1 : rx_fail(ps, "class range ends in a class escape");
            } else if (rx_next_cp(ps, &hi)) {
                return -1;
            }
            if (hi < lo)
                return rx_fail(ps, "empty class range");
        }
        if (rx_range_add(ps, set, lo, hi))
            return -1;
    }
    int n = rx_node_new(ps, N_SET, -1, -1);
    if (n >= 0)
        ps->nodes[n].set = set;
    return n;
}

static int rx_single(rx_parser *ps, uint32_t cp)
{
    int set = rx_set_new(ps, 0);
    if (set < 0 || rx_range_add(ps, set, cp, cp))
        return -1;
    int n = rx_node_new(ps, N_SET, -1, -1);
    if (n >= 0) {
        ps->nodes[n].set = set;
        ps->nodes[n].lit = ps->icase ? cp + 1 : 0;
    }
    return n;
}

static int rx_parse_alt(rx_parser *ps, int depth);

static int rx_parse_atom(rx_parser *ps, int depth)
{
    char c = *ps->p;
    uint32_t cp;
    rx_item it;
    switch (c) {
    case '(': {
        ps->p++;
        int look = -1, icase = ps->icase;
        if (ps->p < ps->end && *ps->p == '?') {
            if (ps->p + 1 < ps->end && ps->p[1] == ':')
                ps->p += 2;
            else if (ps->end - ps->p >= 3 && !memcmp(ps->p, "?i:", 3))
                ps->icase = 1, ps->p += 3;
            else if (ps->end - ps->p >= 4 && !memcmp(ps->p, "?-i:", 4))
                ps->icase = 0, ps->p += 4;
            else if (ps->p + 1 < ps->end && (ps->p[1] == '=' || ps->p[1] == '!'))
                look = ps->p[1] == '!', ps->p += 2;
            else if (ps->p + 1 < ps->end && strchr("imx-", ps->p[1]))
                return rx_fail(ps, "unsupported inline flags (only scoped (?i:...) and (?-i:...))");
            else
                return rx_fail(ps, "unsupported group '(?%c'", ps->p + 1 < ps->end ? ps->p[1] : ' ');
        }
        int inner = rx_parse_alt(ps, depth + 1);
        ps->icase = icase;
        if (inner < 0)
            return -1;
        if (ps->p >= ps->end || *ps->p != ')')
            return rx_fail(ps, "missing ')'");
        ps->p++;
        if (look < 0)
            return inner;
        int n = rx_node_new(ps, N_LOOK, inner, -1);
        if (n >= 0)
            ps->nodes[n].neg = look;
        return n;
    }
    case '[':
        ps->p++;
        return rx_parse_class(ps);
    case '.':
        ps->p++;
        return rx_node_new(ps, N_ANY, -1, -1);
    case '^':
        ps->p++;
        return rx_node_new(ps, N_BOL, -1, -1);
    case '$':
        ps->p++;
        return rx_node_new(ps, N_EOL, -1, -1);
    case '\\':
        ps->p++;
        if (ps->p < ps->end && (*ps->p == 'A' || *ps->p == 'z'))
            return rx_node_new(ps, *ps->p++ == 'A' ? N_BOS : N_EOS, -1, -1);
        if (ps->p < ps->end && (*ps->p == 'b' || *ps->p == 'B' || *ps->p == 'G' || *ps->p == 'Z' ||
                                *ps->p == 'k' || *ps->p == 'g' || *ps->p == 'K' || *ps->p == 'R' ||
                                *ps->p == 'X' || *ps->p == 'h' || *ps->p == 'H' ||
                                (*ps->p >= '0' && *ps->p <= '9')))
            return rx_fail(ps, "unsupported escape \\%c", *ps->p);
        {
            int k = rx_escape(ps, &cp, &it);
            if (k < 0)
                return -1;
            if (k == 1)
                return rx_single(ps, cp);
            int set = rx_set_new(ps, 0);
            if (set < 0 || rx_item_add(ps, set, it))
                return -1;
            int n = rx_node_new(ps, N_SET, -1, -1);
            if (n >= 0)
                ps->nodes[n].set = set;
            return n;
        }
    case '*': case '+': case '?':
        return rx_fail(ps, "quantifier '%c' with nothing to repeat", c);
    default:
        if (rx_next_cp(ps, &cp))
            return -1;
        return rx_single(ps, cp);
    }
}

/* {n}, {n,}, {n,m}, {,m}; 0 if the text is not an interval (a literal '{'). */
static int rx_interval(rx_parser *ps, int *min, int *max)
{
    const char *q = ps->p + 1;
    long a = -1, b = -1;
    if (q < ps->end && *q >= '0' && *q <= '9')
        for (a = 0; q < ps->end && *q >= '0' && *q <= '9'; q++)
            a = a * 10 + (*q - '0') > 100000 ? 100001 : a * 10 + (*q - '0');
    int comma = q < ps->end && *q == ',';
    if (comma) {
        q++;
        if (q < ps->end && *q >= '0' && *q <= '9')
            for (b = 0; q < ps->end && *q >= '0' && *q <= '9'; q++)
                b = b * 10 + (*q - '0') > 100000 ? 100001 : b * 10 + (*q - '0');
    }
    if (q >= ps->end || *q != '}' || (a < 0 && b < 0))
        return 0;
    *min = a < 0 ? 0 : (int)a;
    *max = comma ? (b < 0 ? RX_INF : (int)b) : *min;
    ps->p = q + 1;
    return 1;
}

static int rx_nullable(const rx_parser *ps, int n)
{
    const rx_node *x = &ps->nodes[n];
    switch (x->type) {
    case N_SET: case N_ANY: return 0;
    case N_CAT: return rx_nullable(ps, x->a) && rx_nullable(ps, x->b);
    case N_ALT: return rx_nullable(ps, x->a) || rx_nullable(ps, x->b);
    case N_REP: return x->min == 0 || rx_nullable(ps, x->a);
    default: return 1;
    }
}

static int rx_parse_seq(rx_parser *ps, int depth)
{
    int seq = -1;
    uint32_t prev = 0;
    if (depth > 50)
        return rx_fail(ps, "groups nested too deeply");
    while (ps->p < ps->end && *ps->p != '|' && *ps->p != ')') {
        int atom = rx_parse_atom(ps, depth);
        if (atom < 0)
            return -1;
        uint32_t lit = ps->nodes[atom].lit;
        if (prev && lit && rx_fold_pair(prev - 1, lit - 1))
            return rx_fail(ps, "unsupported case-insensitive U+%04X U+%04X (the folding of one character "
                           "spells them, as U+00DF spells ss)", (unsigned)(prev - 1), (unsigned)(lit - 1));
        prev = lit;
        while (ps->p < ps->end) {
            int min, max;
            char q = *ps->p;
            if (q == '*' || q == '+' || q == '?') {
                ps->p++;
                min = q == '+';
                max = q == '?' ? 1 : RX_INF;
            } else if (q == '{' && rx_interval(ps, &min, &max)) {
                if (min > 1000 || max > 1000 || (max != RX_INF && max < min))
                    return rx_fail(ps, "unsupported repeat count");
            } else {
                break;
            }
            if (ps->p < ps->end && (*ps->p == '?' || *ps->p == '+'))
                return rx_fail(ps, "unsupported %s quantifier", *ps->p == '?' ? "lazy" : "possessive");
            int t = ps->nodes[atom].type;
            if (t == N_LOOK || t == N_BOL || t == N_EOL || t == N_BOS || t == N_EOS)
                return rx_fail(ps, "unsupported quantifier on an assertion");
            if (max == RX_INF && rx_nullable(ps, atom))
                return rx_fail(ps, "unsupported unbounded repeat of an empty-matching group");
            int r = rx_node_new(ps, N_REP, atom, -1);
            if (r < 0)
                return -1;
            ps->nodes[r].min = min;
            ps->nodes[r].max = max;
            atom = r;
        }
        seq = seq < 0 ? atom : rx_node_new(ps, N_CAT, seq, atom);
        if (seq < 0)
            return -1;
    }
    return seq < 0 ? rx_node_new(ps, N_EMPTY, -1, -1) : seq;
}

static int rx_parse_alt(rx_parser *ps, int depth)
{
    int left = rx_parse_seq(ps, depth);
    while (left >= 0 && ps->p < ps->end && *ps->p == '|') {
        ps->p++;
        int right = rx_parse_seq(ps, depth);
        if (right < 0)
            return -1;
        left = rx_node_new(ps, N_ALT, left, right);
    }
    return left;
}

/* --- compile --------------------------------------------------------------- */

static int rx_emit(rx_parser *ps, int *cap, int op, int x, int y)
{
    rx *r = ps->r;
    if (r->nprog >= RX_MAX_INSTS)
        return rx_fail(ps, "pattern too large");
    if (r->nprog == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        rx_inst *np = realloc(r->prog, (size_t)nc * sizeof *np);
        if (!np)
            return rx_fail(ps, "out of memory");
        r->prog = np;
        *cap = nc;
    }
    rx_inst *in = &r->prog[r->nprog];
    in->op = (uint8_t)op;
    in->neg = 0;
    in->x = x;
    in->y = y;
    return r->nprog++;
}

static int rx_gen(rx_parser *ps, int *cap, int n)
{
    const rx_node x = ps->nodes[n];
    rx *r = ps->r;
    int i, j;
    switch (x.type) {
    case N_SET: return rx_emit(ps, cap, OP_SET, x.set, 0) < 0 ? -1 : 0;
    case N_ANY: return rx_emit(ps, cap, OP_ANY, 0, 0) < 0 ? -1 : 0;
    case N_BOL: return rx_emit(ps, cap, OP_BOL, 0, 0) < 0 ? -1 : 0;
    case N_EOL: return rx_emit(ps, cap, OP_EOL, 0, 0) < 0 ? -1 : 0;
    case N_BOS: return rx_emit(ps, cap, OP_BOS, 0, 0) < 0 ? -1 : 0;
    case N_EOS: return rx_emit(ps, cap, OP_EOS, 0, 0) < 0 ? -1 : 0;
    case N_EMPTY: return 0;
    case N_CAT: return rx_gen(ps, cap, x.a) || rx_gen(ps, cap, x.b) ? -1 : 0;
    case N_ALT:
        if ((i = rx_emit(ps, cap, OP_SPLIT, 0, 0)) < 0)
            return -1;
        r->prog[i].x = r->nprog;
        if (rx_gen(ps, cap, x.a) || (j = rx_emit(ps, cap, OP_JMP, 0, 0)) < 0)
            return -1;
        r->prog[i].y = r->nprog;
        if (rx_gen(ps, cap, x.b))
            return -1;
        r->prog[j].x = r->nprog;
        return 0;
    case N_LOOK:
        if ((i = rx_emit(ps, cap, OP_LOOK, 0, 0)) < 0)
            return -1;
        r->prog[i].neg = (uint8_t)x.neg;
        r->prog[i].x = r->nprog;
        if (rx_gen(ps, cap, x.a) || rx_emit(ps, cap, OP_MATCH, 0, 0) < 0)
            return -1;
        r->prog[i].y = r->nprog;
        return 0;
    default: /* N_REP */
        for (int k = 0; k < x.min; k++)
            if (rx_gen(ps, cap, x.a))
                return -1;
        if (x.max == RX_INF) {
            int top = r->nprog;
            if ((i = rx_emit(ps, cap, OP_SPLIT, 0, 0)) < 0)
                return -1;
            r->prog[i].x = r->nprog;
            if (rx_gen(ps, cap, x.a) || rx_emit(ps, cap, OP_JMP, top, 0) < 0)
                return -1;
            r->prog[i].y = r->nprog;
            return 0;
        }
        {
            int splits[1001], ns = 0;
            for (int k = x.min; k < x.max; k++) {
                if ((splits[ns] = rx_emit(ps, cap, OP_SPLIT, 0, 0)) < 0)
                    return -1;
                r->prog[splits[ns]].x = r->nprog;
                ns++;
                if (rx_gen(ps, cap, x.a))
                    return -1;
            }
            for (int k = 0; k < ns; k++)
                r->prog[splits[k]].y = r->nprog;
        }
        return 0;
    }
}

static inline int rx_first_has(const rx_first *f, int c) { return (f->b[c >> 6] >> (c & 63)) & 1; }

static int rx_first_compute(rx *r)
{
    r->first = calloc((size_t)r->nprog, sizeof *r->first);
    if (!r->first)
        return -1;
    for (int changed = 1; changed;) {
        changed = 0;
        for (int pc = r->nprog - 1; pc >= 0; pc--) {
            const rx_inst *in = &r->prog[pc];
            rx_first f = {{0}};
            if (in->op == OP_SET) {
                const rx_set *set = &r->sets[in->x];
                for (int c = 0; c < 128; c++)
                    if ((set->ascii[c >> 3] >> (c & 7)) & 1)
                        f.b[c >> 6] |= 1ULL << (c & 63);
                f.b[2] = f.b[3] = ~0ULL;   /* any lead or stray byte */
            } else if (in->op == OP_ANY) {
                f.b[0] = ~0ULL & ~(1ULL << '\n');
                f.b[1] = f.b[2] = f.b[3] = ~0ULL;
            } else if (in->op == OP_SPLIT || in->op == OP_JMP) {
                for (int k = 0; k < 5; k++)
                    f.b[k] = r->first[in->x].b[k] | (in->op == OP_SPLIT ? r->first[in->y].b[k] : 0);
            } else {
                for (int k = 0; k < 5; k++)
                    f.b[k] = ~0ULL;
            }
            for (int k = 0; k < 5; k++)
                if ((r->first[pc].b[k] | f.b[k]) != r->first[pc].b[k]) {
                    r->first[pc].b[k] |= f.b[k];
                    changed = 1;
                }
        }
    }
    return 0;
}

void rx_free(rx *r)
{
    if (!r)
        return;
    free(r->first);
    for (int i = 0; i < r->nsets; i++)
        free(r->sets[i].items);
    free(r->sets);
    free(r->prog);
    free(r);
}

int rx_compile(rx **out, const char *pattern, size_t n, char *err, size_t cap)
{
    rx_parser ps = {0};
    int pcap = 0;
    *out = NULL;
    ps.p = ps.start = pattern;
    ps.end = pattern + n;
    ps.err = err;
    ps.errcap = cap;
    ps.r = calloc(1, sizeof *ps.r);
    if (!ps.r) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    int root = rx_parse_alt(&ps, 0);
    if (root >= 0 && ps.p < ps.end)
        rx_fail(&ps, "unbalanced ')'");
    if (!ps.failed && (rx_gen(&ps, &pcap, root) || rx_emit(&ps, &pcap, OP_MATCH, 0, 0) < 0))
        ps.failed = 1;
    free(ps.nodes);
    if (ps.failed) {
        rx_free(ps.r);
        return -1;
    }
    for (int s = 0; s < ps.r->nsets; s++)
        for (uint32_t c = 0; c < 128; c++)
            if (rx_items_match(&ps.r->sets[s], c))
                ps.r->sets[s].ascii[c >> 3] |= (uint8_t)(1u << (c & 7));
    if (rx_first_compute(ps.r)) {
        snprintf(err, cap, "out of memory");
        rx_free(ps.r);
        return -1;
    }
    *out = ps.r;
    return 0;
}

/* --- run ------------------------------------------------------------------- */

void rx_stack_free(rx_stack *s)
{
    free(s->st);
    s->st = NULL;
    s->cap = 0;
}

static int rx_push(rx_stack *s, size_t *top, uint32_t pc, size_t sp)
{
    if (*top + 2 > s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        uint32_t *ns = realloc(s->st, nc * sizeof *ns);
        if (!ns)
            return -1;
        s->st = ns;
        s->cap = nc;
    }
    s->st[(*top)++] = pc;
    s->st[(*top)++] = (uint32_t)sp;
    return 0;
}

/* Runs the program from pc at sp; 1 and *end on a match, 0 none, -1 OOM.
 * Backtrack entries live above `base` on the shared stack. */
static int rx_run(const rx *r, rx_stack *s, size_t base, uint32_t pc, const uint8_t *t, size_t n,
                  size_t sp, size_t *end)
{
    size_t top = base;
    if (rx_push(s, &top, pc, sp))
        return -1;
    while (top > base) {
        sp = s->st[--top];
        pc = s->st[--top];
        for (;;) {
            const rx_inst *in = &r->prog[pc];
            int len;
            uint32_t c;
            switch (in->op) {
            case OP_SET:
                if (sp >= n)
                    goto fail;
                c = t[sp] < 0x80 ? (len = 1, t[sp]) : rx_decode(t, n, sp, &len);
                if (!rx_set_match(&r->sets[in->x], c))
                    goto fail;
                sp += (size_t)len;
                pc++;
                continue;
            case OP_ANY:
                if (sp >= n || t[sp] == '\n')
                    goto fail;
                rx_decode(t, n, sp, &len);
                sp += (size_t)len;
                pc++;
                continue;
            case OP_SPLIT: {
                int nb = sp < n ? t[sp] : 256;
                int okx = rx_first_has(&r->first[in->x], nb), oky = rx_first_has(&r->first[in->y], nb);
                if (!okx && !oky)
                    goto fail;
                if (!okx) {
                    pc = (uint32_t)in->y;
                    continue;
                }
                if (oky && rx_push(s, &top, (uint32_t)in->y, sp))
                    return -1;
                pc = (uint32_t)in->x;
                continue;
            }
            case OP_JMP:
                pc = (uint32_t)in->x;
                continue;
            case OP_BOL:
                if (sp != 0 && t[sp - 1] != '\n')
                    goto fail;
                pc++;
                continue;
            case OP_EOL:
                if (sp != n && t[sp] != '\n')
                    goto fail;
                pc++;
                continue;
            case OP_BOS:
                if (sp != 0)
                    goto fail;
                pc++;
                continue;
            case OP_EOS:
                if (sp != n)
                    goto fail;
                pc++;
                continue;
            case OP_LOOK: {
                size_t e;
                int m = rx_run(r, s, top, (uint32_t)in->x, t, n, sp, &e);
                if (m < 0)
                    return -1;
                if (m == (int)in->neg)
                    goto fail;
                pc = (uint32_t)in->y;
                continue;
            }
            default: /* OP_MATCH */
                *end = sp;
                return 1;
            }
        }
    fail:;
    }
    return 0;
}

int rx_search(const rx *r, rx_stack *s, const uint8_t *text, size_t n, size_t from, size_t *ms,
              size_t *me)
{
    if (n > UINT32_MAX)
        return -1;
    for (size_t i = from; i <= n;) {
        int m = rx_first_has(&r->first[0], i < n ? text[i] : 256) ? rx_run(r, s, 0, 0, text, n, i, me) : 0;
        if (m != 0) {
            *ms = i;
            return m;
        }
        if (i == n)
            break;
        int len;
        rx_decode(text, n, i, &len);
        i += (size_t)len;
    }
    return 0;
}

/* CUDA's kernel launch `k<T><<<grid, block[, shmem[, stream]]>>>(args)` is
 * not C++. This filter rewrites each one in a preprocessed translation
 * unit into `emu_launcher_of(k<T>, "k<T>", emu_config(grid, block...))(args)`: a call
 * of the emulator's launcher (tests/emu/emu.h) whose operator() takes the
 * kernel's own parameter types, so the arguments convert as they do in a
 * real launch. Only the kernel expression and the configuration are
 * touched; every other byte, newlines included, is copied, so the line
 * markers and diagnostics still point at cuda/.
 *
 *     launch IN OUT      (exit 1 with a message on a launch it cannot parse)
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f)
        return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, 4096, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static int ident(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Line number of offset i (1-based, counting from the file's start). */
static int line_of(const char *s, size_t i)
{
    int l = 1;
    for (size_t k = 0; k < i; k++)
        l += s[k] == '\n';
    return l;
}

/* Start of the kernel expression that ends just before `end`: an
 * identifier (with :: qualification) and an optional <template args>. */
static long kernel_start(const char *s, long end)
{
    long i = end - 1;
    while (i >= 0 && isspace((unsigned char)s[i]))
        i--;
    if (i >= 0 && s[i] == '>') {
        int depth = 0;
        for (; i >= 0; i--) {
            if (s[i] == '>')
                depth++;
            else if (s[i] == '<' && --depth == 0)
                break;
        }
        if (i < 0)
            return -1;
        i--;
        while (i >= 0 && isspace((unsigned char)s[i]))
            i--;
    }
    if (i < 0 || !ident(s[i]))
        return -1;
    while (i >= 0 && (ident(s[i]) || (s[i] == ':' && i > 0 && s[i - 1] == ':'))) {
        if (s[i] == ':')
            i--;
        i--;
    }
    return i + 1;
}

int main(int argc, char **argv)
{
    size_t n = 0;
    if (argc != 3) {
        fprintf(stderr, "usage: launch IN OUT\n");
        return 2;
    }
    char *s = slurp(argv[1], &n);
    if (!s) {
        fprintf(stderr, "launch: cannot read %s\n", argv[1]);
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    if (!out) {
        fprintf(stderr, "launch: cannot write %s\n", argv[2]);
        return 1;
    }
    size_t copied = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        /* string and character literals and line markers pass untouched */
        if (c == '"' || c == '\'') {
            for (i++; i < n && s[i] != c; i++)
                if (s[i] == '\\')
                    i++;
            continue;
        }
        if (c == '#' && (i == 0 || s[i - 1] == '\n')) {
            while (i < n && s[i] != '\n')
                i++;
            continue;
        }
        if (c != '<' || strncmp(s + i, "<<<", 3) != 0)
            continue;
        long k = kernel_start(s, (long)i);
        char *close = strstr(s + i + 3, ">>>");
        if (k < (long)copied || !close) {
            fprintf(stderr, "%s:%d: launch: cannot parse this kernel launch\n", argv[1], line_of(s, i));
            fclose(out);
            remove(argv[2]);
            return 1;
        }
        size_t c0 = (size_t)(close - s);
        fwrite(s + copied, 1, (size_t)k - copied, out);
        fputs("emu_launcher_of(", out);
        fwrite(s + k, 1, i - (size_t)k, out);
        fputs(", \"", out);   /* the kernel's name for messages, on one line */
        for (size_t j = (size_t)k; j < i; j++)
            if (!isspace((unsigned char)s[j]))
                fputc(s[j], out);
        fputs("\", emu_config(", out);
        fwrite(s + i + 3, 1, c0 - (i + 3), out);
        fputs("))", out);
        copied = c0 + 3;
        i = copied - 1;
    }
    fwrite(s + copied, 1, n - copied, out);
    free(s);
    if (fclose(out) != 0) {
        fprintf(stderr, "launch: cannot write %s\n", argv[2]);
        return 1;
    }
    return 0;
}

/* Config tests: defaults from the embedded sample.ini, presets, --set,
 * every bad-input path naming file:line and key, and parameter counts. */
#include "tests/harness.h"
#include "config/config.h"
#include "model/model.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/spotrain-cfg-XXXXXX";

static const char *write_ini(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_defaults(void)
{
    cfg c;
    EXPECT(cfg_load(&c, NULL, NULL, 0) == ST_OK);
    EXPECT(!strcmp(c.preset, "tiny"));
    EXPECT(c.dim == 128 && c.n_layers == 4 && c.n_heads == 4 && c.n_kv_heads == 2);
    EXPECT(c.vocab_size == 256 && c.seq_len == 64);
    EXPECT(!strcmp(c.source, "synthetic"));
    EXPECT(c.n_prices == 0);
    EXPECT(c.lr > 0 && c.max_steps > 0);
}

/* Every key the loader knows is documented in sample.ini. */
static void test_sample_documents_every_key(void)
{
    cfg c;
    EXPECT(cfg_load(&c, NULL, NULL, 0) == ST_OK);
    char *text = cfg_render(&c);
    char section[64] = "";
    int keys = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '[') {
            snprintf(section, sizeof section, "%s", line);
            EXPECT(strstr(cfg_sample_ini, section) != NULL);
            continue;
        }
        char key[96], pat[128];
        if (sscanf(line, "%95s =", key) != 1)
            continue;
        snprintf(pat, sizeof pat, "\n%s =", key);
        if (!strstr(cfg_sample_ini, pat))
            fprintf(stderr, "    key %s %s missing from sample.ini\n", section, key);
        EXPECT(strstr(cfg_sample_ini, pat) != NULL);
        keys++;
    }
    EXPECT(keys > 60);
    free(text);
}

static void test_presets_and_counts(void)
{
    cfg c;
    model_shape s;
    char *sets[] = {"model.preset=deepseek-7b"};
    EXPECT(cfg_load(&c, NULL, sets, 1) == ST_OK);
    EXPECT(model_shape_from_cfg(&s, &c) == ST_OK);
    EXPECT(model_count_params(&s) == 6910365696ull);
    char *sets67[] = {"model.preset=deepseek-67b"};
    EXPECT(cfg_load(&c, NULL, sets67, 1) == ST_OK);
    EXPECT(model_shape_from_cfg(&s, &c) == ST_OK);
    uint64_t n67 = model_count_params(&s);
    EXPECT(n67 > 67300000000ull && n67 < 67500000000ull);
    /* A shape key set explicitly beats the preset. */
    char *mix[] = {"model.preset=deepseek-7b", "model.n_layers=2"};
    EXPECT(cfg_load(&c, NULL, mix, 2) == ST_OK);
    EXPECT(c.n_layers == 2 && c.dim == 4096);
}

static void test_layout_matches_count(void)
{
    cfg c;
    model_shape s;
    model_layout L;
    EXPECT(cfg_load(&c, NULL, NULL, 0) == ST_OK);
    EXPECT(model_shape_from_cfg(&s, &c) == ST_OK);
    EXPECT(model_layout_init(&L, &s) == ST_OK);
    EXPECT(L.n_floats == model_count_params(&s));
    EXPECT(!strcmp(L.params[0].name, "model.embed_tokens.weight"));
    EXPECT(!strcmp(model_layer(&L, 1, MODEL_K)->name, "model.layers.1.self_attn.k_proj.weight"));
    EXPECT(model_layer(&L, 1, MODEL_K)->shape[0] == 64 && model_layer(&L, 1, MODEL_K)->shape[1] == 128);
    EXPECT(!strcmp(model_lm_head(&L)->name, "lm_head.weight"));
    EXPECT(model_lm_head(&L)->offset + model_lm_head(&L)->numel == L.n_floats);
    for (int i = 1; i < L.n_params; i++)
        EXPECT(L.params[i].offset == L.params[i - 1].offset + L.params[i - 1].numel);
    model_layout_free(&L);
}

static void test_file_and_overrides(void)
{
    cfg c;
    const char *p = write_ini("ok.ini", "[train]\nmax_steps = 7\nlr = 1e-3 ; inline comment\n"
                                        "[price.gpu]\nondemand = 32.5\nspot = 9.75\n");
    char *sets[] = {"train.max_steps=9", "price.gpu.spot=8"};
    EXPECT(cfg_load(&c, p, sets, 2) == ST_OK);
    EXPECT(c.max_steps == 9);
    EXPECT(c.lr == 1e-3);
    EXPECT(c.n_prices == 1 && c.prices[0].ondemand == 32.5 && c.prices[0].spot == 8);
}

static void test_bad_inputs(void)
{
    cfg c;
    EXPECT(cfg_load(&c, write_ini("a.ini", "[train]\nmax_stepz = 3\n"), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, write_ini("b.ini", "[bogus]\nx = 3\n"), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, write_ini("c.ini", "[train]\nmax_steps = ten\n"), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, write_ini("d.ini", "[train]\nmax_steps = 0\n"), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, write_ini("e.ini", "[train]\nlr = nan\n"), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, write_ini("f.ini", "[train]\nmax_steps = 3\nmax_steps = 4\n"), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, write_ini("g.ini", "[model]\npreset = huge\n"), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, write_ini("h.ini", "[train]\nmax_steps 3\n"), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, write_ini("i.ini", "[price.gpu]\nondemand = 3\n"), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, write_ini("j.ini", "[train]\nglobal_batch = 10\nmicro_batch = 4\n"), NULL, 0) == ST_CONFIG);
    char longline[400];
    memset(longline, 'x', sizeof longline);
    memcpy(longline, "[train]\nrun_dir = ", 18);
    longline[sizeof longline - 2] = '\n';
    longline[sizeof longline - 1] = 0;
    EXPECT(cfg_load(&c, write_ini("k.ini", longline), NULL, 0) == ST_CONFIG);
    EXPECT(cfg_load(&c, "/nonexistent/x.ini", NULL, 0) == ST_NOINPUT);
    char *bad_set[] = {"train.nope=1"};
    EXPECT(cfg_load(&c, NULL, bad_set, 1) == ST_CONFIG);
    char *bad_form[] = {"max_steps"};
    EXPECT(cfg_load(&c, NULL, bad_form, 1) == ST_USAGE);
    char *bad_shape[] = {"model.dim=130"};
    EXPECT(cfg_load(&c, NULL, bad_shape, 1) == ST_OK);
    model_shape s;
    EXPECT(model_shape_from_cfg(&s, &c) == ST_CONFIG);
}

/* min_lr = auto follows lr (lr / 10), keeps the old default 3e-4 to the bit
 * for the default lr (the golden digests depend on it), and a fine-tuning lr
 * below 3e-4 is no longer refused; a min_lr the user gives still must not
 * exceed lr. */
static void test_min_lr_auto(void)
{
    cfg c;
    EXPECT(cfg_load(&c, NULL, NULL, 0) == ST_OK);
    EXPECT(c.lr == 3e-3 && c.min_lr == 3e-4 && c.min_lr_auto);
    char *ft[] = {"train.lr=2e-5"};
    EXPECT(cfg_load(&c, NULL, ft, 1) == ST_OK);
    EXPECT(c.min_lr == 2e-6 && c.min_lr_auto);
    char *given[] = {"train.lr=2e-5", "train.min_lr=1e-6"};
    EXPECT(cfg_load(&c, NULL, given, 2) == ST_OK);
    EXPECT(c.min_lr == 1e-6 && !c.min_lr_auto);
    char *above[] = {"train.lr=2e-5", "train.min_lr=3e-4"};
    EXPECT(cfg_load(&c, NULL, above, 2) == ST_CONFIG);
    char *text = NULL;
    cfg b;
    EXPECT(cfg_load(&c, NULL, ft, 1) == ST_OK && (text = cfg_render(&c)) != NULL);
    EXPECT(strstr(text, "\nmin_lr = auto\n") != NULL);   /* shown and stored as auto: it follows lr */
    EXPECT(cfg_load_text(&b, "rendered", text, NULL, 0) == ST_OK && b.min_lr == 2e-6 && b.min_lr_auto);
    free(text);
}

/* The rendered config reloads to the same values (checkpoints carry it). */
static void test_render_roundtrip(void)
{
    cfg a, b;
    char *sets[] = {"train.lr=0.00123", "price.node.ondemand=1.5", "price.node.spot=0.5"};
    EXPECT(cfg_load(&a, NULL, sets, 3) == ST_OK);
    char *text = cfg_render(&a);
    EXPECT(cfg_load_text(&b, "rendered", text, NULL, 0) == ST_OK);
    char *again = cfg_render(&b);
    EXPECT(!strcmp(text, again));
    free(text);
    free(again);
}

int main(void)
{
    util_quiet = 1;
    if (!mkdtemp(tmpdir))
        return 1;
    harness_run("config defaults from sample.ini", test_defaults);
    harness_run("sample.ini documents every key", test_sample_documents_every_key);
    harness_run("presets and parameter counts (7B exact, 67B)", test_presets_and_counts);
    harness_run("flat layout order and offsets", test_layout_matches_count);
    harness_run("file, inline comments, --set, price items", test_file_and_overrides);
    harness_run("bad keys, values, ranges, long lines, missing file", test_bad_inputs);
    harness_run("rendered config reloads identically", test_render_roundtrip);
    harness_run("min_lr = auto is lr / 10, 3e-4 exactly by default", test_min_lr_auto);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return harness_end();
}

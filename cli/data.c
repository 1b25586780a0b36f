/* `spotrain data tokenize`: its options (getopt_long, so --opt=value,
 * --opt value and -- behave as everywhere) into tkz_opts for the pipeline
 * in tok/tokenize.c. */
#include "cli/data.h"
#include "tok/tokenize.h"
#include "util/util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char data_tokenize_usage[] =
    "usage: spotrain data tokenize --tokenizer tokenizer.json [--eos ID] [--val-fraction F]\n"
    "                              [--format auto|text|jsonl] [--shard-tokens N] [--threads N]\n"
    "                              [--special-as-text] [--force] -o DIR FILE...\n"
    "  Encodes documents with a Hugging Face byte-level BPE tokenizer.json into llm.c shards:\n"
    "  DIR/train_000000.bin, ... and DIR/val_000000.bin, ... (header of 256 int32; uint16\n"
    "  tokens, magic 20240520 version 1, when the vocabulary fits, else uint32, 20240801/7).\n"
    "  Every document is preceded by the end-of-text token, as llm.c's scripts do.\n"
    "  FILE        a text file (one document), JSON lines (one document per line, its \"text\"\n"
    "              field), or - for standard input; gzip-compressed files are read as well\n"
    "  --eos ID    end-of-text id (default: the tokenizer's eos / end-of-text special token)\n"
    "  --val-fraction F  share of whole documents for validation (default 0; e.g. 0.01)\n"
    "  --format    how to read FILEs (default auto: JSON lines for names ending .jsonl or\n"
    "              .ndjson, any case, .gz after it, and for files whose first line is a\n"
    "              {\"text\": ...} object; a .json name that is neither is refused)\n"
    "  --shard-tokens N  tokens per shard (default 100000000)\n"
    "  --threads N encoding threads (default: OpenMP's, OMP_NUM_THREADS)\n"
    "  --special-as-text  encode special-token text inside documents (a page that holds\n"
    "              \"<|endoftext|>\") as plain text; by default it becomes the special id, as\n"
    "              the tokenizers library's encode does, and the count is reported\n"
    "  --force     overwrite shards already in DIR\n"
    "  --quiet     no log lines on stderr (errors still print)\n"
    "  Train on them with [data] source = shards, train_path = DIR/train_*.bin,\n"
    "  val_path = DIR/val_*.bin, model.vocab_size >= the tokenizer's vocabulary.\n";

enum { OPT_EOS = 256, OPT_VAL, OPT_FORMAT, OPT_SHARD, OPT_THREADS, OPT_FORCE, OPT_SPECIAL };

static int data_tokenize_opt(int c, const char *v, tkz_opts *o, const char **tokpath)
{
    int64_t x;
    switch (c) {
    case 't': *tokpath = v; return ST_OK;
    case 'o': o->dir = v; return ST_OK;
    case 'q': util_quiet = 1; return ST_OK;
    case OPT_FORCE: o->force = 1; return ST_OK;
    case OPT_SPECIAL: o->special_as_text = 1; return ST_OK;
    case OPT_EOS:
        if (util_parse_i64(v, &o->eos) || o->eos < 0)
            return util_fail(ST_USAGE, "--eos: '%s' is not a token id", v);
        return ST_OK;
    case OPT_VAL:
        if (util_parse_f64(v, &o->val_fraction) || !(o->val_fraction >= 0 && o->val_fraction < 1))
            return util_fail(ST_USAGE, "--val-fraction: '%s' is not a number in [0, 1)", v);
        return ST_OK;
    case OPT_SHARD:
        if (util_parse_i64(v, &o->shard_tokens) || o->shard_tokens < 1 || o->shard_tokens > INT32_MAX)
            return util_fail(ST_USAGE, "--shard-tokens: '%s' is not a count from 1 to 2^31-1", v);
        return ST_OK;
    case OPT_THREADS:
        if (util_parse_i64(v, &x) || x < 0 || x > 4096)
            return util_fail(ST_USAGE, "--threads: '%s' is not a thread count", v);
        o->threads = (int)x;
        return ST_OK;
    default: /* OPT_FORMAT */
        if (!strcmp(v, "auto") || !strcmp(v, "text") || !strcmp(v, "jsonl")) {
            o->format = v[0] == 'a' ? TKZ_AUTO : v[0] == 't' ? TKZ_TEXT : TKZ_JSONL;
            return ST_OK;
        }
        return util_fail(ST_USAGE, "--format: '%s' is not auto, text or jsonl", v);
    }
}

/* argv[0] is "tokenize". */
static int data_tokenize_cli(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tokenizer", required_argument, NULL, 't'}, {"output", required_argument, NULL, 'o'},
        {"eos", required_argument, NULL, OPT_EOS}, {"val-fraction", required_argument, NULL, OPT_VAL},
        {"format", required_argument, NULL, OPT_FORMAT}, {"shard-tokens", required_argument, NULL, OPT_SHARD},
        {"threads", required_argument, NULL, OPT_THREADS}, {"force", no_argument, NULL, OPT_FORCE},
        {"special-as-text", no_argument, NULL, OPT_SPECIAL}, {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    tkz_opts o = {.format = TKZ_AUTO, .eos = -1, .shard_tokens = 100000000};
    const char *tokpath = NULL;
    int rc = ST_OK, c;
    opterr = 0;
    optind = 1;
    while (rc == ST_OK && (c = getopt_long(argc, argv, ":o:qh", longopts, NULL)) != -1) {
        if (c == 'h')
            return fputs(data_tokenize_usage, stdout), ST_OK;
        if (c == '?' || c == ':') {
            const char *a = argv[optind - 1];
            char s[3] = {'-', (char)optopt, 0};
            if (c == '?' && optopt > 0 && optopt < 128 && strncmp(a, "--", 2))
                a = s;   /* an unknown letter inside a group such as -qx */
            return util_fail(ST_USAGE, "data tokenize: %s '%s' (see spotrain data tokenize --help)",
                             c == '?' ? "unexpected argument" : "a value is missing after", a);
        }
        rc = data_tokenize_opt(c, optarg, &o, &tokpath);
    }
    if (rc != ST_OK)
        return rc;
    o.tokenizer = tokpath;
    o.inputs = (const char *const *)argv + optind;
    o.ninputs = argc - optind;
    if (!o.tokenizer || !o.dir || !o.ninputs)
        return util_fail(ST_USAGE, "data tokenize: needs --tokenizer FILE, -o DIR and at least one input "
                         "(see spotrain data tokenize --help)");
    return tkz_run(&o);
}

int data_cli(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "tokenize"))
        return data_tokenize_cli(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
        return fputs(data_tokenize_usage, stdout), ST_OK;
    return util_fail(ST_USAGE, "data: which one? spotrain data tokenize (see spotrain data tokenize --help)");
}

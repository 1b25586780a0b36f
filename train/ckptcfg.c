/* resume's source of model.init_from's shape: the resolved config saved in
 * the newest checkpoint that opens, local or (with checkpoint.remote)
 * remote, so that a resume with a checkpoint never reads init_from. */
#include "ckpt/ckpt.h"
#include "s3/s3.h"
#include "train/train.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Candidate k's saved config, or ST_DATA when its manifest does not open
 * (resume skips it too, and says why when it gets there). */
static int train_cand_config(const char *ckpt_dir, s3_client *s3, const ckpt_cand *k, char **text, char *name,
                             size_t cap)
{
    char dir[CFG_STR + 64], err[512] = "";
    ckpt_reader *r = NULL;
    int rc;
    if (k->remote) {
        rc = ckpt_open_remote(&r, s3, k->step, err, sizeof err);
    } else {
        snprintf(dir, sizeof dir, "%s/step-%08lld", ckpt_dir, (long long)k->step);
        rc = ckpt_open(&r, dir);
    }
    if (rc == ST_OK) {
        const char *t = ckpt_get_info(r)->config_text;
        *text = t ? strdup(t) : NULL;
        rc = *text ? ST_OK : ST_DATA;
        snprintf(name, cap, "%s%s step %lld", k->remote ? "remote " : "", "checkpoint", (long long)k->step);
    } else if (rc != ST_UNAVAILABLE) {
        rc = ST_DATA;
    }
    ckpt_close(r);
    return rc;
}

/* Local candidates first (s3 NULL), so a remote is contacted only when
 * none opens here; then the remote ones. */
static int train_first_config(const char *ckpt_dir, s3_client *s3, char **text, char *name, size_t cap)
{
    ckpt_cand *cands = NULL;
    int n = 0, rc = ckpt_candidates(ckpt_dir, s3, &cands, &n);
    int found = ST_NOINPUT;
    for (int i = 0; i < n && rc == ST_OK && found == ST_NOINPUT; i++) {
        if (s3 && !cands[i].remote)
            continue;   /* the local pass saw it */
        int c = train_cand_config(ckpt_dir, s3, &cands[i], text, name, cap);
        if (c == ST_OK || c == ST_UNAVAILABLE)
            found = c;
    }
    free(cands);
    return rc != ST_OK ? rc : found;
}

int train_ckpt_config(const cfg *c, char **text, char *name, size_t cap)
{
    char ckpt_dir[CFG_STR + 16];
    s3_client *s3 = NULL;
    s3_opts so;
    *text = NULL;
    if (util_fmt(ckpt_dir, sizeof ckpt_dir, "%s/ckpt", c->run_dir) < 0)
        return ST_NOINPUT;
    int rc = train_first_config(ckpt_dir, NULL, text, name, cap);
    if (rc != ST_NOINPUT || !c->ckpt_remote[0])
        return rc;
    cfg_s3_opts(c, &so);
    rc = s3_open(&s3, &so);
    if (rc == ST_OK)
        rc = train_first_config(ckpt_dir, s3, text, name, cap);
    s3_close(s3);
    /* A remote down now may be up at the restart: 75, as resume's own. */
    return rc == ST_UNAVAILABLE ? ST_TEMPFAIL : rc;
}

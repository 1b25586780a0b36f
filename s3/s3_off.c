/* The S3 client of a build without libcurl (DEVICE=1, the binary carried to
 * a GPU test machine that lacks our Debian libraries): every connection is
 * refused with one line, so checkpoint.remote fails at start, never later. */
#include "s3.h"
#include "util/util.h"

#include <string.h>

static int s3_off(void)
{
    return util_fail(ST_UNAVAILABLE, "object storage is not in this build (made without libcurl, e.g. make "
                     "device-build); leave checkpoint.remote empty or use a regular build");
}

int s3_creds_load(const s3_opts *o, s3_creds *out) { return s3_off(); }
int s3_open(s3_client **c, const s3_opts *o)
{
    *c = NULL;
    return s3_off();
}
void s3_close(s3_client *c) {}
const s3_url *s3_client_url(const s3_client *c) { return NULL; }
void s3_get_stats(s3_client *c, s3_stats *out) { memset(out, 0, sizeof *out); }
void s3_cancel(s3_client *c) {}
int s3_create_bucket(s3_client *c) { return s3_off(); }
int s3_put_object(s3_client *c, const char *key, const void *buf, size_t len) { return s3_off(); }
int s3_get_range(s3_client *c, const char *key, uint64_t off, size_t len, void *buf) { return s3_off(); }
int s3_head_object(s3_client *c, const char *key, s3_object *obj) { return s3_off(); }
int s3_list_objects(s3_client *c, const char *prefix, s3_list_fn fn, void *ctx) { return s3_off(); }
int s3_delete_object(s3_client *c, const char *key) { return s3_off(); }
int s3_mpu_create(s3_client *c, const char *key, char *upload_id, size_t cap) { return s3_off(); }
int s3_mpu_part(s3_client *c, const char *key, const char *upload_id, int part_no, const void *buf, size_t len,
                char *etag, size_t cap)
{
    return s3_off();
}
int s3_mpu_complete(s3_client *c, const char *key, const char *upload_id, char (*etags)[128], int n_parts)
{
    return s3_off();
}
int s3_mpu_abort(s3_client *c, const char *key, const char *upload_id) { return s3_off(); }
int s3_upload_fd(s3_client *c, const char *key, int fd, uint64_t off, uint64_t len) { return s3_off(); }
